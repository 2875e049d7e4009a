"""What ``hfai-runtime job status`` reports of each pod, read with bounded requests.

A job that trained for days has long logs and a namespace full of events: ``status`` reads only
the last :data:`TAIL_LINES` lines (at most :data:`TAIL_BYTES`) of each pod's log -- and of the
previous container's after an in-place restart, where the checkpoint written before it is -- and
only the job's own ``ExitedWithCode`` events, selected by the API server (field selectors on
``involvedObject.kind``, ``involvedObject.name`` and ``reason``: the event registry's selectable
fields, kubernetes ``pkg/registry/core/event/strategy.go``@v1.31.0 ``ToSelectableFields``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hfai_runtime.cluster import pods as podinfo
from hfai_runtime.cluster.api import Cluster, ClusterError
from hfai_runtime.cluster.logs import Progress, parse_time, progress, read_log, split_lines
from hfai_runtime.cluster.timeline import EXITED_WITH_CODE
from hfai_runtime.kube.kinds import JobKind

#: The runtime writes a progress record every few iterations: the last ones are near the end.
TAIL_LINES = 2000
TAIL_BYTES = 4 << 20


@dataclass(frozen=True)
class PodReport:
    """One pod as ``status`` shows it."""

    replica: str  # master-0, node-1
    name: str
    phase: str
    restarts: int
    exit_code: int | None  # the container's last exit, else the operator's for the pod it replaced
    exit_meaning: str = ""
    exit_of_replaced_pod: bool = False
    progress: Progress | None = None  # from the log tails; None when no log was read
    log_error: str = ""  # why a log could not be read


def operator_exit_codes(cluster: Cluster, kind: JobKind, name: str) -> dict[str, int]:
    """The latest exit code the operator reported per pod name (``ExitedWithCode`` events):
    under ExitCode a recreated pod's own status starts empty."""
    selector = f"involvedObject.kind={kind.kind},involvedObject.name={name},reason=ExitedWithCode"
    events = cluster.json(
        f"list the ExitedWithCode events of {kind.describe(name)}",
        cluster.core().list_namespaced_event,
        cluster.namespace,
        field_selector=selector,
    ).get("items", [])
    found: dict[str, tuple[str, int]] = {}
    for event in events:
        involved = event.get("involvedObject") or {}
        match = EXITED_WITH_CODE.search(event.get("message") or "")
        if (
            event.get("reason") != "ExitedWithCode"
            or not match
            or (involved.get("kind"), involved.get("name")) != (kind.kind, name)
        ):
            continue  # a server that ignored the selector still gives the right answer
        at = parse_time(event.get("lastTimestamp") or event.get("eventTime"))
        stamp = at.isoformat() if at else ""
        if match["pod"] not in found or found[match["pod"]][0] <= stamp:
            found[match["pod"]] = (stamp, int(match["code"]))
    return {pod: code for pod, (_, code) in found.items()}


def pod_report(
    cluster: Cluster, kind: JobKind, pod: Mapping[str, Any], exits: Mapping[str, int], suspend_code: int
) -> PodReport:
    """What ``status`` shows of ``pod``: phase, restarts, last exit and what it means, and the
    progress in the tails of its current and previous container's logs."""
    name = pod["metadata"]["name"]
    container = podinfo.log_container(kind, pod)
    status = podinfo.container_status(pod, container)
    code = podinfo.last_exit_code(pod, container)
    replaced = code is None and name in exits
    if replaced:
        code = exits[name]
    restarts = int(status.get("restartCount") or 0)
    found, error = None, ""
    state = status.get("state") or {}
    if state.get("running") or state.get("terminated"):
        try:
            found = progress(_tails(cluster, name, container, previous=restarts > 0))
        except ClusterError as exc:
            error = str(exc)
    return PodReport(
        replica=kind.replica_name(pod),
        name=name,
        phase=podinfo.pod_phase(pod),
        restarts=restarts,
        exit_code=code,
        exit_meaning=podinfo.exit_meaning(code, suspend_code) if code is not None else "",
        exit_of_replaced_pod=replaced,
        progress=found,
        log_error=error,
    )


def _tails(cluster: Cluster, pod: str, container: str, previous: bool) -> list:
    """The previous container's log tail (when there was one), then the current one's."""
    lines = []
    if previous:
        try:
            lines += split_lines(_tail(cluster, pod, container, previous=True), timestamps=False)
        except ClusterError:
            pass  # the kubelet keeps one previous log; it may be gone (a new node)
    return lines + split_lines(_tail(cluster, pod, container, previous=False), timestamps=False)


def _tail(cluster: Cluster, pod: str, container: str, previous: bool) -> str:
    return read_log(cluster, pod, container, previous=previous, tail_lines=TAIL_LINES, limit_bytes=TAIL_BYTES)
