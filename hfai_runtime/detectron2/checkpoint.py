"""``SuspendCheckpointer``: SIGTERM -> every rank stops after the same step -> atomic checkpoint
-> exit 143, and ``resume_or_load(resume=True)`` continues exactly.

HFAI's usage is all a user writes::

    trainer.register_hooks([SuspendCheckpointer(trainer.checkpointer)])
    trainer.resume_or_load(resume=True)
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from detectron2.engine import HookBase
from detectron2.utils import comm
from fvcore.common.checkpoint import Checkpointer

from hfai_runtime.detectron2 import report
from hfai_runtime.detectron2.atomic_checkpointer import make_saves_atomic
from hfai_runtime.detectron2.logs import log_to_stdout
from hfai_runtime.detectron2.resume import ExactResume
from hfai_runtime.distributed.restarts import End, Limits, RestartGuard, RestartLimitReached
from hfai_runtime.distributed.suspend import (
    JobSuspended,
    StepAgreement,
    barrier,
    grace_period_seconds,
    install_sigterm_handler,
    requested_at,
    suspend_exit_code,
    suspend_requested,
)
from hfai_runtime.records import RecordKind
from hfai_runtime.startup import Mark, mark, marks

logger = logging.getLogger(__name__)

#: Warn when the last step plus the save took more than this share of the grace period: the
#: pod is killed at the end of it, and exiting, logging and a slow disk need some slack too.
GRACE_WARN_FRACTION = 0.75


class SuspendCheckpointer(HookBase):
    """Turns SIGTERM into a checkpoint and exit code 143 (``HFAI_SUSPEND_EXIT_CODE``).

    What it changes outside itself, and when:

    * Construction: the checkpointer it is given gets atomic saves and a resume that survives a
      damaged ``OUTPUT_DIR`` (:func:`~hfai_runtime.detectron2.atomic_checkpointer.make_saves_atomic`:
      it behaves as an :class:`~hfai_runtime.detectron2.atomic_checkpointer.AtomicCheckpointer`).
      This is why it is made before ``resume_or_load``; nothing else changes then.
    * ``before_train`` (after ``resume_or_load``): the runtime's messages go to this rank's
      stdout unless its logger was set up already
      (:func:`~hfai_runtime.detectron2.logs.log_to_stdout`); SIGTERM now only sets a flag, and
      then calls the handler it replaced
      (:func:`~hfai_runtime.distributed.suspend.install_sigterm_handler`; under
      ``launch_from_env``, which did both when the worker started, neither changes anything);
      exact resume -- the data stream continues where the checkpoint left it (see
      :mod:`hfai_runtime.detectron2.resume`); rank 0 records the start in ``OUTPUT_DIR`` and
      every rank exits 1 when it is past the job's restart limits
      (:class:`~hfai_runtime.distributed.restarts.RestartGuard`).
    * ``after_train``: the SIGTERM handler found at ``before_train`` is put back; it and a
      suspend record how the start ended.
    * ``before_step``: reseed the RNGs from (seed, rank, iteration).
    * ``after_step``: the ranks agree on the flag (one all-reduced int; from 16 ranks on it
      overlaps the next step, see :class:`StepAgreement`); every rank writes a PROGRESS record
      after its first step, every ``HFAI_PROGRESS_EVERY`` steps or ``HFAI_PROGRESS_SECONDS``
      seconds, and after the last (:class:`~hfai_runtime.detectron2.report.ProgressReporter`). If any rank was signalled, rank 0 saves ``model_<iter>.pth`` + ``last_checkpoint``, all ranks wait for the
      save and leave the loop by raising :class:`JobSuspended` (a ``SystemExit`` with the suspend
      code: detectron2 still runs ``after_train``).

    Being the last hook, it runs after an evaluation of the same step: a SIGTERM during
    evaluation suspends once it is done. Long loops can call :meth:`suspend_pending` to stop
    early. Register it before ``resume_or_load`` (HFAI's order): its state -- the data stream's
    seed, and the optimizer that detectron2 0.6 does not save -- is loaded from the checkpoint
    through it. With ``exact_resume=False`` the data stream restarts from its seed on resume.
    """

    #: Rank 0's record of this start, from ``before_train`` until its end is recorded.
    _restarts: RestartGuard | None = None

    def __init__(self, checkpointer: Checkpointer, *, exact_resume: bool = True):
        self.checkpointer = checkpointer
        make_saves_atomic(checkpointer)
        self._restore_sigterm: Callable[[], None] | None = None  # set by before_train
        self._resume = ExactResume() if exact_resume else None
        self._exit_code = suspend_exit_code()
        self._grace_s = grace_period_seconds()
        self._step_began = time.perf_counter()
        self._first_step = True
        mark(Mark.TRAINER_BUILT)

    @staticmethod
    def suspend_pending() -> bool:
        """Whether this process received SIGTERM (the ranks agree at the next step)."""
        return suspend_requested()

    def before_train(self) -> None:
        mark(Mark.CHECKPOINT_LOADED)
        log_to_stdout(comm.get_rank())
        # Put back after training whatever SIGTERM handler was there (a no-op under
        # launch_from_env, which installed the handler first and restores it itself).
        self._restore_sigterm = install_sigterm_handler()
        if self._resume is not None:
            self._resume.attach(self.trainer)
        mark(Mark.REPLAYED)
        self._guard_restarts()
        self._agreement = StepAgreement()
        self._progress = report.ProgressReporter(
            comm.get_rank(), report.progress_every(), report.progress_seconds()
        )
        self._progress.start(self.trainer.start_iter)
        report.emit(
            RecordKind.TRAINING_STARTED,
            iteration=self.trainer.start_iter,
            max_iter=self.trainer.max_iter,
            rank=comm.get_rank(),
        )

    def after_train(self) -> None:
        if self._restore_sigterm is not None:
            self._restore_sigterm()
            self._restore_sigterm = None
        if self._restarts is not None:  # not when a suspend has recorded the end already
            trainer = self.trainer
            self._record_end(End.COMPLETED if trainer.iter >= trainer.max_iter else End.FAILED, trainer.iter)

    def _guard_restarts(self) -> None:
        """Rank 0 records this start; every rank leaves with exit 1 when it is one too many."""
        reason = None
        save_dir = getattr(self.checkpointer, "save_dir", "")
        if comm.is_main_process() and save_dir and os.path.isdir(save_dir):
            guard = RestartGuard(Path(save_dir), Limits.from_environ())
            try:
                guard.on_start(self.trainer.start_iter)
                self._restarts = guard
            except RestartLimitReached as stop:  # its end (stopped) is recorded
                reason = stop.reason
        reason = comm.all_gather(reason)[0]
        if reason is None:
            return
        logger.error("hfai_runtime: %s", reason)
        if comm.is_main_process():
            report.emit(
                RecordKind.STOPPED,
                iteration=self.trainer.start_iter,
                exit_code=RestartLimitReached(reason).code,
                reason=reason,
                rank=0,
            )
        raise RestartLimitReached(reason)

    def _record_end(self, end: End, iteration: int) -> None:
        """Rank 0: how this start ended, once (a suspend, then ``after_train``, both call it)."""
        if self._restarts is not None:
            self._restarts.on_end(end, iteration)
            self._restarts = None  # recorded

    def before_step(self) -> None:
        if self._resume is not None:
            self._resume.before_step(self.trainer.iter)
        self._step_began = time.perf_counter()

    def after_step(self) -> None:
        step_s = time.perf_counter() - self._step_began
        iteration = self.trainer.iter
        began = time.perf_counter()
        stop = self._agreement.after_step(iteration, last=iteration + 1 >= self.trainer.max_iter)
        agree_s = time.perf_counter() - began
        self._progress.after_step(self.trainer)
        if self._first_step:
            self._first_step = False
            mark(Mark.FIRST_STEP)
            report.emit(RecordKind.STARTUP, iteration=iteration, rank=comm.get_rank(), **marks())
        if stop:
            self._suspend(step_s, agree_s)

    def _suspend(self, step_s: float, agree_s: float) -> None:
        iteration = self.trainer.iter
        signalled = requested_at()
        since_signal_s = None if signalled is None else time.monotonic() - signalled
        waited = "on another rank" if since_signal_s is None else f"{since_signal_s:.2f} s ago"
        began = time.perf_counter()
        name = f"model_{iteration:07d}"
        self.checkpointer.save(name, iteration=iteration)
        barrier()  # nobody exits before the checkpoint is complete
        save_s = time.perf_counter() - began
        steps = self._agreement.steps_to_stop
        logger.info(
            "Suspending at iteration %d: SIGTERM %s, ranks agreed in %.3f ms (on their flags after "
            "iteration %d), checkpoint saved in %.2f s, last step took %.2f s; exiting with %d",
            iteration,
            waited,
            agree_s * 1e3,
            self._agreement.agreed_after,
            save_s,
            step_s,
            self._exit_code,
        )
        report.emit(
            RecordKind.SUSPENDED,
            iteration=iteration,
            exit_code=self._exit_code,
            rank=comm.get_rank(),
            checkpoint=os.path.join(str(self.checkpointer.save_dir), f"{name}.pth"),
            since_signal_s=since_signal_s,
            agreed_after=self._agreement.agreed_after,
            agree_ms=agree_s * 1e3,
            save_s=save_s,
            step_s=step_s,
            steps_to_stop=steps,
        )
        needed_s = steps * step_s + save_s
        if self._grace_s is not None and needed_s > GRACE_WARN_FRACTION * self._grace_s:
            logger.warning(
                "Up to %d step(s) of %.1f s (the ranks agree on a SIGTERM %s) + save (%.1f s) = "
                "%.1f s is close to the grace period HFAI_GRACE_PERIOD_SECONDS=%g s: the next "
                "preemption may SIGKILL the job before its checkpoint is written",
                steps,
                step_s,
                "one step after it" if steps > 1 else "after the step it came in",
                save_s,
                needed_s,
                self._grace_s,
            )
        self._give_writers_a_step_time(step_s)
        self._record_end(End.SUSPENDED, iteration)
        raise JobSuspended(iteration, self._exit_code)

    def _give_writers_a_step_time(self, step_s: float) -> None:
        """detectron2's ``CommonMetricPrinter`` (run once more by ``PeriodicWriter.after_train``,
        after this) divides by zero at the iteration it last wrote when no step time is recorded,
        and ``IterationTimer`` records one only from the third step of a run
        (utils/events.py@v0.6 ``_get_eta``): a suspend that early would exit 1, a permanent
        failure. The step's own time stands in."""
        storage = self.trainer.storage
        if "time" not in storage.histories():
            storage.put_scalars(time=step_s, smoothing_hint=False)

    def state_dict(self) -> dict:
        return {} if self._resume is None else self._resume.state_dict(self.trainer)

    def load_state_dict(self, state_dict: dict) -> None:
        if self._resume is not None:
            self._resume.load_state_dict(state_dict, self.trainer)
