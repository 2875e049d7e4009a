"""``PackedFolder``: a whole directory tree packed into one FFRecord file, read by path.

The official convention (see :mod:`.metadata`): samples ``0 .. N-2`` are the files, in packing
order; sample ``N-1`` is the directory tree. It is kept as a compact :class:`~.index.PathIndex`:
mapped from the index file saved beside the pack when there is a valid one (see
:mod:`.sidecar`), else decoded without running code and built in memory.

Paths are ``/``-separated and relative to the packed folder; ``""`` (or ``None`` for
:meth:`PackedFolder.list`) is the folder itself. Differences from the official reader: a
missing path raises ``FileNotFoundError`` (official: ``AssertionError``), reading a directory
``IsADirectoryError``, listing a file ``NotADirectoryError``; recursive listings are ``str``
paths throughout (official: ``pathlib.Path`` for nested entries), and listings are sorted by name
whatever order the pack stored (identical for packs made by ``pack_folder``).
"""

from __future__ import annotations

import ctypes
import gc
import os
from collections.abc import Iterable, Sequence

import numpy as np

from .errors import NotAPackedFolderError
from .index import PathIndex, split_path
from .metadata import decode
from .reader import FileReader, PathLike
from .reopen import Reopenable
from .sidecar import load_index, warn_missing


class PackedFolder(Reopenable):
    """Random access by path to the files of a folder packed with :func:`pack_folder`.

    ``check_data`` is passed to the :class:`FileReader` underneath. A context manager; survives
    ``fork`` (the index and the mapping are shared with DataLoader workers, copy-free) and
    pickles as its file name (the copy reopens the file and rebuilds the index).
    """

    _STATE = ("ffr_file", "check_data")

    def __init__(self, ffr_file: PathLike | Sequence[PathLike], check_data: bool = True) -> None:
        self.ffr_file = ffr_file
        self.check_data = check_data
        self._open()

    def _open(self) -> None:
        self.reader = FileReader(self.ffr_file, self.check_data)
        self._name = ", ".join(self.reader.fnames)
        try:
            if self.reader.n == 0:
                raise NotAPackedFolderError(f"{self._name} is not a packed folder: it has no samples")
            self._index = load_index(self.reader, self.num_files()) or self._build_index()
        except BaseException:
            self.reader.close()
            raise

    def _build_index(self) -> PathIndex:
        """Decode the metadata and index it in memory (no saved index beside the pack)."""
        try:
            tree = decode(self.reader.view(self.reader.n - 1), self._name)
            index = PathIndex.from_tree(tree, self.num_files(), self._name)
        finally:
            tree = None
            _release_freed_memory()
        if len(self.reader.fnames) == 1:
            warn_missing(self._name, len(index.arrays()["target"]))
        return index

    def num_files(self) -> int:
        """How many files the pack holds (its samples minus the metadata sample)."""
        return self.reader.n - 1

    # -- lookups -----------------------------------------------------------------------------

    def exists(self, path: PathLike) -> bool:
        return self._index.find(split_path(path)) is not None

    def is_file(self, path: PathLike) -> bool:
        target = self._index.find(split_path(path))
        return target is not None and target >= 0

    def is_dir(self, path: PathLike) -> bool:
        target = self._index.find(split_path(path))
        return target is not None and target < 0

    def index(self, path: PathLike) -> int:
        """The sample index of the file at ``path``."""
        target = self._index.find(split_path(path))
        if target is None:
            raise FileNotFoundError(f"{os.fspath(path)!r} does not exist in {self._name}")
        if target < 0:
            raise IsADirectoryError(f"{os.fspath(path)!r} is a directory in {self._name}, not a file")
        return target

    def size(self, path: PathLike) -> int:
        """Byte size of the file at ``path``, without reading it."""
        return self.reader.sample_size(self.index(path))

    def list(
        self,
        path: PathLike | None = None,
        list_file: bool = True,
        list_dir: bool = True,
        recursive: bool = False,
    ) -> list[str]:
        """Names in directory ``path`` (the root if None), sorted; with ``recursive``, every
        path below it, depth-first, relative to it (``"images/nested/blob.bin"``)."""
        target = self._index.find(split_path(path))
        shown = "" if path is None else os.fspath(path)
        if target is None:
            raise FileNotFoundError(f"{shown!r} does not exist in {self._name}")
        if target >= 0:
            raise NotADirectoryError(f"{shown!r} is a file in {self._name}, not a directory")
        return [
            name
            for name, t in self._index.walk(-1 - target, recursive)
            if (list_file if t >= 0 else list_dir)
        ]

    # -- reading -----------------------------------------------------------------------------

    def read_one(self, path: PathLike) -> np.ndarray:
        """The bytes of the file at ``path`` as a 1-D ``uint8`` array (CRC-checked if asked)."""
        return self.reader.read_one(self.index(path))

    def read(self, paths: Iterable[PathLike]) -> list[np.ndarray]:
        """The bytes of each file in ``paths``, in order."""
        if isinstance(paths, (str, os.PathLike)):
            raise TypeError(f"read() takes a list of paths, got {paths!r}; use read_one(path)")
        return self.reader.read([self.index(p) for p in paths])

    # -- lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        self.reader.close()

    def __repr__(self) -> str:
        return f"PackedFolder({self._name!r}, files={self.num_files()}, check_data={self.check_data})"


def _release_freed_memory() -> None:
    """Hand the decoded tree's memory back to the OS. Two things keep it otherwise: objects
    parked on CPython's free lists pin the allocator arenas they sit in (a full collection
    empties those lists), and glibc keeps freed heap pages (``malloc_trim`` returns them).
    Without this a 1.2M-entry pack leaves ~150 MB of freed-but-resident memory in the process,
    and in every worker forked from it."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing more to do
        pass
