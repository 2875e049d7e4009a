"""Start one worker process per local rank, relay SIGTERM to them, and decide the exit code.

In a container the launcher is the process that receives SIGTERM (tini forwards it to its one
child): kubelet never signals the workers. So the launcher relays the signal to every worker
and then waits for them to suspend. The job's exit code is what the cluster's restart policy
reads: 0 when every worker succeeded, the first failing worker's code (128 + signal for a
worker killed by a signal), else the suspend code if any worker suspended.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from typing import Callable, Sequence

logger = logging.getLogger(__name__)


def exit_code(process: multiprocessing.process.BaseProcess) -> int:
    """The shell's view of a finished process: 128 + N when killed by signal N."""
    code = process.exitcode
    assert code is not None, "process has not finished"
    return 128 - code if code < 0 else code


def job_exit_code(codes: Sequence[int], suspend_code: int) -> int:
    """Combine worker exit codes, given in the order the workers finished."""
    failures = [code for code in codes if code not in (0, suspend_code)]
    if failures:
        return failures[0]
    return suspend_code if suspend_code in codes else 0


class _Relay:
    """SIGTERM handler of the launcher: forward the signal to every started worker."""

    def __init__(self) -> None:
        self.processes: list[multiprocessing.process.BaseProcess] = []

    def __call__(self, signum: int, frame) -> None:
        for process in self.processes:
            if process.exitcode is None:
                os.kill(process.pid, signum)


def spawn(
    worker: Callable[..., None],
    nprocs: int,
    args: tuple = (),
    *,
    suspend_code: int,
    terminate_grace_s: float = 30.0,
) -> int:
    """Run ``worker(local_rank, *args)`` in ``nprocs`` fresh interpreters; return the job's code.

    ``worker`` must be importable (spawn start method: no fork of a process that may hold CUDA
    or threads). Workers start with SIGTERM blocked and unblock it once their own handler is in
    place (:func:`hfai_runtime.distributed.suspend.install_sigterm_handler`), so a signal relayed
    while they import still turns into a suspend. When one worker fails, the others are sent
    SIGTERM and, after ``terminate_grace_s``, SIGKILL: a peer blocked in a collective with a dead
    rank would otherwise wait for the collective timeout.
    """
    context = multiprocessing.get_context("spawn")
    relay = _Relay()
    previous = signal.signal(signal.SIGTERM, relay)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        for local_rank in range(nprocs):
            process = context.Process(target=worker, args=(local_rank, *args), name=f"worker-{local_rank}")
            process.start()
            relay.processes.append(process)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a pending SIGTERM is relayed now
    try:
        return _wait(relay.processes, suspend_code, terminate_grace_s)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _wait(processes: list, suspend_code: int, grace_s: float) -> int:
    codes: list[int] = []
    running = list(processes)
    stopping = False
    kill_at: float | None = None
    while running:
        timeout = None if kill_at is None else max(0.0, kill_at - time.monotonic())
        multiprocessing.connection.wait([p.sentinel for p in running], timeout)
        for process in [p for p in running if p.exitcode is not None]:
            running.remove(process)
            codes.append(exit_code(process))
            if codes[-1] not in (0, suspend_code) and not stopping:
                logger.error("%s exited with code %d; stopping the others", process.name, codes[-1])
                for other in running:
                    os.kill(other.pid, signal.SIGTERM)
                stopping, kill_at = True, time.monotonic() + grace_s
        if kill_at is not None and time.monotonic() >= kill_at:
            for other in running:
                logger.error("%s did not stop within %.0f s; killing it", other.name, grace_s)
                other.kill()
            kill_at = None
    return job_exit_code(codes, suspend_code)
