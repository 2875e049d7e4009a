"""``hfai-runtime job``: submit and follow a PyTorchJob/TrainJob on a real cluster.

``submit`` checks the manifest (``hfai-runtime check``) and server-side applies it; ``status``,
``logs``, ``timeline``, ``suspend`` and ``resume`` take the job's name. The connection is the
kubeconfig's (``--kubeconfig``, ``--context``), or the pod's service account inside a cluster.
Every refusal (no kubeconfig, forbidden, CRD not installed, job not found) is one line on
stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from hfai_runtime.cli.arguments import output_file_problem, seconds_problem
from hfai_runtime.kube.reader import ManifestError as UnreadableManifest
from hfai_runtime.kube.reader import shown

POLL_SECONDS = 2.0
WORKLOAD_WAIT_SECONDS = 10.0  # = cluster.kueue.WORKLOAD_WAIT_SECONDS (not imported: the CLI loads lazily)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "job",
        help="submit, inspect, suspend and resume the job on a Kubernetes cluster",
        description="Operate a PyTorchJob or TrainJob on a Kubernetes cluster.",
    )
    commands = parser.add_subparsers(dest="job_command", required=True, metavar="ACTION")
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument(
        "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then in-cluster)"
    )
    connection.add_argument("--context", help="kubeconfig context (default: the current one)")
    connection.add_argument(
        "-n", "--namespace", help="namespace (default: the manifest's, else the context's)"
    )
    named = argparse.ArgumentParser(add_help=False, parents=[connection])
    named.add_argument("name", help="the job's metadata.name")
    named.add_argument(
        "--kind",
        choices=("PyTorchJob", "TrainJob"),
        help="the job's kind (default: a PyTorchJob of that name, else a TrainJob)",
    )

    submit = commands.add_parser(
        "submit", parents=[connection], help="check the manifest, then create or update the job"
    )
    submit.add_argument(
        "manifests",
        nargs="+",
        type=Path,
        metavar="MANIFEST",
        help="the job's YAML, e.g. k8s/job.yaml; a TrainJob's TrainingRuntime with it "
        "(k8s/runtime.yaml k8s/job.yaml): runtimes are applied first",
    )
    submit.add_argument(
        "--force-conflicts",
        action="store_true",
        help="take over fields another manager set (kubectl edit...)",
    )
    submit.add_argument(
        "--workload-wait",
        type=float,
        default=WORKLOAD_WAIT_SECONDS,
        metavar="SECONDS",
        help="for a queue-labelled job, how long to wait for Kueue to make its Workload (default %(default)s)",
    )
    submit.set_defaults(func=_command(_submit))

    status = commands.add_parser(
        "status", parents=[named], help="conditions, pods, exit codes, progress, Kueue admission"
    )
    status.set_defaults(func=_command(_status))

    logs = commands.add_parser(
        "logs", parents=[named], help="every pod's log, each line prefixed with its replica"
    )
    logs.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="keep printing, and follow recreated pods, until the job ends",
    )
    logs.add_argument(
        "-p",
        "--previous",
        action="store_true",
        help="the previous container of each pod (after an in-place restart; a "
        "pod recreated under ExitCode takes its old log with it)",
    )
    logs.set_defaults(func=_command(_logs))

    timeline = commands.add_parser(
        "timeline",
        parents=[named],
        help="started, preempted, exited 143, recreated, resumed at iteration N, succeeded",
    )
    timeline.add_argument(
        "--watch",
        action="store_true",
        help="observe the job until it ends, reading each pod's records before the operator deletes the pod",
    )
    timeline.add_argument(
        "--interval",
        type=float,
        default=POLL_SECONDS,
        metavar="SECONDS",
        help="seconds between looks with --watch (default %(default)s)",
    )
    timeline.add_argument(
        "--events",
        type=Path,
        metavar="FILE",
        help="also write the timeline as JSON lines (run-local's format)",
    )
    timeline.set_defaults(func=_command(_timeline))

    for action, suspend in (("suspend", True), ("resume", False)):
        sub = commands.add_parser(
            action,
            parents=[named],
            help=f"{action} the job (under Kueue: {'de' if suspend else ''}activate its Workload)",
        )
        sub.add_argument(
            "--workload-wait",
            type=float,
            default=WORKLOAD_WAIT_SECONDS,
            metavar="SECONDS",
            help="for a queue-labelled job, how long to wait for its Kueue Workload before "
            "setting the job's own suspend field (default %(default)s)",
        )
        sub.set_defaults(func=_command(_suspend_command(suspend)))


def _command(body: Callable[[argparse.Namespace, Callable[[str], None]], int]):
    """Run ``body``; a refusal becomes one line on stderr: exit 2 for a manifest that cannot be
    read (as ``hfai-runtime check``), 1 for what the cluster or the check refused."""

    def run(args: argparse.Namespace) -> int:
        from hfai_runtime.cluster.api import ClusterError

        try:
            return body(args, lambda line: print(line, flush=True))
        except (UnreadableManifest, BadArgument) as exc:
            print(f"hfai-runtime job {args.job_command}: {exc}", file=sys.stderr)
            return 2
        except (ClusterError, ManifestError) as exc:
            print(f"hfai-runtime job {args.job_command}: {exc}", file=sys.stderr)
            return 1

    return run


class ManifestError(Exception):
    """The manifest cannot be submitted: not a job, or refused by the check."""


class BadArgument(ValueError):
    """A flag's value that the command cannot use (exit 2, before anything is asked of the cluster)."""


