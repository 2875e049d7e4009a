"""The startup marks behind the STARTUP record: a boundary keeps its first time, and the
process's start tick read from /proc agrees with psutil's reading of it."""

from __future__ import annotations

import psutil
import pytest

from hfai_runtime import startup
from hfai_runtime.startup import Mark


def test_a_mark_keeps_its_first_time_and_marks_list_the_process_start_first(monkeypatch):
    monkeypatch.setattr(startup, "_marks", {})
    startup.mark(Mark.JOINED)
    first = startup.marks()[Mark.JOINED.value]
    startup.mark(Mark.JOINED)
    marks = startup.marks()
    assert marks[Mark.JOINED.value] == first
    assert list(marks) == ["process_started", "joined"]
    with pytest.raises(ValueError):
        startup.mark("not a boundary")


def test_process_start_is_the_kernels():
    """The start tick read from /proc equals psutil's, which adds it to the boot time: no clock
    is read twice, so no window of time enters the comparison."""
    assert startup.process_started() is not None
    kernel = psutil.Process().create_time() - psutil.boot_time()
    assert startup.started_after_boot() == pytest.approx(kernel, abs=1e-6)
