"""Join the job's process group, failing within a bounded time when the master never answers.

``init_process_group(init_method="tcp://...")`` waits for the master as long as the collective
timeout (30 minutes in detectron2). On a cluster a missing master is a configuration error
(wrong ``MASTER_ADDR``, a closed port) that should surface quickly and name the variables, so
the TCP store is created here with its own, shorter connect timeout.
"""

from __future__ import annotations

import socket
from datetime import timedelta

import torch.distributed as dist

#: How long a rank waits for the others to reach the master. Pods of one job can start minutes
#: apart (scheduling, image pulls), so this is generous, yet far below the collective timeout.
DEFAULT_CONNECT_TIMEOUT = timedelta(minutes=10)


def free_port() -> int:
    """A TCP port that was free a moment ago (for single-machine jobs given no MASTER_PORT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def init_process_group(
    backend: str,
    *,
    master_addr: str,
    master_port: int,
    rank: int,
    world_size: int,
    connect_timeout: timedelta = DEFAULT_CONNECT_TIMEOUT,
    timeout: timedelta = timedelta(minutes=30),
) -> None:
    """Rank 0 hosts the store on ``master_port``; the others connect to it.

    Raises ``TimeoutError`` naming ``MASTER_ADDR``/``MASTER_PORT`` when the store cannot be
    reached, or not every rank arrives, within ``connect_timeout``.
    """
    try:
        store = _tcp_store(master_addr, master_port, world_size, rank == 0,
                           timeout=connect_timeout, wait_for_workers=True)
    except RuntimeError as err:  # DistNetworkError / DistStoreError
        seconds = int(connect_timeout.total_seconds())
        if rank == 0:
            what = (f"rank 0 could not host the rendezvous on MASTER_PORT={master_port}, or not all "
                    f"{world_size} ranks connected to it within {seconds} s")
        else:
            what = (f"rank {rank} got no answer from the master at MASTER_ADDR={master_addr} "
                    f"MASTER_PORT={master_port} within {seconds} s")
        cause = str(err).splitlines()[0]
        raise TimeoutError(f"{what}: is the master running and the port reachable? ({cause})") from None
    store.set_timeout(timeout)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timeout)


def _tcp_store(*args, **kwargs) -> dist.TCPStore:
    """torch's TCPStore, on its libuv backend (the default since torch 2.4) where torch was built
    with libuv, else on the classic one (distributions' builds without libuv, e.g. Debian's, refuse
    the default with "use_libuv was requested but PyTorch was build without libuv support")."""
    try:
        return dist.TCPStore(*args, **kwargs)
    except RuntimeError as err:
        if "without libuv" not in str(err):
            raise
        return dist.TCPStore(*args, **kwargs, use_libuv=False)