def _connect(args: argparse.Namespace):
    from hfai_runtime.cluster.api import connect

    return connect(args.kubeconfig, args.context, args.namespace)


def _find(args: argparse.Namespace):
    from hfai_runtime.cluster.jobs import find_job
    from hfai_runtime.cluster.kinds import kind_named

    cluster = _connect(args)
    kind, job = find_job(cluster, args.name, kind_named(args.kind) if args.kind else None)
    return cluster, kind, job


# -- submit --------------------------------------------------------------------------------


def _jobs_of(manifest) -> list[tuple[Any, dict]]:
    """The manifest's documents, each a PyTorchJob, a TrainJob or a TrainingRuntime (kind
    ``None``) with a name."""
    from hfai_runtime.kube.kinds import KINDS, kind_of

    jobs = []
    for number, doc in enumerate(manifest.documents, 1):
        kind = kind_of(doc)
        if kind is None and not _is_training_runtime(doc):
            raise ManifestError(
                f"{manifest.source}: document {number}: expected one of "
                f"{', '.join(f'{k.api_version} {k.kind}' for k in KINDS)}, "
                f"trainer.kubeflow.org/v1alpha1 TrainingRuntime, "
                f"got {shown(doc.get('apiVersion'))} {shown(doc.get('kind'))}"
            )
        if not (doc.get("metadata") or {}).get("name"):
            raise ManifestError(f"{manifest.source}: document {number}: metadata.name is missing")
        jobs.append((kind, doc))
    return jobs


def _is_training_runtime(doc: dict) -> bool:
    return (doc.get("apiVersion"), doc.get("kind")) == ("trainer.kubeflow.org/v1alpha1", "TrainingRuntime")


def _checked(path: Path) -> list[tuple[Any, dict]]:
    """The documents of one manifest, read once and judged by ``hfai-runtime check``: what the
    cluster refuses stops the submission (one line each on stderr), the project's advice is
    printed as a warning. What is sent is exactly what the check judged."""
    from hfai_runtime.check import check_manifest
    from hfai_runtime.kube.reader import read_manifest

    manifest = read_manifest(path)
    problems = check_manifest(manifest)
    for problem in problems:
        print(f"check: {'' if problem.cluster_refuses else 'warning: '}{problem}", file=sys.stderr)
    refused = [p for p in problems if p.cluster_refuses]
    if refused:
        raise ManifestError(
            f"{path}: {len(refused)} problem(s) found by hfai-runtime check; nothing was submitted"
        )
    return _jobs_of(manifest)


