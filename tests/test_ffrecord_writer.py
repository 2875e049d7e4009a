"""FileWriter and FileReader round trips: what is written, what is never left half-written, and
readers surviving fork and pickle."""

from __future__ import annotations

import gc
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from hfai_runtime.ffrecord import FileReader, FileWriter, SampleCountError


def _write(path: Path, samples) -> None:
    with FileWriter(path, len(samples)) as writer:
        for s in samples:
            writer.write_one(s)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_round_trip_of_every_buffer_kind(tmp_path):
    rng = np.random.default_rng(0)
    ints = np.arange(10, dtype=np.int32)
    grid = rng.integers(0, 255, (3, 4), dtype=np.uint8)
    samples = [b"bytes", bytearray(b"bytearray"), memoryview(b"view"), ints, grid, b"", rng.bytes(300_000)]
    _write(tmp_path / "d.ffr", samples)
    with FileReader(tmp_path / "d.ffr") as reader:
        assert reader.n == len(samples)
        got = [reader.read_one(i).tobytes() for i in range(reader.n)]
    # numpy arrays are written whole, by byte length (the official writer: shape[0] bytes)
    assert got[3] == ints.tobytes() and len(got[3]) == 40
    assert got[4] == grid.tobytes() and len(got[4]) == 12
    assert got == [bytes(memoryview(s).cast("B")) for s in samples]


def test_write_batch_writes_what_write_one_would(tmp_path, monkeypatch):
    """Mixed single and batched samples, with writeback started every few KiB (so the
    overlapped flush runs here), give the same file as one write_one per sample."""
    import hfai_runtime.ffrecord.writer as writer_module

    rng = np.random.default_rng(1)
    samples = [rng.bytes(int(n)) for n in rng.integers(0, 5000, 40)]
    _write(tmp_path / "one.ffr", samples)
    monkeypatch.setattr(writer_module, "_WRITEBACK_CHUNK", 4096)
    with FileWriter(tmp_path / "batch.ffr", len(samples)) as writer:
        writer.write_one(samples[0])
        writer.write_batch(memoryview(b"".join(samples[1:30])), [len(s) for s in samples[1:30]])
        writer.write_one(samples[30])
        writer.write_batch(memoryview(b"".join(samples[31:])), [len(s) for s in samples[31:]])
        with pytest.raises(SampleCountError, match=r"batch\.ffr: 41 samples exceed the 40"):
            writer.write_batch(memoryview(b"x"), [1])
    assert (tmp_path / "batch.ffr").read_bytes() == (tmp_path / "one.ffr").read_bytes()
    with (
        pytest.raises(ValueError, match=r"bad\.ffr: write_batch\(\) got 3 bytes for samples of 4"),
        FileWriter(tmp_path / "bad.ffr", 2) as writer,
    ):
        writer.write_batch(memoryview(b"abc"), [2, 2])
    assert not (tmp_path / "bad.ffr").exists()


def test_unusable_samples_are_refused_naming_file_and_index(tmp_path):
    with FileWriter(tmp_path / "d.ffr", 3) as writer:
        writer.write_one(b"ok")
        with pytest.raises(TypeError, match=r"d\.ffr: sample 1 is a str"):
            writer.write_one("text")
        with pytest.raises(ValueError, match=r"d\.ffr: sample 1 is not a C-contiguous"):
            writer.write_one(np.zeros((4, 4), np.uint8)[:, 1])
        writer.write_one(b"a")
        writer.write_one(b"b")
        with pytest.raises(SampleCountError, match=r"d\.ffr: sample 3 exceeds the 3 samples"):
            writer.write_one(b"c")
    with FileReader(tmp_path / "d.ffr") as reader:
        assert [reader.read_one(i).tobytes() for i in range(3)] == [b"ok", b"a", b"b"]


def test_empty_file_is_the_official_twelve_bytes(tmp_path):
    _write(tmp_path / "e.ffr", [])
    assert (tmp_path / "e.ffr").read_bytes() == bytes.fromhex("69df2265") + bytes(8)
    with FileReader(tmp_path / "e.ffr") as reader:
        assert reader.n == 0 and reader.read([]) == []


def test_missing_directory_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope/d\.ffr: its directory does not exist"):
        FileWriter(tmp_path / "nope" / "d.ffr", 1)


def test_file_mode_follows_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        _write(tmp_path / "m.ffr", [b"x"])
    finally:
        os.umask(old)
    assert (tmp_path / "m.ffr").stat().st_mode & 0o777 == 0o640


def test_short_write_leaves_no_file_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "d.ffr"
    _write(target, [b"previous"])
    writer = FileWriter(target, 3)
    writer.write_one(b"only one")
    with pytest.raises(SampleCountError, match=r"d\.ffr: wrote 1 of the 3 declared samples"):
        writer.close()
    assert _leftovers(tmp_path) == ["d.ffr"]
    with FileReader(target) as reader:
        assert reader.read_one(0).tobytes() == b"previous"


def test_exception_inside_with_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="boom"), FileWriter(tmp_path / "d.ffr", 2) as writer:
        writer.write_one(b"one")
        raise RuntimeError("boom")
    assert _leftovers(tmp_path) == []


