"""The path index saved beside a pack (``PACK.idx``): used when it fits, ignored loudly when it
is stale, damaged or crafted, and never needed for correct answers."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hfai_runtime.cli import main
from hfai_runtime.ffrecord import FileReader, IndexWarning, PackedFolder, pack_folder, sidecar, write_index
from hfai_runtime.ffrecord.errors import CorruptFileError
from hfai_runtime.ffrecord.index import ARRAYS, PathIndex
from hfai_runtime.ffrecord.sidecar import index_path, save_index

FILES = {
    "b.txt": b"b",
    "B.txt": b"B",
    "a/z": b"az",
    "a/b/c": b"abc",
    "a/b/d": b"abd",
    "é/x": b"e",
    **{f"many/img_{i:04d}.jpg": b"%d" % i for i in range(300)},
}


def _answers(folder: PackedFolder) -> tuple:
    """Everything a pack answers, to compare an index file's answers with an in-memory one's."""
    paths = folder.list(recursive=True)
    return (
        paths,
        folder.list(recursive=True, list_dir=False),
        [folder.is_dir(p) for p in paths],
        [folder.index(p) for p in paths if folder.is_file(p)],
        [folder.exists(p + "x") for p in paths],
        folder.list("a/b"),
    )


@pytest.fixture()
def pack(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    for rel, data in FILES.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    (src / "empty").mkdir()
    pack_folder(src, tmp_path / "p.ffr")
    return tmp_path / "p.ffr"


def _open_quietly(path: Path) -> tuple[PackedFolder, list[str]]:
    """The pack open, and the messages of the warnings its opening gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        folder = PackedFolder(path)
    assert all(w.category is IndexWarning for w in caught)
    return folder, [str(w.message) for w in caught]


def test_pack_folder_saves_an_index_that_is_used_and_answers_the_same(pack, monkeypatch):
    assert Path(index_path(pack)) == pack.with_name("p.ffr.idx") and Path(index_path(pack)).is_file()
    with PackedFolder(pack) as folder:
        mapped = _answers(folder)
        assert all(folder.read_one(p).tobytes() == data for p, data in FILES.items())
    Path(index_path(pack)).unlink()
    folder, messages = _open_quietly(pack)
    with folder:
        assert _answers(folder) == mapped and messages == []  # small pack: built silently
    write_index(pack)

    def no_decoding(*args):
        raise AssertionError("the metadata was decoded although an index file fits")

    monkeypatch.setattr("hfai_runtime.ffrecord.packed_folder.decode", no_decoding)
    with PackedFolder(pack) as folder:
        assert _answers(folder) == mapped
        assert pickle.loads(pickle.dumps(folder)).list("a/b") == ["c", "d"]  # reopens it too


def test_index_arrays_are_views_into_the_mapped_file(pack):
    with PackedFolder(pack) as folder:
        for name, array in folder._index.arrays().items():
            assert not array.flags.writeable and not array.flags.owndata, name
            assert array.ctypes.data % 8 == 0, f"{name} is not 8-byte aligned in the mapping"


def test_a_pack_copied_with_its_index_keeps_using_it(pack, tmp_path, monkeypatch):
    (tmp_path / "copy").mkdir()
    for f in (pack, Path(index_path(pack))):
        shutil.copy(f, tmp_path / "copy" / f.name)
    monkeypatch.setattr("hfai_runtime.ffrecord.packed_folder.decode", None)  # would fail if used
    with PackedFolder(tmp_path / "copy" / "p.ffr") as folder:
        assert folder.read_one("a/b/c").tobytes() == b"abc"


def _other_pack_index(pack: Path, tmp_path: Path) -> bytes:
    src = tmp_path / "other"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "c").write_bytes(b"other")
    pack_folder(src, tmp_path / "other.ffr")
    return Path(index_path(tmp_path / "other.ffr")).read_bytes()


def _flip_last_byte(pack: Path, tmp_path: Path) -> bytes:
    data = bytearray(Path(index_path(pack)).read_bytes())
    data[-1] ^= 0xFF
    return bytes(data)


def _crafted(edit):
    """An index file rewritten with valid CRCs, its arrays edited: what an attacker would do."""

    def make(pack: Path, tmp_path: Path) -> bytes:
        with FileReader(pack) as reader, PackedFolder(pack) as folder:
            arrays = {k: np.array(v) for k, v in folder._index.arrays().items()}
            edit(arrays)
            forged = type(folder._index)(arrays, "forged")
            save_index(forged, reader, str(tmp_path / "forged.idx"))
        return (tmp_path / "forged.idx").read_bytes()

    return make


