"""Hostile and damaged checkpoint folders: ``resume_or_load(resume=True)`` never loads a file
outside ``OUTPUT_DIR``, never runs code from a file (a canary pickle that would create a file
if it were unpickled: named by ``last_checkpoint`` as a ``.pkl``, inside a ``.pth``, behind a
symlink, met by the fallback search), never fails with a traceback that does not name the
file, and falls back to the newest complete checkpoint, loudly. A save removes only the
runtime's own temporaries.

Each case is one row of ``CASES``: a name, what it does to a healthy ``OUTPUT_DIR`` (complete
checkpoints at iterations 3 and 5, ``last_checkpoint`` naming 5), and what must happen. Add a
row to add a case. Real detectron2 checkpointer; the model is a single layer whose weights equal
the iteration they were saved at, so a load of the wrong file is caught.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hfai_runtime.atomic import is_temporary
from hfai_runtime.detectron2.atomic_checkpointer import AtomicCheckpointer, CheckpointRefused
from hfai_runtime.detectron2.checkpoint_trust import UnusableCheckpoint, load_checkpoint_data

pytestmark = pytest.mark.detectron2  # also run against detectron2 main (make test)


class Progress:
    """The trainer's part of a checkpoint: the iteration."""

    def __init__(self) -> None:
        self.iteration = -1

    def state_dict(self) -> dict:
        return {"iteration": self.iteration}

    def load_state_dict(self, state: dict) -> None:
        self.iteration = state["iteration"]


def _checkpointer(out: Path) -> AtomicCheckpointer:
    return AtomicCheckpointer(torch.nn.Linear(2, 2), str(out), save_to_disk=True, trainer=Progress())


def _save(checkpointer: AtomicCheckpointer, iteration: int, mtime: int) -> None:
    with torch.no_grad():
        for tensor in checkpointer.model.state_dict().values():
            tensor.fill_(iteration)
    checkpointer.checkpointables["trainer"].iteration = iteration
    checkpointer.save(f"model_{iteration:07d}", iteration=iteration)
    os.utime(Path(checkpointer.save_dir) / f"model_{iteration:07d}.pth", (mtime, mtime))


def _tag(out: Path, name: str | bytes) -> None:
    (out / "last_checkpoint").write_bytes(name if isinstance(name, bytes) else name.encode())


def _newest(out: Path, name: str, content: bytes | None) -> Path:
    """A file ``name`` newer than every checkpoint, named by ``last_checkpoint``."""
    path = out / name
    if content is not None:
        path.write_bytes(content)
    os.utime(path, (2000, 2000))
    _tag(out, name)
    return path


def _outside(out: Path) -> Path:
    """A complete checkpoint (iteration 99) in a folder beside OUTPUT_DIR."""
    other = out.parent / "outside"
    other.mkdir()
    _save(_checkpointer(other), 99, 500)
    return other / "model_0000099.pth"


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _canary_path(out: Path) -> Path:
    """The file a canary creates if anything unpickles it (checked after every case)."""
    return out.parent / "canary-ran"


class Canary:
    """Unpickled, it calls ``open(path, "w")``: the file appearing proves that code ran."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _canary_checkpoint(out: Path) -> dict:
    """A training checkpoint (iteration 7) that also holds a canary."""
    return {"model": {"weight": torch.zeros(2, 2)}, "iteration": 7, "hook": Canary(_canary_path(out))}


def _names_pkl(out: Path) -> None:
    """detectron2's model-zoo format, which its ``_load_file`` unpickles."""
    (out / "model_0000007.pkl").write_bytes(pickle.dumps(_canary_checkpoint(out) | {"__author__": "x"}))
    _tag(out, "model_0000007.pkl")


def _pth_with_code(out: Path) -> None:
    _newest(out, "model_0000007.pth", _torch_bytes(_canary_checkpoint(out)))


def _fallback_meets_a_symlink_out(out: Path) -> None:
    """The named checkpoint is damaged; the newest other ``*.pth`` is a link out of OUTPUT_DIR."""
    _truncate(out / "model_0000005.pth")
    outside = _outside(out)
    os.utime(outside, (3000, 3000))
    (out / "model_0000009.pth").symlink_to(outside)