def test_abandoned_writer_is_discarded_with_a_warning(tmp_path):
    writer = FileWriter(tmp_path / "d.ffr", 2)
    writer.write_one(b"one")
    with pytest.warns(ResourceWarning, match="garbage-collected before close"):
        del writer
        gc.collect()
    assert _leftovers(tmp_path) == []


def test_killed_writer_leaves_no_file_under_the_final_name(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        from hfai_runtime.ffrecord import FileWriter
        w = FileWriter({str(tmp_path / "d.ffr")!r}, 1000)
        for _ in range(500):
            w.write_one(b"x" * 4096)
        print("halfway", flush=True)
        sys.stdin.read()  # wait to be killed
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline() == "halfway\n"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    left = _leftovers(tmp_path)
    assert "d.ffr" not in left
    assert len(left) == 1 and left[0].startswith(f".d.ffr.tmp-{proc.pid}-")  # documented


def test_reader_survives_fork(tmp_path):
    samples = [os.urandom(n) for n in (10, 0, 5000, 70_000)]
    _write(tmp_path / "d.ffr", samples)
    with FileReader(tmp_path / "d.ffr") as reader:
        reader.read_one(0)  # used before the fork, as a Dataset is
        pid = os.fork()
        if pid == 0:  # child: read everything, report through the exit status
            ok = [reader.read_one(i).tobytes() for i in range(4)] == samples
            os._exit(0 if ok and [s.tobytes() for s in reader.read([3, 2])] == samples[:1:-1] else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert reader.read_one(2).tobytes() == samples[2]


def test_reader_pickles_as_its_file_names(tmp_path):
    _write(tmp_path / "d.ffr", [b"a", b"bc"])
    with FileReader(tmp_path / "d.ffr", check_data=False) as reader:
        blob = pickle.dumps(reader)
        assert len(blob) < 500  # names and flags, not data or mappings
        with pickle.loads(blob) as copy:
            assert copy.n == 2 and copy.check_data is False
            assert copy.read_one(1).tobytes() == b"bc"


def test_closed_reader_says_so(tmp_path):
    _write(tmp_path / "d.ffr", [b"a"])
    reader = FileReader(tmp_path / "d.ffr")
    reader.close()
    reader.close()
    with pytest.raises(ValueError, match=r"closed FileReader of .*d\.ffr"):
        reader.read_one(0)


def test_batch_buffer_is_reused_only_once_nothing_refers_to_it(tmp_path):
    """read() refills the previous batch's buffer when its samples are gone (no allocation,
    whatever the allocator's settings), and never while a caller still holds one of them."""
    samples = [bytes([i]) * (1000 + i) for i in range(20)] + [b""]
    _write(tmp_path / "d.ffr", samples)
    with FileReader(tmp_path / "d.ffr") as reader:
        first = reader.read(range(10, 20))
        address = first[0].base.ctypes.data
        del first
        second = reader.read(range(10))  # (a smaller batch: it fits)
        assert second[0].base.ctypes.data == address, "a free buffer is reused"
        kept = second[3]
        del second
        third = reader.read([20, 19, 0])  # ``kept`` still points into the buffer
        assert third[1].base.ctypes.data != address
        assert kept.tobytes() == samples[3]
        assert [s.tobytes() for s in third] == [samples[20], samples[19], samples[0]]
        address = third[1].base.ctypes.data
        third[1][:] = 0  # writable: the caller's to change until it lets go
        del kept, third
        fourth = reader.read([19])
        assert fourth[0].base.ctypes.data == address and fourth[0].tobytes() == samples[19]


def test_large_batches_in_random_order(tmp_path):
    """A batch of ~7 MiB with empty and repeated samples comes back exactly."""
    rng = np.random.default_rng(2)
    samples = [rng.bytes(int(n)) for n in rng.integers(0, 300_000, 30)] + [b"", rng.bytes(3 << 20)]
    _write(tmp_path / "d.ffr", samples)
    order = list(rng.permutation(len(samples))) + [31, 30, 0]
    with FileReader(tmp_path / "d.ffr") as reader:
        got = reader.read(order)
        assert [g.tobytes() for g in got] == [samples[i] for i in order]


def test_a_writer_that_need_not_be_durable_skips_only_the_fsyncs(tmp_path, monkeypatch):
    """(For rebuildable files such as a pack's index.) Same bytes, same atomic rename."""
    _write(tmp_path / "durable.ffr", [b"a", b"bc"])

    def no_sync(*args):
        raise AssertionError("fsync called for a writer with durable=False")

    for name in ("fsync", "fdatasync"):
        monkeypatch.setattr(os, name, no_sync)
    with FileWriter(tmp_path / "quick.ffr", 2, durable=False) as writer:
        writer.write_one(b"a")
        writer.write_one(b"bc")
    assert (tmp_path / "quick.ffr").read_bytes() == (tmp_path / "durable.ffr").read_bytes()
    assert _leftovers(tmp_path) == ["durable.ffr", "quick.ffr"]
