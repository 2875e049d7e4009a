"""Test helper: ``launch_from_env``'s GPU path on a machine without GPUs, up to the process group.

    python tests/scripts/launch_fake_gpu.py OUT_DIR

NCCL cannot run without GPUs, yet the code that chooses it, sets each rank's device and joins
the rendezvous runs only when GPUs are visible -- a name used before a local import hid there
once. This script fakes exactly what a machine without GPUs lacks, in the launcher and (run
again as ``__mp_main__``) in every worker it spawns: ``torch.cuda`` reports ``FAKE_GPUS``
devices and ``set_device`` remembers its argument. ``torch.distributed.init_process_group`` is
where the fake stops: it writes ``OUT_DIR/rank<N>.json`` (the backend asked for, rank, world,
the device set before it, the thread count) and exits 0. Everything before it -- planning,
spawning, the TCP store -- is real.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

FAKE_GPUS = 2
_device: list[int] = []


def _set_device(device: int | torch.device) -> None:
    _device.append(int(device.index if isinstance(device, torch.device) else device))


def _init_process_group(backend: str, *, rank: int, world_size: int, **kwargs) -> None:
    record = {
        "backend": backend,
        "rank": rank,
        "world": world_size,
        "devices_set": _device,
        "threads": torch.get_num_threads(),
        "local_rank": int(os.environ["LOCAL_RANK"]),
    }
    Path(sys.argv[1], f"rank{rank}.json").write_text(json.dumps(record))
    raise SystemExit(0)


torch.cuda.device_count = lambda: FAKE_GPUS
torch.cuda.is_available = lambda: True
torch.cuda.set_device = _set_device
dist.init_process_group = _init_process_group


def _never_called() -> None:
    raise AssertionError("the fake process group should have ended this process")


if __name__ == "__main__":
    from hfai_runtime.detectron2 import launch_from_env

    launch_from_env(_never_called, connect_timeout=timedelta(seconds=60))
