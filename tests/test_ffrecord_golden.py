"""Byte compatibility with files the official HFAiLab ffrecord wrote (tests/data/ffrecord, with its provenance)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import struct
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from hfai_runtime.ffrecord import (
    CorruptFileError,
    FileReader,
    FileWriter,
    OldFormatWarning,
    PackedFolder,
    SampleChecksumError,
    pack_folder,
)


@pytest.fixture(scope="module")
def golden(golden_ffrecord: Path) -> Path:
    return golden_ffrecord


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _sha(data) -> str:
    return hashlib.sha256(data).hexdigest()


def test_records_read_back_exactly(golden):
    facts = _load(golden / "records.json")
    with FileReader(golden / "records.ffr") as reader:
        assert reader.n == facts["file"]["n"] == 5
        for s in facts["samples"]:
            sample = reader.read_one(s["index"])
            assert sample.dtype == np.uint8 and sample.ndim == 1 and sample.flags.writeable
            assert (len(sample), _sha(sample)) == (s["length"], s["sha256"])
            assert zlib.crc32(sample) == s["crc32"]
        batch = reader.read([4, 0, 3, 3])
        assert [_sha(b) for b in batch] == [facts["samples"][i]["sha256"] for i in (4, 0, 3, 3)]


def test_writer_reproduces_the_official_file_byte_for_byte(golden, tmp_path):
    samples = [b"", b"a", bytes(range(256)), b"x" * 100000, "héllo wörld".encode()]
    with FileWriter(tmp_path / "records.ffr", len(samples)) as writer:
        for s in samples:
            writer.write_one(s)
    assert (tmp_path / "records.ffr").read_bytes() == (golden / "records.ffr").read_bytes()


def test_multi_file_directory_and_list_order(golden):
    facts = _load(golden / "multi" / "multi.json")
    with FileReader(golden / "multi") as reader:  # globs *.ffr, ignores multi.json
        assert reader.n == 5
        assert [_sha(s) for s in reader.read(range(5))] == [s["sha256"] for s in facts["samples"]]
        assert reader.locate(3) == (str(golden / "multi" / "part-001.ffr"), 0)
    reversed_parts = [golden / "multi" / "part-001.ffr", golden / "multi" / "part-000.ffr"]
    with FileReader(reversed_parts) as reader:
        expected = [s["sha256"] for s in facts["samples"][3:] + facts["samples"][:3]]
        assert [_sha(reader.read_one(i)) for i in range(5)] == expected


def test_packed_tree_reads_back_every_file(golden):
    facts = _load(golden / "tree.json")
    with PackedFolder(golden / "tree.ffr") as folder:
        assert folder.num_files() == len(facts["files"]) == 8
        for f in facts["files"]:
            assert folder.is_file(f["path"]) and not folder.is_dir(f["path"])
            assert folder.index(f["path"]) == f["sample_index"]
            assert _sha(folder.read_one(f["path"])) == f["sha256"]
        paths = [f["path"] for f in facts["files"]]
        assert [_sha(d) for d in folder.read(paths)] == [f["sha256"] for f in facts["files"]]
        assert folder.list(recursive=True, list_dir=False) == paths  # packing order
        assert folder.list() == list(facts["structure"])
        assert folder.list("images", list_file=False, recursive=True) == ["nested", "nested/deeper"]
        assert folder.is_dir("images/nested") and folder.is_dir("") and folder.exists("données")


class _TestUnpickler(pickle.Unpickler):
    """The test's own restricted decoder, independent of the one under test."""

    def find_class(self, module, name):
        assert (module, name) == ("collections", "OrderedDict"), (module, name)
        return OrderedDict


def test_our_pack_of_tree_has_the_official_layout(golden, tmp_path):
    facts = _load(golden / "tree.json")
    out = tmp_path / "tree.ffr"
    pack_folder(golden / "tree", out)
    data = out.read_bytes()
    meta_crc, n = struct.unpack_from("<Iq", data, 0)
    assert n == facts["file"]["n"] == 9
    assert meta_crc == zlib.crc32(data[4 : 12 + 12 * n]) == facts["file"]["meta_crc32"]
    offsets = list(struct.unpack_from(f"<{n}q", data, 12 + 4 * n))
    assert offsets == facts["file"]["offsets"]
    meta = data[offsets[-1] :]
    assert meta.startswith(b"piouhjgbr")
    assert meta[9:11] == b"\x80\x04"  # pickle protocol 4, as the official pack on Python 3.11
    structure = _TestUnpickler(io.BytesIO(meta[9:])).load()
    assert type(structure) is OrderedDict and json.loads(json.dumps(structure)) == facts["structure"]
    assert list(structure) == sorted(structure)  # code-point order: "Zebra.txt" < "data.json"
    assert _sha(meta) == facts["meta_sample"]["sha256"]
    assert data == (golden / "tree.ffr").read_bytes()
    with PackedFolder(out) as folder:
        for f in facts["files"]:
            assert _sha(folder.read_one(f["path"])) == f["sha256"]


