"""launch_from_env on CPU over gloo: topologies from PyTorchJob's env, SIGTERM relay, exit codes,
bad environments. Each job is real processes on loopback (tests/scripts/launch_main.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _dist_util import (
    REPO,
    base_env,
    start,
    topology_envs,
    torchrun_envs,
    wait_all,
    wait_for,
)

from hfai_runtime.distributed.rendezvous import free_port
from hfai_runtime.distributed.spawn import job_exit_code

MAIN = "tests/scripts/launch_main.py"


def _launch(topology: str, mode: str, tmp_path, **extra: str):
    envs = topology_envs(topology, **extra)
    return [
        start([MAIN, mode, str(tmp_path)], env, tmp_path / f"launcher{i}.log") for i, env in enumerate(envs)
    ]


def _logs(tmp_path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted(tmp_path.glob("launcher*.log")))


def _check_no_threads_left(tmp_path, launchers: int) -> None:
    """A rank run in the launcher's process leaves no gloo threads behind: one that outlives
    the job is freed during interpreter shutdown and can abort the process (exit -6)."""
    counts = [json.loads(f.read_text()) for f in tmp_path.glob("threads-*.json")]
    assert len(counts) == launchers and all(after == before for before, after in counts), counts


def _check_reports(tmp_path, local_ranks: list[int]) -> None:
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for rank, record in enumerate(records):
        assert (record["rank"], record["world"], record["sum"]) == (rank, 2, 3.0)
        assert record["local_rank"] == local_ranks[rank]
        assert record["model"] == "_CpuTolerantDDP" and record["backend"] == "gloo"
        assert record["env"]["RANK"] == str(rank) and record["env"]["WORLD_SIZE"] == "2"


#: What each machine's launcher says it joined, per topology (its log: one line per machine).
JOINED = {
    "2x1": ["2 machines x 1 process = 2 ranks; this is machine 0 (rank 0)", "this is machine 1 (rank 1)"],
    "1x2": ["1 machine x 2 processes = 2 ranks; this is machine 0 (ranks 0-1)"],
    "hfai-2x1": [
        "2 machines x 1 process = 2 ranks; this is machine 0 (rank 0)",
        "this is machine 1 (rank 1)",
    ],
    "trainjob-2x1": [
        "2 machines x 1 process = 2 ranks; this is machine 0 (rank 0)",
        "this is machine 1 (rank 1)",
    ],
}
SOURCES = {"2x1": "pytorchjob", "1x2": "pytorchjob", "hfai-2x1": "hfai", "trainjob-2x1": "trainjob"}


@pytest.mark.slow
@pytest.mark.detectron2
@pytest.mark.parametrize("topology", ["2x1", "1x2", "hfai-2x1", "trainjob-2x1"])
def test_ranks_join_and_ddp_wraps_a_cpu_model(topology, tmp_path):
    procs = _launch(topology, "report", tmp_path)
    assert wait_all(procs, 120) == [0] * len(procs), _logs(tmp_path)
    _check_reports(tmp_path, [0, 1] if topology == "1x2" else [0, 0])
    _check_no_threads_left(tmp_path, len(procs))
    for i, expected in enumerate(JOINED[topology]):  # launcher i's log says what it joined, once
        [line] = [ln for ln in (tmp_path / f"launcher{i}.log").read_text().splitlines() if "joined" in ln]
        assert expected in line and "master 127.0.0.1:" in line and "backend gloo" in line, line
        assert f"from the {SOURCES[topology]} environment" in line, line


@pytest.mark.slow
@pytest.mark.detectron2
def test_under_torchrun_nothing_is_spawned_again(tmp_path):
    torchrun = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc-per-node", "2"]
    proc = subprocess.Popen(
        [*torchrun, MAIN, "report", str(tmp_path)],
        env=base_env(),
        cwd=REPO,
        stdout=open(tmp_path / "launcher0.log", "wb"),
        stderr=subprocess.STDOUT,
    )
    assert wait_all([proc], 120) == [0], _logs(tmp_path)
    _check_reports(tmp_path, [0, 1])  # world 2: each torchrun worker is one rank, not a launcher
    _check_no_threads_left(tmp_path, 2)  # each worker runs its rank in the launcher's process


@pytest.mark.slow
@pytest.mark.detectron2
@pytest.mark.parametrize("topology", ["2x1", "1x2"])
def test_sigterm_to_one_launcher_suspends_every_rank(topology, tmp_path):
    procs = _launch(topology, "suspend", tmp_path, HFAI_SUSPEND_EXIT_CODE="99")
    wait_for(lambda: len(list(tmp_path.glob("ready*"))) == 2, 120, "both ranks to start")
    procs[-1].send_signal(signal.SIGTERM)
    assert wait_all(procs, 60) == [99] * len(procs), _logs(tmp_path)
    # A suspended launcher exits right after its atexit handlers (no finalization, so no gloo
    # thread can abort it): they ran, the code after launch_from_env did not.
    assert len(list(tmp_path.glob("atexit-*"))) == len(procs), _logs(tmp_path)
    assert not list(tmp_path.glob("threads-*.json"))


@pytest.mark.slow
@pytest.mark.parametrize("mode, code", [("fail", 3), ("sigkill", 128 + signal.SIGKILL)])
def test_failing_worker_code_is_the_job_code(mode, code, tmp_path):
    procs = _launch("1x2", mode, tmp_path)
    assert wait_all(procs, 120) == [code], _logs(tmp_path)


@pytest.mark.slow
def test_without_omp_num_threads_the_processes_of_a_machine_share_its_cpus(tmp_path):
    """PyTorchJob sets no OMP_NUM_THREADS: each of nprocPerNode 2 processes gets half the CPUs,
    as under torchrun (this path once died with UnboundLocalError before any rank joined)."""
    [env] = topology_envs("1x2")
    del env["OMP_NUM_THREADS"]
    proc = start([MAIN, "report", str(tmp_path)], env, tmp_path / "launcher0.log")
    assert wait_all([proc], 120) == [0], _logs(tmp_path)
    _check_reports(tmp_path, [0, 1])
    expected = max(1, len(os.sched_getaffinity(0)) // 2)
    assert [json.loads((tmp_path / f"rank{r}.json").read_text())["threads"] for r in range(2)] == [
        expected
    ] * 2


def _fake_gpu_job(envs: list[dict[str, str]], tmp_path) -> list[dict]:
    procs = [
        start(["tests/scripts/launch_fake_gpu.py", str(tmp_path)], env, tmp_path / f"launcher{i}.log")
        for i, env in enumerate(envs)
    ]
    assert wait_all(procs, 120) == [0] * len(procs), _logs(tmp_path)
    return [json.loads(p.read_text()) for p in sorted(tmp_path.glob("rank*.json"))]


@pytest.mark.slow
@pytest.mark.parametrize("topology, world", [("1x2", 2), ("trainjob-2x1", 4)])
def test_gpu_path_asks_for_nccl_with_one_device_per_local_rank(topology, world, tmp_path):
    """The NCCL branch run on CPU, faked at the device (tests/scripts/launch_fake_gpu.py): 2 visible GPUs,
    so nprocPerNode 'auto' spawns 2 per machine; each rank sets its device before joining."""
    envs = [{k: v for k, v in env.items() if k != "OMP_NUM_THREADS"} for env in topology_envs(topology)]
    records = _fake_gpu_job(envs, tmp_path)
    assert [r["rank"] for r in records] == list(range(world))
    for record in records:
        assert (record["backend"], record["world"]) == ("nccl", world)
        assert record["devices_set"] == [record["local_rank"]] == [record["rank"] % 2]
        assert record["threads"] == max(1, len(os.sched_getaffinity(0)) // 2)


@pytest.mark.slow
def test_gpu_path_under_torchrun_asks_for_nccl(tmp_path):
    records = _fake_gpu_job(torchrun_envs(2, free_port()), tmp_path)
    assert [(r["backend"], r["rank"], r["devices_set"]) for r in records] == [
        ("nccl", 0, [0]),
        ("nccl", 1, [1]),
    ]


def _agent_store(port: int):
    """A store like the one torchrun's agent hosts at MASTER_ADDR:MASTER_PORT."""
    import torch.distributed as dist

    return dist.TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False)


