"""``launch_from_env``: detectron2's ``launch`` driven by the cluster's environment.

HFAI's recipe reads ``RANK``/``WORLD_SIZE``/``MASTER_*`` by hand and calls detectron2's
``launch``. That launch asserts CUDA, hard-codes NCCL, lets SIGTERM kill the workers, and
detectron2's ``create_ddp_model`` passes ``device_ids``, which DDP rejects for CPU models. Here
the same call works on HFAI, PyTorchJob v1, Trainer v2 and under torchrun, with NCCL on GPUs and
gloo on CPU, and a preempted job exits with the suspend code (143) that the restart policy retries.
"""

from __future__ import annotations

import gc
import io
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NoReturn

import torch
import torch.distributed as dist

# torch.distributed.nn.functional binds the world group as a default argument when it is imported
# (torch._dynamo imports it lazily): imported after the group exists, it would pin that group for
# good. Imported here, at module level: a function-local import would make ``torch`` a local name
# of the whole function (an UnboundLocalError for every use before it).
import torch.distributed.nn
from torch.nn.parallel import DistributedDataParallel

from hfai_runtime.detectron2.logs import log_to_stdout
from hfai_runtime.distributed import rendezvous
from hfai_runtime.distributed.env import ALLOW_OVERSUBSCRIBE, DistEnv, allow_oversubscribe
from hfai_runtime.distributed.prompt_exit import exit_after_atexit
from hfai_runtime.distributed.spawn import spawn
from hfai_runtime.distributed.suspend import (
    install_sigterm_handler,
    release_agreement_group,
    suspend_exit_code,
)
from hfai_runtime.startup import Mark, mark

__all__ = ["launch_from_env"]


@dataclass(frozen=True)
class _Plan:
    """What every local worker needs to join the job (picklable: it crosses the spawn)."""

    env: DistEnv
    procs_per_machine: int
    master_port: int
    backend: str
    connect_timeout: timedelta
    timeout: timedelta

    @property
    def world_size(self) -> int:
        return self.env.num_machines * self.procs_per_machine


def launch_from_env(
    main_func: Callable[..., Any],
    num_gpus_per_machine: int | None = None,
    args: tuple = (),
    *,
    connect_timeout: timedelta = rendezvous.DEFAULT_CONNECT_TIMEOUT,
    timeout: timedelta = timedelta(minutes=30),
) -> None:
    """Run ``main_func(*args)`` once per rank of the job described by the environment.

    ``num_gpus_per_machine`` is the number of processes per machine when the environment does
    not fix it (``PET_NPROC_PER_NODE`` unset or ``auto``); default: one per visible GPU, or one
    on a machine without GPUs. With one process per machine the work runs in this process;
    otherwise workers are spawned and SIGTERM is relayed to them. Raises ``SystemExit`` with the
    job's exit code when it is not 0 (the suspend code when preempted), ``ValueError`` naming the
    variable for a bad environment, ``TimeoutError`` when the master does not answer within
    ``connect_timeout`` or a peer never arrives. A rank whose ``main_func`` raises prints the
    traceback and its process exits 1 at once (a permanent failure under ``ExitCode``), without
    waiting for its peers. Local rank 0 of each machine prints one line with the world it joined.
    On a machine without GPUs, more processes than CPUs are refused unless
    ``HFAI_ALLOW_OVERSUBSCRIBE=1``.

    In every rank SIGTERM only requests a suspend (a handler installed before still runs too, and
    is back in place when ``main_func`` returns), which a ``SuspendCheckpointer`` carries out
    within two steps; code that never reaches one (an ``--eval-only`` run) keeps going until the
    pod's grace period ends in SIGKILL (137, retried like 143). Under torchrun the signal goes to
    torchrun, which kills the ranks and exits 1 -- a permanent failure under ``ExitCode``.

    A suspended job's processes exit as soon as their ``atexit`` handlers have run, without
    Python's finalization (:mod:`hfai_runtime.distributed.prompt_exit`): seconds sooner, but
    ``finally`` blocks around this call do not run then -- register such cleanup with ``atexit``.
    """
    env = DistEnv.from_environ()
    suspend_code = suspend_exit_code()
    if env.already_spawned:
        plan = _plan(env, env.procs_per_machine, connect_timeout, timeout)
        code = _run_worker(env.local_rank, plan, main_func, args)
    else:
        plan = _plan(env, _procs_per_machine(env, num_gpus_per_machine), connect_timeout, timeout)
        if plan.procs_per_machine == 1:
            code = _run_worker(0, plan, main_func, args)
        else:
            code = spawn(
                _spawned_worker, plan.procs_per_machine, (plan, main_func, args), suspend_code=suspend_code
            )
    if code == suspend_code:
        exit_after_atexit(code)
    if code:
        raise SystemExit(code)


