"""``hfai-runtime run-local k8s/<job>.yaml``: run a rendered PyTorchJob/TrainJob on this machine.

Each replica becomes a local process running the container's command in the project folder,
with the environment the Kubeflow operator would inject (master on loopback), on CPU. The
operator's restart policies, backoff limit, suspension and grace periods apply; ``--preempt``
and ``--suspend-at`` play the cluster's part. Exit code 0 only when the job succeeded.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import signal
import sys
from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "run-local",
        help="run a rendered PyTorchJob/TrainJob locally with the operator's semantics",
        description="Run a rendered PyTorchJob/TrainJob on this machine: one process per pod, "
                    "the operator's environment and restart rules, CPU and gloo.",
        epilog="Volume mounts: a container path P (and anything under it) in env values and "
               "args becomes --mount P=DIR's DIR, else --data-dir joined with the mount's "
               "subPath; /dev/shm stays. Exit code 0 only when the job succeeded.",
    )
    parser.add_argument("manifest", type=Path, help="the job's YAML, e.g. k8s/job.yaml")
    parser.add_argument("--project-dir", type=Path,
                        help="where replicas run (default: the manifest folder's parent)")
    parser.add_argument("--data-dir", type=Path,
                        help="local folder for the pods' volume mounts (default: the project)")
    parser.add_argument("--mount", action="append", default=[], metavar="PATH=DIR",
                        type=_mount, help="map one container mount path to a local folder")
    parser.add_argument("--preempt", action="append", default=[], metavar="REPLICA@WHEN",
                        type=_preempt,
                        help="SIGTERM REPLICA (master-0, worker-0, node-1) at WHEN, SIGKILL after "
                             "its grace period; WHEN is SECONDS after the start or train+SECONDS "
                             "after training first started; may repeat")
    parser.add_argument("--suspend-at", type=_at, metavar="WHEN",
                        help="set runPolicy.suspend at WHEN (as for --preempt): every replica "
                             "stops")
    parser.add_argument("--resume-after", type=float, default=0.0, metavar="SECONDS",
                        help="unsuspend SECONDS after --suspend-at (once all replicas stopped)")
    parser.add_argument("--args", type=shlex.split, metavar="ARGS",
                        help="replace the containers' args (one shell-quoted string), e.g. a "
                             "CPU-sized config: --args '--config-file configs/smoke_cpu.yaml'")
    parser.add_argument("--engine", choices=("process", "podman", "docker"), default="process",
                        help="run each pod as a local process (default) or as a container of "
                             "the manifest's image on a per-job network")
    parser.add_argument("--image", help="with --engine: the image to run instead of the "
                                        "manifest's")
    parser.add_argument("--events", type=Path, metavar="FILE",
                        help="also write the timeline as JSON lines to FILE")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hfai_runtime.local.manifest import ManifestError, load_job
    from hfai_runtime.local.engine import EngineError, engine_for
    from hfai_runtime.local.runner import RunOptions, run_job

    try:
        job = load_job(args.manifest)
    except ManifestError as exc:
        print(f"run-local: {exc}", file=sys.stderr)
        return 2
    names = {r.name for r in job.replicas}
    unknown = sorted({name for name, _ in args.preempt} - names)
    if unknown:
        print(f"run-local: --preempt {unknown[0]}: no such replica (the job has "
              f"{', '.join(sorted(names))})", file=sys.stderr)
        return 2
    project = (args.project_dir or args.manifest.resolve().parent.parent).resolve()
    options = RunOptions(
        project_dir=project,
        data_dir=args.data_dir.resolve() if args.data_dir else None,
        mounts=dict(args.mount),
        preempt=args.preempt,
        suspend_at=args.suspend_at,
        resume_after=args.resume_after,
        args=args.args,
    )
    # A SIGTERM to the runner unwinds it like Ctrl-C, so the replicas (in their own sessions,
    # out of the terminal's reach) are killed on the way out instead of being left behind.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with engine_for(args.engine, job, args.manifest, args.image,
                        options.data_dir or project, options.mounts) as engine:
            result = run_job(job, dataclasses.replace(options, engine=engine),
                             write=lambda line: print(line, flush=True))
    except EngineError as exc:
        print(f"run-local: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("run-local: interrupted; every replica was killed", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"\nTimeline of {job.kind} {job.name}:")
    for event in result.events:
        print(f"  {event.time:8.2f}s  {event.replica or 'job':<10} {event.kind:<12} {event.detail}")
    print(f"\n{job.kind} {job.name}: {result.condition} ({result.reason}) -- {result.message}")
    if args.events:
        result.write_events(args.events)
    return 0 if result.succeeded else 1


def _mount(text: str) -> tuple[str, Path]:
    path, sep, local = text.partition("=")
    if not sep or not path.startswith("/") or not local:
        raise argparse.ArgumentTypeError(f"expected PATH=DIR with an absolute PATH, got {text!r}")
    return path.rstrip("/") or "/", Path(local).resolve()


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"run-local received signal {signum}")


def _at(text: str):
    from hfai_runtime.local.runner import At

    try:
        return At.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _preempt(text: str):
    name, sep, when = text.rpartition("@")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected REPLICA@WHEN like worker-0@20 or "
                                         f"worker-0@train+5, got {text!r}")
    return name, _at(when)
