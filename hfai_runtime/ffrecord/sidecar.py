"""The path index saved beside a pack (``coco.ffr.idx``), so that opening it decodes nothing.

Building a :class:`~.index.PathIndex` means unpickling the pack's metadata first: for 1.2M
entries that is more work than the official reader's whole open. The index file holds the
finished arrays; opening a pack maps them (no copy, no private memory, shared by forked
DataLoader workers) after checking, in milliseconds:

* the index file's own CRCs (it is an FFRecord file: the header's, then every array's);
* that it was made for *this* pack: the pack's size, sample count and header CRC (which covers
  the CRC of every sample, the metadata included) are recorded in it. Copying the pack and its
  index elsewhere keeps them valid; repacking makes the index stale;
* that the arrays describe a tree inside the pack (:meth:`PathIndex.from_arrays`).

A missing index costs the in-memory build (with an :class:`IndexWarning` for large packs); a
stale or damaged one is ignored with an :class:`IndexWarning` saying how to refresh it:
``hfai-runtime ffr index PACK``. :func:`~.pack.pack_folder` writes one. The pack itself is
unchanged: the official reader reads it as before, and ignores the index file.

Layout: sample 0 is a JSON header (format, version, the pack's identity, each array's dtype and
length), padded with spaces; samples 1.. are the arrays of :data:`~.index.ARRAYS`, each padded to
a multiple of 8 bytes so that every array starts 8-byte aligned in the mapping.
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np

from .errors import FFRecordError, IndexWarning, NotAPackedFolderError
from .index import ARRAYS, PathIndex
from .layout import header_size
from .metadata import decode
from .reader import FileReader, PathLike
from .writer import FileWriter

FORMAT, VERSION = "hfai-runtime packed-folder index", 1
SUFFIX = ".idx"
#: Packs with at least this many entries warn when they have no index file beside them.
WARN_ENTRIES = 100_000


def index_path(ffr_file: PathLike) -> str:
    """Where the index of ``ffr_file`` lives: ``coco.ffr`` -> ``coco.ffr.idx``."""
    return os.fspath(ffr_file) + SUFFIX


def save_index(index: PathIndex, pack: FileReader, path: str) -> None:
    """Write ``index`` (of the single-file pack open in ``pack``) to ``path``, atomically."""
    size, meta_crc, samples = pack.content_ids()[0]
    arrays = index.arrays()
    header = json.dumps(
        {
            "format": FORMAT,
            "version": VERSION,
            "pack": {"size": size, "meta_crc": meta_crc, "samples": samples},
            "arrays": {name: [arrays[name].dtype.str, len(arrays[name])] for name in ARRAYS},
        }
    ).encode()
    header += b" " * (-(header_size(1 + len(ARRAYS)) + len(header)) % 8)
    # Not fsynced: an index lost or emptied by a power cut is refused by its CRCs and rebuilt.
    with FileWriter(path, 1 + len(ARRAYS), durable=False) as writer:
        writer.write_one(header)
        for name in ARRAYS:
            data = np.ascontiguousarray(arrays[name]).view(np.uint8)
            writer.write_one(np.concatenate([data, np.zeros(-len(data) % 8, np.uint8)]))


def load_index(pack: FileReader, num_files: int) -> PathIndex | None:
    """The saved index of the single-file pack open in ``pack``, or None (none saved, or one
    that does not fit, with an :class:`IndexWarning`)."""
    if len(pack.fnames) != 1:
        return None
    path = index_path(pack.fnames[0])
    try:
        saved = FileReader(path, check_data=True)
    except FileNotFoundError:
        return None
    except (FFRecordError, OSError) as e:
        _warn_unusable(path, str(e))
        return None
    with saved:
        try:
            return PathIndex.from_arrays(_arrays(saved, pack, path), num_files, path)
        except (FFRecordError, IndexError, ValueError, KeyError, TypeError, AttributeError) as e:
            _warn_unusable(path, str(e))
            return None


def _arrays(saved: FileReader, pack: FileReader, path: str) -> dict[str, np.ndarray]:
    """The arrays of the index file, as views into its mapping, once it is known to be ours."""
    header = json.loads(bytes(saved.view(0)))
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise FFRecordError(f"{path}: not a version-{VERSION} packed-folder index")
    size, meta_crc, samples = pack.content_ids()[0]
    if header["pack"] != {"size": size, "meta_crc": meta_crc, "samples": samples} or not meta_crc:
        raise FFRecordError(f"{path}: stale: made for another version of {pack.fnames[0]}")
    if saved.n != 1 + len(ARRAYS) or list(header["arrays"]) != list(ARRAYS):
        raise FFRecordError(f"{path}: holds other arrays than a packed-folder index")
    arrays = {}
    for i, name in enumerate(ARRAYS, 1):
        dtype, length = header["arrays"][name]
        dtype = np.dtype(str(dtype))  # a type string only; checked by from_arrays
        arrays[name] = saved.view(i)[: length * dtype.itemsize].view(dtype)
    return arrays


def _warn_unusable(path: str, why: str) -> None:
    warnings.warn(
        f"packed-folder index not used: {why}; the index is built in memory instead, "
        f"which is slow for large packs: 'hfai-runtime ffr index {path[: -len(SUFFIX)]}' "
        "rewrites it",
        IndexWarning,
        stacklevel=5,
    )  # (the PackedFolder(...) line)


def warn_missing(ffr_file: str, entries: int) -> None:
    """Say that a large pack without an index file was indexed in memory (slowly)."""
    if entries >= WARN_ENTRIES:
        warnings.warn(
            f"{ffr_file}: no packed-folder index beside it ({index_path(ffr_file)}); "
            f"{entries} entries were indexed in memory, which is slow: "
            f"'hfai-runtime ffr index {ffr_file}' writes the index once",
            IndexWarning,
            stacklevel=5,
        )


def write_index(ffr_file: PathLike) -> str:
    """Build the index of the packed folder ``ffr_file`` and save it beside it; its path."""
    fname = os.fspath(ffr_file)
    with FileReader(fname) as pack:
        if pack.n == 0:
            raise NotAPackedFolderError(f"{fname} is not a packed folder: it has no samples")
        tree = decode(pack.view(pack.n - 1), fname)
        save_index(PathIndex.from_tree(tree, pack.n - 1, fname), pack, index_path(fname))
    return index_path(fname)


def index_if_missing(ffr_file: PathLike) -> str | None:
    """Write the index of the packed folder ``ffr_file`` when none lies beside it and its folder
    is writable; the path written, or None (a plain FFRecord file, a directory of packs, an
    index already there -- stale ones are reported when the pack opens -- or a folder that
    cannot be written).

    For the ``ffr`` commands that open a pack: a pack the official library wrote has no index,
    and building one in memory costs more than the official reader's whole open (it unpickles
    the metadata; we refuse to run it, and index it). The first command pays that once, plus
    the write; every later open, by any process, maps the index (``python -m bench.ffrecord``)."""
    fname = os.fspath(ffr_file)
    path = index_path(fname)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isfile(fname) or os.path.lexists(path) or not os.access(folder, os.W_OK):
        return None
    try:
        return write_index(fname)
    except NotAPackedFolderError:
        return None
    except OSError:  # a read-only mount, a full disk: the pack still opens, indexed in memory
        return None