def _renamed(old: bytes, new: bytes):
    """An edit giving the entry stored as ``old`` the name ``new`` (the names re-packed)."""

    def edit(arrays: dict) -> None:
        bounds, names = arrays["bounds"].tolist(), arrays["names"].tobytes()
        stored = [names[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        stored[stored.index(old)] = new
        arrays["names"] = np.frombuffer(b"".join(stored), np.uint8).copy()
        arrays["bounds"] = np.cumsum([0, *map(len, stored)]).astype(arrays["bounds"].dtype)

    return edit


def _cycle(arrays: dict) -> None:
    target = arrays["target"]
    d = int(np.flatnonzero(target < 0)[-1])
    target[d] = -1 - 0  # a directory entry pointing back at the root


@pytest.mark.parametrize(
    "make, why",
    [
        (_other_pack_index, r"stale: made for another version of .*p\.ffr"),
        (_flip_last_byte, r"CRC"),
        (lambda pack, tmp: b"not an ffrecord file at all", r"p\.ffr\.idx"),
        (_crafted(lambda a: a["target"].__setitem__(0, 10**6)), "entries point outside the pack"),
        (_crafted(_cycle), "directories do not form a tree"),
        (
            _crafted(lambda a: a.__setitem__("bounds", a["bounds"][::-1].copy())),
            "'bounds' does not partition 'names'",
        ),
        # the metadata's name rules (index.INVALID_NAMES, no '/' or NUL), with its messages
        (_crafted(_renamed(b"a", b"..")), "packed-folder entry name '..' is not a valid file name"),
        (_crafted(_renamed(b"z", b".")), "packed-folder entry name '.' is not a valid file name"),
        (_crafted(_renamed(b"b.txt", b"")), "packed-folder entry name '' is not a valid file name"),
        (_crafted(_renamed(b"B.txt", b"a/b")), r"entry name contains '/' \(in 'a/b'\)"),
        (_crafted(_renamed(b"B.txt", b"x\0y")), r"entry name contains a NUL character \(in 'x\\x00y'\)"),
    ],
)
def test_a_stale_damaged_or_crafted_index_is_ignored_loudly(pack, tmp_path, make, why):
    with PackedFolder(pack) as folder:
        expected = _answers(folder)
    Path(index_path(pack)).write_bytes(make(pack, tmp_path))
    folder, messages = _open_quietly(pack)
    with folder:
        assert _answers(folder) == expected
    assert len(messages) == 1
    assert "packed-folder index not used" in messages[0] and f"ffr index {pack}" in messages[0]
    assert __import__("re").search(why, messages[0]), messages[0]


def test_a_crafted_index_with_undecodable_names_fails_listing_by_name(pack, tmp_path, capsys):
    make = _crafted(lambda a: a.__setitem__("names", np.full_like(a["names"], 0xFF)))
    Path(index_path(pack)).write_bytes(make(pack, tmp_path))
    assert main(["ffr", "ls", str(pack)]) == 2
    assert "p.ffr.idx: an entry name is not UTF-8" in capsys.readouterr().err


def test_a_large_pack_without_an_index_warns(pack, monkeypatch):
    Path(index_path(pack)).unlink()
    monkeypatch.setattr(sidecar, "WARN_ENTRIES", len(FILES))
    folder, messages = _open_quietly(pack)
    folder.close()
    assert len(messages) == 1 and "no packed-folder index beside it" in messages[0]
    assert f"'hfai-runtime ffr index {pack}' writes the index once" in messages[0]


def test_pack_folder_without_index_and_the_index_header(pack, tmp_path):
    pack_folder(tmp_path / "src", tmp_path / "q.ffr", index=False)
    assert not Path(index_path(tmp_path / "q.ffr")).exists()
    with FileReader(index_path(pack)) as saved, FileReader(pack) as reader:
        header = json.loads(bytes(saved.view(0)))
        size, meta_crc, n = reader.content_ids()[0]
    assert header["pack"] == {"size": size, "meta_crc": meta_crc, "samples": n}
    assert list(header["arrays"]) == list(ARRAYS)
    assert size == os.path.getsize(pack)


def test_ffr_index_command(pack, golden_ffrecord, tmp_path, capsys):
    Path(index_path(pack)).unlink()
    assert main(["ffr", "index", str(pack)]) == 0
    assert f"wrote {pack}.idx" in capsys.readouterr().err
    with PackedFolder(pack) as folder:
        assert folder.read_one("é/x").tobytes() == b"e"
    shutil.copy(golden_ffrecord / "records.ffr", tmp_path / "records.ffr")
    assert main(["ffr", "index", str(tmp_path / "records.ffr")]) == 2
    assert "records.ffr: not a packed folder" in capsys.readouterr().err
    assert not Path(index_path(tmp_path / "records.ffr")).exists()


def _without_index(golden_ffrecord: Path, tmp_path: Path) -> Path:
    """The official library's pack (it writes no index), copied where it may get one."""
    shutil.copy(golden_ffrecord / "tree.ffr", tmp_path / "tree.ffr")
    return tmp_path / "tree.ffr"


def test_the_first_ffr_open_of_a_pack_without_index_writes_it(golden_ffrecord, tmp_path, capsys):
    pack = _without_index(golden_ffrecord, tmp_path)
    with PackedFolder(pack) as folder:
        expected = (
            folder.list(recursive=True),
            [folder.read_one(p).tobytes() for p in folder.list(recursive=True, list_dir=False)],
        )
    assert not Path(index_path(pack)).exists(), "the library itself writes nothing"
    assert main(["ffr", "ls", str(pack), "-r"]) == 0
    first = capsys.readouterr()
    assert f"wrote {pack}.idx: the pack's path index, which later opens map" in first.err
    with FileReader(index_path(pack)) as saved:  # made for this very pack
        assert json.loads(bytes(saved.view(0)))["pack"]["size"] == os.path.getsize(pack)
    folder, messages = _open_quietly(pack)
    with folder:
        answers = (
            folder.list(recursive=True),
            [folder.read_one(p).tobytes() for p in folder.list(recursive=True, list_dir=False)],
        )
        assert answers == expected and messages == []
    assert main(["ffr", "ls", str(pack), "-r"]) == 0
    again = capsys.readouterr()
    assert again.out == first.out and again.err == ""  # mapped, not rewritten


def test_no_index_is_written_where_it_cannot_or_need_not_be(golden_ffrecord, tmp_path, capsys):
    shutil.copy(golden_ffrecord / "records.ffr", tmp_path / "records.ffr")  # a plain FFRecord file
    assert main(["ffr", "info", str(tmp_path / "records.ffr")]) == 0
    assert main(["ffr", "info", str(golden_ffrecord / "multi")]) == 0  # a directory of packs
    assert not Path(index_path(tmp_path / "records.ffr")).exists()
    assert not list((golden_ffrecord / "multi").glob("*.idx"))
    pack = _without_index(golden_ffrecord, tmp_path)
    Path(index_path(pack)).write_bytes(b"stale or damaged")  # reported at open, never replaced
    with pytest.warns(IndexWarning, match="packed-folder index not used"):
        assert main(["ffr", "ls", str(pack)]) == 0
    assert Path(index_path(pack)).read_bytes() == b"stale or damaged"


def test_a_read_only_folder_gets_no_index(golden_ffrecord, tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    pack = _without_index(golden_ffrecord, folder)
    # root writes anywhere unless the folder is immutable; as another user, a 0555 folder
    made = subprocess.run(["chattr", "+i", str(folder)], capture_output=True) if os.getuid() == 0 else None
    if made is not None and made.returncode != 0:
        pytest.skip(f"needs a folder root cannot write to (chattr +i failed: {made.stderr.strip()!r})")
    if made is None:
        folder.chmod(0o555)
    try:
        assert main(["ffr", "ls", str(pack)]) == 0
        assert "images/" in capsys.readouterr().out.splitlines()
        assert not Path(index_path(pack)).exists()
    finally:
        if made is not None:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


_NAME_PIECES = st.sampled_from(["a", ".", "/", "\0", "é", "\udcff", " ", "\n"])


@given(name=st.lists(_NAME_PIECES, max_size=4).map("".join).filter(lambda n: n != "keep"))
def test_a_saved_index_and_the_metadata_refuse_the_same_names(name):
    """Any name: an index file holding it is refused exactly when metadata holding it is, with
    the same message (``index.INVALID_NAMES``, '/' and NUL)."""
    try:
        PathIndex.from_tree({name: 0, "keep": 1}, 2, "pack")
        from_metadata = None
    except CorruptFileError as err:
        from_metadata = str(err)
    arrays = {
        k: np.array(v) for k, v in PathIndex.from_tree({"zz": 0, "keep": 1}, 2, "pack").arrays().items()
    }
    _renamed(b"zz", name.encode("utf-8", "surrogatepass"))(arrays)
    try:
        PathIndex.from_arrays(arrays, 2, "pack")
        from_index = None
    except CorruptFileError as err:
        from_index = str(err)
    assert (from_metadata is None) == (from_index is None), (from_metadata, from_index)
    if name.isascii():
        assert from_index == from_metadata