@pytest.mark.slow
@pytest.mark.parametrize(
    "case", ["hfai rank 1", "torchrun rank 1", "torchrun rank 0", "torchrun agent store"]
)
def test_missing_master_or_peer_fails_in_bounded_time_naming_the_master(case, tmp_path):
    """Nobody listens at the master's port (a rank > 0), or the peer never comes (rank 0; a
    torchrun rank whose agent hosts the store): the rank fails within the connect timeout."""
    port = free_port()
    if case == "hfai rank 1":
        env = base_env(WORLD_SIZE="2", RANK="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    else:
        env = torchrun_envs(2, port)[0 if case.endswith(("0", "store")) else 1]
    store = _agent_store(port) if case.endswith("store") else None
    if store is not None:
        env["TORCHELASTIC_USE_AGENT_STORE"] = "True"
    began = time.monotonic()
    proc = start([MAIN, "report", str(tmp_path), "3"], env, tmp_path / "launcher0.log")
    assert wait_all([proc], 60) == [1]
    log = _logs(tmp_path)
    assert "TimeoutError" in log and "MASTER_ADDR=127.0.0.1" in log and f"MASTER_PORT={port}" in log, log
    if store is not None:
        assert "rank(s) 1 never arrived" in log, log
    assert time.monotonic() - began < 45


@pytest.mark.detectron2
@pytest.mark.parametrize(
    "environ, variable",
    [
        ({"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "2222"}, "RANK"),
        ({"WORLD_SIZE": "2", "RANK": "1", "MASTER_PORT": "2222"}, "MASTER_ADDR"),
        ({"PET_NNODES": "1", "PET_NODE_RANK": "0", "PET_NPROC_PER_NODE": "two"}, "PET_NPROC_PER_NODE"),
        ({"HFAI_SUSPEND_EXIT_CODE": "300"}, "HFAI_SUSPEND_EXIT_CODE"),
    ],
)
def test_bad_environment_fails_before_spawning(environ, variable, monkeypatch):
    from hfai_runtime.detectron2 import launch_from_env

    for key, value in base_env(**environ).items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match=variable):
        launch_from_env(pytest.fail)  # never called


@pytest.mark.detectron2
@pytest.mark.parametrize(
    "environ, requested, variable",
    [
        ({}, 4, "num_gpus_per_machine=4"),
        ({"PET_NNODES": "1", "PET_NODE_RANK": "0", "PET_NPROC_PER_NODE": "4"}, None, "PET_NPROC_PER_NODE=4"),
    ],
)
def test_more_processes_than_gpus_names_where_the_count_came_from(environ, requested, variable, monkeypatch):
    # Two visible GPUs are faked: this machine has none, and the check runs before any is used.
    from hfai_runtime.detectron2 import launch_from_env

    for key, value in base_env(**environ).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 2)
    with pytest.raises(ValueError, match=rf"{variable}: .*only 2 GPUs"):
        launch_from_env(pytest.fail, requested)  # never called


@pytest.mark.detectron2
def test_launch_restores_the_sigterm_handler_it_found(monkeypatch):
    """One process (no environment): the rank runs here, with SIGTERM composed with the handler
    installed before (it runs too), which is back in place after training."""
    from hfai_runtime.detectron2 import launch_from_env
    from hfai_runtime.distributed import suspend

    for key in [k for k in os.environ if k.startswith("PET_") or k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")]:
        monkeypatch.delenv(key)
    monkeypatch.setattr(suspend, "_flag", suspend._Flag())
    calls = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(signum))
    try:
        user_handler = signal.getsignal(signal.SIGTERM)

        def main():
            os.kill(os.getpid(), signal.SIGTERM)
            assert suspend.suspend_requested() and calls == [signal.SIGTERM]

        launch_from_env(main)
        assert signal.getsignal(signal.SIGTERM) is user_handler
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.detectron2
@pytest.mark.parametrize("status, code", [(None, 0), (3, 3), ("no images found", 1)])
def test_a_ranks_sys_exit_keeps_its_code_and_message(status, code, capsys):
    from hfai_runtime.detectron2.launch import _run_main

    assert _run_main(sys.exit, (status,)) == code
    assert capsys.readouterr().err == ("no images found\n" if isinstance(status, str) else "")


def test_job_exit_code_prefers_first_failure_then_suspend():
    assert job_exit_code([0, 0], 143) == 0
    assert job_exit_code([143, 0], 143) == 143
    assert job_exit_code([143, 137, 1], 143) == 137


@pytest.mark.slow
@pytest.mark.parametrize("topology", ["2x1", "1x2"])
def test_a_rank_that_raises_exits_1_without_waiting(topology, tmp_path):
    """Rank 0 raises while its DataLoader is mid-epoch and rank 1 waits in an all-reduce: rank 0
    must not wait at exit for its DataLoader worker (which ignores SIGTERM) nor for its peers."""
    procs = _launch(topology, "raise", tmp_path)
    wait_for(lambda: (tmp_path / "raising").exists(), 120, "rank 0 to raise")
    assert wait_all(procs[:1], 20) == [1], _logs(tmp_path)
    assert "RuntimeError: rank 0 failed mid-epoch" in _logs(tmp_path)
    wait_all(procs, 60)  # rank 1 of 2x1: its all-reduce fails once rank 0 is gone


@pytest.mark.slow
@pytest.mark.parametrize("topology", ["2x1", "1x2"])
def test_print_output_survives_a_kill_under_the_operators_pythonunbuffered(topology, tmp_path):
    """The operator injects PYTHONUNBUFFERED=0 (buffered); a rank's print must still reach the
    log, which is not a terminal, before the rank is killed."""
    procs = _launch(topology, "print", tmp_path, PYTHONUNBUFFERED="0")
    wait_all(procs, 120)
    assert all(f"rank {rank} was here" in _logs(tmp_path) for rank in range(2)), _logs(tmp_path)
