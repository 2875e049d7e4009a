"""The runtime's restart limits (hfai_runtime.distributed.restarts): the preemption budget and the
crash-loop guard, on a real OUTPUT_DIR. Each start is what a pod does after loading its checkpoint;
a start with no recorded end is a pod that was killed (SIGKILL, exit 137: OOMKilled)."""

from __future__ import annotations

import itertools
import json

import pytest

from hfai_runtime.distributed.restarts import (
    LEDGER_NAME,
    LIMIT_EXIT_CODE,
    End,
    Limits,
    RestartGuard,
    RestartLimitReached,
)


def _guard(tmp_path, max_preemptions=None, crash_loop=3) -> RestartGuard:
    ticks = itertools.count(1000)
    return RestartGuard(tmp_path, Limits(max_preemptions, crash_loop), clock=lambda: float(next(ticks)))


def test_a_run_survives_max_preemptions_and_stops_at_the_next(tmp_path):
    guard = _guard(tmp_path, max_preemptions=3)
    for n in range(4):  # the first start, then 3 restarts after preemptions that made progress
        guard.on_start(start_iter=10 * n)
        guard.on_end(End.SUSPENDED, 10 * n + 9)
    with pytest.raises(RestartLimitReached) as stop:
        guard.on_start(start_iter=40)  # the 4th preemption's restart
    assert stop.value.code == LIMIT_EXIT_CODE == 1
    assert "restarted 4 times" in stop.value.reason and "max_preemptions 3" in stop.value.reason
    assert "suspended at iteration 39" in stop.value.reason  # how the last start ended
    starts = guard.read()
    assert [s.end for s in starts] == [End.SUSPENDED] * 4 + [End.STOPPED]


def test_a_stopped_run_is_followed_by_a_new_count(tmp_path):
    guard = _guard(tmp_path, max_preemptions=1)
    guard.on_start(0)
    guard.on_end(End.SUSPENDED, 5)
    guard.on_start(6)
    guard.on_end(End.SUSPENDED, 9)
    with pytest.raises(RestartLimitReached):
        guard.on_start(10)
    guard.on_start(10)  # the job was resubmitted: a new run, nothing to refuse
    assert len(guard.read()) == 1


@pytest.mark.parametrize("end", [End.COMPLETED, End.FAILED])
def test_a_finished_run_resets_the_count(tmp_path, end):
    guard = _guard(tmp_path, max_preemptions=0)
    guard.on_start(0)
    guard.on_end(end, 100)
    guard.on_start(0)
    assert [s.end for s in guard.read()] == [None]


def test_three_kills_without_progress_stop_the_fourth_start_naming_oom(tmp_path):
    guard = _guard(tmp_path, max_preemptions=20)
    for _ in range(3):
        guard.on_start(start_iter=50)  # OOM-killed each time before a new checkpoint
    with pytest.raises(RestartLimitReached) as stop:
        guard.on_start(start_iter=50)
    reason = stop.value.reason
    assert "crash loop" in reason and "last 3 starts" in reason and "iteration 50" in reason
    assert "OOMKilled" in reason and "137" in reason


def test_kills_that_make_progress_are_no_crash_loop(tmp_path):
    guard = _guard(tmp_path, crash_loop=2)
    for start in (0, 0, 20, 20, 40):  # each second start got past the checkpoint
        guard.on_start(start)
    assert len(guard.read()) == 5


def test_zero_turns_the_crash_loop_guard_off(tmp_path):
    guard = _guard(tmp_path, crash_loop=0)
    for _ in range(10):
        guard.on_start(7)
    assert len(guard.read()) == 10


def test_the_ledger_is_json_written_atomically_and_a_damaged_one_restarts_the_count(tmp_path):
    guard = _guard(tmp_path)
    guard.on_start(3)
    data = json.loads((tmp_path / LEDGER_NAME).read_text())
    assert data == {"starts": [{"start_iter": 3, "started_at": 1000.0, "end": None, "end_iter": None}]}
    assert sorted(p.name for p in tmp_path.iterdir()) == [LEDGER_NAME]  # no temporary left
    (tmp_path / LEDGER_NAME).write_text('{"starts": [{"start_iter": "x"')
    assert guard.read() == []
    guard.on_start(3)
    assert len(guard.read()) == 1


@pytest.mark.parametrize(
    "env, expected",
    [({}, Limits(None, 3)), ({"HFAI_MAX_PREEMPTIONS": "5", "HFAI_CRASH_LOOP_LIMIT": "0"}, Limits(5, 0))],
)
def test_limits_come_from_the_environment(env, expected):
    assert Limits.from_environ(env) == expected


@pytest.mark.parametrize("name", ["HFAI_MAX_PREEMPTIONS", "HFAI_CRASH_LOOP_LIMIT"])
def test_a_bad_limit_names_its_variable(name):
    with pytest.raises(ValueError, match=f"{name}='-1'"):
        Limits.from_environ({name: "-1"})


@pytest.mark.slow
@pytest.mark.detectron2
def test_a_real_training_records_its_starts_and_refuses_a_crash_loop(tiny_coco, tmp_path):
    """tools/tiny_train.py (detectron2, SuspendCheckpointer): a completed run records one start
    that completed; with three kills from iteration 0 already recorded (what three OOM kills
    leave), the next start exits 1 before its first step, saying why, on every rank."""
    import subprocess
    import sys

    from _dist_util import REPO, base_env

    from hfai_runtime.records import RecordKind, parse_record

    def train(out, **env):
        return subprocess.run(
            [
                sys.executable,
                "tools/tiny_train.py",
                "--data",
                str(tiny_coco),
                "--out",
                str(out),
                "--max-iter",
                "2",
            ],
            cwd=REPO,
            env=base_env(**env),
            capture_output=True,
            text=True,
            timeout=600,
        )

    done = train(tmp_path / "done")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (start,) = RestartGuard(tmp_path / "done", Limits(None)).read()
    assert (start.start_iter, start.end, start.end_iter) == (0, End.COMPLETED, 2)

    looping = tmp_path / "looping"
    looping.mkdir()
    guard = _guard(looping)
    for _ in range(3):
        guard.on_start(0)
    stopped = train(looping, HFAI_CRASH_LOOP_LIMIT="3")
    log = stopped.stdout + stopped.stderr
    assert stopped.returncode == LIMIT_EXIT_CODE, log[-3000:]
    (record,) = [r for r in map(parse_record, log.splitlines()) if r and r.kind == RecordKind.STOPPED]
    assert record.fields["exit_code"] == 1 and "OOMKilled" in record.fields["reason"]
    assert not (looping / "started.rank0").exists(), "it stopped before its first step"
    assert [s.end for s in guard.read()] == [None, None, None, End.STOPPED]