def _submit(args: argparse.Namespace, write: Callable[[str], None]) -> int:
    from hfai_runtime.cluster.jobs import apply_job, apply_runtime

    documents = [(path, kind, doc) for path in args.manifests for kind, doc in _checked(path)]
    cluster = _connect(args)
    targets = {}
    for path, _, document in documents:
        meta = document["metadata"]
        if args.namespace and meta.get("namespace") not in (None, args.namespace):
            raise ManifestError(
                f"{path}: metadata.namespace is {meta['namespace']}, but --namespace is {args.namespace}"
            )
        targets[id(document)] = replace(cluster, namespace=meta.get("namespace") or cluster.namespace)
    runtimes = [(targets[id(doc)], doc) for _, kind, doc in documents if kind is None]
    jobs = [(path, kind, doc) for path, kind, doc in documents if kind is not None]
    for path, _, document in jobs:
        _require_runtime(targets[id(document)], path, document, runtimes)
    for target, document in runtimes:  # the TrainJobs that reference them need them first
        apply_runtime(target, document, force=args.force_conflicts)
        write(f"TrainingRuntime {document['metadata']['name']} applied in namespace {target.namespace}")
    for _, kind, document in jobs:
        meta = document["metadata"]
        target = targets[id(document)]
        apply_job(target, kind, document, force=args.force_conflicts)
        flags = _connection_flags(args, target.namespace)
        write(
            f"{kind.kind} {meta['name']} applied in namespace {target.namespace} "
            f"(server-side apply, field manager hfai-runtime)"
        )
        write(f"  follow it:  hfai-runtime job logs {meta['name']}{flags} --follow")
        write(f"  state:      hfai-runtime job status {meta['name']}{flags}")
        write(f"  story:      hfai-runtime job timeline {meta['name']}{flags} --watch")
        _say_queueing(target, kind, document, max(0.0, args.workload_wait), write)
    return 0


def _require_runtime(cluster, path: Path, job: dict, runtimes: list[tuple[Any, dict]]) -> None:
    """A TrainJob's namespaced TrainingRuntime is among the manifests or already in the cluster;
    otherwise nothing is applied (the TrainJob would wait for a runtime that never comes)."""
    from hfai_runtime.cluster.api import NotFound
    from hfai_runtime.cluster.jobs import RUNTIME_API

    ref = (job.get("spec") or {}).get("runtimeRef") or {}
    if job.get("kind") != "TrainJob" or ref.get("kind") != "TrainingRuntime":
        return
    name = ref.get("name")
    if any(
        doc["metadata"]["name"] == name and target.namespace == cluster.namespace for target, doc in runtimes
    ):
        return
    try:
        cluster.call(
            f"get TrainingRuntime {name}",
            cluster.custom().get_namespaced_custom_object,
            *RUNTIME_API,
            cluster.namespace,
            "trainingruntimes",
            name,
        )
    except NotFound:
        raise ManifestError(
            f"{path}: spec.runtimeRef names TrainingRuntime {name}, which is neither among the "
            f"manifests nor in namespace {cluster.namespace}: submit it with the job "
            f"(hfai-runtime job submit k8s/runtime.yaml {path}); nothing was submitted"
        ) from None


def _say_queueing(cluster, kind, document: dict, wait_s: float, write: Callable[[str], None]) -> None:
    """For a queue-labelled job: its Workload's state, or (none within ``wait_s``) why not."""
    from hfai_runtime.cluster import kueue
    from hfai_runtime.cluster.jobs import get_job

    queue = kueue.queue_name(document)
    if not queue:
        return
    # The job as the cluster has it (its uid names the Workload's owner). Not the apply's answer:
    # the client reads only a 200 answer's body, and a create answers 201.
    job = get_job(cluster, kind, document["metadata"]["name"])
    workload = kueue.wait_for_workload(cluster, job, wait_s)
    if workload is not None:
        write(f"  Kueue:      {kueue.admission(workload)}")
    else:
        write(f"  Kueue:      {kueue.no_workload(kind.kind, job['metadata']['name'], queue, wait_s)}")


def _connection_flags(args: argparse.Namespace, namespace: str) -> str:
    flags = f" -n {namespace}"
    if args.context:
        flags += f" --context {args.context}"
    if args.kubeconfig:
        flags += f" --kubeconfig {args.kubeconfig}"
    return flags


# -- status --------------------------------------------------------------------------------


