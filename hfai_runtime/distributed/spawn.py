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
from collections.abc import Callable, Sequence
from typing import Any

from hfai_runtime.distributed.suspend import install_sigterm_handler

logger = logging.getLogger(__name__)

_POLL_S = 0.1  # how often the launcher looks for a held-back SIGTERM to deliver


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
    """SIGTERM handler of the launcher: forward the signal to every worker that is ready for it.

    A worker is ready once its own handler is installed (it sets its shared ``ready`` flag);
    until then -- while it imports torch and the user's script -- a SIGTERM would kill it, so
    the signal is held back and delivered by :func:`_wait` as soon as the worker is ready.
    """

    def __init__(self) -> None:
        self.workers: list[tuple[multiprocessing.process.BaseProcess, Any]] = []
        self.signum: int | None = None
        self.delivered: set[int] = set()

    def __call__(self, signum: int, frame) -> None:
        self.signum = signum
        self.deliver()

    def deliver(self) -> None:
        for i, (process, ready) in enumerate(self.workers):
            if self.signum is not None and i not in self.delivered and ready.value:
                self.delivered.add(i)
                try:
                    os.kill(process.pid, self.signum)
                except ProcessLookupError:
                    pass


def _bootstrap(worker: Callable[..., None], local_rank: int, ready: Any, args: tuple) -> None:
    """First code run in a spawned worker: turn SIGTERM into a suspend request, then work."""
    # A spawned child inherits the "spawn" start method; its DataLoader workers should start
    # the way they do under torchrun (the platform default: fork on Linux), fast and sharing
    # this process's setup, including the signal setup below.
    multiprocessing.set_start_method(None, force=True)
    install_sigterm_handler()
    ready.value = 1
    worker(local_rank, *args)


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
    or threads). SIGTERM received here is relayed to the workers. When one worker fails, the
    others are sent SIGTERM and, after ``terminate_grace_s``, SIGKILL: a peer blocked in a
    collective with a dead rank would otherwise wait for the collective timeout.
    """
    context = multiprocessing.get_context("spawn")
    relay = _Relay()
    previous = signal.signal(signal.SIGTERM, relay)
    try:
        for local_rank in range(nprocs):
            ready = context.RawValue("b", 0)
            process = context.Process(
                target=_bootstrap, args=(worker, local_rank, ready, args), name=f"worker-{local_rank}"
            )
            process.start()
            relay.workers.append((process, ready))
        return _wait(relay, suspend_code, terminate_grace_s)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _wait(relay: _Relay, suspend_code: int, grace_s: float) -> int:
    codes: list[int] = []
    running = [process for process, _ in relay.workers]
    stopping = False
    kill_at: float | None = None
    while running:
        # Poll: a SIGTERM held back for a worker that is not ready yet can arrive at any time.
        timeout = _POLL_S if kill_at is None else min(_POLL_S, max(0.0, kill_at - time.monotonic()))
        multiprocessing.connection.wait([p.sentinel for p in running], timeout)
        relay.deliver()
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
