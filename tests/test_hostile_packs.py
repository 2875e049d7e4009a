"""Hostile input against packs: every case an attacker, a careless script or a strange file system
can produce, each one refused with one line naming the culprit or handled correctly -- never a
hang, a traceback, a file written through a link or a pack that embeds itself.

To add a case, write a function ``case_<what>(tmp: Path, cli: Cli) -> None`` that builds the
input under ``tmp`` and asserts the outcome, and register it with ``@hostile``. Every case runs
under a watchdog (a hang fails it instead of stalling the suite) and must leave no temporary
file behind anywhere under ``tmp``.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import signal
import socket
import stat
import subprocess
import sys
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import pytest
from iopath.common.file_io import PathManager

from hfai_runtime.cli import main
from hfai_runtime.ffrecord import FFRecordError, FileWriter, PackedFolder, pack_folder
from hfai_runtime.ffrecord import pack as pack_module
from hfai_runtime.ffrecord.metadata import MAGIC
from hfai_runtime.ffrecord.pack import MAX_COPIES, MAX_DEPTH
from hfai_runtime.io import FFRecordPathHandler

WATCHDOG_S = 60  # generous for a loaded machine; a hang would otherwise stall forever


class Cli:
    """Runs ``hfai-runtime ffr ...`` in this process; returns (status, stdout, stderr)."""

    def __init__(self, capsys: pytest.CaptureFixture) -> None:
        self._capsys = capsys

    def __call__(self, *argv: str | Path) -> tuple[int, str, str]:
        status = main(["ffr", *map(str, argv)])
        out, err = self._capsys.readouterr()
        assert "Traceback" not in err
        return status, out, err


CASES: dict[str, Callable[[Path, Cli], None]] = {}


def hostile(case: Callable[[Path, Cli], None]) -> Callable[[Path, Cli], None]:
    CASES[case.__name__.removeprefix("case_")] = case
    return case


@contextlib.contextmanager
def _watchdog(seconds: int):
    """SIGALRM interrupts a blocking ``open()``/``read()`` and fails the case with TimeoutError."""

    def expired(signum, frame):
        raise TimeoutError(f"hostile case still running after {seconds} s: it blocks")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# -- helpers -----------------------------------------------------------------------------------


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def _crafted(path: Path, meta: bytes, files: int) -> Path:
    """A pack whose metadata sample is ``meta`` (valid CRCs: what an attacker would write)."""
    with FileWriter(path, files + 1) as writer:
        for i in range(files):
            writer.write_one(b"file %d" % i)
        writer.write_one(MAGIC + meta)
    return path


def _deep_pickle(depth: int) -> bytes:
    """``{"d": {"d": ... {"f": 0}}}`` ``depth`` directories deep, written opcode by opcode
    (``pickle.dumps`` itself cannot: it recurses once per level)."""
    opens = b"}" + b"\x8c\x01d}" * depth  # EMPTY_DICT, then per level: key, EMPTY_DICT
    leaf = b"\x8c\x01fK\x00s"  # "f": 0, SETITEM into the innermost dict
    return b"\x80\x04" + opens + leaf + b"s" * depth + b"."


# -- non-regular files -------------------------------------------------------------------------


@hostile
def case_fifo_named_like_a_pack(tmp: Path, cli: Cli) -> None:
    os.mkfifo(tmp / "x.ffr")
    for argv in (["verify"], ["info"], ["ls"], ["cat", "--index", "0"]):
        status, _, err = cli(argv[0], tmp / "x.ffr", *argv[1:])
        assert status == 2 and f"{tmp / 'x.ffr'}: is a FIFO, not a regular file" in err, argv
    with pytest.raises(FFRecordError, match="x.ffr: is a FIFO"):
        PackedFolder(tmp / "x.ffr")


@hostile
def case_fifo_registered_as_a_pack(tmp: Path, cli: Cli) -> None:
    os.mkfifo(tmp / "x.ffr")
    with pytest.raises(FFRecordError, match=r"x\.ffr: is a FIFO, not a regular file"):
        FFRecordPathHandler().add_pack("x", tmp / "x.ffr")


@hostile
def case_fifo_in_a_directory_of_packs(tmp: Path, cli: Cli) -> None:
    (tmp / "data").mkdir()
    with FileWriter(tmp / "data" / "a.ffr", 1) as writer:
        writer.write_one(b"fine")
    os.mkfifo(tmp / "data" / "b.ffr")
    status, _, err = cli("verify", tmp / "data")
    assert status == 2 and "b.ffr: is a FIFO, not a regular file" in err


@hostile
def case_device_named_like_a_pack(tmp: Path, cli: Cli) -> None:
    (tmp / "null.ffr").symlink_to("/dev/null")
    status, _, err = cli("verify", tmp / "null.ffr")
    assert status == 2 and "null.ffr: is a character device, not a regular file" in err


@hostile
def case_file_replaced_by_a_fifo_while_packing(tmp: Path, cli: Cli) -> None:
    src = _tree(tmp / "src", {"a.bin": b"A", "b.bin": b"B"})
    real_plan = pack_module._plan

    def plan_then_swap(root, out_file):  # the window between listing and reading
        plan = real_plan(root, out_file)
        (src / "b.bin").unlink()
        os.mkfifo(src / "b.bin")
        return plan

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pack_module, "_plan", plan_then_swap)
        status, _, err = cli("pack", src, tmp / "out.ffr", "-q")
    assert status == 2 and "b.bin: is a FIFO, not a regular file; pack_folder packs only" in err
    assert sorted(os.listdir(tmp)) == ["src"]


@hostile
def case_fifo_inside_the_folder_to_pack(tmp: Path, cli: Cli) -> None:
    src = _tree(tmp / "src", {"a.txt": b"A"})
    os.mkfifo(src / "pipe")
    status, _, err = cli("pack", src, tmp / "out.ffr", "-q")
    assert status == 2 and "src/pipe: is a FIFO; pack_folder packs only" in err
    assert sorted(os.listdir(tmp)) == ["src"]


# -- outputs that are not regular files -----------------------------------------------------------


def _special_files(tmp: Path) -> dict[str, Callable[[Path], None]]:
    """How to make each kind of node a writer must not replace (a device only as root; never
    under /dev: always in ``tmp``)."""

    def socket_at(path: Path) -> None:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(path))

    kinds = {
        "FIFO": os.mkfifo,
        "socket": socket_at,
        "directory": os.mkdir,
        "symbolic link": lambda path: path.symlink_to(tmp / "elsewhere.ffr"),
    }
    if os.getuid() == 0:
        kinds["character device"] = lambda path: os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    return kinds


def _same_node(path: Path, before: os.stat_result) -> bool:
    after = os.lstat(path)
    return (after.st_mode, after.st_ino, after.st_rdev) == (before.st_mode, before.st_ino, before.st_rdev)


@hostile
def case_pack_and_index_never_replace_a_special_file(tmp: Path, cli: Cli) -> None:
    src = _tree(tmp / "src", {"a.txt": b"A"})
    assert cli("pack", src, tmp / "good.ffr", "-q")[0] == 0
    for what, make in _special_files(tmp).items():
        for victim, argv in (
            (tmp / "x.ffr", ("pack", src, tmp / "x.ffr", "-q")),  # the pack itself
            (tmp / "y.ffr.idx", ("pack", src, tmp / "y.ffr", "-q")),  # its index: checked first
            (tmp / "good.ffr.idx", ("index", tmp / "good.ffr")),
        ):
            if victim.exists() or victim.is_symlink():
                victim.unlink()
            make(victim)
            before = os.lstat(victim)
            status, _, err = cli(*argv)
            assert status == 2, (what, argv)
            assert f"{victim}: is a {what}, not a regular file; a new file replaces only a regular" in err
            assert _same_node(victim, before), (what, argv)
            assert not (tmp / "y.ffr").exists() and not (tmp / "elsewhere.ffr").exists()
            victim.rmdir() if what == "directory" else victim.unlink()


@hostile
def case_output_swapped_for_a_fifo_while_packing(tmp: Path, cli: Cli) -> None:
    src = _tree(tmp / "src", {"a.txt": b"A"})
    real_plan = pack_module._plan

    def plan_then_swap(root, out_file):  # after the first check, before the rename
        plan = real_plan(root, out_file)
        os.mkfifo(out_file)
        return plan

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pack_module, "_plan", plan_then_swap)
        status, _, err = cli("pack", src, tmp / "out.ffr", "-q")
    assert status == 2 and "out.ffr: is a FIFO, not a regular file" in err
    assert stat.S_ISFIFO(os.lstat(tmp / "out.ffr").st_mode)
    (tmp / "out.ffr").unlink()


# -- large files and link fan-out ------------------------------------------------------------------

#: Packs ``sys.argv[1]`` into ``sys.argv[2]`` with the CLI, its address space capped at what the
#: interpreter uses after the imports plus ``sys.argv[3]`` bytes: a file read whole would fail.
_PACK_WITH_CAPPED_MEMORY = r"""
import resource, sys
import hfai_runtime.cli.ffr, hfai_runtime.ffrecord.pack, numpy, tqdm
from hfai_runtime.cli import main

