"""The startup marks behind the STARTUP record: a boundary keeps its first time, and the
process's creation time read from /proc agrees with psutil's reading of it."""

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
    started = startup.process_started()
    assert started is not None
    # Both read the kernel's start time in clock ticks (10 ms); they differ in the boot time
    # they add it to (psutil: /proc/stat's whole seconds), hence the second's tolerance.
    assert abs(started - psutil.Process().create_time()) < 1.0
