"""pack_folder and PackedFolder: packing rules, lookups, safety of the metadata, fork and pickle."""

from __future__ import annotations

import os
import pickle
import random
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from hfai_runtime.ffrecord import (
    CorruptFileError,
    FFRecordError,
    FileWriter,
    IndexWarning,
    NotAPackedFolderError,
    PackedFolder,
    UnsafeMetadataError,
    pack_folder,
    write_index,
)
from hfai_runtime.ffrecord.metadata import MAGIC


def _tree(root: Path, files: dict[str, bytes], dirs: tuple[str, ...] = ()) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    for rel in dirs:
        (root / rel).mkdir(parents=True, exist_ok=True)
    return root


def _packed(tmp_path: Path, files: dict[str, bytes], dirs: tuple[str, ...] = ()) -> PackedFolder:
    pack_folder(_tree(tmp_path / "src", files, dirs), tmp_path / "p.ffr")
    return PackedFolder(tmp_path / "p.ffr")


def _pack_metadata(tmp_path: Path, meta: bytes, files: int = 1) -> Path:
    """A pack whose metadata sample is ``meta``, with valid CRCs: what an attacker would write."""
    with FileWriter(tmp_path / "crafted.ffr", files + 1) as writer:
        for i in range(files):
            writer.write_one(b"file %d" % i)
        writer.write_one(meta)
    return tmp_path / "crafted.ffr"


def test_order_unicode_and_empty_directories(tmp_path):
    files = {
        "b.txt": b"b",
        "B.txt": b"B",
        "_u.txt": b"_",
        "é/x": b"e",
        "a/z": b"az",
        "a/b/c": b"abc",
        "a.txt": b"at",
    }
    with _packed(tmp_path, files, dirs=("empty", "a/empty2")) as folder:
        # code-point order, files and directories interleaved, depth first
        assert folder.list(recursive=True) == [
            "B.txt",
            "_u.txt",
            "a",
            "a/b",
            "a/b/c",
            "a/empty2",
            "a/z",
            "a.txt",
            "b.txt",
            "empty",
            "é",
            "é/x",
        ]
        order = folder.list(recursive=True, list_dir=False)
        assert [folder.index(p) for p in order] == list(range(len(files)))
        assert all(folder.read_one(p).tobytes() == files[p] for p in files)
        assert folder.is_dir("empty") and folder.list("empty") == []
        assert folder.list("a/empty2", recursive=True) == []
        assert folder.list("a", list_dir=False) == ["z"]


def test_path_forms_and_errors(tmp_path):
    with _packed(tmp_path, {"d/f.txt": b"f"}) as folder:
        for same in ("d/f.txt", "./d/f.txt", "d//f.txt", Path("d") / "f.txt"):
            assert folder.read_one(same).tobytes() == b"f"
        for absent in ("/d/f.txt", "d/f.txt/x", "d/../d/f.txt", "nope", "d/F.txt"):
            assert not folder.exists(absent) and not folder.is_file(absent)
        with pytest.raises(FileNotFoundError, match=r"'d/nope' does not exist in .*p\.ffr"):
            folder.read_one("d/nope")
        with pytest.raises(IsADirectoryError, match=r"'d' is a directory in .*p\.ffr"):
            folder.read(["d"])
        with pytest.raises(TypeError, match="read_one"):
            folder.read("d/f.txt")
        with pytest.raises(NotADirectoryError, match=r"'d/f.txt' is a file"):
            folder.list("d/f.txt")
        assert folder.size("d/f.txt") == 1
        assert folder.exists("") and folder.is_dir(".") and folder.list() == ["d"]


