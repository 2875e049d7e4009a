"""Hostile launcher environments: every one is refused before anything starts, with one line
that names the variable(s) at fault. To add a case, add a row to a table below."""

from __future__ import annotations

import os
import re
from typing import NamedTuple

import pytest

from hfai_runtime.distributed.env import MAX_WORLD_SIZE, DistEnv, allow_oversubscribe


class Case(NamedTuple):
    id: str
    environ: dict[str, str]
    #: Every variable the message must name (as a whole word).
    names: tuple[str, ...]


MASTER = {"MASTER_ADDR": "m", "MASTER_PORT": "2222"}
PET_MASTER = {"PET_MASTER_ADDR": "m", "PET_MASTER_PORT": "29500"}


def pytorchjob(nnodes: str = "1", node_rank: str = "0", nproc: str = "2", **extra: str) -> dict[str, str]:
    """A PyTorchJob v1 pod's variables, consistent unless ``extra`` overrides one."""
    world = str(int(nnodes) * (int(nproc) if nproc.isdigit() else 1))
    return {
        "PET_NNODES": nnodes,
        "PET_NODE_RANK": node_rank,
        "PET_NPROC_PER_NODE": nproc,
        "WORLD_SIZE": world,
        "RANK": node_rank,
        **MASTER,
        **extra,
    }


def torchrun(
    rank: str = "1", local_rank: str = "1", world: str = "4", local_world: str = "2", **extra: str
) -> dict[str, str]:
    return {
        "RANK": rank,
        "LOCAL_RANK": local_rank,
        "WORLD_SIZE": world,
        "LOCAL_WORLD_SIZE": local_world,
        **MASTER,
        **extra,
    }


HUGE = str(2**40)

ENV_CASES = [
    # Counts out of bounds.
    Case("hfai WORLD_SIZE 2**40", {"WORLD_SIZE": HUGE, "RANK": "0", **MASTER}, ("WORLD_SIZE",)),
    Case("hfai WORLD_SIZE written 2**40", {"WORLD_SIZE": "2**40", "RANK": "0", **MASTER}, ("WORLD_SIZE",)),
    Case("hfai RANK 2**40", {"WORLD_SIZE": "2", "RANK": HUGE, **MASTER}, ("RANK",)),
    Case(
        "hfai MASTER_PORT 2**40",
        {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "m", "MASTER_PORT": HUGE},
        ("MASTER_PORT",),
    ),
    Case("PET_NNODES 2**40", {"PET_NNODES": HUGE, "PET_NODE_RANK": "0", **PET_MASTER}, ("PET_NNODES",)),
    Case(
        "PET_NPROC_PER_NODE 2**40",
        {"PET_NNODES": "1", "PET_NODE_RANK": "0", "PET_NPROC_PER_NODE": HUGE},
        ("PET_NPROC_PER_NODE",),
    ),
    Case(
        "machines x processes too many",
        {"PET_NNODES": "2048", "PET_NODE_RANK": "0", "PET_NPROC_PER_NODE": "1024", **PET_MASTER},
        ("PET_NNODES", "PET_NPROC_PER_NODE"),
    ),
    Case("torchrun WORLD_SIZE 2**40", torchrun(world=HUGE), ("WORLD_SIZE",)),
    Case("torchrun LOCAL_WORLD_SIZE 2**40", torchrun(local_world=HUGE), ("LOCAL_WORLD_SIZE",)),
    Case(
        "exactly one above the bound",
        {"WORLD_SIZE": str(MAX_WORLD_SIZE + 1), "RANK": "0", **MASTER},
        ("WORLD_SIZE",),
    ),
    # Digits Python's int() accepts but a count must not be written with.
    Case("underscore 1_0", {"WORLD_SIZE": "1_0", "RANK": "0", **MASTER}, ("WORLD_SIZE",)),
    Case("full-width digits", {"WORLD_SIZE": "\uff12", "RANK": "0", **MASTER}, ("WORLD_SIZE",)),
    Case(
        "Arabic-Indic digits", {"PET_NNODES": "\u0662", "PET_NODE_RANK": "0", **PET_MASTER}, ("PET_NNODES",)
    ),
    Case(
        "full-width PET_NPROC_PER_NODE",
        {"PET_NNODES": "1", "PET_NODE_RANK": "0", "PET_NPROC_PER_NODE": "\uff18"},
        ("PET_NPROC_PER_NODE",),
    ),
    Case("plus sign", {"WORLD_SIZE": "+2", "RANK": "0", **MASTER}, ("WORLD_SIZE",)),
    Case("negative rank", {"WORLD_SIZE": "2", "RANK": "-1", **MASTER}, ("RANK",)),
    Case("hexadecimal", {"WORLD_SIZE": "0x2", "RANK": "0", **MASTER}, ("WORLD_SIZE",)),
    Case("decimal point", {"PET_NNODES": "2.0", "PET_NODE_RANK": "0", **PET_MASTER}, ("PET_NNODES",)),
    Case("a digit then a NUL", {"WORLD_SIZE": "2\x00", "RANK": "0", **MASTER}, ("WORLD_SIZE",)),
    # PyTorchJob states the shape twice; the two must agree.
    Case("PET_NNODES=1 WORLD_SIZE=abc", pytorchjob(WORLD_SIZE="abc"), ("WORLD_SIZE", "PET_NNODES")),
    Case("PET_NNODES=1 WORLD_SIZE=8", pytorchjob(WORLD_SIZE="8"), ("WORLD_SIZE", "PET_NNODES")),
    Case("PET_NODE_RANK=0 RANK=3", pytorchjob(RANK="3"), ("RANK", "PET_NODE_RANK")),
    Case(
        "WORLD_SIZE=8 RANK=3, one machine", pytorchjob(WORLD_SIZE="8", RANK="3"), ("WORLD_SIZE", "PET_NNODES")
    ),
    Case("PyTorchJob WORLD_SIZE 1_0", pytorchjob(nproc="10", WORLD_SIZE="1_0"), ("WORLD_SIZE", "PET_NNODES")),
    Case(
        "PyTorchJob auto counts 1 per pod",
        pytorchjob(nnodes="2", nproc="auto", WORLD_SIZE="16"),
        ("WORLD_SIZE", "PET_NNODES"),
    ),
    # torchrun's ranks are numbered machine by machine.
    Case("torchrun LOCAL_RANK contradicts RANK", torchrun(rank="1", local_rank="0"), ("LOCAL_RANK", "RANK")),
    Case(
        "torchrun GROUP_RANK contradicts RANK",
        torchrun(rank="3", local_rank="1", GROUP_RANK="0"),
        ("GROUP_RANK", "RANK"),
    ),
]


