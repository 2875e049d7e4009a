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
from collections.abc import Mapping
from typing import Any

from hfai_runtime.distributed.suspend import whole_number_setting
from hfai_runtime.records import RecordKind, format_record

logger = logging.getLogger(__name__)

#: Rank 0 reports its progress every this many iterations (``0``: never).
PROGRESS_EVERY = "HFAI_PROGRESS_EVERY"
DEFAULT_PROGRESS_EVERY = 20


def progress_every(environ: Mapping[str, str] | None = None) -> int:
    """``HFAI_PROGRESS_EVERY``: a whole number of iterations, default 20; 0 disables."""
    return whole_number_setting(
        PROGRESS_EVERY, DEFAULT_PROGRESS_EVERY, 10**9, "iterations", "no progress records", environ
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


def report_progress(trainer: Any, rank: int, every: int) -> None:
    """On rank 0, every ``every`` iterations and after the last one: a PROGRESS record."""
    done = trainer.iter + 1
    if rank != 0 or not every or (done % every and done != trainer.max_iter):
        return
    emit(RecordKind.PROGRESS, iteration=trainer.iter, max_iter=trainer.max_iter, loss=latest_loss(trainer))