def test_symlinks_are_followed_and_loops_refused(tmp_path):
    src = _tree(tmp_path / "src", {"real/a.txt": b"A"})
    (src / "link.txt").symlink_to(src / "real" / "a.txt")
    (src / "linkdir").symlink_to(src / "real", target_is_directory=True)
    pack_folder(src, tmp_path / "p.ffr")
    with PackedFolder(tmp_path / "p.ffr") as folder:
        assert folder.read_one("link.txt").tobytes() == b"A"
        assert folder.read_one("linkdir/a.txt").tobytes() == b"A"
    (src / "real" / "loop").symlink_to(src, target_is_directory=True)
    with pytest.raises(FFRecordError, match=r"src/linkdir/loop: symbolic link back to a directory"):
        pack_folder(src, tmp_path / "q.ffr")
    (src / "real" / "loop").unlink()
    (src / "dangling").symlink_to(src / "missing")
    with pytest.raises(FFRecordError, match=r"src/dangling: dangling symbolic link"):
        pack_folder(src, tmp_path / "q.ffr")
    assert not (tmp_path / "q.ffr").exists()


def test_special_files_are_refused_by_name(tmp_path):
    src = _tree(tmp_path / "src", {"a.txt": b"A"})
    os.mkfifo(src / "pipe")
    with pytest.raises(FFRecordError, match=r"src/pipe: is a FIFO; pack_folder packs only"):
        pack_folder(src, tmp_path / "p.ffr")
    assert sorted(os.listdir(tmp_path)) == ["src"]


class _RunsACommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_metadata_that_would_run_a_command_is_refused(tmp_path, protocol):
    marker = tmp_path / "pwned"
    tree = OrderedDict([("a.txt", 0), ("evil", _RunsACommand(marker))])
    path = _pack_metadata(tmp_path, MAGIC + pickle.dumps(tree, protocol=protocol))
    with pytest.raises(UnsafeMetadataError, match=r"crafted\.ffr: .*refers to (posix|os)\.system"):
        PackedFolder(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "tree, message",
    [
        ({"a": [1]}, r"entry 'a' is a list"),
        ({"a": -1}, r"entry 'a' is -1, outside \[0, 1\)"),
        ({"a": 1}, r"entry 'a' is 1, outside \[0, 1\)"),
        ({"a": True}, r"entry 'a' is a bool"),
        ({1: 0}, r"entry name 1 is not a str"),
        ({"a/b": 0, "c": 0}, r"entry name contains '/' \(in 'a/b'\)"),
        ({"a\0b": 0}, r"entry name contains a NUL character"),
        ({"..": 0}, r"entry name '..' is not a valid file name"),
        ([("a", 0)], r"metadata is a list"),
    ],
)
def test_malformed_metadata_is_refused(tmp_path, tree, message):
    path = _pack_metadata(tmp_path, MAGIC + pickle.dumps(tree, protocol=4))
    with pytest.raises(CorruptFileError, match=rf"crafted\.ffr: .*{message}"):
        PackedFolder(path)


def test_cyclic_metadata_is_refused(tmp_path):
    tree: dict = {"f": 0}
    tree["self"] = tree
    path = _pack_metadata(tmp_path, MAGIC + pickle.dumps(tree, protocol=4))
    with pytest.raises(CorruptFileError, match=r"entry 'self' appears twice"):
        PackedFolder(path)


def test_not_a_packed_folder(tmp_path):
    with FileWriter(tmp_path / "plain.ffr", 1) as writer:
        writer.write_one(b"just data")
    with pytest.raises(NotAPackedFolderError, match=r"plain\.ffr is not a packed folder"):
        PackedFolder(tmp_path / "plain.ffr")
    path = _pack_metadata(tmp_path, MAGIC + b"\x80\x04garbage")
    with pytest.raises(CorruptFileError, match=r"crafted\.ffr: packed-folder metadata does not"):
        PackedFolder(path)


def test_large_directories_with_hash_collisions(tmp_path):
    """20,000 names in one directory share the 16-bit hash space: collisions are certain."""
    rng = random.Random(0)
    names = [f"img_{rng.getrandbits(40):x}_{i}.jpg" for i in range(20_000)]
    tree = OrderedDict(
        [
            ("big", OrderedDict((n, i) for i, n in enumerate(names))),
            ("small", OrderedDict([("only", 20_000)])),
        ]
    )
    with FileWriter(tmp_path / "big.ffr", 20_002) as writer:
        for i in range(20_001):
            writer.write_one(b"%d" % i)
        writer.write_one(MAGIC + pickle.dumps(tree, protocol=4))
    with PackedFolder(tmp_path / "big.ffr") as folder:
        assert len({hash(n) & 0xFFFF for n in names}) < len(names)
        assert all(folder.index(f"big/{n}") == i for i, n in enumerate(names))
        assert folder.read_one("small/only").tobytes() == b"20000"
        assert not any(folder.exists(f"big/{n}x") or folder.exists(f"big/x{n}") for n in names[:2000])
        assert folder.list("big") == sorted(names)


