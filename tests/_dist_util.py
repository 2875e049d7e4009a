"""Test helpers shared by the launch/suspend/resume tests: environments and subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from hfai_runtime.distributed.rendezvous import free_port

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def base_env(**extra: str) -> dict[str, str]:
    """This environment minus any distributed variables, plus ``extra``."""
    drop = (
        "RANK",
        "LOCAL_RANK",
        "WORLD_SIZE",
        "LOCAL_WORLD_SIZE",
        "GROUP_RANK",
        "MASTER_ADDR",
        "MASTER_PORT",
        "TORCHELASTIC_RUN_ID",
        "HFAI_SUSPEND_EXIT_CODE",
        "HFAI_GRACE_PERIOD_SECONDS",
    )
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("PET_")}
    env.update({"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **extra})
    return env


def pytorchjob_env(machines: int, machine_rank: int, nproc: int, port: int, **extra: str) -> dict[str, str]:
    """What the PyTorchJob v1 operator injects into replica ``machine_rank`` (on loopback)."""
    return base_env(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(machines * nproc),
        RANK=str(machine_rank),
        PET_NNODES=str(machines),
        PET_NODE_RANK=str(machine_rank),
        PET_NPROC_PER_NODE=str(nproc),
        **extra,
    )


def topology_envs(topology: str, **extra: str) -> list[dict[str, str]]:
    """One env per launcher, as PyTorchJob v1 sets it: ``"2x1"`` = 2 machines x 1 process,
    ``"1x2"`` = 1 machine x 2; or as HFAI (``"hfai-2x1"``) or a TrainJob (``"trainjob-2x1"``)
    sets it for 2 machines."""
    port = free_port()
    if topology == "2x1":
        return [pytorchjob_env(2, rank, 1, port, **extra) for rank in range(2)]
    if topology == "1x2":
        return [pytorchjob_env(1, 0, 2, port, **extra)]
    if topology == "hfai-2x1":
        return [
            base_env(WORLD_SIZE="2", RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), **extra)
            for rank in range(2)
        ]
    assert topology == "trainjob-2x1", topology
    return [
        base_env(
            PET_NNODES="2",
            PET_NODE_RANK=str(rank),
            PET_NPROC_PER_NODE="auto",
            PET_MASTER_ADDR="127.0.0.1",
            PET_MASTER_PORT=str(port),
            **extra,
        )
        for rank in range(2)
    ]


def start(
    args: list[str], env: dict[str, str], log: Path, stderr_log: Path | None = None
) -> subprocess.Popen:
    """Start ``python args...`` in its own session (so a test can signal its process group);
    stdout and stderr go to ``log``, or stderr to ``stderr_log`` if given."""
    stderr = subprocess.STDOUT if stderr_log is None else open(stderr_log, "wb")
    return subprocess.Popen(
        [sys.executable, *args],
        env=env,
        cwd=REPO,
        stdout=open(log, "wb"),
        stderr=stderr,
        start_new_session=True,
    )


def wait_all(procs: list[subprocess.Popen], timeout: float) -> list[int]:
    """Exit codes; on timeout kill every process group and fail (a hang is a test failure)."""
    deadline = time.monotonic() + timeout
    try:
        return [p.wait(max(0.1, deadline - time.monotonic())) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        raise AssertionError(f"hang: processes still running after {timeout} s") from None


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def torchrun_envs(world: int, port: int, **extra: str) -> list[dict[str, str]]:
    """What torchrun gives each of its ``world`` ranks on one machine, without its agent's store
    (``--standalone`` hosts one; here rank 0 hosts it, as ``env://`` does then)."""
    return [
        base_env(
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(world),
            LOCAL_WORLD_SIZE=str(world),
            GROUP_RANK="0",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            **extra,
        )
        for rank in range(world)
    ]
