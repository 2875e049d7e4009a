"""Preemption: SIGTERM sets a flag; the ranks agree on it once per step.

Kubernetes preempts a pod with SIGTERM, then SIGKILL after the grace period. The handler only
records that the signal came (nothing heavy may run in a signal handler); the training loop
calls :func:`agree` after each step, a one-integer all-reduce, so that a signal that reached any
one rank stops every rank after the same iteration.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Mapping

import torch
import torch.distributed as dist

#: Exit code of a suspended job when ``HFAI_SUSPEND_EXIT_CODE`` is not set: 128 + SIGTERM,
#: which PyTorchJob's ``restartPolicy: ExitCode`` retries (codes >= 128 are retryable).
DEFAULT_SUSPEND_EXIT_CODE = 143


class _Flag:
    """Set from the signal handler; a plain attribute write is all a handler may safely do."""

    requested_at: float | None = None


_flag = _Flag()
_agreement: dict = {}  # the gloo group and its one-int buffer, created on first use


def request_suspend(signum: int | None = None, frame=None) -> None:
    """Mark a suspend as pending (the SIGTERM handler; also callable directly)."""
    if _flag.requested_at is None:
        _flag.requested_at = time.monotonic()


def suspend_requested() -> bool:
    """Whether this process has received SIGTERM. Local: other ranks may not know yet.

    Long loops outside the training step (an evaluation) can poll it to return early; the
    ranks still agree at the next step boundary.
    """
    return _flag.requested_at is not None


def requested_at() -> float | None:
    """``time.monotonic()`` when the suspend was requested here, or None."""
    return _flag.requested_at


def install_sigterm_handler() -> None:
    """Make SIGTERM set the suspend flag in this process (main thread only; idempotent).

    DataLoader workers forked from here on are shielded from process-group signals (below).
    """
    signal.signal(signal.SIGTERM, request_suspend)
    _dataloader_workers_leave_process_group()


def _dataloader_workers_leave_process_group() -> None:
    """torch's DataLoader workers die on SIGTERM (a C handler reports it, then re-raises), so a
    SIGTERM sent to the whole process group (``kill -- -PGID``, ``tini -g``, a terminal) would
    crash an evaluation or the training loader. Workers forked from here on first move to a
    process group of their own: only their parent signals them then -- and it still stops them
    with SIGTERM when it exits. (Ignoring SIGTERM instead would hang that exit.)"""
    from torch.utils.data._utils import signal_handling

    original = signal_handling._set_worker_signal_handlers
    if getattr(original, "leaves_process_group", False):
        return

    def set_worker_signal_handlers(*args):
        os.setpgid(0, 0)
        original(*args)

    set_worker_signal_handlers.leaves_process_group = True
    signal_handling._set_worker_signal_handlers = set_worker_signal_handlers


def agree(local: bool | None = None) -> bool:
    """True on every rank if any rank requested a suspend. A collective: all ranks call it.

    One int is all-reduced (MAX) over a gloo group, so on GPUs it costs no device sync. Without
    an initialized process group (a single process) it is just the local flag.
    """
    local = suspend_requested() if local is None else local
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    if not _agreement:
        group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
        _agreement.update(group=group, buffer=torch.zeros(1, dtype=torch.int32))
    buffer = _agreement["buffer"]
    buffer.fill_(int(local))
    dist.all_reduce(buffer, op=dist.ReduceOp.MAX, group=_agreement["group"])
    return bool(buffer.item())


def release_agreement_group() -> None:
    """Forget the group :func:`agree` created. Called before the process groups are destroyed:
    a group still referenced keeps its threads, and a later job in this process needs a new one."""
    _agreement.clear()


def barrier() -> None:
    """Wait for every rank, over the same gloo group as :func:`agree` (no device sync)."""
    agree(False)


def suspend_exit_code(environ: Mapping[str, str] | None = None) -> int:
    """``HFAI_SUSPEND_EXIT_CODE`` (1-255), default 143."""
    env = os.environ if environ is None else environ
    raw = env.get("HFAI_SUSPEND_EXIT_CODE", "").strip()
    if not raw:
        return DEFAULT_SUSPEND_EXIT_CODE
    if not raw.isdigit() or not 1 <= int(raw) <= 255:
        raise ValueError(f"environment variable HFAI_SUSPEND_EXIT_CODE={raw!r}: expected an integer 1-255")
    return int(raw)


def grace_period_seconds(environ: Mapping[str, str] | None = None) -> float | None:
    """``HFAI_GRACE_PERIOD_SECONDS`` (the pod's terminationGracePeriodSeconds), or None."""
    env = os.environ if environ is None else environ
    raw = env.get("HFAI_GRACE_PERIOD_SECONDS", "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(
            f"environment variable HFAI_GRACE_PERIOD_SECONDS={raw!r}: expected a positive number"
        )
    return value


class JobSuspended(SystemExit):
    """Raised on every rank once the suspend checkpoint is written, to leave the training loop.

    It derives from ``SystemExit`` on purpose: detectron2's loop logs and re-raises only
    ``Exception`` (so no "Exception during training" traceback), its ``finally`` still runs the
    hooks' ``after_train`` (writers flush), and whatever launched the process -- our launcher,
    detectron2's ``launch``, torchrun, a bare ``python`` -- it exits with the suspend code.
    """

    def __init__(self, iteration: int, code: int | None = None):
        super().__init__(suspend_exit_code() if code is None else code)
        self.iteration = iteration
