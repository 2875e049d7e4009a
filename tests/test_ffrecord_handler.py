"""The ``ffrecord://`` iopath handler and the pack mount, on packs written by the official
library (``tests/data/ffrecord/tree.ffr``) and by our ``pack_folder``."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
from iopath.common.file_io import PathManager

from hfai_runtime.io import FFRecordPathHandler, PackMountPathHandler

pytestmark = pytest.mark.detectron2  # also run against detectron2 main (make test)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture()
def tree(golden_ffrecord: Path) -> Path:
    return golden_ffrecord / "tree"


@pytest.fixture()
def manager(golden_ffrecord: Path) -> PathManager:
    """A fresh PathManager serving the official golden pack as ``ffrecord://tree``."""
    handler = FFRecordPathHandler()
    handler.add_pack("tree", golden_ffrecord / "tree.ffr")
    pm = PathManager()
    pm.register_handler(handler)
    return pm


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _pack(folder: Path, out: Path) -> Path:
    from hfai_runtime.ffrecord import pack_folder

    pack_folder(str(folder), str(out))
    return out


def test_open_binary_returns_every_file_byte_for_byte(manager: PathManager, tree: Path) -> None:
    expected = _files(tree)
    assert len(expected) == 8
    for rel, data in expected.items():
        with manager.open(f"ffrecord://tree/{rel}", "rb") as f:
            assert f.read() == data, rel


def test_open_text_decodes_utf8(manager: PathManager, tree: Path) -> None:
    with manager.open("ffrecord://tree/data.json") as f:
        assert json.load(f) == json.loads((tree / "data.json").read_text("utf-8"))
    with manager.open("ffrecord://tree/données/é.txt", "r") as f:
        assert f.read() == (tree / "données" / "é.txt").read_text("utf-8")


def test_open_refuses_writes_and_reports_what_is_missing(manager: PathManager) -> None:
    with pytest.raises(ValueError, match="read-only"):
        manager.open("ffrecord://tree/new.txt", "w")
    with pytest.raises(FileNotFoundError, match="tree.ffr") as missing:
        manager.open("ffrecord://tree/images/nope.png", "rb")
    assert missing.value.filename == "ffrecord://tree/images/nope.png"
    with pytest.raises(IsADirectoryError, match="tree.ffr"):
        manager.open("ffrecord://tree/images", "rb")
    with pytest.raises(FileNotFoundError, match="registered prefixes: tree"):
        manager.open("ffrecord://other/data.json", "rb")
    with pytest.raises(ValueError, match=r"'\.\.'"):
        manager.open("ffrecord://tree/images/../data.json", "rb")


def test_ls_exists_isfile_isdir(manager: PathManager) -> None:
    assert manager.ls("ffrecord://tree") == [
        "README.txt",
        "Zebra.txt",
        "data.json",
        "données",
        "empty.bin",
        "images",
    ]
    assert manager.ls("ffrecord://tree/images/") == ["nested", "pixel.png"]
    assert manager.ls("ffrecord://tree/images/nested") == ["blob.bin", "deeper"]
    with pytest.raises(NotADirectoryError):
        manager.ls("ffrecord://tree/images/pixel.png")
    with pytest.raises(FileNotFoundError):
        manager.ls("ffrecord://tree/nope")
    cases = {  # path: (exists, isfile, isdir)
        "ffrecord://tree": (True, False, True),
        "ffrecord://tree/images": (True, False, True),
        "ffrecord://tree/images/nested/deeper/note.txt": (True, True, False),
        "ffrecord://tree/empty.bin": (True, True, False),
        "ffrecord://tree/images/nope.png": (False, False, False),
        "ffrecord://tree/README.txt/child": (False, False, False),
    }
    for path, expected in cases.items():
        assert (manager.exists(path), manager.isfile(path), manager.isdir(path)) == expected, path


def test_get_local_path_materialises_once_atomically(manager: PathManager, tree: Path, cache: Path) -> None:
    local = Path(manager.get_local_path("ffrecord://tree/images/nested/blob.bin"))
    assert local.is_relative_to(cache / "ffrecord")
    assert local.read_bytes() == (tree / "images" / "nested" / "blob.bin").read_bytes()
    os.utime(local, ns=(0, 0))
    assert manager.get_local_path("ffrecord://tree/images/nested/blob.bin") == str(local)
    assert local.stat().st_mtime_ns == 0, "a cached file must be reused, not rewritten"
    manager.get_local_path("ffrecord://tree/images/nested/blob.bin", force=True)
    assert local.stat().st_mtime_ns != 0
    empty = Path(manager.get_local_path("ffrecord://tree/empty.bin"))
    assert empty.is_file() and empty.stat().st_size == 0
    assert list(cache.rglob(".tmp-*")) == []


