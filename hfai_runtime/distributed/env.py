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
the variable and says what was expected, before any process is spawned. Counts are whole numbers
in ASCII digits (not ``1_0`` nor full-width digits, which Python's ``int`` would accept) within
:data:`MAX_WORLD_SIZE`; variables that state the same fact twice (PyTorchJob's ``WORLD_SIZE``
and ``PET_NNODES``, torchrun's ``RANK`` and ``GROUP_RANK``) must agree, and an error names both.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

#: ``PET_NPROC_PER_NODE`` values meaning "one process per GPU" (torchrun's spelling).
AUTO_NPROC = ("auto", "gpu")

#: The most processes (and so machines, or processes per machine) a job may have: far above any
#: real job, and within what the rendezvous store and the collectives take (a C ``int``).
MAX_WORLD_SIZE = 1 << 20

#: Set to ``1`` to run more processes per machine than it has CPUs on a run without GPUs (a
#: test of a bigger topology on a small machine); otherwise the launcher refuses that plan.
ALLOW_OVERSUBSCRIBE = "HFAI_ALLOW_OVERSUBSCRIBE"

_ASCII_INT = re.compile(r"[0-9]+")


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
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> DistEnv:
        """Parse ``environ`` (default ``os.environ``); raise ``ValueError`` naming a bad variable."""
        env = os.environ if environ is None else environ
        if "LOCAL_RANK" in env:
            return _from_torchrun(env)
        if "PET_NNODES" in env:
            return _from_kubeflow(env)
        if "WORLD_SIZE" in env:
            return _from_hfai(env)
        return cls("local", 1, 0, None, "127.0.0.1", _port(env, "MASTER_PORT", required=False))


def _int(
    env: Mapping[str, str],
    name: str,
    *,
    minimum: int,
    maximum: int = MAX_WORLD_SIZE,
    default: int | None = None,
) -> int:
    """``env[name]`` as an int in [``minimum``, ``maximum``]; ``default`` when absent (None: required)."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        if default is None:
            raise ValueError(f"environment variable {name} is required here but not set")
        return default
    text = raw.strip()
    if not _ASCII_INT.fullmatch(text) or not minimum <= int(text) <= maximum:
        raise ValueError(
            f"environment variable {name}={raw!r}: expected an integer from {minimum} to {maximum} "
            "in ASCII digits"
        )
    return int(text)


def _rank(env: Mapping[str, str], name: str, size: int, size_name: str) -> int:
    rank = _int(env, name, minimum=0, default=0 if size == 1 else None)
    if rank >= size:
        raise ValueError(f"environment variable {name}={rank} must be < {size_name}={size}")
    return rank


def _agrees(env: Mapping[str, str], name: str, expected: int, source: str, rule: str) -> None:
    """A variable that repeats what ``source`` says must say the same (when it is set)."""
    if name not in env:
        return
    raw = env[name].strip()
    if not (_ASCII_INT.fullmatch(raw) and int(raw) == expected):
        raise ValueError(
            f"environment variables {name}={env[name]!r} and {source} contradict each other: "
            f"expected {name}={expected} ({rule})"
        )


def _port(env: Mapping[str, str], name: str, *, required: bool) -> int | None:
    if name not in env and not required:
        return None
    return _int(env, name, minimum=1, maximum=65535)


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
    if procs is not None and machines * procs > MAX_WORLD_SIZE:
        raise ValueError(
            f"environment variables PET_NNODES={machines} and PET_NPROC_PER_NODE={procs}: "
            f"{machines * procs} processes, expected at most {MAX_WORLD_SIZE}"
        )
    if "MASTER_ADDR" in env or "WORLD_SIZE" in env:  # PyTorchJob v1
        _pytorchjob_agrees(env, machines, rank, procs)
        addr, port = _master(env, "MASTER_ADDR", "MASTER_PORT", machines)
        return DistEnv("pytorchjob", machines, rank, procs, addr, port)
    addr, port = _master(env, "PET_MASTER_ADDR", "PET_MASTER_PORT", machines)
    return DistEnv("trainjob", machines, rank, procs, addr, port)


def _pytorchjob_agrees(env: Mapping[str, str], machines: int, rank: int, procs: int | None) -> None:
    """PyTorchJob v1 sets ``WORLD_SIZE`` = pods x nprocPerNode (x 1 unless an integer) and
    ``RANK`` = ``PET_NODE_RANK`` = the pod's index (pkg/controller.v1/pytorch/envvar.go@v1.9.4,
    ``setPodEnv``); anything else was set by hand and contradicts the job's shape."""
    nproc = env.get("PET_NPROC_PER_NODE", "auto").strip()
    _agrees(
        env,
        "WORLD_SIZE",
        machines * (procs or 1),
        f"PET_NNODES={machines}, PET_NPROC_PER_NODE={nproc!r}",
        "PyTorchJob sets WORLD_SIZE = PET_NNODES x PET_NPROC_PER_NODE, x 1 when that is not a number",
    )
    _agrees(env, "RANK", rank, f"PET_NODE_RANK={rank}", "PyTorchJob sets both to the pod's index")


def _nproc(env: Mapping[str, str]) -> int | None:
    raw = env.get("PET_NPROC_PER_NODE", "auto").strip()
    if raw.lower() in AUTO_NPROC:
        return None
    try:
        return _int(env, "PET_NPROC_PER_NODE", minimum=1)
    except ValueError:
        raise ValueError(
            f"environment variable PET_NPROC_PER_NODE={raw!r}: expected 'auto' or an integer from 1 "
            f"to {MAX_WORLD_SIZE} in ASCII digits"
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
    # torchrun numbers the ranks machine by machine (torch/distributed/elastic/agent/server/
    # api.py@v2.14.1, _assign_worker_ranks), as the local process groups here assume.
    rule = "torchrun numbers the ranks machine by machine"
    _agrees(env, "LOCAL_RANK", rank % local_world, f"RANK={rank}, LOCAL_WORLD_SIZE={local_world}", rule)
    _agrees(env, "GROUP_RANK", machine_rank, f"RANK={rank}, LOCAL_WORLD_SIZE={local_world}", rule)
    # Each rank meets the others at the store: needed for 2 processes on one machine too.
    addr, port = _master(env, "MASTER_ADDR", "MASTER_PORT", world, "processes")
    return DistEnv("torchrun", machines, machine_rank, local_world, addr, port, True, rank, local_rank)


def allow_oversubscribe(environ: Mapping[str, str] | None = None) -> bool:
    """Whether :data:`ALLOW_OVERSUBSCRIBE` is ``1`` (unset, empty or ``0``: no)."""
    env = os.environ if environ is None else environ
    raw = env.get(ALLOW_OVERSUBSCRIBE, "").strip()
    if raw not in ("", "0", "1"):
        raise ValueError(f"environment variable {ALLOW_OVERSUBSCRIBE}={raw!r}: expected 0 or 1")
    return raw == "1"
