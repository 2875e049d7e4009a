"""``hfai-runtime ffr``: pack, ls, cat, verify, info, on the golden files and a fresh pack."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hfai_runtime.cli import main


@pytest.fixture(scope="module")
def golden(golden_ffrecord: Path) -> Path:
    return golden_ffrecord


@pytest.fixture()
def packed(golden, tmp_path) -> Path:
    assert main(["ffr", "pack", str(golden / "tree"), str(tmp_path / "tree.ffr"), "-q"]) == 0
    return tmp_path / "tree.ffr"


def test_pack_matches_the_official_file_and_shows_progress(golden, tmp_path):
    out = tmp_path / "tree.ffr"
    proc = subprocess.run(
        [sys.executable, "-m", "hfai_runtime.cli", "ffr", "pack", str(golden / "tree"), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "packing 8 files" in proc.stderr and "100%" in proc.stderr  # the tqdm bar
    assert f"packed 8 files from {golden / 'tree'} into {out}" in proc.stderr
    assert out.read_bytes() == (golden / "tree.ffr").read_bytes()


def test_ls(packed, capsys):
    assert main(["ffr", "ls", str(packed)]) == 0
    assert capsys.readouterr().out.split() == [
        "README.txt",
        "Zebra.txt",
        "data.json",
        "données/",
        "empty.bin",
        "images/",
    ]
    assert main(["ffr", "ls", str(packed), "images", "-r"]) == 0
    assert capsys.readouterr().out.split() == [
        "nested/",
        "nested/blob.bin",
        "nested/deeper/",
        "nested/deeper/note.txt",
        "pixel.png",
    ]
    assert main(["ffr", "ls", str(packed), "missing"]) == 2
    assert "error: 'missing' does not exist in" in capsys.readouterr().err


def test_cat_writes_raw_bytes(golden, packed, capsysbinary):
    facts = json.loads((golden / "tree.json").read_text(encoding="utf-8"))
    for f in facts["files"]:
        assert main(["ffr", "cat", str(packed), f["path"]]) == 0
        assert hashlib.sha256(capsysbinary.readouterr().out).hexdigest() == f["sha256"]
    assert main(["ffr", "cat", str(golden / "records.ffr"), "--index", "4"]) == 0
    assert capsysbinary.readouterr().out == "héllo wörld".encode()
    assert main(["ffr", "cat", str(packed), "--index", "1"]) == 0  # a pack's sample: Zebra.txt
    assert capsysbinary.readouterr().out == (golden / "tree" / "Zebra.txt").read_bytes()
    assert main(["ffr", "cat", str(packed), "images"]) == 2
    assert b"'images' is a directory" in capsysbinary.readouterr().err


def test_verify_good_and_damaged_files(golden, packed, capsys):
    assert main(["ffr", "verify", str(packed)]) == 0
    assert "OK: 9 samples" in capsys.readouterr().out
    for name, sample in (("bad_sample", 2), ("truncated", 4)):
        assert main(["ffr", "verify", str(golden / "corrupt" / f"{name}.ffr")]) == 1
        err = capsys.readouterr().err
        assert f"{name}.ffr: sample {sample} (index {sample}): CRC mismatch" in err
        assert "FAILED: 1 of 5 samples are damaged" in err
    assert main(["ffr", "verify", str(golden / "corrupt" / "bad_meta.ffr")]) == 1
    assert "bad_meta.ffr: metadata checksum mismatch" in capsys.readouterr().err
    assert main(["ffr", "verify", str(golden / "corrupt" / "missing.ffr")]) == 2  # no file: an error
    assert "missing.ffr" in capsys.readouterr().err


def test_verify_names_the_file_of_a_bad_sample_in_a_directory(golden, tmp_path, capsys):
    data = bytearray((golden / "multi" / "part-001.ffr").read_bytes())
    data[-1] ^= 0x01  # last byte of global sample 4 = part-001 sample 1
    (tmp_path / "part-000.ffr").write_bytes((golden / "multi" / "part-000.ffr").read_bytes())
    (tmp_path / "part-001.ffr").write_bytes(bytes(data))
    assert main(["ffr", "verify", str(tmp_path)]) == 1
    assert "part-001.ffr: sample 1 (index 4): CRC mismatch" in capsys.readouterr().err


def test_info(golden, packed, capsys):
    assert main(["ffr", "info", str(packed)]) == 0
    out = capsys.readouterr().out
    assert "size: 1675 bytes" in out and "samples: 9" in out and "meta_crc: 0x682c3180" in out
    assert "packed folder: 8 files in 4 directories" in out
    assert main(["ffr", "info", str(golden / "multi")]) == 0
    out = capsys.readouterr().out
    assert "part-001.ffr" in out and "samples: 5" in out and "packed folder" not in out


def test_ffr_never_imports_torch_or_detectron2(golden, tmp_path):
    # Every subcommand module is imported to build the parser: a top-level torch import in any
    # of them would make `ffr` on a login node pay seconds and gigabytes for nothing. (A copy:
    # `info` writes the index beside a pack that has none.)
    shutil.copy(golden / "tree.ffr", tmp_path / "tree.ffr")
    code = (
        "import sys; from hfai_runtime.cli import main; "
        f"rc = main(['ffr', 'info', {str(tmp_path / 'tree.ffr')!r}]); "
        "print(rc, sorted(m for m in ('torch', 'detectron2') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.splitlines()[-1] == "0 []"