def _fallback_meets_code(out: Path) -> None:
    """The named checkpoint is damaged; newer files hold a canary: a ``.pkl``, a ``.pth``, and
    a ``.pth`` behind a link out of OUTPUT_DIR."""
    _truncate(out / "model_0000005.pth")
    for name, content in (
        ("model_0000009.pkl", pickle.dumps(_canary_checkpoint(out))),
        ("model_0000008.pth", _torch_bytes(_canary_checkpoint(out))),
    ):
        (out / name).write_bytes(content)
        os.utime(out / name, (3000, 3000))
    other = out.parent / "elsewhere"
    other.mkdir()
    (other / "evil.pth").write_bytes(_torch_bytes(_canary_checkpoint(out)))
    (out / "model_0000010.pth").symlink_to(other / "evil.pth")


def _flip_a_weight(path: Path) -> None:
    """Damage one byte of the weights (all 5.0): torch would load the file without complaint."""
    data = bytearray(path.read_bytes())
    at = data.index(struct.pack("<4f", 5.0, 5.0, 5.0, 5.0))
    data[at + 1] ^= 0x40
    path.write_bytes(bytes(data))


def _symlink_out(out: Path) -> None:
    (out / "model_0000007.pth").symlink_to(_outside(out))
    _tag(out, "model_0000007.pth")


def _make_dir(out: Path) -> None:
    (out / "model_0000007.pth").mkdir()
    _newest(out, "model_0000007.pth", None)


def _nothing_left(out: Path) -> None:
    _truncate(out / "model_0000005.pth")
    (out / "model_0000003.pth").unlink()


def _two_damaged(out: Path) -> None:
    _truncate(out / "model_0000005.pth")
    _newest(out, "model_0000007.pth", b"")


def _fifo(path: Path) -> None:
    """A FIFO: opening it for reading would block until a writer comes (none will)."""
    if path.exists():
        path.unlink()
    os.mkfifo(path)


def _names_fifo(out: Path) -> None:
    _fifo(out / "model_0000007.pth")
    _tag(out, "model_0000007.pth")


