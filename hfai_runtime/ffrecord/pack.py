"""``pack_folder``: pack a directory tree into one FFRecord file that :class:`PackedFolder` reads.

The order is the official one, so the same tree gives the same sample indices and (on Python
3.8 to 3.13) the same bytes: depth-first, each directory's entries sorted by name in code-point
order (``"Zebra"`` before ``"apple"``), files and subdirectories interleaved, each file taking the
next sample index; the metadata sample comes last. Empty directories are kept.

What is packed, when the walk meets something other than a plain file or directory:

* a **symbolic link** is followed: a link to a file is packed as that file, a link to a
  directory as that directory (as the official packer does). A link that leads back into a
  directory being walked raises :class:`FFRecordError` instead of recursing forever, and so does a
  dangling link;
* a **FIFO, socket or device** raises :class:`FFRecordError` naming it: reading one could block
  forever or never end, and silently leaving it out would make a dataset that differs from the
  folder. A file replaced by one between the walk and the read is refused the same way when it
  is opened (see :mod:`.files`);
* the **output file itself**, when it sits inside the folder (HFAI's ``ffr pack ds/coco
  ds/coco/coco.ffr``), its index file and the writers' temporary files beside them are left
  out: otherwise each repack would embed the previous pack;
* a tree deeper than :data:`MAX_DEPTH` levels is refused: the metadata pickle of such a tree
  cannot be written (Python's pickler recurses once per level).

* a **directory reached through many paths** (symbolic links to one folder) is packed under each
  path, as the official packer does, but at most :data:`MAX_COPIES` times: links that fan out
  level after level (2 a level, 26 levels deep: 2**26 copies of the deepest folder) raise
  :class:`FFRecordError` naming the folder once one is reached a ``MAX_COPIES + 1``-th time, so
  the work stays within ``MAX_COPIES`` times the folder's real size.

The path index is saved beside the pack (``out_file + ".idx"``, see :mod:`.sidecar`) unless
``index=False``. Small files are read straight into a reused batch buffer and written with one
system call per batch, CRCs computed from that buffer (see :meth:`FileWriter.write_batch`); a
file larger than the buffer is streamed through it (:meth:`FileWriter.write_parts`), so memory
stays at the buffer's size whatever the files' sizes. Only a regular file (or nothing) under
``out_file`` or its index's name is replaced, and a pack larger than the free space of the
output's file system is refused before anything is written. Nothing is left under ``out_file``
if anything fails (see :class:`FileWriter`).
"""

from __future__ import annotations

import os
import shutil
import stat
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

from tqdm import tqdm

from .errors import FFRecordError
from .files import check_replaceable, kind, open_regular
from .index import PathIndex
from .metadata import encode
from .reader import FileReader, PathLike
from .sidecar import index_path, save_index
from .writer import FileWriter, temp_prefix

#: Deepest directory nesting ``pack_folder`` accepts: the pickler recurses once per level, under
#: Python's default recursion limit of 1000 (no real dataset comes near).
MAX_DEPTH = 512
#: How many times one directory may be packed when symbolic links reach it by several paths.
MAX_COPIES = 16
_BATCH = 4 << 20  # files up to this size are read into one buffer and written together
_ONLY_REGULAR = "pack_folder packs only regular files and directories (and symbolic links to them)"


@dataclass
class _Plan:
    """The tree to store and the files to write, in sample-index order."""

    tree: OrderedDict = field(default_factory=OrderedDict)
    files: list[str] = field(default_factory=list)
    total_bytes: int = 0


def pack_folder(folder: PathLike, out_file: PathLike, verbose: bool = False, index: bool = True) -> None:
    """Pack every file under ``folder`` into ``out_file``; ``verbose`` shows a progress bar,
    ``index`` saves the path index beside it."""
    root = os.path.abspath(os.fspath(folder))
    if not os.path.isdir(root):
        raise FFRecordError(f"{root}: pack_folder needs a directory")
    for output in (os.fspath(out_file), index_path(out_file)) if index else (os.fspath(out_file),):
        check_replaceable(output)
    plan = _plan(root, os.path.abspath(os.fspath(out_file)))
    _check_space(plan, os.path.abspath(os.fspath(out_file)))
    with (
        FileWriter(out_file, len(plan.files) + 1) as writer,
        tqdm(
            total=plan.total_bytes,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=f"packing {len(plan.files)} files",
            disable=not verbose,
        ) as progress,
    ):
        _write_files(plan.files, writer, progress)
        writer.write_one(encode(plan.tree))
    if index:
        name = os.fspath(out_file)
        with FileReader(name, check_data=False) as pack:
            save_index(PathIndex.from_tree(plan.tree, len(plan.files), name), pack, index_path(name))