def test_bad_sample_fails_only_that_sample(golden):
    path = golden / "corrupt" / "bad_sample.ffr"
    with FileReader(path) as reader:
        for i in (0, 1, 3, 4):
            reader.read_one(i)
        with pytest.raises(SampleChecksumError, match=r"bad_sample\.ffr.*sample 2\b") as err:
            reader.read_one(2)
        assert err.value.indices == [2]
        with pytest.raises(SampleChecksumError, match=r"bad_sample\.ffr.*sample 2\b"):
            reader.read([0, 2, 4])
    with FileReader(path, check_data=False) as reader:
        assert reader.read_one(2)[10] == 0x0A ^ 0xFF


def test_bad_meta_fails_at_open(golden):
    path = golden / "corrupt" / "bad_meta.ffr"
    with pytest.raises(CorruptFileError, match=r"bad_meta\.ffr: metadata checksum mismatch"):
        FileReader(path)
    with FileReader(path, check_data=False) as reader:  # as the official reader: wrong bounds
        assert reader.read_one(0).tobytes() == b"a" and reader.read_one(1).tobytes() == b""


def test_truncated_file_is_reported_at_open(golden):
    path = golden / "corrupt" / "truncated.ffr"
    with pytest.raises(SampleChecksumError, match=r"truncated\.ffr: sample 4 \(the last\)"):
        FileReader(path)
    with FileReader(path, check_data=False) as reader:
        assert reader.read_one(4).tobytes() == b"h\xc3\xa9llo"


def _patched(golden: Path, tmp_path: Path, edit) -> Path:
    data = bytearray((golden / "records.ffr").read_bytes())
    edit(data)
    out = tmp_path / "patched.ffr"
    out.write_bytes(bytes(data))
    return out


def _set_offset(data: bytearray, i: int, value: int, refresh_crc: bool = True) -> None:
    struct.pack_into("<q", data, 12 + 4 * 5 + 8 * i, value)
    if refresh_crc:  # a forged header: the CRC matches, the offsets are nonsense
        struct.pack_into("<I", data, 0, zlib.crc32(data[4:72]))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: _set_offset(d, 2, 71), r"sample 2 \(71\) is before that of sample 1 \(72\)"),
        (lambda d: _set_offset(d, 0, 8), r"sample 0 starts at 8, inside the 72-byte header"),
        (lambda d: _set_offset(d, 4, 10**9), r"sample 4 starts at 1000000000, past the end"),
        (lambda d: struct.pack_into("<q", d, 4, 10**6), r"header declares 1000000 samples"),
    ],
)
def test_forged_offsets_are_refused_at_open(golden, tmp_path, edit, message):
    path = _patched(golden, tmp_path, edit)
    for check_data in (True, False):
        with pytest.raises(CorruptFileError, match=message):
            FileReader(path, check_data=check_data)


def test_old_format_file_loads_with_one_warning(golden, tmp_path):
    path = _patched(golden, tmp_path, lambda d: struct.pack_into("<I", d, 0, 0))
    with pytest.warns(OldFormatWarning, match="patched.ffr: metadata CRC is 0") as caught:
        reader = FileReader(path)
    assert len(caught) == 1
    with reader:
        assert reader.read_one(3).tobytes() == b"x" * 100000


def test_indices_out_of_range_name_index_and_n(golden):
    with FileReader(golden / "records.ffr") as reader:
        for bad in (5, -1, 10**12):
            for method in (reader.read_one, reader.sample_size, reader.locate):
                with pytest.raises(IndexError, match=rf"index {bad} out of range.*n=5"):
                    method(bad)
        with pytest.raises(IndexError, match="index -1 out of range"):
            reader.read([0, -1])
        assert reader.read_one(np.int64(2)).tobytes() == bytes(range(256))


def test_files_that_cannot_be_mapped_are_read_with_pread(golden, monkeypatch):
    """Some FUSE mounts (direct I/O before Linux 6.6) refuse mmap with ENODEV; no such mount
    can be made here, so mmap itself is made to refuse."""
    import errno
    import mmap

    def refuse(*args, **kwargs):
        raise OSError(errno.ENODEV, "No such device")

    monkeypatch.setattr(mmap, "mmap", refuse)
    open_fds = len(os.listdir("/proc/self/fd"))
    facts = _load(golden / "records.json")
    with FileReader(golden / "records.ffr") as reader:
        assert [_sha(reader.read_one(s["index"])) for s in facts["samples"]] == [
            s["sha256"] for s in facts["samples"]
        ]
        assert [_sha(b) for b in reader.read([3, 4])] == [s["sha256"] for s in facts["samples"][3:]]
    with FileReader(golden / "corrupt" / "bad_sample.ffr") as reader:
        with pytest.raises(SampleChecksumError, match="sample 2"):
            reader.read_one(2)
    with pytest.raises(SampleChecksumError, match=r"sample 4 \(the last\)"):
        FileReader(golden / "corrupt" / "truncated.ffr")
    with pytest.raises(CorruptFileError, match="metadata checksum mismatch"):
        FileReader(golden / "corrupt" / "bad_meta.ffr")
    assert len(os.listdir("/proc/self/fd")) == open_fds  # closed, failed opens included