def _status(args: argparse.Namespace, write: Callable[[str], None]) -> int:
    from hfai_runtime.cluster import kueue
    from hfai_runtime.cluster import pods as podinfo

    cluster, kind, job = _find(args)
    name = job["metadata"]["name"]
    suspended = " (suspended)" if kind.suspended(job) else ""
    write(f"{kind.kind} {name} in namespace {cluster.namespace}{suspended}")
    conditions = (job.get("status") or {}).get("conditions") or []
    write("Conditions:" if conditions else "Conditions: none yet")
    for c in conditions:
        write(
            f"  {c.get('type', '?'):<11} {c.get('status', '?'):<6} "
            f"{c.get('lastTransitionTime', '')}  {c.get('reason', '')}: {c.get('message', '')}"
        )
    if queue := kueue.queue_name(job):
        workload = kueue.workload_of(cluster, job)
        write(
            "Kueue: "
            + (
                kueue.admission(workload)
                if workload
                else f"LocalQueue {queue}: no Workload yet (Kueue has not seen the job)"
            )
        )
    pods = podinfo.list_pods(cluster, kind, name)
    write("Pods:" if pods else "Pods: none (suspended, not admitted or not created yet)")
    exits = _operator_exit_codes(cluster, kind, name) if pods else {}
    checkpoints = []
    for pod in pods:
        line, progress = _pod_line(cluster, kind, pod, exits, podinfo.suspend_exit_code(job))
        write(line)
        if progress and progress.checkpoint:
            checkpoints.append((progress.checkpoint_iteration or -1, progress.checkpoint))
    if checkpoints:
        iteration, path = max(checkpoints)
        write(f"Last checkpoint: {path} (iteration {iteration})")
    elif pods:
        write("Last checkpoint: none reported in the current pods' logs")
    return 0


def _pod_line(cluster, kind, pod, exits: dict[str, int], suspend_code: int):
    from hfai_runtime.cluster import pods as podinfo
    from hfai_runtime.cluster.api import ClusterError
    from hfai_runtime.cluster.logs import progress, read_log, split_lines

    name = pod["metadata"]["name"]
    container = podinfo.log_container(kind, pod)
    status = podinfo.container_status(pod, container)
    parts = [
        f"  {kind.replica_name(pod):<10} {name}  {podinfo.pod_phase(pod)}",
        f"restarts {status.get('restartCount', 0)}",
    ]
    code = podinfo.last_exit_code(pod, container)
    source = ""
    if code is None and name in exits:
        code, source = exits[name], " of the pod it replaced"
    if code is not None:
        parts.append(f"last exit{source} {code} ({podinfo.exit_meaning(code, suspend_code)})")
    found = None
    if status.get("state", {}).get("running") or status.get("state", {}).get("terminated"):
        try:
            found = progress(split_lines(read_log(cluster, name, container), timestamps=False))
        except ClusterError as exc:
            parts.append(f"log unreadable: {exc}")
    if found and found.iterations:
        ranks = ", ".join(
            f"rank {rank} at {it}" if rank is not None else f"at {it}"
            for rank, it in sorted(found.iterations.items(), key=lambda pair: (pair[0] is None, pair[0] or 0))
        )
        of = f" of {found.max_iter}" if found.max_iter else ""
        parts.append(f"iteration: {ranks}{of}")
    return "  ".join(parts), found


def _operator_exit_codes(cluster, kind, name: str) -> dict[str, int]:
    """The latest exit code the operator reported per pod name (``ExitedWithCode`` events):
    under ExitCode a recreated pod's own status starts empty."""
    import json

    from hfai_runtime.cluster.logs import parse_time
    from hfai_runtime.cluster.timeline import EXITED_WITH_CODE

    response = cluster.call(
        "list events", cluster.core().list_namespaced_event, cluster.namespace, _preload_content=False
    )
    found: dict[str, tuple[str, int]] = {}
    for event in json.loads(response.data).get("items", []):
        involved = event.get("involvedObject") or {}
        match = EXITED_WITH_CODE.search(event.get("message") or "")
        if (
            event.get("reason") != "ExitedWithCode"
            or not match
            or (involved.get("kind"), involved.get("name")) != (kind.kind, name)
        ):
            continue
        at = parse_time(event.get("lastTimestamp") or event.get("eventTime"))
        stamp = at.isoformat() if at else ""
        if match["pod"] not in found or found[match["pod"]][0] <= stamp:
            found[match["pod"]] = (stamp, int(match["code"]))
    return {pod: code for pod, (_, code) in found.items()}


# -- logs ----------------------------------------------------------------------------------


