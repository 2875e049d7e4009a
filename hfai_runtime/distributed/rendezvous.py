"""Join the job's process group, failing within a bounded time when the master never answers.

``init_process_group(init_method="tcp://..." or "env://")`` waits for the master, and for every
peer, as long as the collective timeout (30 minutes in detectron2). On a cluster a missing
master or peer is a configuration error (wrong ``MASTER_ADDR``, a closed port, a pod that never
started) that should surface quickly and name the variables, so the store is created here with
its own, shorter connect timeout, and every rank waits for the others on it before the process
group is made.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from datetime import timedelta

import torch.distributed as dist

#: How long a rank waits for the others to reach the master. Pods of one job can start minutes
#: apart (scheduling, image pulls), so this is generous, yet far below the collective timeout.
DEFAULT_CONNECT_TIMEOUT = timedelta(minutes=10)

_ARRIVED = "hfai_runtime/arrived"


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
    with _named_failure(rank, world_size, master_addr, master_port, connect_timeout):
        store = _tcp_store(
            master_addr, master_port, world_size, rank == 0, timeout=connect_timeout, wait_for_workers=True
        )
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


def init_process_group_from_env(
    backend: str,
    *,
    rank: int,
    world_size: int,
    connect_timeout: timedelta = DEFAULT_CONNECT_TIMEOUT,
    timeout: timedelta = timedelta(minutes=30),
) -> None:
    """What ``init_process_group(init_method="env://")`` does for a rank that torchrun spawned,
    with the same bound as :func:`init_process_group`.

    The store is the one torch's ``env://`` rendezvous makes (torchrun's own store when its agent
    hosts one at ``MASTER_ADDR:MASTER_PORT``, else rank 0 hosts it), created with
    ``connect_timeout``; then every rank waits on it for the others, also within
    ``connect_timeout``. ``MASTER_ADDR``/``MASTER_PORT`` are read from the environment, as
    ``env://`` reads them. Raises ``TimeoutError`` naming them, and the ranks that never came.
    """
    addr, port = os.environ.get("MASTER_ADDR", ""), os.environ.get("MASTER_PORT", "")
    with _named_failure(rank, world_size, addr, port, connect_timeout):
        store, _, _ = next(dist.rendezvous("env://", rank, world_size, timeout=connect_timeout))
        _wait_for_every_rank(store, rank, world_size, connect_timeout)
    store.set_timeout(timeout)
    # As init_process_group(init_method=...) does (torch/distributed/distributed_c10d.py@v2.14.1):
    # the agent's store is shared with torchrun's own keys.
    store = dist.PrefixStore("default_pg", store)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timeout)


class _RanksMissing(RuntimeError):
    def __init__(self, missing: list[int]):
        shown = ", ".join(map(str, missing[:8])) + (
            f" and {len(missing) - 8} more" if len(missing) > 8 else ""
        )
        super().__init__(f"rank(s) {shown} never arrived")


def _wait_for_every_rank(store: dist.Store, rank: int, world_size: int, timeout: timedelta) -> None:
    """A barrier on the store. Keys are per torchrun restart: its agent keeps one store."""
    prefix = f"{_ARRIVED}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/"
    store.set(f"{prefix}{rank}", "1")
    keys = [f"{prefix}{peer}" for peer in range(world_size)]
    try:
        store.wait(keys, timeout)
    except RuntimeError:  # DistStoreError: a timeout
        raise _RanksMissing([peer for peer, key in enumerate(keys) if not store.check([key])]) from None


@contextlib.contextmanager
def _named_failure(
    rank: int, world_size: int, master_addr: str, master_port: int | str, connect_timeout: timedelta
) -> Iterator[None]:
    """Turn the store's errors (``DistNetworkError``, ``DistStoreError``) into a ``TimeoutError``
    that says which rank waited for what, and names the variables to check."""
    try:
        yield
    except RuntimeError as err:
        seconds = int(connect_timeout.total_seconds())
        where = f"MASTER_ADDR={master_addr} MASTER_PORT={master_port}"
        if isinstance(err, _RanksMissing):
            what = f"rank {rank} reached the rendezvous at {where}, but {err} within {seconds} s"
        elif rank == 0:
            what = (
                f"rank 0 could not host the rendezvous at {where}, or not all "
                f"{world_size} ranks connected to it within {seconds} s"
            )
        else:
            what = f"rank {rank} got no answer from the master at {where} within {seconds} s"
        cause = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise TimeoutError(f"{what}: is every pod running and the port reachable? ({cause})") from None