def test_packed_folder_survives_fork_and_pickle(tmp_path):
    files = {f"d{i % 3}/f{i}.bin": os.urandom(i * 7) for i in range(30)}
    with _packed(tmp_path, files) as folder:
        pid = os.fork()
        if pid == 0:
            ok = all(folder.read_one(p).tobytes() == data for p, data in files.items())
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        blob = pickle.dumps(folder)
        assert len(blob) < 500  # the file name and a flag, not the index or the mapping
        copy = pickle.loads(blob)
    with copy:
        paths = list(files)
        assert [d.tobytes() for d in copy.read(paths)] == list(files.values())


def test_check_data_false_skips_sample_crcs(tmp_path):
    _packed(tmp_path, {"a": b"hello"}).close()
    data = bytearray((tmp_path / "p.ffr").read_bytes())
    data[12 + 12 * 2] ^= 0xFF  # first byte of sample 0, right after the 2-sample header
    (tmp_path / "p.ffr").write_bytes(bytes(data))
    with PackedFolder(tmp_path / "p.ffr", check_data=False) as folder:
        assert folder.read_one("a").tobytes() == b"\x97ello"
    with PackedFolder(tmp_path / "p.ffr") as folder:
        with pytest.raises(CorruptFileError, match=r"p\.ffr: CRC mismatch in sample 0"):
            folder.read_one("a")


def test_read_returns_numpy_like_the_official(tmp_path):
    with _packed(tmp_path, {"x": b"\x01\x02"}) as folder:
        (x,) = folder.read(["x"])
        assert x.dtype == np.uint8 and x.shape == (2,)


def _private_dirty_kib() -> int:
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Private_Dirty:"):
            return int(line.split()[1])
    raise AssertionError("no Private_Dirty in /proc/self/smaps_rollup")


@pytest.mark.parametrize("saved", [False, True], ids=["built in memory", "mapped index file"])
def test_forked_workers_do_not_copy_the_index(tmp_path, saved):
    """The point of the compact index: lookups in a forked worker write no shared page, whether
    the index was built at open or mapped from the file beside the pack. (Nested dicts, as the
    official reader keeps, get ~7 MiB copied here: every lookup touches reference counts all
    over them.)"""
    dirs, per_dir = 100, 1000
    tree = OrderedDict(
        (f"n{d:08d}", OrderedDict((f"n{d:08d}_{f}.JPEG", d * per_dir + f) for f in range(per_dir)))
        for d in range(dirs)
    )
    with FileWriter(tmp_path / "big.ffr", dirs * per_dir + 1) as writer:
        for _ in range(dirs * per_dir):
            writer.write_one(b"x")
        writer.write_one(MAGIC + pickle.dumps(tree, protocol=4))
    del tree
    if saved:
        write_index(tmp_path / "big.ffr")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        folder = PackedFolder(tmp_path / "big.ffr")
    assert [w.category for w in caught] == ([] if saved else [IndexWarning])
    with folder:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            rng = random.Random(0)  # the worker's own paths: their memory is not the index's
            paths = [
                f"n{d:08d}/n{d:08d}_{rng.randrange(per_dir)}.JPEG"
                for d in (rng.randrange(dirs) for _ in range(10_000))
            ]
            before = _private_dirty_kib()
            for p in paths:
                folder.read_one(p)
            os.write(w, str(_private_dirty_kib() - before).encode())
            os._exit(0)
        os.close(w)
        growth_kib = int(os.read(r, 100))
        os.waitpid(pid, 0)
    assert growth_kib < 2 * 1024, f"a worker's private memory grew by {growth_kib} KiB"
