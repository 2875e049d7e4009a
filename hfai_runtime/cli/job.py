"""``hfai-runtime job``: submit and follow a PyTorchJob/TrainJob on a real cluster.

``submit`` checks the manifest (``hfai-runtime check``) and server-side applies it; ``status``,
``logs``, ``timeline``, ``suspend`` and ``resume`` take the job's name. The connection is the
kubeconfig's (``--kubeconfig``, ``--context``), or the pod's service account inside a cluster.
Every refusal (no kubeconfig, forbidden, CRD not installed, job not found, no answer within
``--request-timeout``) is one line on stderr and exit code 1; a manifest that cannot be read or
a flag out of range, exit code 2.

This module parses and prints; what it asks of the cluster is :mod:`hfai_runtime.cluster`'s
(which imports the kubernetes client only when a command connects).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from hfai_runtime.cli.arguments import output_file_problem, seconds_problem
from hfai_runtime.cluster import kueue
from hfai_runtime.cluster import pods as podinfo
from hfai_runtime.cluster.api import REQUEST_TIMEOUT_SECONDS, Cluster, ClusterError, connect
from hfai_runtime.cluster.follow import POLL_SECONDS, follow_job
from hfai_runtime.cluster.jobs import (
    RUNTIME_KIND,
    apply_job,
    apply_runtime,
    find_job,
    get_job,
    is_runtime,
    runtime_exists,
    set_suspended,
)
from hfai_runtime.cluster.logs import Printer, read_log
from hfai_runtime.cluster.status import PodReport, operator_exit_codes, pod_report
from hfai_runtime.cluster.timeline import Timeline, observe, watch
from hfai_runtime.kube.kinds import KINDS, JobKind, kind_named, kind_of
from hfai_runtime.kube.reader import Manifest, read_manifest, shown
from hfai_runtime.kube.reader import ManifestError as UnreadableManifest
from hfai_runtime.timeline import format_timeline, write_events

Write = Callable[[str], None]


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
    connection.add_argument(
        "--request-timeout",
        type=float,
        default=REQUEST_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help="give up on a request the API server has not answered in this time (default "
        "%(default)s; a followed log waits as long as the job runs)",
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
        default=kueue.WORKLOAD_WAIT_SECONDS,
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
            default=kueue.WORKLOAD_WAIT_SECONDS,
            metavar="SECONDS",
            help="for a queue-labelled job, how long to wait for its Kueue Workload before "
            "setting the job's own suspend field (default %(default)s)",
        )
        sub.set_defaults(func=_command(_suspend_command(suspend)))


def _command(body: Callable[[argparse.Namespace, Write], int]) -> Callable[[argparse.Namespace], int]:
    """Run ``body``; a refusal becomes one line on stderr: exit 2 for a manifest that cannot be
    read (as ``hfai-runtime check``) or a flag out of range, 1 for what the cluster or the check
    refused."""

    def run(args: argparse.Namespace) -> int:
        try:
            if problem := seconds_problem("--request-timeout", args.request_timeout, positive=True):
                raise BadArgument(problem)
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


def _connect(args: argparse.Namespace) -> Cluster:
    return connect(
        args.kubeconfig, args.context, args.namespace, args.request_timeout or REQUEST_TIMEOUT_SECONDS
    )


def _find(args: argparse.Namespace) -> tuple[Cluster, JobKind, dict]:
    cluster = _connect(args)
    kind, job = find_job(cluster, args.name, kind_named(args.kind) if args.kind else None)
    return cluster, kind, job


# -- submit --------------------------------------------------------------------------------


def _jobs_of(manifest: Manifest) -> list[tuple[JobKind | None, dict]]:
    """The manifest's documents, each a PyTorchJob, a TrainJob or a TrainingRuntime (kind
    ``None``) with a name."""
    jobs = []
    for number, doc in enumerate(manifest.documents, 1):
        kind = kind_of(doc)
        if kind is None and not is_runtime(doc):
            raise ManifestError(
                f"{manifest.source}: document {number}: expected one of "
                f"{', '.join(f'{k.api_version} {k.kind}' for k in KINDS)}, {' '.join(RUNTIME_KIND)}, "
                f"got {shown(doc.get('apiVersion'))} {shown(doc.get('kind'))}"
            )
        if not (doc.get("metadata") or {}).get("name"):
            raise ManifestError(f"{manifest.source}: document {number}: metadata.name is missing")
        jobs.append((kind, doc))
    return jobs


def _checked(manifest: Manifest, context: list[dict]) -> list[tuple[JobKind | None, dict]]:
    """The documents of one manifest, read once and judged by ``hfai-runtime check`` (with the
    other manifests' documents as ``context``: a TrainJob is judged with its runtime): what the
    cluster refuses stops the submission (one line each on stderr), the project's advice is
    printed as a warning. What is sent is exactly what the check judged."""
    # Imported here: the check loads celpy and jsonschema (~0.5 s), which no other command needs.
    from hfai_runtime.check import check_manifest

    path = manifest.source
    problems = check_manifest(manifest, context)
    for problem in problems:
        print(f"check: {'' if problem.cluster_refuses else 'warning: '}{problem}", file=sys.stderr)
    refused = [p for p in problems if p.cluster_refuses]
    if refused:
        raise ManifestError(
            f"{path}: {len(refused)} problem(s) found by hfai-runtime check; nothing was submitted"
        )
    return _jobs_of(manifest)


def _submit(args: argparse.Namespace, write: Write) -> int:
    manifests = [read_manifest(path) for path in args.manifests]
    documents = [
        (Path(manifest.source), kind, doc)
        for manifest in manifests
        for kind, doc in _checked(manifest, [d for m in manifests if m is not manifest for d in m.documents])
    ]
    cluster = _connect(args)
    targets: dict[int, Cluster] = {}
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


def _require_runtime(cluster: Cluster, path: Path, job: dict, runtimes: list[tuple[Cluster, dict]]) -> None:
    """A TrainJob's namespaced TrainingRuntime is among the manifests or already in the cluster;
    otherwise nothing is applied (the TrainJob would wait for a runtime that never comes)."""
    ref = (job.get("spec") or {}).get("runtimeRef") or {}
    if job.get("kind") != "TrainJob" or ref.get("kind") != RUNTIME_KIND[1]:
        return
    name = ref.get("name")
    given = any(d["metadata"]["name"] == name and t.namespace == cluster.namespace for t, d in runtimes)
    if not given and not runtime_exists(cluster, name):
        raise ManifestError(
            f"{path}: spec.runtimeRef names TrainingRuntime {name}, which is neither among the "
            f"manifests nor in namespace {cluster.namespace}: submit it with the job "
            f"(hfai-runtime job submit k8s/runtime.yaml {path}); nothing was submitted"
        )


def _say_queueing(cluster: Cluster, kind: JobKind, document: dict, wait_s: float, write: Write) -> None:
    """For a queue-labelled job: its Workload's state, or (none within ``wait_s``) why not."""
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


def _status(args: argparse.Namespace, write: Write) -> int:
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
    exits = operator_exit_codes(cluster, kind, name) if pods else {}
    reports = [pod_report(cluster, kind, pod, exits, podinfo.suspend_exit_code(job)) for pod in pods]
    for report in reports:
        write(_pod_line(report))
    checkpoints = [
        (r.progress.checkpoint_iteration or -1, r.progress.checkpoint)
        for r in reports
        if r.progress and r.progress.checkpoint
    ]
    if checkpoints:
        iteration, path = max(checkpoints)
        write(f"Last checkpoint: {path} (iteration {iteration})")
    elif pods:
        write("Last checkpoint: none reported in the current pods' logs")
    return 0


def _pod_line(report: PodReport) -> str:
    parts = [f"  {report.replica:<10} {report.name}  {report.phase}", f"restarts {report.restarts}"]
    if report.exit_code is not None:
        source = " of the pod it replaced" if report.exit_of_replaced_pod else ""
        parts.append(f"last exit{source} {report.exit_code} ({report.exit_meaning})")
    if report.log_error:
        parts.append(f"log unreadable: {report.log_error}")
    found = report.progress
    if found and found.iterations:
        ranks = ", ".join(
            f"rank {rank} at {it}" if rank is not None else f"at {it}"
            for rank, it in sorted(found.iterations.items(), key=lambda pair: (pair[0] is None, pair[0] or 0))
        )
        of = f" of {found.max_iter}" if found.max_iter else ""
        parts.append(f"iteration: {ranks}{of}")
    return "  ".join(parts)


# -- logs ----------------------------------------------------------------------------------


def _logs(args: argparse.Namespace, write: Write) -> int:
    cluster, kind, job = _find(args)
    pods = podinfo.list_pods(cluster, kind, args.name)
    if args.follow:
        followed, errors = follow_job(cluster, kind, job, pods, write)
        for error in errors:
            print(error, file=sys.stderr)
        return 1 if errors and len(errors) >= followed else 0
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


# -- timeline ------------------------------------------------------------------------------


def _timeline(args: argparse.Namespace, write: Write) -> int:
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


def _suspend_command(suspend: bool) -> Callable[[argparse.Namespace, Write], int]:
    def run(args: argparse.Namespace, write: Write) -> int:
        cluster, kind, job = _find(args)
        write(set_suspended(cluster, kind, job, suspend, max(0.0, args.workload_wait)))
        return 0

    return run
