"""Test helper: ``launch_from_env`` around a tiny main (no model) that does what argv says.

    python tests/scripts/launch_main.py MODE OUT_DIR [CONNECT_TIMEOUT_S]

MODE: ``report`` (all-reduce, wrap a CPU model with detectron2's create_ddp_model, write
``OUT_DIR/rank<N>.json``), ``fail`` (rank 1 exits 3), ``sigkill`` (rank 1 kills itself),
``suspend`` (write ``OUT_DIR/ready<N>``, then step until the ranks agree on a suspend),
``raise`` (rank 0 raises mid-iteration of a DataLoader whose worker ignores SIGTERM, after
touching ``OUT_DIR/raising``; the other ranks wait in an all-reduce), ``print`` (every rank
prints a line, then all kill themselves: what block-buffered output would lose).
Each launcher that returns writes ``OUT_DIR/threads-<pid>.json``: its thread count before and
after ``launch_from_env``; every launcher's ``atexit`` handler writes ``OUT_DIR/atexit-<pid>``
(a suspended job's launcher does not return: it exits right after its ``atexit`` handlers).
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from hfai_runtime.detectron2 import launch_from_env
from hfai_runtime.distributed.suspend import JobSuspended, agree, suspend_requested


def _wait_for_sigterm() -> None:
    """Idle (not in a collective) until this rank is told to stop; then suspend."""
    while not suspend_requested():
        time.sleep(0.05)
    raise JobSuspended(0)


def _ignore_sigterm(worker_id: int) -> None:
    """A ``worker_init_fn`` seen in user code (and in this runtime until d23463f): a DataLoader
    worker that survives ``Process.terminate``, so a process that joins it at exit hangs."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def main(mode: str, out_dir: str) -> None:
    rank = dist.get_rank() if dist.is_initialized() else 0
    out = Path(out_dir)
    if mode == "report":
        from detectron2.engine.defaults import create_ddp_model
        from detectron2.utils import comm

        model = create_ddp_model(torch.nn.Linear(2, 2))
        total = torch.tensor([rank + 1.0])
        dist.all_reduce(total)
        record = {
            "rank": comm.get_rank(),
            "world": comm.get_world_size(),
            "local_rank": comm.get_local_rank(),
            "sum": total.item(),
            "model": type(model).__name__,
            "backend": dist.get_backend(),
            "threads": torch.get_num_threads(),
            "env": {k: os.environ[k] for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")},
        }
        (out / f"rank{rank}.json").write_text(json.dumps(record))
    elif mode in ("fail", "sigkill"):
        if rank == 1:
            if mode == "fail":
                sys.exit(3)
            os.kill(os.getpid(), signal.SIGKILL)
        _wait_for_sigterm()
    elif mode == "suspend":
        (out / f"ready{rank}").touch()
        iteration = 0
        while not agree():
            time.sleep(0.02)
            iteration += 1
        raise JobSuspended(iteration)
    elif mode == "raise":
        if rank == 0:
            loader = torch.utils.data.DataLoader(range(100), num_workers=1, worker_init_fn=_ignore_sigterm)
            trainer = {"data": iter(loader)}
            trainer["self"] = trainer  # a cycle, as in detectron2's trainer: freed by gc only
            next(trainer["data"])
            (out / "raising").touch()
            raise RuntimeError("rank 0 failed mid-epoch")
        dist.all_reduce(torch.zeros(1))
    elif mode == "print":
        print(f"rank {rank} was here")
        dist.barrier()  # every rank printed before any is killed
        os.kill(os.getpid(), signal.SIGKILL)
    else:
        raise ValueError(f"unknown mode {mode!r}")


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


if __name__ == "__main__":
    connect = timedelta(seconds=float(sys.argv[3])) if len(sys.argv) > 3 else timedelta(seconds=60)
    before = _threads()
    atexit.register(Path(sys.argv[2], f"atexit-{os.getpid()}").touch)
    try:
        launch_from_env(main, args=(sys.argv[1], sys.argv[2]), connect_timeout=connect)
    finally:  # how many threads the job left behind in this process (gloo's must be joined)
        Path(sys.argv[2], f"threads-{os.getpid()}.json").write_text(json.dumps([before, _threads()]))
