"""The suspend building blocks in one process: the flag, agreement without a process group,
the environment knobs, and atomic writes that fail."""

from __future__ import annotations

import os
import signal

import pytest

from hfai_runtime.atomic import atomic_write
from hfai_runtime.distributed import suspend


def test_sigterm_only_sets_the_flag(monkeypatch):
    monkeypatch.setattr(suspend, "_flag", suspend._Flag())
    previous = signal.getsignal(signal.SIGTERM)
    try:
        suspend.install_sigterm_handler()
        assert not suspend.suspend_requested() and not suspend.agree()
        os.kill(os.getpid(), signal.SIGTERM)  # would end pytest if it were not handled
        assert suspend.suspend_requested() and suspend.agree()  # one process: agree = local flag
        assert suspend.requested_at() is not None
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_job_suspended_exits_with_the_suspend_code(monkeypatch):
    monkeypatch.setenv("HFAI_SUSPEND_EXIT_CODE", "99")
    error = suspend.JobSuspended(12)
    assert isinstance(error, SystemExit) and not isinstance(error, Exception)
    assert (error.code, error.iteration) == (99, 12)


@pytest.mark.parametrize("environ, code, grace", [
    ({}, 143, None),
    ({"HFAI_SUSPEND_EXIT_CODE": "130", "HFAI_GRACE_PERIOD_SECONDS": "15"}, 130, 15.0),
])
def test_environment_knobs(environ, code, grace):
    assert suspend.suspend_exit_code(environ) == code
    assert suspend.grace_period_seconds(environ) == grace


@pytest.mark.parametrize("name, value", [
    ("HFAI_SUSPEND_EXIT_CODE", "0"), ("HFAI_SUSPEND_EXIT_CODE", "x"),
    ("HFAI_GRACE_PERIOD_SECONDS", "-5"), ("HFAI_GRACE_PERIOD_SECONDS", "soon"),
])
def test_bad_environment_knob_names_the_variable(name, value):
    parse = suspend.suspend_exit_code if name == "HFAI_SUSPEND_EXIT_CODE" else suspend.grace_period_seconds
    with pytest.raises(ValueError, match=name):
        parse({name: value})


def test_failed_atomic_write_keeps_the_old_file_and_no_partial(tmp_path):
    target = tmp_path / "last_checkpoint"
    target.write_text("model_0000009.pth")

    def write_then_fail(handle):
        handle.write(b"model_00")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(str(target), write_then_fail)
    assert target.read_text() == "model_0000009.pth"
    assert [p.name for p in tmp_path.iterdir()] == ["last_checkpoint"]
    atomic_write(str(target), lambda handle: handle.write(b"model_0000019.pth"))
    assert target.read_text() == "model_0000019.pth"