def _write_files(files: list[str], writer: FileWriter, progress: tqdm) -> None:
    """Read each file into a shared buffer, writing the buffer whenever it is full."""
    buffer = memoryview(bytearray(_BATCH))
    used, lengths = 0, []
    for path in files:
        fd, info = open_regular(path, _ONLY_REGULAR)
        try:
            if info.st_size > _BATCH - used and lengths:
                writer.write_batch(buffer[:used], lengths)
                used, lengths = 0, []
            if info.st_size > _BATCH:  # a large file goes alone, through the buffer
                writer.write_parts(_chunks(fd, buffer, info.st_size, path))
            else:
                _read_exactly(fd, buffer[used : used + info.st_size], path, info.st_size)
                used += info.st_size
                lengths.append(info.st_size)
        finally:
            os.close(fd)
        progress.update(info.st_size)
    if lengths:
        writer.write_batch(buffer[:used], lengths)


def _chunks(fd: int, buffer: memoryview, size: int, path: str) -> Iterator[memoryview]:
    """The ``size`` bytes of ``fd``, read into ``buffer`` a buffer-full at a time (each chunk
    is overwritten by the next: consume it before asking for the next)."""
    done = 0
    while done < size:
        chunk = _read_exactly(fd, buffer[: min(len(buffer), size - done)], path, size, done)
        done += len(chunk)
        yield chunk


def _read_exactly(fd: int, into: memoryview, path: str, size: int, done: int = 0) -> memoryview:
    """Fill ``into`` from ``fd`` (``done`` bytes of its ``size`` were read before); a file that
    shrinks while being read is an error."""
    got = 0
    while got < len(into):
        n = os.readv(fd, [into[got:]])
        if n == 0:
            raise FFRecordError(f"{path}: shrank from {size} to {done + got} bytes while being packed")
        got += n
    return into


def _check_space(plan: _Plan, out_file: str) -> None:
    """Refuse a pack that cannot fit on the output's file system, before writing anything
    (a sparse 64 GiB file is 64 GiB of samples)."""
    try:
        free = shutil.disk_usage(os.path.dirname(out_file)).free
    except OSError:  # FileWriter names a missing directory
        return
    if plan.total_bytes > free:
        raise FFRecordError(
            f"{out_file}: the {len(plan.files)} files to pack hold {plan.total_bytes} bytes, more "
            f"than the {free} bytes free on its file system"
        )


def _dir_key(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


class _Skipped:
    """The names to leave out of the folder that will hold the output file."""

    def __init__(self, out_file: str) -> None:
        out_dir, name = os.path.split(out_file)
        try:
            self.folder = _dir_key(os.stat(out_dir))
        except OSError:  # FileWriter names the missing directory
            self.folder = None
        self.names = (name, os.path.basename(index_path(name)))
        self.temps = tuple(map(temp_prefix, self.names))

    def __call__(self, folder: tuple[int, int], name: str) -> bool:
        return folder == self.folder and (name in self.names or name.startswith(self.temps))


def _plan(root: str, out_file: str) -> _Plan:
    """Walk ``root`` depth-first in name order, iteratively, noting files and directories."""
    plan, skipped = _Plan(), _Skipped(out_file)
    key = _dir_key(os.stat(root))
    ancestors, copies = {key}, {key: [root]}
    stack = [(root, key, plan.tree, iter(sorted(os.listdir(root))))]
    while stack:
        path, key, tree, names = stack[-1]
        for name in names:
            if skipped(key, name):
                continue
            child = os.path.join(path, name)
            info = _stat(child)
            if stat.S_ISDIR(info.st_mode):
                child_key = _dir_key(info)
                if child_key in ancestors:
                    raise FFRecordError(
                        f"{child}: symbolic link back to a directory that "
                        "contains it; packing it would never end"
                    )
                paths = copies.setdefault(child_key, [])
                if len(paths) == MAX_COPIES:
                    raise FFRecordError(
                        f"{child}: the directory {paths[0]} is reached by more than {MAX_COPIES} "
                        "paths through symbolic links (links that fan out level after level?); "
                        f"pack_folder packs a directory at most {MAX_COPIES} times"
                    )
                paths.append(child)
                if len(stack) > MAX_DEPTH:  # ``child`` is ``len(stack)`` levels below root
                    raise FFRecordError(
                        f"{child}: nested more than {MAX_DEPTH} levels deep; "
                        f"pack_folder packs trees at most {MAX_DEPTH} levels deep"
                    )
                tree[name] = OrderedDict()
                ancestors.add(child_key)
                stack.append((child, child_key, tree[name], iter(sorted(os.listdir(child)))))
                break
            if not stat.S_ISREG(info.st_mode):
                raise FFRecordError(f"{child}: is a {kind(info.st_mode)}; {_ONLY_REGULAR}")
            tree[name] = len(plan.files)
            plan.files.append(child)
            plan.total_bytes += info.st_size
        else:
            stack.pop()
            ancestors.discard(key)
    return plan


def _stat(path: str) -> os.stat_result:
    """``os.stat`` (following symbolic links), a dangling link named as such."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise FFRecordError(f"{path}: dangling symbolic link; cannot pack it") from None
