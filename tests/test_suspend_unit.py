"""The suspend building blocks in one process: the flag, agreement without a process group,
the environment knobs, and atomic writes that fail."""

from __future__ import annotations

import os
import signal

import pytest

from hfai_runtime.atomic import atomic_write
from hfai_runtime.distributed import suspend


@pytest.fixture
def sigterm_untouched(monkeypatch):
    """A fresh suspend flag, and this process's SIGTERM handler put back afterwards."""
    monkeypatch.setattr(suspend, "_flag", suspend._Flag())
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_sigterm_only_sets_the_flag(sigterm_untouched):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    restore = suspend.install_sigterm_handler()
    assert not suspend.suspend_requested() and not suspend.agree()
    os.kill(os.getpid(), signal.SIGTERM)  # would end pytest if it were not handled
    assert suspend.suspend_requested() and suspend.agree()  # one process: agree = local flag
    assert suspend.requested_at() is not None
    restore()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_sigterm_handler_composes_with_the_one_before_and_is_restored(sigterm_untouched):
    calls = []
    previous = lambda signum, frame: calls.append(signum)  # noqa: E731 (a user's handler)
    signal.signal(signal.SIGTERM, previous)
    restore = suspend.install_sigterm_handler()
    assert suspend.install_sigterm_handler() is not restore  # the second call installs nothing
    os.kill(os.getpid(), signal.SIGTERM)
    assert suspend.suspend_requested() and calls == [signal.SIGTERM]  # both ran, once
    restore()
    assert signal.getsignal(signal.SIGTERM) is previous


def test_sigterm_handler_is_left_alone_off_the_main_thread(sigterm_untouched, caplog):
    import threading

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    suspend.logger.addHandler(caplog.handler)  # the runtime's logger may not propagate
    try:
        thread = threading.Thread(target=lambda: suspend.install_sigterm_handler()(), name="loader")
        thread.start()
        thread.join()
    finally:
        suspend.logger.removeHandler(caplog.handler)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert "loader is not the main thread" in caplog.text


def test_job_suspended_exits_with_the_suspend_code(monkeypatch):
    monkeypatch.setenv("HFAI_SUSPEND_EXIT_CODE", "99")
    error = suspend.JobSuspended(12)
    assert isinstance(error, SystemExit) and not isinstance(error, Exception)
    assert (error.code, error.iteration) == (99, 12)


@pytest.mark.parametrize(
    "environ, code, grace",
    [
        ({}, 143, None),
        ({"HFAI_SUSPEND_EXIT_CODE": "130", "HFAI_GRACE_PERIOD_SECONDS": "15"}, 130, 15.0),
    ],
)
def test_environment_knobs(environ, code, grace):
    assert suspend.suspend_exit_code(environ) == code
    assert suspend.grace_period_seconds(environ) == grace


@pytest.mark.parametrize(
    "name, value",
    [
        ("HFAI_SUSPEND_EXIT_CODE", "0"),
        ("HFAI_SUSPEND_EXIT_CODE", "x"),
        ("HFAI_GRACE_PERIOD_SECONDS", "-5"),
        ("HFAI_GRACE_PERIOD_SECONDS", "soon"),
    ],
)
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


#: (rank 1 signalled after step: None = before the first; where every rank stops: None = it
#: does not; whose flags the last agreement read).
OVERLAP_CASES = [
    (5, 6, 5),  # signalled during step 5: every rank stops after step 6, on step 5's flags
    (None, 0, 0),  # signalled before training: the first step's agreement is read at once
    (19, None, 18),  # signalled in the last step: no agreement is left in flight, none stops
]


def _overlapped_rank(rank: int, port: int, results) -> None:
    """One of 2 ranks running 20 steps once per case; reports where the agreement stopped it."""
    import torch.distributed as dist

    from hfai_runtime.distributed.rendezvous import init_process_group

    init_process_group("gloo", master_addr="127.0.0.1", master_port=port, rank=rank, world_size=2)
    for signal_after, _, _ in OVERLAP_CASES:
        suspend._flag = suspend._Flag()
        agreement = suspend.StepAgreement(overlap_from_ranks=2)
        if rank == 1 and signal_after is None:
            suspend.request_suspend()
        stopped = None
        for iteration in range(20):
            if rank == 1 and iteration == signal_after:
                suspend.request_suspend()
            if agreement.after_step(iteration, last=iteration == 19):
                stopped = iteration
                break
        results.put((rank, signal_after, stopped, agreement.agreed_after, agreement.steps_to_stop))
    suspend.release_agreement_group()
    dist.destroy_process_group()


@pytest.mark.slow
def test_overlapped_agreement_stops_every_rank_after_the_same_step_one_later():
    import multiprocessing

    from hfai_runtime.distributed.rendezvous import free_port

    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    port = free_port()
    ranks = [context.Process(target=_overlapped_rank, args=(rank, port, results)) for rank in range(2)]
    for process in ranks:
        process.start()
    reports = [results.get(timeout=300) for _ in range(2 * len(OVERLAP_CASES))]  # a loaded machine
    for process in ranks:
        process.join(30)
    for signal_after, stopped, agreed_after in OVERLAP_CASES:
        got = sorted(r for r in reports if r[1] == signal_after)
        assert got == [(rank, signal_after, stopped, agreed_after, 2) for rank in range(2)]


@pytest.mark.parametrize(
    "environ, ranks",
    [({}, 16), ({"HFAI_SUSPEND_OVERLAP_FROM": "2"}, 2), ({"HFAI_SUSPEND_OVERLAP_FROM": "0"}, 0)],
)
def test_overlap_from_ranks(environ, ranks):
    assert suspend.overlap_from(environ) == ranks