Sabotage = Callable[[Path], object]
#: (case, sabotage, iteration resumed from or None when refused, text the log/error must hold)
CASES: list[tuple[str, Sabotage, int | None, str]] = [
    ("intact", lambda out: None, 5, ""),
    ("dot-dot name", lambda out: _tag(out, f"../outside/{_outside(out).name}"), None, "outside OUTPUT_DIR"),
    ("absolute name", lambda out: _tag(out, str(_outside(out))), None, "outside OUTPUT_DIR"),
    ("symlink out of OUTPUT_DIR", _symlink_out, None, "outside OUTPUT_DIR"),
    ("names a directory", _make_dir, 5, "model_0000007.pth cannot be resumed from: it is a directory"),
    ("names nothing", lambda out: _tag(out, ""), 5, "last_checkpoint names no file"),
    ("binary tag", lambda out: _tag(out, b"\xff\xfe\x00"), 5, "last_checkpoint names no file"),
    (
        "NUL byte in the name",
        lambda out: _tag(out, b"model_0000005.pth\x00.pkl"),
        5,
        "last_checkpoint holds 'model_0000005.pth\\x00.pkl', not a file name",
    ),
    (
        "newline in the name",
        lambda out: _tag(out, b"model_0000003.pth\nmodel_0000005.pth"),
        5,
        "last_checkpoint holds 'model_0000003.pth\\nmodel_0000005.pth', not a file name",
    ),
    ("names a .pkl (code)", _names_pkl, None, "not a .pth checkpoint of this runtime: refused"),
    (
        "names a .pth holding code",
        _pth_with_code,
        5,
        "model_0000007.pth cannot be resumed from: it holds more than data, which is never run",
    ),
    (
        "fallback meets a symlink out",
        _fallback_meets_a_symlink_out,
        3,
        "model_0000009.pth cannot be resumed from: it is a symbolic link to",
    ),
    (
        "fallback meets code",
        _fallback_meets_code,
        3,
        "model_0000008.pth cannot be resumed from: it holds more than data",
    ),
    (
        "missing file",
        lambda out: _tag(out, "model_0000009.pth"),
        5,
        "model_0000009.pth cannot be resumed from: it does not exist",
    ),
    (
        "zero bytes",
        lambda out: _newest(out, "model_0000007.pth", b""),
        5,
        "model_0000007.pth cannot be resumed from: it is empty",
    ),
    (
        "truncated in place",
        lambda out: _truncate(out / "model_0000005.pth"),
        3,
        "model_0000005.pth cannot be resumed from",
    ),
    (
        "text file",
        lambda out: _newest(out, "model_0000007.pth", b"not a checkpoint\n"),
        5,
        "model_0000007.pth cannot be resumed from",
    ),
    (
        "a tensor",
        lambda out: _newest(out, "model_0000007.pth", _torch_bytes(torch.zeros(3))),
        5,
        "model_0000007.pth cannot be resumed from",
    ),
    (
        "bare state_dict",
        lambda out: _newest(out, "model_0000007.pth", _torch_bytes({"weight": torch.zeros(2, 2)})),
        5,
        "model_0000007.pth cannot be resumed from: it is not a training checkpoint",
    ),
    (
        "a weight's byte flipped",
        lambda out: _flip_a_weight(out / "model_0000005.pth"),
        3,
        "model_0000005.pth cannot be resumed from: its CRC-32 is",
    ),
    (
        "bytes appended",
        lambda out: (out / "model_0000005.pth").open("ab").write(b"\0"),
        3,
        "model_0000005.pth cannot be resumed from: it has",
    ),
    (
        "checksum file garbled",
        lambda out: (out / "model_0000005.pth.crc32").write_text("crc32=zz\n"),
        3,
        "its checksum file",
    ),
    ("no checksum file (plain detectron2's)", lambda out: (out / "model_0000005.pth.crc32").unlink(), 5, ""),
    ("named and newest other damaged", _two_damaged, 3, "model_0000005.pth cannot be resumed from"),
    ("nothing usable", _nothing_left, None, "holds no other complete checkpoint"),
    (
        "last_checkpoint is a FIFO",
        lambda out: _fifo(out / "last_checkpoint"),
        5,
        "last_checkpoint names no file",
    ),
    ("names a FIFO", _names_fifo, 5, "model_0000007.pth cannot be resumed from: it is not a regular file"),
]


