"""When a process reached each step of its start, for the STARTUP record (``records``).

A restarted pod pays, before its first resumed step: the interpreter and imports, joining the
process group, building the model, loading the checkpoint, replaying the data stream, and the
first step itself. The runtime marks each boundary here as it passes it (:func:`mark`); the
suspend hook reports them once after the first step, so that ``bench/preemption.py`` and any
log reader can split a restart's cost without parsing human messages.

Layer: none below it; the standard library only.
"""

from __future__ import annotations

import os
import time
from enum import Enum


class Mark(str, Enum):
    """The boundaries, in the order a start passes them."""

    WORKER_STARTED = "worker_started"  # the launcher's worker code runs: interpreter + imports done
    JOINED = "joined"  # the process group is joined: the user's main starts
    TRAINER_BUILT = "trainer_built"  # the suspend hook is constructed: model, optimizer, loader built
    CHECKPOINT_LOADED = "checkpoint_loaded"  # training begins: resume_or_load is done
    REPLAYED = "replayed"  # the data stream is positioned (exact resume)
    FIRST_STEP = "first_step"  # the first step of this attempt is done


_marks: dict[str, float] = {}


def mark(boundary: Mark) -> None:
    """Note that this process passed ``boundary`` now (the first time only)."""
    _marks.setdefault(Mark(boundary).value, time.time())


def marks() -> dict[str, float]:
    """Every boundary passed so far (wall-clock seconds, ``time.time()``), with
    ``process_started`` first when it can be read."""
    started = process_started()
    return ({} if started is None else {"process_started": started}) | _marks


def process_started() -> float | None:
    """When this process was created (``time.time()`` scale, ~10 ms resolution), from Linux's
    ``/proc``; None elsewhere."""
    after_boot = started_after_boot()
    try:
        with open("/proc/uptime", "rb") as uptime:
            up = float(uptime.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return None if after_boot is None else time.time() - (up - after_boot)


def started_after_boot() -> float | None:
    """Seconds from the machine's boot to this process's creation (the kernel's start time, in
    clock ticks of ``/proc/self/stat``); None where there is no such file."""
    try:
        with open("/proc/self/stat", "rb") as stat:
            # The command name (field 2) may hold spaces: the fields after it follow the last ')'.
            ticks = int(stat.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")
