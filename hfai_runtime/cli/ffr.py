r"""``hfai-runtime ffr``: pack folders into FFRecord files and inspect or verify them.

::

    hfai-runtime ffr pack datasets/coco coco.ffr     # progress bar on stderr; + coco.ffr.idx
    hfai-runtime ffr index coco.ffr                  # (re)write coco.ffr.idx: fast opens
    hfai-runtime ffr ls coco.ffr train2017 [-r]      # directories end with "/"
    hfai-runtime ffr cat coco.ffr annotations/instances_val2017.json > val.json
    hfai-runtime ffr cat train.ffr --index 7         # sample 7 of any FFRecord file
    hfai-runtime ffr verify coco.ffr                 # every CRC; exit 1 naming bad samples
    hfai-runtime ffr info coco.ffr

``FILE`` may also be a directory of ``*.ffr`` files (read as one dataset, like ``FileReader``).
``cat`` takes a path inside a packed folder, or ``--index N``, never a guess between the two (a
packed file may well be called ``0``). Names are printed escaped, as ``ls -b`` does: a name
holding a newline, a terminal escape sequence or undecodable bytes shows as ``\n``, ``\x1b``,
``\udcff`` instead of acting on the terminal. Errors (bad data, missing paths, non-regular
files, an output that is not a regular file) print one line on stderr and exit with status 2;
``verify`` exits 1 when it finds damage (bad CRCs, a corrupt header).

``ls``, ``cat`` and ``info`` of a packed folder that has no index beside it (one the official
library packed) write the index first when its folder is writable, saying so on stderr: the
first open pays for building it, every later open maps it (``index_if_missing``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TypeVar

from hfai_runtime.ffrecord import (
    CorruptFileError,
    FFRecordError,
    FileReader,
    NotAPackedFolderError,
    PackedFolder,
    SampleChecksumError,
    index_if_missing,
    pack_folder,
    write_index,
)

T = TypeVar("T")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("ffr", help="pack, list, read and verify FFRecord files")
    commands = parser.add_subparsers(dest="ffr_command", required=True, metavar="ACTION")

    pack = commands.add_parser("pack", help="pack a folder into one .ffr file (atomically)")
    pack.add_argument("src", help="folder to pack")
    pack.add_argument("dst", help="output file, e.g. coco.ffr")
    pack.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    pack.set_defaults(action=_pack)

    index = commands.add_parser(
        "index",
        help="save a packed folder's path index beside it (PACK.idx), so that opening it decodes nothing",
    )
    index.add_argument("file", help="packed .ffr file")
    index.set_defaults(action=_index)

    ls = commands.add_parser("ls", help="list a directory of a packed folder")
    ls.add_argument("file", help="packed .ffr file")
    ls.add_argument("path", nargs="?", default=None, help="directory inside it (default: root)")
    ls.add_argument("-r", "--recursive", action="store_true", help="list everything below")
    ls.set_defaults(action=_ls)

    cat = commands.add_parser("cat", help="write one packed file's or sample's raw bytes to stdout")
    cat.add_argument("file", help=".ffr file")
    which = cat.add_mutually_exclusive_group(required=True)
    which.add_argument("path", nargs="?", help="path inside a packed folder")
    which.add_argument("--index", type=int, metavar="N", help="sample N, of any FFRecord file")
    cat.set_defaults(action=_cat)

    verify = commands.add_parser("verify", help="check every CRC; exit 1 naming bad samples")
    verify.add_argument("file", help=".ffr file or directory of them")
    verify.set_defaults(action=_verify)

    info = commands.add_parser("info", help="sample counts, sizes and packed-folder totals")
    info.add_argument("file", help=".ffr file or directory of them")
    info.set_defaults(action=_info)

    parser.set_defaults(func=_run)


#: Exit statuses: the command could not do its job (bad input); ``verify`` found damage.
EXIT_ERROR, EXIT_DAMAGED = 2, 1


def _run(args: argparse.Namespace) -> int:
    """Run the action; data errors become one line on stderr and status 2, not a traceback."""
    try:
        return args.action(args)
    except (FFRecordError, OSError, IndexError) as e:
        _error(args.ffr_command, e)
        return EXIT_ERROR


def _error(command: str, error: Exception) -> None:
    print(f"hfai-runtime ffr {command}: error: {escape(str(error), keep_backslash=True)}", file=sys.stderr)


def escape(name: str, keep_backslash: bool = False) -> str:
    r"""``name`` safe to print: non-printable characters (controls, escape sequences, format
    characters, lone surrogates of undecodable bytes) as ``\n``/``\xNN``/``\uNNNN``, and
    backslashes doubled so the result is unambiguous (``keep_backslash`` for messages, whose
    names are already ``repr``-quoted)."""
    if name.isprintable() and (keep_backslash or "\\" not in name):
        return name
    out = []
    for ch in name:
        if ch == "\\" and not keep_backslash:
            out.append("\\\\")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(ascii(ch)[1:-1])  # \n, \x1b, \u200e, \udcff
    return "".join(out)


def _pack(args: argparse.Namespace) -> int:
    pack_folder(args.src, args.dst, verbose=not args.quiet)
    with FileReader(args.dst, check_data=False) as reader:
        print(f"packed {reader.n - 1} files from {escape(args.src)} into {escape(args.dst)}", file=sys.stderr)
    return 0


def _index(args: argparse.Namespace) -> int:
    path = _on_packed_folder(write_index, args.file, "index")
    print(f"wrote {escape(path)}", file=sys.stderr)
    return 0


def _packed_folder(file: str, action: str) -> PackedFolder:
    return _on_packed_folder(_open_indexed, file, action)


def _open_indexed(file: str, check_data: bool = True) -> PackedFolder:
    """``PackedFolder(file)``, its index written first when it has none and can have one."""
    written = index_if_missing(file)
    if written:
        print(f"wrote {escape(written)}: the pack's path index, which later opens map", file=sys.stderr)
    return PackedFolder(file, check_data=check_data)


def _on_packed_folder(work: Callable[[str], T], file: str, action: str) -> T:
    """``work(file)``, a plain FFRecord file refused with a line that says what it is."""
    try:
        return work(file)
    except NotAPackedFolderError:
        raise FFRecordError(
            f"{file}: not a packed folder (a plain FFRecord file has no paths "
            f"to {action}; 'ffr cat {file} --index N' prints sample N)"
        ) from None


def _ls(args: argparse.Namespace) -> int:
    with _packed_folder(args.file, "list") as folder:
        dirs = set(folder.list(args.path, list_file=False, recursive=args.recursive))
        for name in folder.list(args.path, recursive=args.recursive):
            print(escape(f"{name}/" if name in dirs else name))
    return 0


def _cat(args: argparse.Namespace) -> int:
    if args.index is not None:
        with FileReader(args.file) as reader:
            sys.stdout.buffer.write(reader.read_one(args.index))
        return 0
    with _packed_folder(args.file, "read") as folder:
        sys.stdout.buffer.write(folder.read_one(args.path))
    return 0


def _verify(args: argparse.Namespace) -> int:
    try:
        reader = FileReader(args.file, check_data=True)  # header CRCs and offsets
    except SampleChecksumError:  # the last sample: find every other bad one too
        reader = FileReader(args.file, check_data=False)
    except CorruptFileError as e:  # what verify is for: damage found, not a failed command
        _error("verify", e)
        return EXIT_DAMAGED
    with reader:
        bad = reader.verify()
        if bad:
            for i in bad:
                fname, local = reader.locate(i)
                print(f"{escape(fname)}: sample {local} (index {i}): CRC mismatch", file=sys.stderr)
            print(f"FAILED: {len(bad)} of {reader.n} samples are damaged", file=sys.stderr)
            return EXIT_DAMAGED
        print(f"OK: {reader.n} samples in {len(reader.fnames)} file(s), every CRC matches")
    return 0


def _info(args: argparse.Namespace) -> int:
    with FileReader(args.file, check_data=False) as reader:
        for fname, (size, meta_crc, n) in zip(reader.fnames, reader.content_ids()):
            old = " (old format: unverified)" if meta_crc == 0 else ""
            print(
                f"file: {escape(fname)}\n  size: {size} bytes\n  samples: {n}\n"
                f"  meta_crc: {meta_crc:#010x}{old}"
            )
        print(f"samples: {reader.n}")
    _packed_info(args.file)
    return 0


def _packed_info(file: str) -> None:
    """Totals of a packed folder; nothing for a plain FFRecord file."""
    try:
        folder = _open_indexed(file, check_data=False)
    except NotAPackedFolderError:
        return
    except CorruptFileError as e:
        print(f"packed folder: unreadable metadata ({escape(str(e), keep_backslash=True)})")
        return
    with folder:
        dirs = len(folder.list(list_file=False, recursive=True))
        print(f"packed folder: {folder.num_files()} files in {dirs} directories (plus the root)")