def test_get_local_path_leaves_no_partial_file(
    manager: PathManager, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(src: str, dst: str, **dir_fds: int) -> None:  # dies between writing and renaming
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        manager.get_local_path("ffrecord://tree/data.json")
    assert [p for p in cache.rglob("*") if p.is_file()] == []


def test_several_packs_and_nested_prefixes(tmp_path: Path, golden_ffrecord: Path, tree: Path) -> None:
    other = tmp_path / "other"
    (other / "sub").mkdir(parents=True)
    (other / "sub" / "x.txt").write_bytes(b"from the other pack")
    handler = FFRecordPathHandler()
    handler.add_pack("tree", golden_ffrecord / "tree.ffr")
    handler.add_pack("tree/more", _pack(other, tmp_path / "other.ffr"))
    handler.add_pack("/other/", tmp_path / "other.ffr")  # slashes around a prefix are ignored
    pm = PathManager()
    pm.register_handler(handler)
    assert pm.open("ffrecord://tree/Zebra.txt", "rb").read() == (tree / "Zebra.txt").read_bytes()
    assert pm.open("ffrecord://tree/more/sub/x.txt", "rb").read() == b"from the other pack"
    assert pm.open("ffrecord://other/sub/x.txt", "rb").read() == b"from the other pack"
    assert handler.packs == {
        "tree": str(golden_ffrecord / "tree.ffr"),
        "tree/more": str(tmp_path / "other.ffr"),
        "other": str(tmp_path / "other.ffr"),
    }


def test_add_pack_rejects_bad_input_naming_it(tmp_path: Path, golden_ffrecord: Path) -> None:
    handler = FFRecordPathHandler()
    golden = golden_ffrecord
    handler.add_pack("tree", golden / "tree.ffr")
    handler.add_pack("tree", golden / "tree.ffr")  # the same pair again: fine
    with pytest.raises(ValueError, match="already registered"):
        handler.add_pack("tree", golden / "records.ffr")
    with pytest.raises(FileNotFoundError, match="'missing'"):
        handler.add_pack("missing", tmp_path / "missing.ffr")
    with pytest.raises(ValueError, match="records.ffr"):  # a record file, not a packed folder
        handler.add_pack("records", golden / "records.ffr")
    for bad in ("", "/", "..", "a/../b", "s3://x"):
        with pytest.raises(ValueError, match="invalid ffrecord prefix"):
            handler.add_pack(bad, golden / "tree.ffr")
    assert handler.packs == {"tree": str(golden / "tree.ffr")}


def test_pickled_handler_reopens_its_packs(golden_ffrecord: Path, tree: Path) -> None:
    handler = FFRecordPathHandler()
    handler.add_pack("tree", golden_ffrecord / "tree.ffr")
    assert handler._isfile("ffrecord://tree/README.txt")  # the reader is open in this process
    clone = pickle.loads(pickle.dumps(handler))
    assert clone.packs == handler.packs
    with clone._open("ffrecord://tree/README.txt", "rb") as f:
        assert f.read() == (tree / "README.txt").read_bytes()


class _ReadThroughPathManager:
    """A map-style dataset that reads items through a PathManager (like DatasetMapper does)."""

    def __init__(self, manager: PathManager, paths: list[str]) -> None:
        self.manager, self.paths = manager, paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[bytes, int]:
        with self.manager.open(self.paths[i], "rb") as f:
            return f.read(), os.getpid()


def test_forked_dataloader_workers_read(manager: PathManager, tree: Path) -> None:
    import torch.utils.data

    expected = _files(tree)
    paths = [f"ffrecord://tree/{rel}" for rel in expected] * 4
    manager.exists("ffrecord://tree/README.txt")  # open the pack in the parent before forking
    loader = torch.utils.data.DataLoader(
        _ReadThroughPathManager(manager, paths),
        batch_size=None,
        num_workers=2,
        multiprocessing_context="fork",
    )
    got = list(loader)
    assert [data for data, _ in got] == list(expected.values()) * 4
    assert {pid for _, pid in got} - {os.getpid()}, "the items must have been read in the workers"


# -- the pack mounted on the folder it sits in ---------------------------------------------------


@pytest.fixture()
def mounted(tmp_path: Path, tree: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[PathManager, Path]:
    """``datasets/tree/tree.ffr`` packed from ``tree/``, ``data.json`` copied beside it, and the
    working directory at ``tmp_path``, as in HFAI's recipe."""
    monkeypatch.chdir(tmp_path)
    folder = Path("datasets") / "tree"
    folder.mkdir(parents=True)
    ffr = _pack(tree, folder / "tree.ffr")
    shutil.copy(tree / "data.json", folder / "data.json")
    packs = FFRecordPathHandler()
    uri = packs.add_pack("tree", ffr)
    pm = PathManager()
    pm.register_handler(packs)
    pm.register_handler(PackMountPathHandler(folder, uri, packs))
    return pm, folder


def test_mount_reads_missing_files_from_the_pack(mounted: tuple[PathManager, Path], tree: Path) -> None:
    pm, folder = mounted
    for rel, data in _files(tree).items():
        for spelling in (f"{folder}/{rel}", f"./{folder}/{rel}", f"{os.path.abspath(folder)}/{rel}"):
            with pm.open(spelling, "rb") as f:
                assert f.read() == data, spelling
    assert pm.isdir(f"{folder}/images") and pm.isfile(f"{folder}/images/pixel.png")
    assert pm.exists(f"{folder}/empty.bin") and not pm.exists(f"{folder}/nope.bin")
    assert pm.ls(f"{folder}/images/nested") == ["blob.bin", "deeper"]
    with pytest.raises(FileNotFoundError, match="tree.ffr"):
        pm.open(f"{folder}/images/nope.png", "rb")


def test_mount_prefers_files_on_disk_and_writes_to_disk(
    mounted: tuple[PathManager, Path], tmp_path: Path
) -> None:
    pm, folder = mounted
    (folder / "data.json").write_text('{"edited": true}')
    assert json.load(pm.open(f"{folder}/data.json")) == {"edited": True}
    assert pm.get_local_path(f"{folder}/data.json") == f"{folder}/data.json"
    assert sorted(pm.ls(f"{folder}/")) == sorted(
        ["tree.ffr", "tree.ffr.idx", "data.json", "README.txt", "Zebra.txt", "données", "empty.bin", "images"]
    )
    pm.mkdirs(f"{folder}/out")
    with pm.open(f"{folder}/out/log.txt", "w") as f:
        f.write("written")
    assert (folder / "out" / "log.txt").read_text() == "written"
    pm.rm(f"{folder}/out/log.txt")
    assert not (folder / "out" / "log.txt").exists()
    other = tmp_path / "elsewhere.txt"
    other.write_text("not under the mount")
    assert pm.open(str(other)).read() == "not under the mount"


def test_mount_through_a_symlinked_dataset_folder(
    tmp_path: Path, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HFAI's advice: ``ln -s /public_dataset/.../mm_coco datasets/coco``."""
    public = tmp_path / "public" / "mm_tree"
    public.mkdir(parents=True)
    _pack(tree, public / "tree.ffr")
    monkeypatch.chdir(tmp_path)
    Path("datasets").mkdir()
    Path("datasets/tree").symlink_to(public)
    packs = FFRecordPathHandler()
    pm = PathManager()
    pm.register_handler(packs)
    uri = packs.add_pack("tree", "datasets/tree/tree.ffr")
    pm.register_handler(PackMountPathHandler("datasets/tree", uri, packs))
    blob = tree / "images" / "nested" / "blob.bin"
    assert pm.open("datasets/tree/images/nested/blob.bin", "rb").read() == blob.read_bytes()


def test_mount_get_local_path_materialises_pack_members(
    mounted: tuple[PathManager, Path], tree: Path, cache: Path
) -> None:
    pm, folder = mounted
    local = Path(pm.get_local_path(f"{folder}/images/pixel.png"))
    assert local.is_relative_to(cache) and local.read_bytes() == (tree / "images" / "pixel.png").read_bytes()


# -- register_ffrecord_handler on detectron2's, fvcore's and iopath's PathManagers ----------------


def test_register_serves_every_path_manager_and_is_idempotent(tmp_path: Path, tree: Path) -> None:
    from detectron2.utils.file_io import PathManager as detectron2_manager
    from fvcore.common.file_io import PathManager as fvcore_manager
    from iopath.common.file_io import g_pathmgr

    from hfai_runtime.detectron2 import register_ffrecord_handler

    ffr = _pack(tree, tmp_path / "tree.ffr")
    prefix = f"unit-{tmp_path.name}"  # unique: registrations are process-wide
    register_ffrecord_handler(ffr_file=str(ffr), ffr_prefix=prefix)
    register_ffrecord_handler(ffr_file=ffr, ffr_prefix=prefix)
    for pm in (detectron2_manager, fvcore_manager, g_pathmgr):
        assert pm.open(f"ffrecord://{prefix}/Zebra.txt", "rb").read() == (tree / "Zebra.txt").read_bytes()
        assert pm.open(f"{tmp_path}/README.txt", "rb").read() == (tree / "README.txt").read_bytes()
    shutil.copy(ffr, tmp_path / "copy.ffr")
    with pytest.raises(ValueError, match="already registered"):
        register_ffrecord_handler(ffr_file=tmp_path / "copy.ffr", ffr_prefix=prefix)
