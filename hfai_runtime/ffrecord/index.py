"""``PathIndex``: a packed folder's directory tree in a few flat numpy arrays.

The official reader keeps the decoded nested dicts: for ImageNet's 1.2M files that is ~180 MB of
Python objects per process, and every forked DataLoader worker copies the pages of each object
whose reference count a lookup touches. Here the tree lives in arrays and one bytes blob, which
lookups only read, so the pages stay shared after ``fork``. Layout:

* Every file and directory except the root is an *entry*. Directory ``d`` (the root is 0) owns
  the entries ``first[d] <= e < first[d + 1]``: its children, ordered by a 16-bit hash of the
  name, so a lookup is a C-level bisection on ``hash16`` plus one name comparison.
* Names are stored as UTF-8 in ``names``, entry ``e`` at ``names[bounds[e]:bounds[e + 1]]``,
  minus the longest prefix shared by all of its siblings, stored once per directory in
  ``prefixes`` (``n01440764_10026.JPEG`` costs 10 bytes, not 20).
* ``target[e]`` is the file's sample index, or ``-1 - d`` for the directory ``d``.

Python's ``hash`` is salted per interpreter; the index is built in the process that opens the
pack and inherited by its forks, and an unpickled reader rebuilds it.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from typing import Iterator

import numpy as np

from .errors import CorruptFileError
from .metadata import Tree

_HASH_MASK = 0xFFFF


def _encode(name: str) -> bytes:
    return name.encode("utf-8", "surrogatepass")  # the pickle's own encoding of str


def split_path(path: "str | os.PathLike[str] | None") -> list[str]:
    """Path components as the official reader's ``pathlib.Path(path).parts`` sees them for
    relative paths: empty and ``.`` components dropped. An absolute path gets a leading ``"/"``
    component, which matches no entry, as in the official reader."""
    if path is None:
        return []
    text = os.fspath(path)
    parts = [p for p in text.split("/") if p and p != "."]
    return ["/", *parts] if text.startswith("/") else parts


def _joined(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """All ``names`` as one UTF-8 uint8 array, and their ``len(names) + 1`` byte bounds."""
    blob = np.frombuffer(_encode("\0".join(names)), np.uint8)
    seps = np.flatnonzero(blob == 0)
    if len(seps) != max(len(names) - 1, 0):
        raise ValueError("a name contains a NUL byte")
    bounds = np.empty(len(names) + 1, np.int64)
    bounds[0] = 0
    bounds[1:-1] = seps - np.arange(len(seps))  # positions once the separators are gone
    bounds[-1] = len(blob) - len(seps)
    return blob[blob != 0] if len(seps) else blob.copy(), bounds


def _smallest_uint(limit: int) -> type:
    return np.uint32 if limit < 2**32 else np.uint64


class PathIndex:
    """Maps ``/``-separated paths of a packed folder to sample indices, and lists directories."""

    def __init__(self, tree: Tree, num_files: int, fname: str) -> None:
        names, parents, targets, prefixes = _flatten(tree, num_files, fname)
        _check_names(names, fname)
        targets_arr = np.array(targets, np.int64)
        parents_arr = np.array(parents, np.int64)
        hashes = np.fromiter(map(hash, names), np.int64, len(names)) & _HASH_MASK
        order = np.lexsort((hashes, parents_arr))
        cut = [len(prefixes[p]) for p in parents]
        suffixes = [names[i][cut[i]:] for i in order.tolist()]
        self._names, bounds = _joined(suffixes)
        self._bounds = bounds.astype(_smallest_uint(bounds[-1]))
        self._hash16 = hashes[order].astype(np.uint16)
        self._target = targets_arr[order].astype(np.int32 if num_files < 2**31 else np.int64)
        self._first = np.searchsorted(parents_arr[order], np.arange(len(prefixes) + 1))
        self._prefix_blob, prefix_bounds = _joined(prefixes)
        self._prefix_bounds = prefix_bounds
        self.num_dirs = len(prefixes)
        self._views()

    def _views(self) -> None:
        # memoryviews index to plain ints without creating numpy scalars; bytes slice fast
        self._hash_of, self._target_of = memoryview(self._hash16), memoryview(self._target)
        self._bound_of, self._first_of = memoryview(self._bounds), memoryview(self._first)
        self._name_bytes = memoryview(self._names)
        self._prefix_bytes = memoryview(self._prefix_blob)
        self._prefix_bound_of = memoryview(self._prefix_bounds)

    # -- lookups -----------------------------------------------------------------------------

    def find(self, parts: list[str]) -> int | None:
        """``target`` of the entry at ``parts`` (``-1`` for the root), or None if it is absent."""
        target = -1
        for name in parts:
            if target >= 0:  # a file has no children
                return None
            target = self._child(-1 - target, name)
            if target is None:
                return None
        return target

    def _child(self, d: int, name: str) -> int | None:
        prefix = self._prefix(d)
        encoded = _encode(name)
        if not encoded.startswith(prefix):
            return None
        suffix = encoded[len(prefix):]
        h = hash(name) & _HASH_MASK
        hi = self._first_of[d + 1]
        e = bisect_left(self._hash_of, h, self._first_of[d], hi)
        hash_of, bound_of, names = self._hash_of, self._bound_of, self._name_bytes
        while e < hi and hash_of[e] == h:
            if names[bound_of[e]:bound_of[e + 1]] == suffix:
                return self._target_of[e]
            e += 1
        return None

    def _prefix(self, d: int) -> bytes:
        return self._prefix_bytes[self._prefix_bound_of[d]:self._prefix_bound_of[d + 1]].tobytes()

    def children(self, d: int) -> list[tuple[str, int]]:
        """``(name, target)`` of directory ``d``'s entries, sorted by name (code points)."""
        prefix = self._prefix(d)
        lo, hi = self._first_of[d], self._first_of[d + 1]
        bounds = self._bounds[lo:hi + 1].tolist()
        raw = self._names[bounds[0]:bounds[-1]].tobytes()
        base = bounds[0]
        entries = [((prefix + raw[s - base:e - base]).decode("utf-8", "surrogatepass"), t)
                   for s, e, t in zip(bounds[:-1], bounds[1:], self._target[lo:hi].tolist())]
        entries.sort()
        return entries

    def walk(self, d: int, recursive: bool, prefix: str = "") -> Iterator[tuple[str, int]]:
        """``(relative path, target)`` of the entries under directory ``d``, depth-first in name
        order (the packing order), each directory before its contents."""
        for name, target in self.children(d):
            yield prefix + name, target
            if recursive and target < 0:
                yield from self.walk(-1 - target, True, f"{prefix}{name}/")

    def nbytes(self) -> int:
        """Memory held by the index arrays."""
        return sum(a.nbytes for a in (self._names, self._bounds, self._hash16, self._target,
                                      self._first, self._prefix_blob, self._prefix_bounds))


