"""Pod logs: reading and following them, and the runtime's structured records in them.

Progress and suspend points are read only from :mod:`hfai_runtime.records` lines, never from
human sentences. Logs are requested with ``timestamps=true`` where the time matters: the
kubelet then prefixes each line with its RFC 3339 time (nanoseconds), which places a record on
the timeline.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hfai_runtime.cluster.api import Cluster, ClusterError
from hfai_runtime.records import Record, RecordKind, parse_record

#: How long a followed log may stay silent before its stream counts as broken.
FOLLOW_IDLE_SECONDS = 24 * 3600.0
_FRACTION = re.compile(r"\.(\d{1,6})\d*")


def parse_time(text: str | None) -> datetime | None:
    """An RFC 3339 time as the API server writes it (``Z``, up to nanoseconds), or ``None``."""
    if not text:
        return None
    text = _FRACTION.sub(lambda m: "." + m.group(1).ljust(6, "0"), text.replace("Z", "+00:00"))
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class LogLine:
    """One line of a pod's log and, when logs were read with timestamps, its time."""

    time: datetime | None
    text: str


def split_lines(log: str, timestamps: bool) -> list[LogLine]:
    lines = []
    for raw in log.splitlines():
        stamp, _, rest = raw.partition(" ") if timestamps else ("", "", raw)
        time = parse_time(stamp) if timestamps else None
        lines.append(LogLine(time, rest if time else raw))
    return lines


def read_log(
    cluster: Cluster,
    pod: str,
    container: str,
    previous: bool = False,
    timestamps: bool = False,
    tail_lines: int | None = None,
    limit_bytes: int | None = None,
) -> str:
    """The log of ``container`` in ``pod`` (``previous``: of its previous run); with
    ``tail_lines`` only its last lines, with ``limit_bytes`` at most that many bytes of them (the
    kubelet applies both: a days-long log is not downloaded to read where training is)."""
    what = f"read the {'previous ' if previous else ''}log of pod {pod}"
    bounds = {"tail_lines": tail_lines, "limit_bytes": limit_bytes}
    params = {name: value for name, value in bounds.items() if value is not None}
    data = cluster.body(
        what, _log_call(cluster, pod, container, previous=previous, timestamps=timestamps, **params)
    )
    return data.decode("utf-8", "replace")


def follow_log(cluster: Cluster, pod: str, container: str) -> Iterator[str]:
    """The log's lines as the kubelet writes them, until the container ends.

    The request has the cluster's connect timeout but a read timeout of
    :data:`FOLLOW_IDLE_SECONDS`: a training log may be quiet for long (a slow evaluation). A
    stream that never ends is the caller's to stop waiting for (:mod:`.follow`).
    """
    what = f"follow the log of pod {pod}"
    timeouts = (cluster.timeouts()[0], FOLLOW_IDLE_SECONDS)
    response = cluster.call(
        what,
        _log_call(cluster, pod, container, follow=True, _preload_content=False, _request_timeout=timeouts),
    )
    try:
        with cluster.errors(f"{what}: the stream broke"):
            for raw in response:
                yield raw.decode("utf-8", "replace").rstrip("\r\n")
    finally:
        response.release_conn()


def _log_call(cluster: Cluster, pod: str, container: str, **params: Any) -> Callable[..., Any]:
    """``GET .../pods/<pod>/log?container=...&<params>``, for :meth:`Cluster.call` or
    :meth:`Cluster.body` to make."""
    return functools.partial(
        cluster.core().read_namespaced_pod_log, pod, cluster.namespace, container=container, **params
    )


def records(lines: Iterable[LogLine]) -> Iterator[tuple[datetime | None, Record]]:
    for line in lines:
        record = parse_record(line.text)
        if record is not None:
            yield line.time, record


@dataclass(frozen=True)
class Progress:
    """What one pod's log says about training: the iteration each rank last reported and the
    last checkpoint a suspend wrote."""

    iterations: dict[int | None, int]  # rank (None when the record has none) -> iteration
    max_iter: int | None
    checkpoint: str | None
    checkpoint_iteration: int | None


def progress(lines: Iterable[LogLine]) -> Progress:
    iterations: dict[int | None, int] = {}
    max_iter = checkpoint = checkpoint_iteration = None
    for _, record in records(lines):
        if record.iteration is None:
            continue
        iterations[record.fields.get("rank")] = record.iteration
        max_iter = record.fields.get("max_iter", max_iter)
        if record.kind is RecordKind.SUSPENDED and record.fields.get("checkpoint"):
            checkpoint, checkpoint_iteration = record.fields["checkpoint"], record.iteration
    return Progress(iterations, max_iter, checkpoint, checkpoint_iteration)


class Printer:
    """Writes lines prefixed like run-local (``[master-0] line``) from several threads."""

    def __init__(self, names: Iterable[str], write: Callable[[str], None]):
        self.width = max((len(n) for n in names), default=0)
        self.write = write
        self._lock = threading.Lock()

    def line(self, name: str, text: str) -> None:
        with self._lock:
            self.write(f"[{name:<{self.width}}] {text}")


def pump(
    cluster: Cluster, pod: Mapping[str, Any], container: str, name: str, printer: Printer, errors: list[str]
) -> None:
    """Follow one pod's log into ``printer``; an error ends it and is kept in ``errors``."""
    try:
        for text in follow_log(cluster, pod["metadata"]["name"], container):
            printer.line(name, text)
    except ClusterError as exc:
        errors.append(str(exc))