@pytest.mark.parametrize("sabotage, resumed, says", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_resume_from_a_hostile_output_dir(tmp_path, caplog, monkeypatch, sabotage, resumed, says):
    # torch.load's weights_only must be passed, not defaulted: this variable turns the default off
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    out = tmp_path / "output"
    out.mkdir()
    writer = _checkpointer(out)
    _save(writer, 3, 1000)
    _save(writer, 5, 1500)
    sabotage(out)

    reader = _checkpointer(out)
    caplog.set_level(logging.INFO)
    try:
        if resumed is None:
            with pytest.raises(CheckpointRefused, match=says):
                reader.resume_or_load("", resume=True)
            assert reader.checkpointables["trainer"].iteration == -1, "nothing may be loaded"
            return
        extra = reader.resume_or_load("", resume=True)
    finally:
        assert not _canary_path(out).exists(), "code in a checkpoint ran"
    assert extra["iteration"] == reader.checkpointables["trainer"].iteration == resumed
    assert torch.equal(reader.model.weight, torch.full((2, 2), float(resumed)))
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    if says:
        assert any(says in message for message in errors), errors
        assert any(r.levelno == logging.WARNING and "instead" in r.getMessage() for r in caplog.records)
    else:
        assert errors == []


def test_fresh_start_without_last_checkpoint_loads_only_weights(tmp_path):
    reader = _checkpointer(tmp_path)
    assert reader.resume_or_load("", resume=True) == {}
    assert reader.checkpointables["trainer"].iteration == -1


def test_save_removes_only_the_runtimes_own_temporaries(tmp_path):
    leftover = tmp_path / ".model_0000001.pth.0a1b2c3d.hfai-partial"  # what a SIGKILLed save leaves
    leftover.write_bytes(b"half a checkpoint")
    users = [".notes.partial", ".model_0000002.pth.partial", "model.hfai-partial", ".x.hfai-partial"]
    for name in users:
        (tmp_path / name).write_text("mine")
    assert is_temporary(leftover.name) and not any(is_temporary(name) for name in users)

    _save(_checkpointer(tmp_path), 2, 1000)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([*users, "last_checkpoint", "model_0000002.pth", "model_0000002.pth.crc32"])


def test_the_canary_works(tmp_path):
    """The cases above prove something only if unpickling the canary does create its file."""
    pickle.loads(pickle.dumps(Canary(tmp_path / "canary-ran")))
    assert (tmp_path / "canary-ran").exists()


def test_numpy_scalars_load_and_the_allow_list_stays_scoped(tmp_path):
    """A model attribute kept as ``np.float64`` is saved as a numpy scalar: allowed, and only
    while loading (torch's process-wide list is unchanged); a numpy array is not."""
    before = set(torch.serialization.get_safe_globals())
    path = tmp_path / "model_0000001.pth"
    state = {"model": {}, "iteration": 1, "attrs": [np.float64(0.25), np.int64(3), np.bool_(True)]}
    path.write_bytes(_torch_bytes(state))
    assert load_checkpoint_data(str(path), str(tmp_path))["attrs"] == [0.25, 3, True]
    assert set(torch.serialization.get_safe_globals()) == before
    path.write_bytes(_torch_bytes(state | {"attrs": np.zeros(2)}))
    with pytest.raises(UnusableCheckpoint, match="it holds more than data"):
        load_checkpoint_data(str(path), str(tmp_path))


def test_a_swapped_in_symlink_is_caught_on_the_open_descriptor(tmp_path):
    """The check is on the file actually opened, not on the name checked before."""
    out, outside = tmp_path / "out", tmp_path / "model_0000001.pth"
    out.mkdir()
    outside.write_bytes(_torch_bytes({"model": {}, "iteration": 1}))
    (out / "model_0000001.pth").symlink_to(outside)
    with pytest.raises(UnusableCheckpoint, match="outside OUTPUT_DIR: refused"):
        load_checkpoint_data(str(out / "model_0000001.pth"), str(out))


def test_a_checked_save_leaves_torchs_own_crc_setting_as_it_was(tmp_path):
    """The save turns torch's per-record CRC off for itself only; the file still loads."""
    from hfai_runtime.detectron2.atomic_checkpointer import save_checked, verify_checkpoint

    for setting in (True, False):
        torch.serialization.set_crc32_options(setting)
        try:
            save_checked({"x": torch.arange(5)}, str(tmp_path / "a.pth"))
            assert torch.serialization.get_crc32_options() is setting
        finally:
            torch.serialization.set_crc32_options(True)
        assert verify_checkpoint(str(tmp_path / "a.pth"))
        assert torch.equal(torch.load(tmp_path / "a.pth")["x"], torch.arange(5))


_TAG_PIECES = st.sampled_from(
    [
        b"model_0000005.pth",
        b"model_0000003",
        b".pth",
        b".pkl",
        b"..",
        b"/",
        b"\0",
        b"\n",
        b"\xff",
        b"../outside/model_0000099.pth",
    ]
)


@settings(max_examples=60, deadline=None)
@given(tag=st.lists(_TAG_PIECES, max_size=4).map(b"".join))
def test_whatever_last_checkpoint_holds_resume_loads_a_checkpoint_of_output_dir_or_refuses(tag):
    """Generated ``last_checkpoint`` contents: a resume either loads one of OUTPUT_DIR's own
    checkpoints or raises ``CheckpointRefused`` -- never another file, never another error."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "output"
        out.mkdir()
        writer = _checkpointer(out)
        _save(writer, 3, 1000)
        _save(writer, 5, 1500)
        _outside(out)
        _tag(out, tag)
        reader = _checkpointer(out)
        try:
            extra = reader.resume_or_load("", resume=True)
        except CheckpointRefused:
            assert reader.checkpointables["trainer"].iteration == -1
            return
        assert extra["iteration"] in (3, 5)
        assert torch.equal(reader.model.weight, torch.full((2, 2), float(extra["iteration"])))