def _procs_per_machine(env: DistEnv, requested: int | None) -> int:
    if requested is not None and requested < 1:
        raise ValueError(f"num_gpus_per_machine={requested}: expected a positive integer")
    if env.procs_per_machine is not None:
        if requested is not None and requested != env.procs_per_machine:
            raise ValueError(
                f"num_gpus_per_machine={requested} contradicts the environment's "
                f"PET_NPROC_PER_NODE={env.procs_per_machine}"
            )
        return env.procs_per_machine
    return requested or torch.cuda.device_count() or 1


def _plan(env: DistEnv, procs: int, connect_timeout: timedelta, timeout: timedelta) -> _Plan:
    gpus = torch.cuda.device_count()
    if gpus and procs > gpus:
        raise ValueError(f"{_origin(env)}={procs}: one process per GPU, but only {gpus} GPUs are visible")
    cpus = len(os.sched_getaffinity(0))
    if not gpus and not env.already_spawned and procs > cpus and not allow_oversubscribe():
        raise ValueError(
            f"{_origin(env)}={procs}: more processes than the {cpus} CPUs this process may use, on a "
            f"machine without GPUs; set {ALLOW_OVERSUBSCRIBE}=1 to start them anyway"
        )
    backend = "nccl" if gpus else "gloo"
    port = env.master_port or rendezvous.free_port()
    return _Plan(env, procs, port, backend, connect_timeout, timeout)


def _origin(env: DistEnv) -> str:
    """Where the number of processes per machine came from, for messages."""
    if env.procs_per_machine is None:
        return "num_gpus_per_machine"
    if env.already_spawned:
        return "environment variable LOCAL_WORLD_SIZE"
    return "environment variable PET_NPROC_PER_NODE"


def _spawned_worker(local_rank: int, plan: _Plan, main_func: Callable[..., Any], args: tuple) -> None:
    code = _run_worker(local_rank, plan, main_func, args)
    if code == suspend_exit_code():
        exit_after_atexit(code)
    raise SystemExit(code)


def _run_worker(local_rank: int, plan: _Plan, main_func: Callable[..., Any], args: tuple) -> int:
    """Join the job as ``local_rank`` of this machine, run ``main_func``, return the exit code.

    Before ``main_func``, for the whole process: output flushed at every line, SIGTERM only sets
    the suspend flag (put back when ``main_func`` returns), the runtime's messages on stdout.
    """
    mark(Mark.WORKER_STARTED)
    _line_buffered_output()
    restore_sigterm = install_sigterm_handler()
    if plan.env.already_spawned:
        rank = plan.env.rank
    else:
        rank = plan.env.machine_rank * plan.procs_per_machine + local_rank
    log_to_stdout(rank)
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(local_rank),
        WORLD_SIZE=str(plan.world_size),
        LOCAL_WORLD_SIZE=str(plan.procs_per_machine),
        MASTER_ADDR=plan.env.master_addr,
        MASTER_PORT=str(plan.master_port),
    )
    code: int | None = None
    try:
        if plan.world_size > 1:
            _join(plan, rank, local_rank)
        if local_rank == 0:
            print(describe_world(plan, rank), flush=True)
        mark(Mark.JOINED)
        code = _run_main(main_func, args)
        return code
    finally:
        # A suspended process exits right after this, without finalization (exit_after_atexit),
        # so no group's thread can outlive the GIL: the garbage collection (a second on a
        # trainer's heap) that joins them for a finalizing interpreter is not needed there.
        _leave_process_groups(collect=code != suspend_exit_code())
        restore_sigterm()


def describe_world(plan: _Plan, rank: int) -> str:
    """The one line local rank 0 prints once its machine has joined: the world as the job runs
    it -- detectron2's ``--num-machines``/``--machine-rank``/``--dist-url`` are not used."""
    machines, procs = plan.env.num_machines, plan.procs_per_machine
    ranks = f"rank {rank}" if procs == 1 else f"ranks {rank}-{rank + procs - 1}"
    return (
        f"hfai_runtime: joined {machines} machine{'s' if machines > 1 else ''} x {procs} "
        f"process{'es' if procs > 1 else ''} = {plan.world_size} rank{'s' if plan.world_size > 1 else ''}; "
        f"this is machine {plan.env.machine_rank} ({ranks}); master {plan.env.master_addr}:{plan.master_port}; "
        f"backend {plan.backend}; from the {plan.env.source} environment"
    )


