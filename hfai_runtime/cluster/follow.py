"""``hfai-runtime job logs --follow``: every pod's log as it is written, pods the operator
recreates included, until the job has ended.

One thread per pod follows its stream (:func:`~hfai_runtime.cluster.logs.pump`); the caller's
thread polls the job and its pods every :data:`POLL_SECONDS` (each request within the cluster's
timeouts) and starts a thread for each new pod. A followed stream has no read timeout -- a
training log may be quiet for minutes -- so once the job has ended, the streams get
:data:`DRAIN_SECONDS` to end on their own; one that does not (a server that keeps it open) is
left behind with a line saying so, and the command ends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from hfai_runtime.cluster import pods as podinfo
from hfai_runtime.cluster.api import Cluster
from hfai_runtime.cluster.jobs import get_job
from hfai_runtime.cluster.logs import Printer, pump
from hfai_runtime.cluster.timeline import final_condition
from hfai_runtime.kube.kinds import JobKind

POLL_SECONDS = 2.0
DRAIN_SECONDS = 30.0


def follow_job(
    cluster: Cluster,
    kind: JobKind,
    job: Mapping[str, Any],
    pods: list[dict],
    write: Callable[[str], None],
    poll_seconds: float = POLL_SECONDS,
    drain_seconds: float = DRAIN_SECONDS,
) -> tuple[int, list[str]]:
    """Follow the job's pods (``pods``: as just listed) until it has ended and every log is
    read, or ``drain_seconds`` after it ended; the number of pods followed and the errors (one
    line each), for the caller to print."""
    name = job["metadata"]["name"]
    printer = Printer({kind.replica_name(p) for p in pods} or {kind.container}, write)
    followed: dict[str, threading.Thread] = {}
    errors: list[str] = []
    ended_at: float | None = None
    while True:
        for pod in pods:
            _start(cluster, kind, pod, printer, errors, followed)
        _wait(followed.values(), poll_seconds)
        running = [uid for uid, thread in followed.items() if thread.is_alive()]
        if ended_at is None and final_condition(kind, job):
            ended_at = time.monotonic()
        if ended_at is not None and (not running or time.monotonic() - ended_at >= drain_seconds):
            errors += [
                f"the log of pod {followed[uid].name} was still open {drain_seconds:g} s after the job "
                "ended; stopped following it"
                for uid in running
            ]
            return len(followed), errors
        job = get_job(cluster, kind, name)
        pods = podinfo.list_pods(cluster, kind, name)


def _start(
    cluster: Cluster,
    kind: JobKind,
    pod: Mapping[str, Any],
    printer: Printer,
    errors: list[str],
    followed: dict[str, threading.Thread],
) -> None:
    """A thread following ``pod``'s log, once its container has started."""
    uid = pod["metadata"]["uid"]
    container = podinfo.log_container(kind, pod)
    state = podinfo.container_status(pod, container).get("state")
    if uid in followed or not state or "waiting" in state:
        return
    thread = threading.Thread(
        target=pump,
        args=(cluster, pod, container, kind.replica_name(pod), printer, errors),
        name=pod["metadata"]["name"],
        daemon=True,
    )
    thread.start()
    followed[uid] = thread


def _wait(threads: Iterable[threading.Thread], seconds: float) -> None:
    """Wait ``seconds``, or less when the threads still running all end sooner."""
    running = [thread for thread in threads if thread.is_alive()]
    if not running:
        time.sleep(seconds)
        return
    deadline = time.monotonic() + seconds
    for thread in running:
        thread.join(max(0.0, deadline - time.monotonic()))
