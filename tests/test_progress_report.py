"""PROGRESS records: every rank's, on time as well as every N iterations, with rate and ETA.

The reporter runs with an injected clock and a stand-in for detectron2's trainer (the three
attributes and the event storage it reads), so the times are exact; the records go through the
runtime's real logger and are read back with :func:`hfai_runtime.records.parse_record`. The
live table run-local draws from them is rendered by rich into a string.
"""

from __future__ import annotations

import io
import logging
from types import SimpleNamespace

import pytest
from rich.console import Console

from hfai_runtime.detectron2 import report
from hfai_runtime.local.display import LiveStatus
from hfai_runtime.records import Record, RecordKind, parse_record


class Storage:
    """detectron2's EventStorage.latest(): {name: (value, iteration)}."""

    def __init__(self, trainer):
        self.trainer = trainer

    def latest(self):
        return {"total_loss": (0.5, self.trainer.iter)}


@pytest.fixture
def records():
    seen: list[Record] = []

    class Collect(logging.Handler):
        def emit(self, record):
            parsed = parse_record(record.getMessage())
            if parsed is not None:
                seen.append(parsed)

    logger = logging.getLogger(report.__name__)
    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield seen
    logger.removeHandler(handler)
    logger.setLevel(level)


def run(reporter, steps: list[float], start_iter: int = 0, max_iter: int = 100):
    """Train ``len(steps)`` iterations; ``steps[i]`` is the clock after iteration i."""
    clock = iter([0.0, *steps])
    reporter.clock = lambda: next(clock)
    trainer = SimpleNamespace(iter=start_iter, start_iter=start_iter, max_iter=max_iter)
    trainer.storage = Storage(trainer)
    reporter.start(start_iter)
    for i in range(len(steps)):
        trainer.iter = start_iter + i
        reporter.after_step(trainer)


def test_first_step_then_every_n_iterations_or_seconds(records):
    # 2 s per iteration: the first step (t=2), then once 5 s passed (t=8, 14), before 20 iterations.
    run(report.ProgressReporter(rank=1, every=20, seconds=5), [2.0 * (i + 1) for i in range(7)])
    assert [r.iteration for r in records] == [0, 3, 6]
    assert all(r.fields["rank"] == 1 and r.fields["max_iter"] == 100 for r in records)
    assert [r.fields["it_per_s"] for r in records] == [0.5, 0.5, 0.5]
    assert records[-1].fields["eta_s"] == (100 - 7) / 0.5
    assert all(r.fields["loss"] is None for r in records), "the loss is rank 0's"


def test_a_fast_run_reports_every_n_iterations_and_its_last(records):
    run(report.ProgressReporter(rank=0, every=4, seconds=10), [0.1 * (i + 1) for i in range(10)], max_iter=10)
    assert [r.iteration for r in records] == [0, 3, 7, 9]
    assert records[-1].fields["eta_s"] == 0 and records[0].fields["loss"] == 0.5


def test_a_resumed_run_counts_its_rate_from_its_start(records):
    run(report.ProgressReporter(rank=0, every=20, seconds=0), [4.0], start_iter=40)
    [record] = records
    assert record.iteration == 40 and record.fields["it_per_s"] == 0.25


def test_zero_disables_the_records(records):
    run(report.ProgressReporter(rank=0, every=0, seconds=5), [10.0, 20.0])
    assert records == []


def test_the_live_table_shows_rate_and_time_left():
    out = io.StringIO()
    status = LiveStatus(["master-0", "worker-0"], console=Console(file=out, width=100, force_terminal=False))
    fields = {"iteration": 6, "max_iter": 100, "it_per_s": 0.5, "eta_s": 188.0}
    status.on_record("worker-0", Record(RecordKind.PROGRESS, {**fields, "rank": 1, "loss": None}))
    text = _render(status)
    [row] = [line for line in text.splitlines() if line.startswith("worker-0")]
    assert row.split()[2:7] == ["6", "/", "100", "0.50", "3:08"]


def _render(status: LiveStatus) -> str:
    console = Console(file=io.StringIO(), width=100)
    console.print(status._table())
    return console.file.getvalue()