def _check_message(error: BaseException, names: tuple[str, ...]) -> None:
    message = str(error)
    assert "\n" not in message, message
    for name in names:
        assert re.search(rf"(?<![A-Z_]){name}(?![A-Z_])", message), f"{name} not named in: {message}"


@pytest.mark.parametrize("case", ENV_CASES, ids=[c.id for c in ENV_CASES])
def test_hostile_environment_is_refused_naming_the_variables(case: Case):
    with pytest.raises(ValueError) as error:
        DistEnv.from_environ(case.environ)
    _check_message(error.value, case.names)


@pytest.mark.parametrize(
    "environ, expected",
    [
        (pytorchjob(), DistEnv("pytorchjob", 1, 0, 2, "m", 2222)),
        # nprocPerNode auto: the launcher counts the GPUs (None until then).
        (pytorchjob(nnodes="3", node_rank="2", nproc="auto"), DistEnv("pytorchjob", 3, 2, None, "m", 2222)),
        # Rank 1 of 4, 2 per machine: machine 0 of 2, already spawned by torchrun.
        (torchrun(GROUP_RANK="0"), DistEnv("torchrun", 2, 0, 2, "m", 2222, True, rank=1, local_rank=1)),
    ],
    ids=["pytorchjob", "pytorchjob-auto", "torchrun"],
)
def test_the_consistent_twins_of_those_environments_are_accepted(environ, expected):
    assert DistEnv.from_environ(environ) == expected


@pytest.mark.parametrize("value", ["yes", "true", "2", "\uff11"])
def test_allow_oversubscribe_is_0_or_1(value):
    with pytest.raises(ValueError, match="HFAI_ALLOW_OVERSUBSCRIBE"):
        allow_oversubscribe({"HFAI_ALLOW_OVERSUBSCRIBE": value})


@pytest.fixture
def cpu_machine(monkeypatch):
    """A launch on a machine without GPUs whose spawn only records how many it would start."""
    import hfai_runtime.detectron2.launch as launch

    for key in [k for k in os.environ if k.startswith("PET_") or k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")]:
        monkeypatch.delenv(key)
    monkeypatch.delenv("HFAI_ALLOW_OVERSUBSCRIBE", raising=False)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 0)
    started: list[int] = []
    monkeypatch.setattr(launch, "spawn", lambda worker, nprocs, *args, **kwargs: started.append(nprocs) or 0)
    return launch, started


@pytest.mark.detectron2
@pytest.mark.parametrize("how", ["PET_NPROC_PER_NODE", "num_gpus_per_machine"])
def test_more_processes_than_cpus_is_refused_unless_allowed(how, cpu_machine, monkeypatch):
    launch, started = cpu_machine
    procs = len(os.sched_getaffinity(0)) + 1
    requested = None
    if how == "PET_NPROC_PER_NODE":
        monkeypatch.setenv("PET_NNODES", "1")
        monkeypatch.setenv("PET_NPROC_PER_NODE", str(procs))
    else:
        requested = procs
    with pytest.raises(ValueError) as error:
        launch.launch_from_env(pytest.fail, requested)
    _check_message(error.value, (how, "HFAI_ALLOW_OVERSUBSCRIBE"))
    assert started == []
    monkeypatch.setenv("HFAI_ALLOW_OVERSUBSCRIBE", "1")
    launch.launch_from_env(pytest.fail, requested)
    assert started == [procs]
