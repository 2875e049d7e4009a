"""Where this process sits in a multi-machine job, read from the environment a cluster injects.

Four sources are understood, tried in this order:

* **torchrun** (or any launcher that already spawned one process per rank): ``LOCAL_RANK`` is
  set, with per-process ``RANK`` and ``WORLD_SIZE``. Nothing must be spawned again.
* **Kubeflow** ``PET_NNODES``/``PET_NODE_RANK``/``PET_NPROC_PER_NODE``: PyTorchJob v1 (which
  also sets ``MASTER_ADDR``/``MASTER_PORT`` and a ``WORLD_SIZE`` that we do not need) or
  Trainer v2 TrainJob (``PET_MASTER_ADDR``/``PET_MASTER_PORT`` only).
* **HFAI**: ``WORLD_SIZE`` = number of machines, ``RANK`` = machine rank, ``MASTER_ADDR``,
  ``MASTER_PORT``.
* nothing: one machine.

Parsing is pure (no torch), so a bad environment fails at once with a ``ValueError`` that names
the variable and says what was expected, before any process is spawned.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

#: ``PET_NPROC_PER_NODE`` values meaning "one process per GPU" (torchrun's spelling).
AUTO_NPROC = ("auto", "gpu")


@dataclass(frozen=True)
class DistEnv:
    """The job's shape as seen by one machine (pod).

    ``procs_per_machine`` is ``None`` when the environment leaves it to the launcher ("auto":
    one process per GPU). ``master_port`` is ``None`` for a single machine that has not been
    given one (the launcher then picks a free port). ``rank``/``local_rank`` are set only when
    ``already_spawned``: this process is one rank of a job that torchrun has spawned.
    """

    source: str
    num_machines: int
    machine_rank: int
    procs_per_machine: int | None
    master_addr: str
    master_port: int | None
    already_spawned: bool = False
    rank: int | None = None
    local_rank: int | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> "DistEnv":
        """Parse ``environ`` (default ``os.environ``); raise ``ValueError`` naming a bad variable."""
        env = os.environ if environ is None else environ
        if "LOCAL_RANK" in env:
            return _from_torchrun(env)
        if "PET_NNODES" in env:
            return _from_kubeflow(env)
        if "WORLD_SIZE" in env:
            return _from_hfai(env)
        return cls("local", 1, 0, None, "127.0.0.1", _port(env, "MASTER_PORT", required=False))


def _int(env: Mapping[str, str], name: str, *, minimum: int, default: int | None = None) -> int:
    """``env[name]`` as an int >= ``minimum``; ``default`` when absent (None: required)."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        if default is None:
            raise ValueError(f"environment variable {name} is required here but not set")
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r}: expected an integer") from None
    if value < minimum:
        raise ValueError(f"environment variable {name}={raw!r}: expected an integer >= {minimum}")
    return value


def _rank(env: Mapping[str, str], name: str, size: int, size_name: str) -> int:
    rank = _int(env, name, minimum=0, default=0 if size == 1 else None)
    if rank >= size:
        raise ValueError(f"environment variable {name}={rank} must be < {size_name}={size}")
    return rank


def _port(env: Mapping[str, str], name: str, *, required: bool) -> int | None:
    if name not in env and not required:
        return None
    port = _int(env, name, minimum=1)
    if port > 65535:
        raise ValueError(f"environment variable {name}={port}: expected a TCP port (1-65535)")
    return port


def _master(
    env: Mapping[str, str], addr_name: str, port_name: str, peers: int, unit: str = "machines"
) -> tuple[str, int | None]:
    """The rendezvous address: required as soon as there is more than one of ``unit`` to meet."""
    multi = peers > 1
    addr = env.get(addr_name, "").strip()
    if not addr:
        if multi:
            raise ValueError(
                f"environment variable {addr_name} is required when the job has {peers} "
                f"{unit} (the address of the rank-0 machine)"
            )
        addr = "127.0.0.1"
    return addr, _port(env, port_name, required=multi)


def _from_hfai(env: Mapping[str, str]) -> DistEnv:
    machines = _int(env, "WORLD_SIZE", minimum=1)
    rank = _rank(env, "RANK", machines, "WORLD_SIZE")
    addr, port = _master(env, "MASTER_ADDR", "MASTER_PORT", machines)
    return DistEnv("hfai", machines, rank, None, addr, port)


def _from_kubeflow(env: Mapping[str, str]) -> DistEnv:
    nnodes = env["PET_NNODES"].strip()
    if ":" in nnodes:
        raise ValueError(
            f"environment variable PET_NNODES={nnodes!r}: elastic ranges are not supported; "
            "expected a fixed number of machines"
        )
    machines = _int(env, "PET_NNODES", minimum=1)
    rank = _rank(env, "PET_NODE_RANK", machines, "PET_NNODES")
    procs = _nproc(env)
    if "MASTER_ADDR" in env or "WORLD_SIZE" in env:  # PyTorchJob v1
        addr, port = _master(env, "MASTER_ADDR", "MASTER_PORT", machines)
        return DistEnv("pytorchjob", machines, rank, procs, addr, port)
    addr, port = _master(env, "PET_MASTER_ADDR", "PET_MASTER_PORT", machines)
    return DistEnv("trainjob", machines, rank, procs, addr, port)


def _nproc(env: Mapping[str, str]) -> int | None:
    raw = env.get("PET_NPROC_PER_NODE", "auto").strip()
    if raw.lower() in AUTO_NPROC:
        return None
    try:
        return _int(env, "PET_NPROC_PER_NODE", minimum=1)
    except ValueError:
        raise ValueError(
            f"environment variable PET_NPROC_PER_NODE={raw!r}: expected a positive integer or 'auto'"
        ) from None


def _from_torchrun(env: Mapping[str, str]) -> DistEnv:
    world = _int(env, "WORLD_SIZE", minimum=1)
    rank = _rank(env, "RANK", world, "WORLD_SIZE")
    local_world = _int(env, "LOCAL_WORLD_SIZE", minimum=1, default=1)
    local_rank = _rank(env, "LOCAL_RANK", local_world, "LOCAL_WORLD_SIZE")
    if world % local_world:
        raise ValueError(
            f"environment variables WORLD_SIZE={world} and LOCAL_WORLD_SIZE={local_world}: "
            "expected WORLD_SIZE to be a multiple of LOCAL_WORLD_SIZE"
        )
    machines = world // local_world
    machine_rank = rank // local_world
    if "GROUP_RANK" in env:
        machine_rank = _rank(env, "GROUP_RANK", machines, "WORLD_SIZE/LOCAL_WORLD_SIZE")
    # Each rank meets the others at the store: needed for 2 processes on one machine too.
    addr, port = _master(env, "MASTER_ADDR", "MASTER_PORT", world, "processes")
    return DistEnv("torchrun", machines, machine_rank, local_world, addr, port, True, rank, local_rank)