def address_space():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024

cap = address_space() + int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
sys.exit(main(["ffr", "pack", sys.argv[1], sys.argv[2], "-q"]))
"""


@hostile
def case_a_file_larger_than_memory_allows_is_streamed(tmp: Path, cli: Cli) -> None:
    size, headroom = 384 << 20, 96 << 20
    src = tmp / "src"
    src.mkdir()
    with open(src / "big.bin", "wb") as big:  # sparse: marked bytes at both ends only
        big.write(b"head")
        big.truncate(size)
        big.seek(size - 4)
        big.write(b"tail")
    (src / "small.txt").write_bytes(b"small")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}  # (no thread pools reserving memory)
    run = subprocess.run(
        [sys.executable, "-c", _PACK_WITH_CAPPED_MEMORY, str(src), str(tmp / "big.ffr"), str(headroom)],
        capture_output=True,
        text=True,
        env=env,
        timeout=WATCHDOG_S,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    with PackedFolder(tmp / "big.ffr") as folder:
        assert folder.size("big.bin") == size and folder.read_one("small.txt").tobytes() == b"small"
        assert folder.reader.verify() == []  # the CRC computed across the chunks is the file's
        data = folder.reader.view(folder.index("big.bin"))
        assert bytes(data[:4]) == b"head" and bytes(data[-4:]) == b"tail"


@hostile
def case_more_bytes_than_the_disk_holds_are_refused_first(tmp: Path, cli: Cli) -> None:
    src = tmp / "src"
    src.mkdir()
    with open(src / "huge.bin", "wb") as huge:
        huge.truncate(shutil.disk_usage(tmp).free + (1 << 30))  # sparse: costs no disk
    status, _, err = cli("pack", src, tmp / "huge.ffr", "-q")
    assert status == 2 and "huge.ffr: the 1 files to pack hold" in err and "bytes free on its file" in err
    assert not (tmp / "huge.ffr").exists()


@hostile
def case_symlinks_fanning_out_level_after_level(tmp: Path, cli: Cli) -> None:
    levels = 26  # 2 links a level: 2**26 paths to the deepest folder
    for level in range(levels + 1):
        (tmp / f"L{level}").mkdir()
    for level in range(levels):
        for link in "ab":
            (tmp / f"L{level}" / link).symlink_to(tmp / f"L{level + 1}", target_is_directory=True)
    (tmp / f"L{levels}" / "leaf.txt").write_bytes(b"leaf")
    listings = []
    real_listdir = os.listdir
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "listdir", lambda path: listings.append(path) or real_listdir(path))
        status, _, err = cli("pack", tmp / "L0", tmp / "fan.ffr", "-q")
    assert status == 2 and f"is reached by more than {MAX_COPIES} paths through symbolic links" in err
    assert len(listings) <= MAX_COPIES * (levels + 1), "each folder is walked at most MAX_COPIES times"
    assert not (tmp / "fan.ffr").exists()


# -- deep trees --------------------------------------------------------------------------------


@hostile
def case_pack_nested_thousands_of_levels_deep(tmp: Path, cli: Cli) -> None:
    depth = 3000
    pack = _crafted(tmp / "deep.ffr", _deep_pickle(depth), files=1)
    status, out, _ = cli("ls", pack, "-r")
    lines = out.splitlines()
    assert status == 0 and len(lines) == depth + 1
    assert lines[-2] == "d/" * depth and lines[-1] == "d/" * depth + "f"
    status, out, _ = cli("info", pack)
    assert status == 0 and f"packed folder: 1 files in {depth} directories" in out
    with PackedFolder(pack) as folder:
        assert folder.read_one("d/" * depth + "f").tobytes() == b"file 0"


def _nest(root: Path, depth: int) -> None:
    """``root/d/d/.../d/leaf.txt``, ``depth`` folders deep, made with descriptors (the path
    soon outgrows PATH_MAX)."""
    root.mkdir()
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    leaf = os.open("leaf.txt", os.O_WRONLY | os.O_CREAT, dir_fd=fd)
    os.write(leaf, b"deep")
    os.close(leaf)
    os.close(fd)


def _unnest(root: Path, depth: int) -> None:
    """Remove what :func:`_nest` made, bottom up (``shutil.rmtree`` recurses per level)."""
    fds = [os.open(root, os.O_RDONLY | os.O_DIRECTORY)]
    for _ in range(depth):
        fds.append(os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
    os.unlink("leaf.txt", dir_fd=fds[-1])
    os.close(fds.pop())
    while fds:
        os.rmdir("d", dir_fd=fds[-1])
        os.close(fds.pop())
    root.rmdir()


@hostile
def case_real_folder_nested_thousands_of_levels_deep(tmp: Path, cli: Cli) -> None:
    _nest(tmp / "deep", 3000)
    try:  # (pytest's own clean-up of tmp recurses per level: never leave this tree behind)
        status, _, err = cli("pack", tmp / "deep", tmp / "deep.ffr", "-q")
        assert status == 2 and f"packs trees at most {MAX_DEPTH} levels deep" in err
        assert not (tmp / "deep.ffr").exists()
    finally:
        _unnest(tmp / "deep", 3000)


@hostile
def case_real_folder_exactly_at_the_depth_limit(tmp: Path, cli: Cli) -> None:
    _nest(tmp / "deep", MAX_DEPTH)
    try:
        assert cli("pack", tmp / "deep", tmp / "deep.ffr", "-q")[0] == 0
        with PackedFolder(tmp / "deep.ffr") as folder:
            assert folder.read_one("d/" * MAX_DEPTH + "leaf.txt").tobytes() == b"deep"
    finally:
        _unnest(tmp / "deep", MAX_DEPTH)


# -- names that would act on a terminal --------------------------------------------------------


@hostile
def case_names_with_newlines_escapes_and_lone_surrogates(tmp: Path, cli: Cli) -> None:
    src = tmp / "src"
    src.mkdir()
    for raw in (b"two\nlines", b"\x1b[2J\x1b[31mred", b"bad\xffutf8", b"back\\slash", b"caf\xc3\xa9"):
        fd = os.open(os.path.join(os.fsencode(src), raw), os.O_WRONLY | os.O_CREAT)
        os.close(fd)
    assert cli("pack", src, tmp / "names.ffr", "-q")[0] == 0
    status, out, _ = cli("ls", tmp / "names.ffr")
    assert status == 0
    assert sorted(out.splitlines()) == sorted(
        ["two\\nlines", "\\x1b[2J\\x1b[31mred", "bad\\udcffutf8", "back\\\\slash", "café"]
    )
    crafted = _crafted(
        tmp / "crafted.ffr",
        pickle.dumps(OrderedDict([("\u202eevil\x07", 0), ("\ud800", 1)]), protocol=4),
        files=2,
    )
    status, out, _ = cli("ls", crafted)
    assert status == 0 and out.splitlines() == ["\\u202eevil\\x07", "\\ud800"]


# -- packing a folder into itself --------------------------------------------------------------


@hostile
def case_pack_written_inside_the_folder_it_packs(tmp: Path, cli: Cli) -> None:
    src = _tree(tmp / "coco", {"train/1.jpg": b"1" * 1000, "ann.json": b"{}"})
    out = src / "coco.ffr"
    assert cli("pack", src, out, "-q")[0] == 0
    first = out.read_bytes()
    assert (src / "coco.ffr.idx").is_file()  # its index file, beside it: left out too
    leftovers = [src / ".coco.ffr.tmp-123-deadbeef", src / ".coco.ffr.idx.tmp-9-cafe"]
    for leftover in leftovers:  # killed writers' temporary files
        leftover.write_bytes(first)
    assert cli("pack", src, out, "-q")[0] == 0
    assert out.read_bytes() == first, "the second pack must not embed the first"
    with PackedFolder(out) as folder:
        assert folder.list(recursive=True) == ["ann.json", "train", "train/1.jpg"]
    for leftover in leftovers:
        leftover.unlink()


# -- the get_local_path cache ------------------------------------------------------------------


def _handler(pack: Path) -> FFRecordPathHandler:
    handler = FFRecordPathHandler()
    handler.add_pack("p", pack)
    return handler


@hostile
def case_cache_sees_a_pack_replaced_with_the_same_size_and_mtime(tmp: Path, cli: Cli) -> None:
    pack = tmp / "p.ffr"
    pack_folder(_tree(tmp / "old", {"a.json": b'{"v": "old"}'}), pack, index=False)
    local = _handler(pack)._get_local_path("ffrecord://p/a.json")
    assert Path(local).read_bytes() == b'{"v": "old"}'
    stat = pack.stat()
    for how, content in (("renamed over it", b'{"v": "new"}'), ("rewritten in place", b'{"v": "NEW"}')):
        pack_folder(_tree(tmp / "next", {"a.json": content}), tmp / "next.ffr", index=False)
        if how == "renamed over it":
            os.replace(tmp / "next.ffr", pack)
        else:
            pack.write_bytes((tmp / "next.ffr").read_bytes())  # same inode
            (tmp / "next.ffr").unlink()
        os.utime(pack, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert pack.stat().st_size == stat.st_size and pack.stat().st_mtime_ns == stat.st_mtime_ns
        fresh = _handler(pack)._get_local_path("ffrecord://p/a.json")  # as a new process would
        assert Path(fresh).read_bytes() == content, how


@hostile
def case_cache_never_follows_a_planted_symlink(tmp: Path, cli: Cli) -> None:
    pack = tmp / "p.ffr"
    pack_folder(_tree(tmp / "src", {"sub/a.json": b"pack data"}), pack)
    handler = _handler(pack)
    local = Path(handler._get_local_path("ffrecord://p/sub/a.json"))
    victim = tmp / "victim.txt"
    victim.write_bytes(b"precious")
    local.unlink()
    local.symlink_to(victim)  # at the file itself
    for force in (False, True):
        served = Path(handler._get_local_path("ffrecord://p/sub/a.json", force=force))
        assert not served.is_symlink() and served.read_bytes() == b"pack data"
        assert victim.read_bytes() == b"precious"
        served.unlink()
        served.symlink_to(victim)
    (tmp / "elsewhere").mkdir()
    local.unlink()
    local.parent.rmdir()
    local.parent.symlink_to(tmp / "elsewhere", target_is_directory=True)  # at a folder
    with pytest.raises(PermissionError, match=r"'sub' in the ffrecord cache is not a plain folder"):
        handler._get_local_path("ffrecord://p/sub/a.json")
    assert list((tmp / "elsewhere").iterdir()) == []


@hostile
def case_cache_root_that_is_not_private(tmp: Path, cli: Cli) -> None:
    pack = tmp / "p.ffr"
    pack_folder(_tree(tmp / "src", {"a.json": b"x"}), pack)
    root = tmp / "cache" / "ffrecord"
    root.mkdir(parents=True, mode=0o777)
    root.chmod(0o777)
    _handler(pack)._get_local_path("ffrecord://p/a.json")
    assert root.stat().st_mode & 0o777 == 0o700, "an open cache folder of ours is made private"
    if os.getuid() == 0:  # only root can give a folder away
        os.chown(root, 65534, 65534)
        with pytest.raises(PermissionError, match="belongs to uid 65534, not to you"):
            _handler(pack)._get_local_path("ffrecord://p/a.json")
        os.chown(root, 0, 0)
    root.rename(tmp / "real-root")
    root.symlink_to(tmp / "real-root", target_is_directory=True)
    with pytest.raises(PermissionError, match="ffrecord cache folder is not a directory of its own"):
        _handler(pack)._get_local_path("ffrecord://p/a.json")
    pm = PathManager()
    pm.register_handler(_handler(pack))
    with pytest.raises(PermissionError):
        pm.get_local_path("ffrecord://p/a.json")


# -- CLI ambiguity -----------------------------------------------------------------------------


@hostile
def case_cat_of_a_digit_name_is_a_path_never_an_index(tmp: Path, cli: Cli) -> None:
    pack = tmp / "p.ffr"
    pack_folder(_tree(tmp / "src", {"5": b"the file named 5", "a": b"the file named a"}), pack)
    status, _, _ = cli("cat", pack, "5")
    assert status == 0  # (stdout bytes are checked in test_cli_ffr)
    status, _, err = cli("cat", pack, "0")
    assert status == 2 and "'0' does not exist in" in err
    status, _, err = cli("cat", pack, "--index", "5")
    assert status == 2 and "sample index 5 out of range" in err
    with pytest.raises(SystemExit):  # both a path and --index: argparse refuses
        main(["ffr", "cat", str(pack), "5", "--index", "5"])


@hostile
def case_ls_and_cat_of_a_plain_file_say_not_a_packed_folder(tmp: Path, cli: Cli) -> None:
    with FileWriter(tmp / "plain.ffr", 2) as writer:
        writer.write_one(b"zero")
        writer.write_one(b"one")
    for argv in (["ls"], ["cat", "0"]):
        status, out, err = cli(argv[0], tmp / "plain.ffr", *argv[1:])
        assert status == 2 and f"{tmp / 'plain.ffr'}: not a packed folder" in err, argv
        assert "--index N" in err and "piouhjgbr" not in out + err


# -- the runner (last: it is parametrized over every case registered above) ---------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    with _watchdog(WATCHDOG_S):
        CASES[name](tmp_path, Cli(capsys))
    leftovers = [p for p in _walk(tmp_path) if ".tmp-" in p.name]
    assert leftovers == [], f"temporary files left behind: {leftovers}"


def _walk(root: Path) -> list[Path]:
    """Every path under ``root``, iteratively (``Path.rglob`` recurses per level)."""
    found, stack = [], [root]
    while stack:
        for entry in os.scandir(stack.pop()):
            found.append(Path(entry.path))
            if entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
    return found