@pytest.mark.parametrize("value", ["-1", "two", "\uff12", "1_6"])
def test_bad_overlap_from_names_the_variable(value):
    with pytest.raises(ValueError, match="HFAI_SUSPEND_OVERLAP_FROM"):
        suspend.overlap_from({"HFAI_SUSPEND_OVERLAP_FROM": value})


def test_agreement_in_one_process_reads_the_flag_at_once(monkeypatch):
    monkeypatch.setattr(suspend, "_flag", suspend._Flag())
    agreement = suspend.StepAgreement(overlap_from_ranks=2)
    assert agreement.steps_to_stop == 1
    assert not agreement.after_step(0)
    suspend.request_suspend()
    assert agreement.after_step(1) and agreement.agreed_after == 1


@pytest.mark.detectron2
def test_a_suspend_right_after_a_start_leaves_the_metric_printer_a_step_time():
    """detectron2 0.6's ``CommonMetricPrinter`` divides by zero when it writes twice at one
    iteration with no step time recorded (``IterationTimer`` records from a run's third step):
    what ``PeriodicWriter.after_train`` does after a suspend at a logged iteration. The hook
    records the last step's time first, so the suspended run exits with its suspend code."""
    from types import SimpleNamespace

    from detectron2.utils.events import CommonMetricPrinter, EventStorage

    from hfai_runtime.detectron2.checkpoint import SuspendCheckpointer

    def write_twice(prepare) -> None:
        with EventStorage(start_iter=0) as storage:
            storage.put_scalars(total_loss=1.0)
            printer = CommonMetricPrinter(max_iter=10)
            printer.write()  # the periodic write at iteration 0
            prepare(storage)
            printer.write()  # after_train's, at the same iteration

    with pytest.raises(ZeroDivisionError):  # the upstream behaviour this guards against
        write_twice(lambda storage: None)
    hook = SuspendCheckpointer.__new__(SuspendCheckpointer)
    write_twice(
        lambda storage: (
            setattr(hook, "trainer", SimpleNamespace(storage=storage)),
            hook._give_writers_a_step_time(0.5),
        )
    )


@pytest.mark.detectron2
def test_the_hook_puts_back_the_sigterm_handler_it_replaced(sigterm_untouched):
    """Used without ``launch_from_env`` (e.g. under torchrun), ``SuspendCheckpointer`` installs
    the suspend handler itself and restores the one it found when training ends."""
    from hfai_runtime.detectron2.checkpoint import SuspendCheckpointer

    def mine(signum, frame):
        pass

    signal.signal(signal.SIGTERM, mine)
    hook = SuspendCheckpointer.__new__(SuspendCheckpointer)
    hook._restore_sigterm = suspend.install_sigterm_handler()
    assert signal.getsignal(signal.SIGTERM) is not mine
    hook.after_train()
    assert signal.getsignal(signal.SIGTERM) is mine


class _ProcessGroupOfWorker:
    """A one-item dataset whose item is the process group of the process that reads it."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> int:
        return os.getpgid(0)


def test_dataloader_workers_start_in_a_process_group_of_their_own():
    """The one private torch access of the distributed layer (``distributed/_compat.py``), on the
    real DataLoader: a worker forked after it runs in its own process group, so a SIGTERM to the
    job's group reaches only the training process (which relays it)."""
    import torch.utils.data

    from hfai_runtime.distributed import _compat

    def worker_group() -> int:
        loader = torch.utils.data.DataLoader(_ProcessGroupOfWorker(), num_workers=1, batch_size=None)
        [group] = list(loader)
        return int(group)

    _compat.dataloader_workers_leave_process_group()
    group = worker_group()
    assert group != os.getpgid(0), "the DataLoader worker stayed in this process's group"


@pytest.mark.detectron2
def test_the_hook_changes_the_process_at_before_train_not_when_made(sigterm_untouched, monkeypatch, tmp_path):
    """Made (before ``resume_or_load``), the hook changes only the checkpointer it is given;
    the SIGTERM handler and the runtime's stdout logging come at ``before_train``, as detectron2's
    hooks set up, and the handler goes at ``after_train``."""
    import logging
    from types import SimpleNamespace

    import torch
    from detectron2.checkpoint import DetectionCheckpointer

    from hfai_runtime.detectron2.atomic_checkpointer import AtomicSaves
    from hfai_runtime.detectron2.checkpoint import SuspendCheckpointer
    from hfai_runtime.detectron2.logs import RUNTIME_LOGGER

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    runtime_logger = logging.getLogger(RUNTIME_LOGGER)
    monkeypatch.setattr(runtime_logger, "handlers", [])  # as in a fresh process
    monkeypatch.setattr(runtime_logger, "propagate", True)
    monkeypatch.setattr(runtime_logger, "level", runtime_logger.level)
    checkpointer = DetectionCheckpointer(torch.nn.Linear(1, 1), save_dir=str(tmp_path))

    hook = SuspendCheckpointer(checkpointer, exact_resume=False)
    assert isinstance(checkpointer, AtomicSaves)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL and not runtime_logger.handlers

    hook.trainer = SimpleNamespace(start_iter=0, iter=1, max_iter=1)
    hook.before_train()
    assert isinstance(signal.getsignal(signal.SIGTERM), suspend._SuspendOnSigterm)
    assert len(runtime_logger.handlers) == 1
    hook.after_train()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
