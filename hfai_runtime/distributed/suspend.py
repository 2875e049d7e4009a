"""Preemption: SIGTERM sets a flag; the ranks agree on it once per step.

Kubernetes preempts a pod with SIGTERM, then SIGKILL after the grace period. The handler only
records that the signal came (nothing heavy may run in a signal handler); after each step the
ranks all-reduce one integer, so that a signal that reached any one rank stops every rank after
the same iteration. From 16 ranks on, :class:`StepAgreement` starts that all-reduce after step
i and reads it after step i + 1, so no rank waits for it (its cost grows with the number of
ranks); the price is one more step between the signal and the checkpoint.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from hfai_runtime.distributed._compat import dataloader_workers_leave_process_group

logger = logging.getLogger(__name__)

#: Exit code of a suspended job when ``HFAI_SUSPEND_EXIT_CODE`` is not set: 128 + SIGTERM,
#: which PyTorchJob's ``restartPolicy: ExitCode`` retries (codes >= 128 are retryable).
DEFAULT_SUSPEND_EXIT_CODE = 143


class _Flag:
    """Set from the signal handler; a plain attribute write is all a handler may safely do."""

    requested_at: float | None = None


_flag = _Flag()


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


class _SuspendOnSigterm:
    """The SIGTERM handler: set the suspend flag, then call the Python handler it replaced, as
    Lightning composes handlers (lightning/pytorch/trainer/connectors/signal_connector.py@2.6.6,
    ``_HandlersCompose``): a handler a user or a library installed first still runs."""

    def __init__(self, previous: Any) -> None:
        self.previous = previous

    def __call__(self, signum: int, frame: Any) -> None:
        request_suspend(signum, frame)
        if callable(self.previous):
            self.previous(signum, frame)


def _keep() -> None:
    """What :func:`install_sigterm_handler` returns when it installed nothing."""


def install_sigterm_handler() -> Callable[[], None]:
    """Make SIGTERM set the suspend flag in this process, and return a function that puts the
    replaced handler back (call it after training; it leaves a handler installed since alone).

    The handler that was installed keeps running after the flag is set (:class:`_SuspendOnSigterm`).
    Idempotent: when this process's handler already sets the flag, nothing changes. Signal
    handlers belong to the main thread: called from another, it only logs a warning. DataLoader
    workers forked from here on are shielded from process-group signals
    (:func:`~hfai_runtime.distributed._compat.dataloader_workers_leave_process_group`).
    """
    dataloader_workers_leave_process_group()
    if threading.current_thread() is not threading.main_thread():
        logger.warning(
            "SIGTERM handler not installed: %s is not the main thread, which alone "
            "may install one; SIGTERM will not suspend this process",
            threading.current_thread().name,
        )
        return _keep
    previous = signal.getsignal(signal.SIGTERM)
    if isinstance(previous, _SuspendOnSigterm):
        return _keep
    handler = _SuspendOnSigterm(previous)
    signal.signal(signal.SIGTERM, handler)

    def restore() -> None:
        if signal.getsignal(signal.SIGTERM) is handler:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)

    return restore


@dataclass
class _AgreementChannel:
    """What the agreement keeps between steps, made on first use and dropped by
    :func:`release_agreement_group`: its gloo group, the all-reduce's options, and the one-int
    buffer :func:`agree` reuses."""

    group: dist.ProcessGroup | None = None
    options: dist.AllreduceOptions | None = None
    flag: torch.Tensor | None = None

    def process_group(self) -> dist.ProcessGroup:
        """A gloo group of every rank, made on first use (a collective: every rank gets here at
        the same step). Its own group: on GPUs it costs no device sync, and its one-int
        all-reduces never queue behind the gradients' on the world group."""
        if self.group is None:
            self.group = dist.new_group(backend="gloo")
        return self.group

    def allreduce_options(self) -> dist.AllreduceOptions:
        """MAX, asynchronous where torch has the option (>= 2.7; before it a group's ops are all
        async)."""
        if self.options is None:
            options = dist.AllreduceOptions()
            options.reduceOp = dist.ReduceOp.MAX
            if hasattr(options, "asyncOp"):
                options.asyncOp = True
            self.options = options
        return self.options

    def buffer(self) -> torch.Tensor:
        """:func:`agree`'s one-int buffer, reused from call to call."""
        if self.flag is None:
            self.flag = torch.zeros(1, dtype=torch.int32)
        return self.flag


