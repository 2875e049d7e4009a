"""``hfai-runtime run-local k8s/<job>.yaml``: run a rendered PyTorchJob/TrainJob on this machine.

Each replica becomes a local process running the container's command in the project folder,
with the environment the Kubeflow operator would inject (master on loopback), on CPU. The
operator's restart policies, backoff limit, suspension and grace periods apply; ``--preempt``
and ``--suspend-at`` play the cluster's part. A manifest a cluster would refuse, a command that
cannot start, or a missing dataset stop it before any pod starts (exit 2). Exit code 0 only when
the job succeeded.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import shutil
import signal
import sys
from pathlib import Path

from hfai_runtime.cli.arguments import output_file_problem, seconds_problem

EXAMPLES = """\
examples:
  # the project's job on CPU, the PVC's mount path mapped to ./local-pvc:
  hfai-runtime run-local k8s/job.yaml --data-dir local-pvc \\
      --args '--config-file configs/smoke_cpu.yaml OUTPUT_DIR /mnt/data/output/local'
  # rehearse a preemption of one pod, 5 s into training:
  hfai-runtime run-local k8s/job.yaml --data-dir local-pvc --preempt worker-0@train+5
  # rehearse a suspension (kubectl patch ... suspend: true) and a resume 2 s later:
  hfai-runtime run-local k8s/job.yaml --data-dir local-pvc --suspend-at train+5 --resume-after 2

