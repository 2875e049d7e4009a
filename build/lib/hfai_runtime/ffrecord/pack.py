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
  folder.

Nothing is left under ``out_file`` if anything fails (see :class:`FileWriter`).
"""

from __future__ import annotations

import os
import stat
from collections import OrderedDict
from dataclasses import dataclass, field

from tqdm import tqdm

from .errors import FFRecordError
from .metadata import encode
from .reader import PathLike
from .writer import FileWriter

_KINDS = {stat.S_IFIFO: "FIFO", stat.S_IFSOCK: "socket", stat.S_IFCHR: "character device",
          stat.S_IFBLK: "block device"}


@dataclass
class _Plan:
    """The tree to store and the files to write, in sample-index order."""

    tree: OrderedDict = field(default_factory=OrderedDict)
    files: list[str] = field(default_factory=list)
    total_bytes: int = 0


def pack_folder(folder: PathLike, out_file: PathLike, verbose: bool = False) -> None:
    """Pack every file under ``folder`` into ``out_file``; ``verbose`` shows a progress bar."""
    root = os.path.abspath(os.fspath(folder))
    if not os.path.isdir(root):
        raise FFRecordError(f"{root}: pack_folder needs a directory")
    plan = _Plan()
    _plan_dir(root, plan.tree, plan, {_dir_key(os.stat(root))})
    with FileWriter(out_file, len(plan.files) + 1) as writer, \
            tqdm(total=plan.total_bytes, unit="B", unit_scale=True, unit_divisor=1024,
                 desc=f"packing {len(plan.files)} files", disable=not verbose) as progress:
        for path in plan.files:
            with open(path, "rb") as f:
                data = f.read()
            writer.write_one(data)
            progress.update(len(data))
        writer.write_one(encode(plan.tree))


def _dir_key(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


def _plan_dir(path: str, tree: OrderedDict, plan: _Plan, ancestors: set) -> None:
    for name in sorted(os.listdir(path)):
        child = os.path.join(path, name)
        try:
            info = os.stat(child)  # follows symbolic links
        except FileNotFoundError:
            raise FFRecordError(f"{child}: dangling symbolic link; cannot pack it") from None
        if stat.S_ISDIR(info.st_mode):
            key = _dir_key(info)
            if key in ancestors:
                raise FFRecordError(f"{child}: symbolic link back to a directory that contains "
                                    "it; packing it would never end")
            tree[name] = OrderedDict()
            _plan_dir(child, tree[name], plan, ancestors | {key})
        elif stat.S_ISREG(info.st_mode):
            tree[name] = len(plan.files)
            plan.files.append(child)
            plan.total_bytes += info.st_size
        else:
            kind = _KINDS.get(stat.S_IFMT(info.st_mode), "special file")
            raise FFRecordError(f"{child}: is a {kind}; pack_folder packs only regular files "
                                "and directories (and symbolic links to them)")