def _run_main(main_func: Callable[..., Any], args: tuple) -> int:
    try:
        main_func(*args)
    except SystemExit as exit_:  # JobSuspended, or the user's own sys.exit
        return _exit_status(exit_)
    except Exception:
        _exit_failed()
    return 0


def _exit_status(exit_: SystemExit) -> int:
    """The status Python gives ``exit_``; like Python, print a message (``sys.exit("why")``) to
    stderr, since the code re-raised from here is the bare status and the reason would be lost."""
    if exit_.code is None or isinstance(exit_.code, int):
        return exit_.code or 0
    print(exit_.code, file=sys.stderr)
    return 1


def _leave_process_groups(*, collect: bool = True) -> None:
    """Destroy the process groups, and drop the references to them that this runtime and
    detectron2 keep, so that their gloo threads are joined now.

    ``destroy_process_group`` only unregisters groups; a group's threads stop when its last
    reference goes. One still referenced at interpreter exit is freed during finalization, where
    a gloo thread releasing the last collective's tensor cannot take the GIL any more: the
    process aborts ("terminate called without an active exception", -6) instead of exiting
    with its code -- intermittently, for a rank that runs in the launcher's own process.
    (References this cannot drop: see the module-level ``torch.distributed.nn`` import; a
    user's own groups.)
    """
    if not dist.is_initialized():
        return
    from hfai_runtime.detectron2 import _compat

    _compat.forget_process_groups()
    release_agreement_group()
    dist.destroy_process_group()
    if collect:
        gc.collect()  # a trainer in a reference cycle holds DDP, which holds the world group


def _line_buffered_output() -> None:
    """Flush ``print`` output at every line. Pod logs are pipes, where Python buffers stdout in
    blocks, and the operator injects ``PYTHONUNBUFFERED=0``, which CPython reads as "buffered":
    the last lines before a kill -- often the ones that say why -- would be lost."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(line_buffering=True)


def _exit_failed() -> NoReturn:
    """Report the exception and end this process now, with code 1 (a permanent failure).

    A normal exit can wait forever after a failure: the interpreter's exit joins the DataLoader
    workers of a loader still referenced from the failed trainer (detectron2's trainer sits in
    reference cycles, so it outlives the exception), and a worker that ignores SIGTERM (a
    ``worker_init_fn`` doing so) is never joined -- while the peers wait in a collective for
    30 minutes. Tearing down the process group (NCCL with a collective in flight) and
    non-daemon threads can block the same way. Orphaned DataLoader workers notice that their
    parent is gone and exit; the peers' collectives fail once this process's sockets close.
    """
    sys.excepthook(*sys.exc_info())  # as Python would print it (torch adds the rank)
    logging.shutdown()  # flush log files
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


def _join(plan: _Plan, rank: int, local_rank: int) -> None:
    """Set up what detectron2's ``_distributed_worker`` sets up, without its CUDA assertions."""
    from detectron2.utils import comm

    from hfai_runtime.detectron2 import _compat

    if plan.backend == "nccl":
        torch.cuda.set_device(local_rank)
    if plan.procs_per_machine > 1 and "OMP_NUM_THREADS" not in os.environ:
        # Like torchrun: processes sharing a machine's CPUs should not each use all of them.
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // plan.procs_per_machine))
    if plan.env.already_spawned:  # torchrun's agent may host the store already
        rendezvous.init_process_group_from_env(
            plan.backend,
            rank=rank,
            world_size=plan.world_size,
            connect_timeout=plan.connect_timeout,
            timeout=plan.timeout,
        )
    else:
        rendezvous.init_process_group(
            plan.backend,
            master_addr=plan.env.master_addr,
            master_port=plan.master_port,
            rank=rank,
            world_size=plan.world_size,
            connect_timeout=plan.connect_timeout,
            timeout=plan.timeout,
        )
    _compat.create_local_process_group(plan.procs_per_machine)  # ranks are numbered machine by machine
    # detectron2's create_ddp_model always passes device_ids=[local_rank], which DDP rejects for
    # a CPU model: it wraps models in _CpuTolerantDDP instead, however it was imported.
    _compat.let_create_ddp_model_use(_CpuTolerantDDP)
    comm.synchronize()


class _CpuTolerantDDP(DistributedDataParallel):
    """DDP that ignores ``device_ids``/``output_device`` for a model on the CPU."""

    def __init__(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> None:
        if all(p.device.type == "cpu" for p in module.parameters()):
            kwargs.pop("device_ids", None)
            kwargs.pop("output_device", None)
        super().__init__(module, *args, **kwargs)
