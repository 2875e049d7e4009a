"""The structured records a training process writes into its pod's log.

:class:`~hfai_runtime.detectron2.checkpoint.SuspendCheckpointer` reports through these: when
training (re)starts, its progress, and where it suspended -- each as one
:mod:`hfai_runtime.records` line beside the human message, so that the local runner, the job
CLI and the benchmarks read facts, not sentences. The lines go through the ``hfai_runtime``
logger, which prints on every rank's stdout (the pod log).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from hfai_runtime.distributed.suspend import whole_number_setting
from hfai_runtime.records import RecordKind, format_record

logger = logging.getLogger(__name__)

#: Every rank reports its progress every this many iterations (``0``: never) ...
PROGRESS_EVERY = "HFAI_PROGRESS_EVERY"
DEFAULT_PROGRESS_EVERY = 20
#: ... or when this many seconds passed since its last report, whichever comes first, so a
#: slow run's live status moves too (``0``: by iterations only).
PROGRESS_SECONDS = "HFAI_PROGRESS_SECONDS"
DEFAULT_PROGRESS_SECONDS = 10


def progress_every(environ: Mapping[str, str] | None = None) -> int:
    """``HFAI_PROGRESS_EVERY``: a whole number of iterations, default 20; 0 disables."""
    return whole_number_setting(
        PROGRESS_EVERY, DEFAULT_PROGRESS_EVERY, 10**9, "iterations", "no progress records", environ
    )


def progress_seconds(environ: Mapping[str, str] | None = None) -> int:
    """``HFAI_PROGRESS_SECONDS``: a whole number of seconds, default 10; 0: by iterations only."""
    return whole_number_setting(
        PROGRESS_SECONDS, DEFAULT_PROGRESS_SECONDS, 10**6, "seconds", "progress by iterations only", environ
    )


def emit(kind: RecordKind, **fields: Any) -> None:
    """Write one record into this process's log."""
    logger.info(format_record(kind, **fields))


def latest_loss(trainer: Any) -> float | None:
    """The total loss detectron2 stored for the current iteration (rank 0 stores it), if any."""
    latest = trainer.storage.latest().get("total_loss")
    if latest is None or latest[1] != trainer.iter or not math.isfinite(latest[0]):
        return None
    return float(latest[0])


class ProgressReporter:
    """Writes a rank's PROGRESS records: after its first step, every ``every`` iterations, when
    ``seconds`` passed since the last one, and after the last iteration. Each carries the rank,
    the iteration, the schedule's length, the rate since the previous record (``it_per_s``) and
    the time left at that rate (``eta_s``); rank 0's also the loss. ``every == 0`` disables it;
    ``clock`` (seconds, monotonic) is injectable for tests."""

    def __init__(self, rank: int, every: int, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.rank, self.every, self.seconds, self.clock = rank, every, seconds, clock
        self._last: tuple[float, int] | None = None  # (time, iterations done) of the last record
        self._first = False

    def start(self, start_iter: int) -> None:
        """Training (re)starts at ``start_iter``: rates count from now; its first step reports."""
        self._last = (self.clock(), start_iter)
        self._first = True

    def after_step(self, trainer: Any) -> None:
        if not self.every or self._last is None:
            return
        done, now = trainer.iter + 1, self.clock()
        last_time, last_done = self._last
        due = (
            self._first
            or done % self.every == 0
            or done == trainer.max_iter
            or (self.seconds and now - last_time >= self.seconds)
        )
        if not due:
            return
        self._first = False
        elapsed = now - last_time
        rate = (done - last_done) / elapsed if elapsed > 0 and done > last_done else None
        eta = (trainer.max_iter - done) / rate if rate else None
        self._last = (now, done)
        loss = latest_loss(trainer) if self.rank == 0 else None
        emit(
            RecordKind.PROGRESS,
            iteration=trainer.iter,
            max_iter=trainer.max_iter,
            rank=self.rank,
            loss=loss,
            it_per_s=None if rate is None else round(rate, 4),
            eta_s=None if eta is None else round(eta, 1),
        )
