"""What ``run-local`` shows while a job runs: one live status line per pod.

The pods' own output goes to log files (see :mod:`.runner`); the terminal gets, per pod, its
attempt, the iteration reached out of the run's total, its speed (iterations per second) and
the time left at that speed, the last loss (rank 0's) and its state, redrawn in place by
``rich`` (on a terminal; elsewhere the final table is printed once). Every rank reports at
least every ``HFAI_PROGRESS_SECONDS`` (:mod:`hfai_runtime.detectron2.report`).
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console
from rich.live import Live
from rich.table import Table

from hfai_runtime.local.runner import RunObserver
from hfai_runtime.records import Record, RecordKind
from hfai_runtime.timeline import Event, EventKind

_STATES = {
    EventKind.STARTED: "running",
    EventKind.PREEMPTED: "preempted: stopping",
    EventKind.EXITED: "exited",
    EventKind.RESTARTING: "restarting",
    EventKind.KILLED: "killed",
    EventKind.STOPPING: "deleting",
}


@dataclass
class PodStatus:
    """One pod's line."""

    attempt: int = 0
    iteration: int | None = None
    max_iter: int | None = None
    loss: float | None = None
    it_per_s: float | None = None
    eta_s: float | None = None
    state: str = "pending"


class LiveStatus(RunObserver):
    """A live table of the pods; use as a context manager around the run."""

    def __init__(self, pods: list[str], console: Console | None = None):
        self.console = console or Console()
        self.pods = {name: PodStatus() for name in pods}
        self.live = Live(self._table(), console=self.console, refresh_per_second=4, transient=False)

    def __enter__(self) -> LiveStatus:
        self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.live.update(self._table())
        self.live.__exit__(*exc)

    def on_event(self, event: Event) -> None:
        if event.kind == EventKind.SUSPENDED:
            for status in self.pods.values():
                status.state = "suspended: stopping"
        elif event.replica in self.pods and event.kind in _STATES:
            status = self.pods[event.replica]
            status.state = _STATES[event.kind]
            if event.kind == EventKind.STARTED:
                status.attempt = event.value or status.attempt + 1
            elif event.kind == EventKind.EXITED:
                status.state = f"exited {event.value}"
        self.live.update(self._table())

    def on_record(self, replica: str, record: Record) -> None:
        status = self.pods.get(replica)
        if status is None or record.kind != RecordKind.PROGRESS:
            return
        status.iteration = record.iteration
        max_iter, loss = record.fields.get("max_iter"), record.fields.get("loss")
        status.max_iter = max_iter if isinstance(max_iter, int) else status.max_iter
        status.loss = float(loss) if isinstance(loss, (int, float)) else status.loss
        rate, eta = record.fields.get("it_per_s"), record.fields.get("eta_s")
        status.it_per_s = float(rate) if isinstance(rate, (int, float)) else None
        status.eta_s = float(eta) if isinstance(eta, (int, float)) else None
        self.live.update(self._table())

    def _table(self) -> Table:
        table = Table(box=None, pad_edge=False)
        for column in ("pod", "attempt", "iteration", "it/s", "ETA", "loss", "state"):
            table.add_column(column, justify="left" if column in ("pod", "iteration", "state") else "right")
        for name, s in self.pods.items():
            iteration = (
                "-"
                if s.iteration is None
                else (f"{s.iteration}" + (f" / {s.max_iter}" if s.max_iter else ""))
            )
            loss = "-" if s.loss is None else f"{s.loss:.4f}"
            rate = "-" if s.it_per_s is None else f"{s.it_per_s:.2f}"
            table.add_row(name, str(s.attempt or "-"), iteration, rate, _duration(s.eta_s), loss, s.state)
        return table


def _duration(seconds: float | None) -> str:
    """``1:02:03`` / ``2:03`` for a time left; ``-`` when unknown."""
    if seconds is None:
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