def _logs(args: argparse.Namespace, write: Callable[[str], None]) -> int:
    from hfai_runtime.cluster import pods as podinfo
    from hfai_runtime.cluster.api import ClusterError
    from hfai_runtime.cluster.logs import Printer, read_log

    cluster, kind, job = _find(args)
    pods = podinfo.list_pods(cluster, kind, args.name)
    if args.follow:
        return _follow(cluster, kind, job, pods, write)
    if not pods:
        raise ClusterError(
            f"{kind.describe(args.name)} has no pods (suspended, not admitted or not created yet)"
        )
    printer = Printer((kind.replica_name(p) for p in pods), write)
    printed = 0
    for pod in pods:
        replica = kind.replica_name(pod)
        try:
            text = read_log(
                cluster, pod["metadata"]["name"], podinfo.log_container(kind, pod), previous=args.previous
            )
        except ClusterError as exc:
            print(f"[{replica}] {exc}", file=sys.stderr)
            continue
        printed += 1
        for line in text.splitlines():
            printer.line(replica, line)
    return 0 if printed else 1


def _follow(cluster, kind, job, pods, write: Callable[[str], None]) -> int:
    """Follow every pod's log; as the operator recreates pods, follow the new ones too, until
    the job has ended and every log is read."""
    from hfai_runtime.cluster import pods as podinfo
    from hfai_runtime.cluster.jobs import get_job
    from hfai_runtime.cluster.logs import Printer, pump
    from hfai_runtime.cluster.timeline import final_condition

    names = {kind.replica_name(p) for p in pods} or {kind.container}
    printer = Printer(names, write)
    followed: dict[str, threading.Thread] = {}
    errors: list[str] = []
    while True:
        for pod in pods:
            uid = pod["metadata"]["uid"]
            state = podinfo.container_status(pod, podinfo.log_container(kind, pod)).get("state")
            if uid in followed or not state or "waiting" in state:
                continue
            thread = threading.Thread(
                target=pump,
                daemon=True,
                args=(
                    cluster,
                    pod,
                    podinfo.log_container(kind, pod),
                    kind.replica_name(pod),
                    printer,
                    errors,
                ),
            )
            thread.start()
            followed[uid] = thread
        _wait(followed.values(), POLL_SECONDS)
        if final_condition(kind, job) and not any(t.is_alive() for t in followed.values()):
            break
        job = get_job(cluster, kind, job["metadata"]["name"])
        pods = podinfo.list_pods(cluster, kind, job["metadata"]["name"])
    for error in errors:
        print(error, file=sys.stderr)
    return 1 if errors and len(errors) == len(followed) else 0


def _wait(threads: Iterable[threading.Thread], seconds: float) -> None:
    """Wait ``seconds``, or less when the threads still running all end sooner."""
    running = [thread for thread in threads if thread.is_alive()]
    if not running:
        time.sleep(seconds)
        return
    deadline = time.monotonic() + seconds
    for thread in running:
        thread.join(max(0.0, deadline - time.monotonic()))


# -- timeline ------------------------------------------------------------------------------


def _timeline(args: argparse.Namespace, write: Callable[[str], None]) -> int:
    from hfai_runtime.cluster.timeline import Timeline, observe, watch
    from hfai_runtime.timeline import format_timeline, write_events

    problem = seconds_problem("--interval", args.interval) or output_file_problem("--events", args.events)
    if problem:
        raise BadArgument(problem)
    cluster, kind, job = _find(args)
    name = job["metadata"]["name"]
    if args.watch:
        timeline = watch(cluster, kind, job, args.interval)
    else:
        timeline = Timeline(kind, name)
        observe(cluster, kind, name, timeline, job)
    events = timeline.events()
    write(f"Timeline of {kind.kind} {name}:")
    for line in format_timeline(events):
        write(line)
    if final := timeline.finished():
        write(
            f"\n{kind.kind} {name}: {final.get('type')} ({final.get('reason', '')}) -- "
            f"{final.get('message', '')}"
        )
    if args.events:
        write_events(args.events, events)
    return 0


# -- suspend / resume ----------------------------------------------------------------------


def _suspend_command(suspend: bool):
    def run(args: argparse.Namespace, write: Callable[[str], None]) -> int:
        from hfai_runtime.cluster.jobs import set_suspended

        cluster, kind, job = _find(args)
        write(set_suspended(cluster, kind, job, suspend, max(0.0, args.workload_wait)))
        return 0

    return run