Volume mounts: a container path P (and anything under it) in env values and args becomes
--mount P=DIR's DIR, else --data-dir joined with the mount's subPath; /dev/shm stays.
Each pod attempt's output is in <--logs-dir>/<pod>-attempt<N>.log. Exit code 0 only when the job
succeeded, 1 when it failed, 2 when it could not start.
"""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "run-local",
        help="run a rendered PyTorchJob/TrainJob locally with the operator's semantics",
        description="Run a rendered PyTorchJob/TrainJob on this machine: one process per pod, "
        "the operator's environment and restart rules, CPU and gloo.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("manifest", type=Path, help="the job's YAML, e.g. k8s/job.yaml")
    parser.add_argument(
        "--project-dir", type=Path, help="where replicas run (default: the manifest folder's parent)"
    )
    parser.add_argument(
        "--data-dir", type=Path, help="local folder for the pods' volume mounts (default: the project)"
    )
    parser.add_argument(
        "--mount",
        action="append",
        default=[],
        metavar="PATH=DIR",
        type=_mount,
        help="map one container mount path to a local folder",
    )
    parser.add_argument(
        "--require",
        action="append",
        default=[],
        metavar="PATH",
        help="refuse to start unless PATH (a container path, mapped as the "
        "pods see it) exists, e.g. the dataset's pack; may repeat",
    )
    parser.add_argument(
        "--preempt",
        action="append",
        default=[],
        metavar="REPLICA@WHEN",
        type=_preempt,
        help="SIGTERM REPLICA (master-0, worker-0, node-1) at WHEN, SIGKILL after "
        "its grace period; WHEN is SECONDS after the start or train+SECONDS "
        "after training first started; may repeat",
    )
    parser.add_argument(
        "--kueue-unmanaged",
        action="store_true",
        help="model a cluster whose Kueue does not manage this kind (Kueue v0.19.2's default "
        "configuration leaves PyTorchJobs out): a queue label is ignored, a suspended manifest "
        "never starts",
    )
    parser.add_argument(
        "--suspend-at",
        type=_at,
        metavar="WHEN",
        help="set runPolicy.suspend at WHEN (as for --preempt): every replica stops",
    )
    parser.add_argument(
        "--resume-after",
        type=float,
        metavar="SECONDS",
        help="unsuspend SECONDS after --suspend-at (once all replicas stopped)",
    )
    parser.add_argument(
        "--args",
        type=shlex.split,
        metavar="ARGS",
        help="replace the containers' args (one shell-quoted string), e.g. a "
        "CPU-sized config: --args '--config-file configs/smoke_cpu.yaml'",
    )
    parser.add_argument(
        "--cpu-procs-per-pod",
        type=_positive,
        default=1,
        metavar="N",
        help="at most N training processes per pod (default 1): a pod sized for "
        "8 GPUs would start 8 CPU processes here; the job's WORLD_SIZE and "
        "PET_NPROC_PER_NODE follow the capped count",
    )
    parser.add_argument(
        "--logs-dir",
        type=Path,
        metavar="DIR",
        help="each pod attempt's output as DIR/<pod>-attempt<N>.log (default: run-local-logs in the project)",
    )
    parser.add_argument(
        "--engine",
        choices=("process", "podman", "docker"),
        default="process",
        help="run each pod as a local process (default) or as a container of "
        "the manifest's image on a per-job network",
    )
    parser.add_argument("--image", help="with --engine: the image to run instead of the manifest's")
    parser.add_argument(
        "--events", type=Path, metavar="FILE", help="also write the timeline as JSON lines to FILE"
    )
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument("--quiet", action="store_true", help="print only the job's final condition")
    shown.add_argument(
        "--verbose",
        action="store_true",
        help="stream every pod's output and every event, prefixed by the pod",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hfai_runtime.kube.reader import ManifestError, read_manifest
    from hfai_runtime.local.container import subreaper
    from hfai_runtime.local.manifest import job_of
    from hfai_runtime.local.runner import RunOptions, preflight
    from hfai_runtime.local.sandbox import SandboxError, inside

    if args.resume_after is not None and args.suspend_at is None:
        return _refuse(["--resume-after: only with --suspend-at (there is nothing to resume)"])
    flags = [
        seconds_problem("--resume-after", args.resume_after),
        output_file_problem("--events", args.events),
    ]
    if any(flags):
        return _refuse([problem for problem in flags if problem])
    try:
        manifest = read_manifest(args.manifest)
        job = job_of(manifest, procs_per_node_cap=args.cpu_procs_per_pod)
    except ManifestError as exc:
        return _refuse([str(exc)])
    refused = _admission_problems(manifest)
    if refused:
        return _refuse(refused)
    names = {r.name for r in job.replicas}
    unknown = sorted({name for name, _ in args.preempt} - names)
    if unknown:
        return _refuse([f"--preempt {unknown[0]}: no such replica (the job has {', '.join(sorted(names))})"])
    project = (args.project_dir or args.manifest.resolve().parent.parent).resolve()
    try:  # the default folder is the project's: a symlink there must not lead out of it
        logs_dir = args.logs_dir.resolve() if args.logs_dir else inside(project, "run-local-logs")
    except SandboxError as exc:
        return _refuse([f"--logs-dir: {exc}"])
    options = RunOptions(
        project_dir=project,
        data_dir=args.data_dir.resolve() if args.data_dir else None,
        mounts=dict(args.mount),
        preempt=args.preempt,
        suspend_at=args.suspend_at,
        resume_after=args.resume_after or 0.0,
        kueue_manages_kind=not args.kueue_unmanaged,
        args=args.args,
        logs_dir=logs_dir,
    )
    problems = preflight(job, options, args.require)
    if problems:
        return _refuse(problems)
    if not args.quiet:
        print(_procs_line(job, args.cpu_procs_per_pod), flush=True)
    with subreaper():  # a process a pod detached (setsid) stays ours to stop
        return _run(job, manifest.documents[0], options, args)


def _run(job, document: dict, options, args: argparse.Namespace) -> int:
    from hfai_runtime.local.display import LiveStatus
    from hfai_runtime.local.engine import EngineError, engine_for
    from hfai_runtime.local.runner import RunObserver, run_job
    from hfai_runtime.local.sandbox import SandboxError
    from hfai_runtime.timeline import format_timeline, summarize

    # A SIGTERM to the runner unwinds it like Ctrl-C, so the replicas (in their own sessions,
    # out of the terminal's reach) are killed on the way out instead of being left behind.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with engine_for(
            args.engine,
            job,
            document,
            args.image,
            options.data_dir or options.project_dir,
            options.mounts,
            options.args,
        ) as engine:
            if engine is not None:
                options = dataclasses.replace(options, engine=engine)
            if args.verbose:
                result = run_job(job, options, write=lambda line: print(line, flush=True))
            elif args.quiet:
                result = run_job(job, options, observer=RunObserver())
            else:
                with LiveStatus([r.name for r in job.replicas]) as status:
                    result = run_job(job, options, observer=status)
    except (EngineError, SandboxError) as exc:
        print(f"run-local: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("run-local: interrupted; every replica was killed", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not args.quiet:
        print(f"\nTimeline of {job.kind} {job.name} (as JSON lines: --events FILE):")
        # Wrapped to a terminal's width; whole lines into a pipe or a file (grep, CI logs).
        columns = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
        print("\n".join(format_timeline(result.events, columns)))
        print(f"What happened (pod logs: {options.logs_dir}/<pod>-attempt<N>.log):")
        print("\n".join("  " + line for line in summarize(result.events)))
    for line in failed_pod_logs(result.events, options.logs_dir):
        print(line, file=sys.stderr)
    cause = f" [{result.cause}]" if result.cause else ""
    print(f"{job.kind} {job.name}: {result.condition.value} ({result.reason}) -- {result.message}{cause}")
    if args.events:
        result.write_events(args.events)
    return 0 if result.succeeded else 1


#: How much of a failed pod's log run-local shows: enough for a Python traceback's cause.
FAILED_LOG_LINES = 20


def failed_pod_logs(events, logs_dir: Path | None) -> list[str]:
    """The last :data:`FAILED_LOG_LINES` lines of each pod attempt that failed for good (exit
    1-127), under a heading with its log file's path: the cause (a traceback, a config error)
    without opening the file."""
    from hfai_runtime.timeline import attempts

    out: list[str] = []
    for attempt in attempts(events):
        if logs_dir is None or attempt.exit_code is None or not 0 < attempt.exit_code < 128:
            continue
        log = logs_dir / f"{attempt.replica}-attempt{attempt.number}.log"
        try:
            lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError as exc:
            out.append(
                f"run-local: {attempt.replica} exited {attempt.exit_code}; its log {log}: {exc.strerror}"
            )
            continue
        out.append(
            f"run-local: {attempt.replica} attempt {attempt.number} exited {attempt.exit_code}; "
            f"the last {min(len(lines), FAILED_LOG_LINES)} lines of {log}:"
        )
        out += ["  | " + line for line in lines[-FAILED_LOG_LINES:]]
    return out


def _procs_line(job, cap: int) -> str:
    """One line on how many processes each pod starts here, and the world that makes."""
    if job.kind == "Job":  # batch/v1: one pod, no operator, no world
        return (
            f"run-local: Job {job.name}: pod job-0, its {1 + len(job.replicas[0].init)} container(s) in turn"
        )
    per_pod, declared, pods = job.procs_per_node, job.declared_procs_per_node, len(job.replicas)
    world = f"WORLD_SIZE {pods * int(per_pod)}" if per_pod.isdigit() else "the launcher decides"
    capped = (
        (
            f"; {job.procs_per_node_path} is {declared} on the cluster, capped here by "
            f"--cpu-procs-per-pod {cap}"
        )
        if per_pod != declared
        else ""
    )
    return f"run-local: {pods} pod(s) x {per_pod} training process(es) on CPU ({world}{capped})"


def _admission_problems(manifest) -> list[str]:
    """What ``hfai-runtime check`` finds that a cluster would refuse; policy findings (e.g. a
    BestEffort pod) are printed as warnings, since a cluster runs such a job."""
    from hfai_runtime.check import check_manifest

    problems = check_manifest(manifest)
    for problem in problems:
        if not problem.cluster_refuses:
            print(f"run-local: warning: {problem}", file=sys.stderr)
    return [f"a cluster would refuse this: {p}" for p in problems if p.cluster_refuses]


def _refuse(problems: list[str]) -> int:
    for problem in problems:
        print(f"run-local: {problem}", file=sys.stderr)
    return 2


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1 or value > (os.cpu_count() or 1) * 4:
        raise argparse.ArgumentTypeError(f"expected 1 to {(os.cpu_count() or 1) * 4} processes, got {text!r}")
    return value


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
        raise argparse.ArgumentTypeError(
            f"expected REPLICA@WHEN like worker-0@20 or worker-0@train+5, got {text!r}"
        )
    return name, _at(when)
