"""``make demo`` (tools/demo.py): its picture is drawn from the run's own metrics and events, and
its terminal output fits one screen above the summary."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from hfai_runtime.timeline import Event, EventKind

REPO = Path(__file__).resolve().parent.parent
SCREEN_LINES = 40


def load_demo():
    spec = importlib.util.spec_from_file_location("demo", REPO / "tools" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_log(logs: Path, name: str, losses: dict[int, float | None]) -> None:
    from hfai_runtime.records import RecordKind, format_record

    logs.mkdir(exist_ok=True)
    lines = ["detectron2 says hello"] + [
        format_record(RecordKind.PROGRESS, iteration=i, max_iter=60, loss=loss) for i, loss in losses.items()
    ]
    (logs / name).write_text("\n".join(lines) + "\n")


def test_the_picture_is_drawn_from_the_runs_logs_and_events(tmp_path):
    demo = load_demo()
    # Attempt 1 trained 0-2, attempt 2 retrained 2 (the later value wins, as the checkpoint
    # did) and went on; the worker's records carry no loss and are not the curve.
    pre, ref = tmp_path / "pre", tmp_path / "ref"
    write_log(pre, "master-0-attempt1.log", {0: 6.0, 1: 5.5, 2: 5.25})
    write_log(pre, "master-0-attempt2.log", {2: 5.0, 3: 4.5})
    write_log(pre, "worker-0-attempt1.log", {0: None, 1: None})
    write_log(ref, "master-0-attempt1.log", {0: 6.0, 1: 5.5, 2: 5.0, 3: 4.5})
    events = [
        Event(0.0, "master-0", EventKind.STARTED, "attempt 1", 1),
        Event(0.1, "worker-0", EventKind.STARTED, "attempt 1", 1),
        Event(5.0, "worker-0", EventKind.PREEMPTED, "SIGTERM"),
        Event(5.5, "worker-0", EventKind.STOPPED_AT, "stopped at iteration 2", 2),
        Event(6.0, "worker-0", EventKind.EXITED, "exit code 143", 143),
        Event(6.0, "worker-0", EventKind.RESTARTING, "recreated"),
        Event(6.2, "master-0", EventKind.EXITED, "exit code 143", 143),
        Event(6.2, "master-0", EventKind.RESTARTING, "recreated"),
        Event(6.5, "worker-0", EventKind.STARTED, "attempt 2", 2),
        Event(6.6, "master-0", EventKind.STARTED, "attempt 2", 2),
        Event(12.0, "master-0", EventKind.EXITED, "exit code 0", 0),
        Event(12.0, "", EventKind.FINISHED, "Succeeded"),
        Event(12.0, "worker-0", EventKind.STOPPING, "deleted"),
        Event(12.5, "worker-0", EventKind.EXITED, "exit code 143", 143),
    ]
    out = tmp_path / "preemption.png"
    drawn = demo.plot(pre, ref, events, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert drawn["preempted"] == ([0, 1, 2, 3], [6.0, 5.5, 5.0, 4.5])
    assert drawn["reference"] == ([0, 1, 2, 3], [6.0, 5.5, 5.0, 4.5])
    assert drawn["stopped_at"] == [2]
    assert drawn["bars"]["worker-0"] == [
        (0.1, 4.9, "running"),
        (5.0, 1.0, "terminating"),
        (6.0, 0.5, "restarting"),
        (6.5, 5.5, "running"),
        (12.0, 0.5, "terminating"),
    ]
    assert [state for _, _, state in drawn["bars"]["master-0"]] == ["running", "restarting", "running"]


def test_attempt_iterations_come_from_the_runtimes_records(tmp_path):
    from hfai_runtime.records import RecordKind, format_record

    demo = load_demo()
    (tmp_path / "worker-0-attempt1.log").write_text(
        "\n".join(
            [
                "some detectron2 line",
                format_record(RecordKind.TRAINING_STARTED, iteration=0),
                format_record(RecordKind.PROGRESS, iteration=0),
                format_record(RecordKind.SUSPENDED, iteration=7, exit_code=143),
            ]
        )
    )
    (tmp_path / "worker-0-attempt2.log").write_text(
        "\n".join(
            [
                format_record(RecordKind.TRAINING_STARTED, iteration=8),
                format_record(RecordKind.PROGRESS, iteration=59),
            ]
        )
    )
    assert demo.attempt_iterations(tmp_path) == [("worker-0-attempt1", 0, 7), ("worker-0-attempt2", 8, 59)]


@pytest.mark.slow
def test_the_demo_fits_one_screen_and_shows_exactness(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "demo.py"),
            "--work-dir",
            str(tmp_path / "work"),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--max-iter",
            "24",
            "--preempt-after",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    lines = done.stdout.splitlines()
    summary = lines.index("==> Summary")
    assert summary <= SCREEN_LINES, done.stdout
    text = "\n".join(lines[summary:])
    assert "largest difference 0 (bit-identical)" in text, done.stdout
    assert "worker-0-attempt1: trained iterations 0 to" in text
    picture = tmp_path / "work" / "preemption.png"
    assert f"picture (loss curves over the pods' timeline): {picture}" in text
    # The picture's curve is the run's own: the losses rank 0 logged, iteration by iteration.
    demo = load_demo()
    iterations, _ = demo.read_losses(tmp_path / "work" / "logs")
    assert iterations == list(range(24)) and picture.stat().st_size > 10_000
    assert "[" not in text.replace("[name=", "")  # plain words, no Python lists
