"""SuspendCheckpointer under real detectron2 training over gloo, launched from PyTorchJob's env:
SIGTERM to any one process -> every rank stops after the same iteration, one checkpoint, every
process exits 143 -- at random moments, during evaluation, and while the data loader is busy.
Where each rank stopped is read from its structured records (hfai_runtime.records)."""

from __future__ import annotations

import os
import random
import signal
import time

import psutil
import pytest
import torch
from _dist_util import start, topology_envs, wait_all, wait_for

from hfai_runtime.records import RecordKind, parse_record
from hfai_runtime.startup import Mark

pytestmark = pytest.mark.slow

TRIALS_PER_TOPOLOGY = 5  # ten trials in all
TRIAL_TIMEOUT_S = 180


def _launch(topology: str, data, out, *extra: str, **env: str):
    args = ["tools/tiny_train.py", "--data", str(data), "--out", str(out), *extra]
    return [
        start(args, launcher_env, out.parent / f"{out.name}.launcher{i}.log")
        for i, launcher_env in enumerate(topology_envs(topology, **env))
    ]


def _workers(launcher) -> list[int]:
    """PIDs of the training processes a launcher spawned (not its resource tracker, nor a
    short-lived helper process that an import ran and that has exited or not been reaped yet)."""
    pids = []
    for child in psutil.Process(launcher.pid).children():
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                pids.append(child.pid)
        except psutil.Error:  # ZombieProcess, NoSuchProcess
            pass
    return pids


def _started(out) -> bool:
    return len(list(out.glob("started.rank*"))) == 2


def _records(log_text: str, kind: RecordKind) -> list[dict]:
    return [r.fields for r in map(parse_record, log_text.splitlines()) if r is not None and r.kind == kind]


def _check_one_suspend(out, log_text: str) -> int:
    """Every rank recorded a suspend at the same iteration, on the flags after that iteration or
    the one before (the agreement overlaps a step), and exactly that checkpoint exists. The
    ranks' and the launchers' ``atexit`` handlers ran (the suspended processes exit promptly)."""
    suspends = {r["rank"]: r for r in _records(log_text, RecordKind.SUSPENDED)}
    assert set(suspends) == {0, 1}, log_text[-3000:]
    assert len({r["iteration"] for r in suspends.values()}) == 1, suspends
    iteration = suspends[0]["iteration"]
    assert {r["agreed_after"] for r in suspends.values()} <= {iteration - 1, iteration}, suspends
    assert {(r["exit_code"], r["checkpoint"]) for r in suspends.values()} == {
        (143, str(out / f"model_{iteration:07d}.pth"))
    }
    assert [p.name for p in out.glob("model_*.pth")] == [f"model_{iteration:07d}.pth"]
    assert (out / "last_checkpoint").read_text() == f"model_{iteration:07d}.pth"
    checkpoint = torch.load(out / f"model_{iteration:07d}.pth", map_location="cpu", weights_only=True)
    assert checkpoint["iteration"] == iteration
    assert "Traceback" not in log_text and "DataLoader worker" not in log_text, log_text[-3000:]
    startups = _records(log_text, RecordKind.STARTUP)  # after each attempt's first step
    assert {r["rank"] for r in startups} == {0, 1}, log_text[-3000:]
    for startup in startups:
        times = [startup[m.value] for m in Mark]  # passed in this order, all of them
        assert startup["process_started"] <= times[0] and times == sorted(times), startup
    launchers = len(list(out.parent.glob(f"{out.name}.launcher*.log")))
    assert sorted(p.name for p in out.glob("atexit.*")) == sorted(
        [*(f"atexit.launcher{i}" for i in range(launchers)), "atexit.rank0", "atexit.rank1"]
    )
    return iteration


def _logs(out) -> str:
    return "\n".join(
        p.read_text(errors="replace") for p in sorted(out.parent.glob(f"{out.name}.launcher*.log"))
    )


# 2x1 also runs against detectron2 main (make test's second pass).
@pytest.mark.parametrize("topology", [pytest.param("2x1", marks=pytest.mark.detectron2), "1x2"])
def test_sigterm_to_any_one_process_at_random_moments(topology, tiny_coco, tmp_path):
    rng = random.Random()
    for trial in range(TRIALS_PER_TOPOLOGY):
        out = tmp_path / f"trial{trial}"
        out.mkdir()
        launchers = _launch(topology, tiny_coco, out)
        wait_for(
            lambda: _started(out) or any(p.poll() is not None for p in launchers),
            TRIAL_TIMEOUT_S,
            "training to start",
        )
        time.sleep(rng.uniform(0.0, 2.0))
        targets = [p.pid for p in launchers] + [pid for p in launchers for pid in _workers(p)]
        target = rng.choice(targets)
        os.kill(target, signal.SIGTERM)
        codes = wait_all(launchers, TRIAL_TIMEOUT_S)
        assert codes == [143] * len(launchers), f"trial {trial}, SIGTERM to {target}:\n{_logs(out)[-3000:]}"
        _check_one_suspend(out, _logs(out))


