"""hfai_runtime.atomic: a file appears complete under its name, or not at all."""

from __future__ import annotations

import os
import stat

import pytest

from hfai_runtime.atomic import AtomicFile, atomic_write, is_temporary, remove_stale_temporaries


def test_nothing_under_the_final_name_until_commit(tmp_path):
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")
    file = AtomicFile(target)
    file.handle.write(b"new content")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir() if is_temporary(p.name)] == [os.path.basename(file.temporary)]
    file.commit()
    assert target.read_bytes() == b"new content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin"]


def test_an_exception_discards_and_propagates(tmp_path):
    target = tmp_path / "data.bin"
    with pytest.raises(KeyError), AtomicFile(target) as file:
        file.handle.write(b"half")
        raise KeyError("boom")
    assert list(tmp_path.iterdir()) == []


def test_permissions_follow_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        atomic_write(tmp_path / "x", lambda handle: handle.write(b"x"))
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "x").stat().st_mode) == 0o640


def test_a_missing_directory_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        atomic_write(tmp_path / "nowhere" / "x", lambda handle: None)


def test_only_own_temporaries_are_stale(tmp_path):
    file = AtomicFile(tmp_path / "ckpt.pth")  # as a SIGKILLed writer leaves it
    file.handle.close()
    for name in (
        ".notes.partial",
        ".ckpt.pth.tmp-12-ab",
        ".ckpt.pth.0a1b2c3.hfai-partial",
        "ckpt.pth.hfai-partial",
    ):
        (tmp_path / name).write_text("a user's")
    assert remove_stale_temporaries(tmp_path) == [os.path.basename(file.temporary)]
    assert len(list(tmp_path.iterdir())) == 4
