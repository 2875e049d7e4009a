"""A job run's timeline: the events a local run (or a watcher of a cluster job) records.

One module so that every tool that tells a job's story -- ``run-local``, the demo, ``hfai-runtime
job`` -- writes, reads and prints the same :class:`Event` the same way. Events are stored as JSON
lines (:func:`write_events` / :func:`read_events`) and printed with :func:`format_timeline`.

Layer: none below it; imports only the standard library and hfai_runtime.atomic.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path

from hfai_runtime.atomic import atomic_write


class EventKind(str, Enum):
    """What happened (``Event.value`` in brackets)."""

    STARTED = "started"  # a pod's container started (attempt N)
    PREEMPTED = "preempted"  # its node was preempted: SIGTERM, SIGKILL after the grace period
    SUSPENDED = "suspended"  # the job was suspended: every pod is deleted
    RESUMED = "resumed"  # the job was resumed (or admitted): every pod is created again
    KILLED = "killed"  # SIGKILL after the grace period
    EXITED = "exited"  # the container exited (exit code)
    NEXT_CONTAINER = "next"  # an init container exited 0: the pod's next container starts (step)
    RESTARTING = "restarting"  # the kubelet restarts it in place, or the operator recreates it
    TRAINS_FROM = "trains_from"  # training (re)starts (first iteration of this attempt)
    STOPPED_AT = "stopped_at"  # a suspended run stopped (last iteration trained)
    STOPPING = "stopping"  # the job finished; the pod is deleted (or left, by cleanPodPolicy)
    FINISHED = "finished"  # the job's final condition; ``detail`` = condition (reason): message


class JobCondition(str, Enum):
    """A job's final condition type, as ``kubectl describe`` shows it."""

    SUCCEEDED = "Succeeded"  # PyTorchJob (kubeflow.org/v1)
    COMPLETE = "Complete"  # TrainJob (copied from the JobSet's Completed condition)
    FAILED = "Failed"


@dataclass(frozen=True)
class Event:
    """One step of the run, ``time`` seconds after it started. ``replica`` (the pod name's suffix,
    e.g. ``worker-0``) is empty for job-level events."""

    time: float
    replica: str
    kind: EventKind
    detail: str
    value: int | None = None

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "kind": self.kind.value})

    @classmethod
    def from_json(cls, line: str) -> Event:
        data = json.loads(line)
        return cls(
            float(data["time"]),
            str(data["replica"]),
            EventKind(data["kind"]),
            str(data["detail"]),
            data.get("value"),
        )


def write_events(path: str | Path, events: Iterable[Event]) -> None:
    """Write ``events`` as JSON lines, atomically (a temp file renamed into place)."""
    text = "".join(event.to_json() + "\n" for event in events).encode()
    atomic_write(path, lambda f: f.write(text))


def read_events(path: str | Path) -> list[Event]:
    """The events :func:`write_events` wrote."""
    return [Event.from_json(line) for line in Path(path).read_text().splitlines() if line]


def format_event(event: Event, width: int = 10, columns: int | None = None) -> str:
    """One timeline entry: ``  12.30s  worker-0   preempted    SIGTERM ...``. With ``columns``,
    a long detail wraps onto lines indented under the detail's column, each at most ``columns``
    characters, so the whole detail shows (one word longer than a line is cut there only)."""
    head = f"  {event.time:8.2f}s  {event.replica or 'job':<{width}} {event.kind.value:<12} "
    line = head + event.detail
    room = (columns or 0) - len(head)
    if columns is None or len(line) <= columns or room < 20:  # too narrow to wrap usefully: as is
        return line
    pieces = textwrap.wrap(event.detail, room, break_long_words=True, break_on_hyphens=False)
    return ("\n" + " " * len(head)).join([head + pieces[0], *pieces[1:]])


def format_timeline(events: Iterable[Event], columns: int | None = None) -> list[str]:
    """Every event as :func:`format_event` entries, pod names aligned, wrapped at ``columns``
    characters when given."""
    events = list(events)
    width = max([len(e.replica) for e in events] + [3])
    return [format_event(e, width, columns) for e in events]


@dataclass
class Attempt:
    """One run of one pod, as its events tell it."""

    replica: str
    number: int
    first_iteration: int | None = None  # where training (re)started
    stopped_at: int | None = None  # the last iteration of a suspended run
    exit_code: int | None = None
    preempted: bool = False


def attempts(events: Iterable[Event]) -> list[Attempt]:
    """Every pod attempt, in the order they started."""
    out: list[Attempt] = []
    current: dict[str, Attempt] = {}
    for event in events:
        if event.kind == EventKind.STARTED:
            current[event.replica] = Attempt(event.replica, event.value or 1)
            out.append(current[event.replica])
            continue
        attempt = current.get(event.replica)
        if attempt is None:
            continue
        if event.kind == EventKind.TRAINS_FROM:
            attempt.first_iteration = event.value
        elif event.kind == EventKind.STOPPED_AT:
            attempt.stopped_at = event.value
        elif event.kind == EventKind.EXITED:
            attempt.exit_code = event.value
        elif event.kind == EventKind.PREEMPTED and "nothing to preempt" not in event.detail:
            attempt.preempted = True
    return out


def summarize(events: Iterable[Event]) -> list[str]:
    """What happened to each pod attempt, in plain words (one line each)."""
    return [f"{a.replica} attempt {a.number}: {_attempt_words(a)}" for a in attempts(events)]


def _attempt_words(a: Attempt) -> str:
    words = ["preempted"] if a.preempted else []
    if a.first_iteration is not None:
        words.append(
            f"resumed at iteration {a.first_iteration}" if a.first_iteration else "trained from iteration 0"
        )
    if a.stopped_at is not None:
        words.append(f"stopped after iteration {a.stopped_at}")
    words.append("still running" if a.exit_code is None else f"exit code {a.exit_code}")
    return ", ".join(words)
