"""What run-local prints after a run: whole timeline details, a failed pod's cause.

Unit tests over :class:`~hfai_runtime.timeline.Event` lists and real log files; the runs that
produce them are tested in test_run_local.py.
"""

from __future__ import annotations

from hfai_runtime.cli.run_local import FAILED_LOG_LINES, failed_pod_logs
from hfai_runtime.timeline import Event, EventKind, format_timeline

LONG = "attempt 1, pid 4242: python train_net.py --config-file configs/smoke_cpu.yaml SOLVER.MAX_ITER 10 OUTPUT_DIR /mnt/data/output/local"


def test_a_long_detail_wraps_whole_within_the_terminal():
    events = [Event(0.01, "master-0", EventKind.STARTED, LONG, 1), Event(1.5, "", EventKind.RESUMED, "short")]
    lines = "\n".join(format_timeline(events, columns=80)).splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert len(lines) > 3, "the detail wrapped"
    detail_column = lines[0].index("attempt 1")
    assert all(line[:detail_column].strip() == "" for line in lines[1:-1]), "continuations are indented"
    assert " ".join(line[detail_column:].strip() for line in lines[:-1]) == LONG, "nothing is cut"
    assert lines[-1].endswith("short")


def test_without_a_terminal_width_a_detail_stays_on_one_line():
    [line] = format_timeline([Event(0.01, "master-0", EventKind.STARTED, LONG, 1)])
    assert line.endswith(LONG)


def test_a_failed_pod_shows_its_log_tail_and_path(tmp_path):
    log = tmp_path / "worker-0-attempt2.log"
    log.write_text(
        "".join(f"line {i}\n" for i in range(100)) + "KeyError: 'Non-existent key: SOLVER.MAX_ITR'\n"
    )
    (tmp_path / "master-0-attempt1.log").write_text("suspended\n")
    events = [
        Event(0.0, "master-0", EventKind.STARTED, "attempt 1", 1),
        Event(1.0, "master-0", EventKind.EXITED, "exit code 143", 143),  # retried: not a failure
        Event(2.0, "worker-0", EventKind.STARTED, "attempt 2", 2),
        Event(3.0, "worker-0", EventKind.EXITED, "exit code 1", 1),
    ]
    out = failed_pod_logs(events, tmp_path)
    assert out[0] == f"run-local: worker-0 attempt 2 exited 1; the last {FAILED_LOG_LINES} lines of {log}:"
    assert out[-1] == "  | KeyError: 'Non-existent key: SOLVER.MAX_ITR'"
    assert len(out) == 1 + FAILED_LOG_LINES and out[1] == "  | line 81"


def test_a_missing_log_is_named(tmp_path):
    events = [
        Event(0.0, "node-0", EventKind.STARTED, "attempt 1", 1),
        Event(1, "node-0", EventKind.EXITED, "", 2),
    ]
    [line] = failed_pod_logs(events, tmp_path)
    assert "node-0 exited 2" in line and str(tmp_path / "node-0-attempt1.log") in line