def test_sigterm_while_workers_import_still_suspends(tiny_coco, tmp_path):
    """SIGTERM relayed before the workers installed their handler waits for it (blocked)."""
    out = tmp_path / "early"
    out.mkdir()
    [launcher] = _launch("1x2", tiny_coco, out)
    wait_for(lambda: len(_workers(launcher)) == 2, 60, "the workers to be spawned")
    launcher.send_signal(signal.SIGTERM)
    assert wait_all([launcher], TRIAL_TIMEOUT_S) == [143], _logs(out)[-3000:]
    assert _check_one_suspend(out, _logs(out)) == 0


@pytest.mark.detectron2
def test_sigterm_during_evaluation_suspends_after_it(tiny_coco, tmp_path):
    """SIGTERM to the whole process group (DataLoader workers included) mid-evaluation."""
    out = tmp_path / "eval"
    out.mkdir()
    [launcher] = _launch("1x2", tiny_coco, out, "--eval-period", "3", "--workers", "2")
    wait_for(lambda: (out / "eval_started").exists(), TRIAL_TIMEOUT_S, "the evaluation to start")
    os.killpg(launcher.pid, signal.SIGTERM)
    assert wait_all([launcher], TRIAL_TIMEOUT_S) == [143], _logs(out)[-3000:]
    assert _check_one_suspend(out, _logs(out)) == 2  # the step the evaluation ran after
    # The signal came during the evaluation, which finished, and every rank knew it then.
    assert {p.read_text() for p in out.glob("eval_end_pending.rank*")} == {"true"}


@pytest.mark.detectron2
def test_sigterm_while_data_loader_is_busy(tiny_coco, tmp_path):
    """Slow mapping in 2 DataLoader workers; SIGTERM to every process of the job. A grace
    period shorter than step + save is warned about."""
    out = tmp_path / "busy"
    out.mkdir()
    [launcher] = _launch(
        "1x2", tiny_coco, out, "--slow-mapper", "0.4", "--workers", "2", HFAI_GRACE_PERIOD_SECONDS="1"
    )
    wait_for(lambda: _started(out), TRIAL_TIMEOUT_S, "training to start")
    os.killpg(launcher.pid, signal.SIGTERM)
    assert wait_all([launcher], TRIAL_TIMEOUT_S) == [143], _logs(out)[-3000:]
    _check_one_suspend(out, _logs(out))
    assert "close to the grace period HFAI_GRACE_PERIOD_SECONDS=1 s" in _logs(out)


@pytest.mark.detectron2
def test_every_rank_says_on_stdout_where_it_stopped(tiny_coco, tmp_path):
    """Each pod's log says why it exited, once per rank, on stdout -- a record for tools and a
    line for people -- though the training script sets up no logger of the runtime (train_net.py
    does not). It also says when training started and, on rank 0, how far it got. The agreement
    overlaps the next step here (as from 16 ranks on by default): the grace warning counts 2 steps."""
    out = tmp_path / "said"
    out.mkdir()
    args = ["tools/tiny_train.py", "--data", str(tiny_coco), "--out", str(out), "--sigterm-at", "1"]
    launchers = [
        start(args, env, tmp_path / f"stdout{i}.log", tmp_path / f"stderr{i}.log")
        for i, env in enumerate(
            topology_envs(
                "2x1",
                HFAI_GRACE_PERIOD_SECONDS="0.01",
                HFAI_PROGRESS_EVERY="1",
                HFAI_SUSPEND_OVERLAP_FROM="2",
            )
        )
    ]
    assert wait_all(launchers, TRIAL_TIMEOUT_S) == [143, 143], (tmp_path / "stderr0.log").read_text()[-3000:]
    for rank in range(2):
        stdout = (tmp_path / f"stdout{rank}.log").read_text()
        # SIGTERM came after step 1 (in a hook before the agreement's): the ranks stop after step 2.
        [suspended] = _records(stdout, RecordKind.SUSPENDED)
        assert (suspended["rank"], suspended["iteration"], suspended["agreed_after"]) == (rank, 2, 1)
        assert suspended["steps_to_stop"] == 2 and suspended["save_s"] >= 0
        assert (suspended["since_signal_s"] is None) == (rank == 0)  # signalled on rank 1 only
        assert _records(stdout, RecordKind.TRAINING_STARTED) == [
            {"iteration": 0, "max_iter": 10000, "rank": rank}
        ]
        progress = _records(stdout, RecordKind.PROGRESS)
        assert [(p["iteration"], p["rank"]) for p in progress] == [(0, rank), (1, rank), (2, rank)]
        assert all(p["max_iter"] == 10000 for p in progress), progress
        # The loss is rank 0's to report (detectron2 stores it there); the rate and ETA every rank's.
        assert all(isinstance(p["loss"], float) == (rank == 0) for p in progress), progress
        assert all(p["it_per_s"] > 0 and p["eta_s"] > 0 for p in progress), progress
        said = [line for line in stdout.splitlines() if "Suspending at iteration 2:" in line]
        assert len(said) == 1 and f"[rank{rank}]" in said[0], stdout[-3000:]
        [warning] = [line for line in stdout.splitlines() if "close to the grace period" in line]
        assert "Up to 2 step(s)" in warning, warning