_channel = _AgreementChannel()


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _start(local: bool, flag: torch.Tensor) -> dist.Work:
    """Start all-reducing (MAX) ``local`` into ``flag``, a one-int buffer reused from call to call.

    The group's own ``allreduce`` is called, as ``dist.all_reduce`` does after its argument
    checks (torch/distributed/distributed_c10d.py@v2.14.1): for one int those checks cost more
    than the collective, every step, and creating a tensor more than filling one.
    """
    flag.fill_(int(local))
    return _channel.process_group().allreduce([flag], _channel.allreduce_options())


def agree(local: bool | None = None) -> bool:
    """True on every rank if any rank requested a suspend. A collective: all ranks call it.

    Blocking: one int is all-reduced (MAX) over a gloo group. Without an initialized process
    group (a single process) it is just the local flag.
    """
    local = suspend_requested() if local is None else local
    if not _distributed():
        return local
    flag = _channel.buffer()
    _start(local, flag).wait()
    return bool(flag.item())


#: From how many ranks on the per-step agreement overlaps the next step (0: never).
OVERLAP_FROM = "HFAI_SUSPEND_OVERLAP_FROM"
#: Below it a blocking agreement costs 2 (P - 1) network hops, well under a millisecond (gloo's
#: ring, bench/suspend.py), and stops the ranks one step sooner.
DEFAULT_OVERLAP_FROM = 16


def overlap_from(environ: Mapping[str, str] | None = None) -> int:
    """``HFAI_SUSPEND_OVERLAP_FROM``: a number of ranks, default 16; 0 never overlaps."""
    return whole_number_setting(
        OVERLAP_FROM, DEFAULT_OVERLAP_FROM, 1 << 20, "ranks", "never overlap", environ
    )


def whole_number_setting(
    name: str, default: int, maximum: int, unit: str, zero: str, environ: Mapping[str, str] | None = None
) -> int:
    """The environment variable ``name`` as a number of ``unit`` from 0 to ``maximum`` in ASCII
    digits (``zero`` says what 0 means), ``default`` when unset or empty; anything else is a
    ``ValueError`` naming the variable."""
    env = os.environ if environ is None else environ
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()) or int(raw) > maximum:
        raise ValueError(
            f"environment variable {name}={raw!r}: expected a number of {unit} (0 to {maximum}; 0: {zero})"
        )
    return int(raw)


class StepAgreement:
    """The per-step agreement. Every rank calls :meth:`after_step` after every step, with the same
    iteration; it returns True on every rank at the same one.

    Blocking, it all-reduces the flags after step i and waits: its cost grows with the number of
    ranks. From ``overlap_from`` ranks on (:func:`overlap_from`) it overlaps instead: after step
    i it reads the all-reduce started after step i - 1 (done by then: no rank waits) and starts
    the one for step i. A SIGTERM during step i then stops the ranks after step i + 1: up to two
    steps pass between the signal and the checkpoint (:attr:`steps_to_stop`). The first call of
    an attempt reads the flags at once; none is started after the last step, so that none is
    left in flight when training ends.
    """

    def __init__(self, overlap_from_ranks: int | None = None) -> None:
        self._overlap_from = overlap_from() if overlap_from_ranks is None else overlap_from_ranks
        self._flag = torch.zeros(1, dtype=torch.int32)
        self._pending: dist.Work | None = None
        self._started_after: int | None = None
        #: The iteration whose flags the last agreement read (the one it was started after).
        self.agreed_after: int | None = None

    @property
    def overlapped(self) -> bool:
        return _distributed() and 0 < self._overlap_from <= dist.get_world_size()

    @property
    def steps_to_stop(self) -> int:
        """How many steps may end between a SIGTERM and the stop: 2 when overlapped, else 1."""
        return 2 if self.overlapped else 1

    def after_step(self, iteration: int, *, last: bool = False) -> bool:
        """Whether every rank stops after ``iteration`` (a collective); ``last``: the last step."""
        if self._pending is None:
            stop, self.agreed_after = agree(), iteration
        else:
            self._pending.wait()
            stop, self.agreed_after = bool(self._flag.item()), self._started_after
        self._pending = None
        if not stop and not last and self.overlapped:
            self._pending, self._started_after = _start(suspend_requested(), self._flag), iteration
        return stop


def release_agreement_group() -> None:
    """Forget the group the agreement created. Called before the process groups are destroyed:
    a group still referenced keeps its threads, and a later job in this process needs a new one."""
    global _channel
    _channel = _AgreementChannel()


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