def _flatten(tree: Tree, num_files: int,
             fname: str) -> tuple[list[str], list[int], list[int], list[str]]:
    """Breadth-first: every entry's name, parent directory id and target, and the name prefix
    shared by each directory's children. Refuses anything but a tree of str names mapping to
    file indices in ``[0, num_files)`` or to directories."""
    names: list[str] = []
    parents: list[int] = []
    targets: list[int] = []
    prefixes: list[str] = []
    dirs: list[dict] = [tree]
    seen = {id(tree)}
    for d, node in enumerate(dirs):  # ``dirs`` grows while we walk it
        keys = list(dict.keys(node))
        if not all(type(k) is str for k in keys):
            bad = next(k for k in keys if type(k) is not str)
            raise CorruptFileError(f"{fname}: packed-folder entry name {bad!r} is not a str")
        prefixes.append(os.path.commonprefix([min(keys), max(keys)]) if keys else "")
        for name, value in dict.items(node):
            if type(value) is int and 0 <= value < num_files:
                targets.append(value)
            elif isinstance(value, dict) and id(value) not in seen:
                seen.add(id(value))
                targets.append(-1 - len(dirs))
                dirs.append(value)
            else:
                why = ("appears twice" if isinstance(value, dict) else
                       f"is {value!r}, outside [0, {num_files})" if type(value) is int else
                       f"is a {type(value).__name__}")
                raise CorruptFileError(f"{fname}: packed-folder entry {name!r} {why}; expected "
                                       "a file's sample index or a directory")
        names.extend(keys)
        parents.extend([d] * len(keys))
    return names, parents, targets, prefixes


def _check_names(names: list[str], fname: str) -> None:
    joined = "".join(names)
    if "/" in joined or "\0" in joined or "" in names or "." in names or ".." in names:
        bad = next(n for n in names if "/" in n or "\0" in n or n in ("", ".", ".."))
        raise CorruptFileError(f"{fname}: packed-folder entry name {bad!r} is not a valid "
                               "file name")
