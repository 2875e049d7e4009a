"""``PathIndex``: a packed folder's directory tree in a few flat numpy arrays.

The official reader keeps the decoded nested dicts: for ImageNet's 1.2M files that is ~200 MB of
Python objects per process, and every forked DataLoader worker copies the pages of each object
whose reference count a lookup touches. Here the tree lives in arrays and one bytes blob, which
lookups only read, so the pages stay shared after ``fork``. Layout (:data:`ARRAYS`):

* Every file and directory except the root is an *entry*. Directory ``d`` (the root is 0) owns
  the entries ``first[d] <= e < first[d + 1]``: its children, ordered by ``hash16``, the low 16
  bits of the CRC-32 of the name's stored bytes, so a lookup is a C-level bisection on
  ``hash16`` plus one name comparison.
* Names are stored as UTF-8 in ``names``, entry ``e`` at ``names[bounds[e]:bounds[e + 1]]``,
  minus the longest prefix shared by all of its siblings, stored once per directory in
  ``prefixes`` at ``prefixes[prefix_bounds[d]:prefix_bounds[d + 1]]`` (``n01440764_10026.JPEG``
  costs 10 bytes, not 20).
* ``target[e]`` is the file's sample index, or ``-1 - d`` for the directory ``d``; a directory's
  number is larger than its parent's (breadth-first), which makes the tree checkable.

The hash is deterministic (not Python's salted ``hash``), so an index built once can be saved
beside the pack and memory-mapped by every later process (:mod:`.sidecar`):
:meth:`PathIndex.from_arrays` checks such arrays before trusting them.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Iterator

import numpy as np

from .errors import CorruptFileError
from .layout import crc32
from .metadata import Tree

_HASH_MASK = 0xFFFF
#: Names no entry may have, in a pack's metadata or in a saved index: they would resolve to
#: another entry (or to none) when the packed folder is unpacked or mirrored on disk.
INVALID_NAMES = ("", ".", "..")
#: The arrays an index is made of, in the order they are saved.
ARRAYS = ("first", "hash16", "target", "bounds", "names", "prefix_bounds", "prefixes")


def _encode(name: str) -> bytes:
    return name.encode("utf-8", "surrogatepass")  # the pickle's own encoding of str


def split_path(path: str | os.PathLike[str] | None) -> list[str]:
    """Path components as the official reader's ``pathlib.Path(path).parts`` sees them for
    relative paths: empty and ``.`` components dropped. An absolute path gets a leading ``"/"``
    component, which matches no entry, as in the official reader."""
    if path is None:
        return []
    text = os.fspath(path)
    parts = [p for p in text.split("/") if p and p != "."]
    return ["/", *parts] if text.startswith("/") else parts


def _invalid_name(name: str) -> str:
    return f"packed-folder entry name {name!r} is not a valid file name"


def _slash(name: str) -> str:
    return f"a packed-folder entry name contains '/' (in {name!r})"


def _nul(name: str) -> str:
    return f"a packed-folder entry name contains a NUL character (in {name!r})"


def _encode_all(names: list[str], fname: str) -> list[bytes]:
    """Each name encoded, with three C-level passes instead of a call per name."""
    encoded = _encode("\0".join(names)).split(b"\0") if names else []
    if len(encoded) != len(names):
        raise CorruptFileError(f"{fname}: {_nul(next(n for n in names if chr(0) in n))}")
    return encoded


def _joined(names: list[bytes], fname: str) -> tuple[np.ndarray, np.ndarray]:
    """``names`` as one uint8 array, and their ``len(names) + 1`` byte bounds."""
    blob = b"".join(names)
    if b"/" in blob:
        name = next(n for n in names if b"/" in n).decode("utf-8", "surrogatepass")
        raise CorruptFileError(f"{fname}: {_slash(name)}")
    bounds = np.zeros(len(names) + 1, np.int64)
    np.cumsum(np.fromiter(map(len, names), np.int64, len(names)), out=bounds[1:])
    return np.frombuffer(blob, np.uint8), bounds


class PathIndex:
    """Maps ``/``-separated paths of a packed folder to sample indices, and lists directories."""

    def __init__(self, arrays: dict[str, np.ndarray], fname: str) -> None:
        """Use :meth:`from_tree` or :meth:`from_arrays`; ``fname`` names the source in errors."""
        self._arrays, self._fname = arrays, fname
        self._names, self._prefix_blob = arrays["names"], arrays["prefixes"]
        self._bounds, self._target = arrays["bounds"], arrays["target"]
        # memoryviews index to plain ints without creating numpy scalars
        self._hash_of, self._target_of = memoryview(arrays["hash16"]), memoryview(self._target)
        self._bound_of, self._first_of = memoryview(self._bounds), memoryview(arrays["first"])
        self._name_bytes = memoryview(self._names)
        self._prefix_bytes = memoryview(self._prefix_blob)
        self._prefix_bound_of = memoryview(arrays["prefix_bounds"])

    @classmethod
    def from_tree(cls, tree: Tree, num_files: int, fname: str) -> PathIndex:
        """The index of a decoded metadata tree, which it checks (see :class:`_Flattened`)."""
        flat = _Flattened(tree, num_files, fname)
        suffixes = _encode_all(flat.suffixes, fname)
        parents = np.repeat(np.arange(len(flat.counts)), flat.counts)
        hash16 = np.fromiter(map(crc32, suffixes), np.int64, len(suffixes)) & _HASH_MASK
        order = np.argsort((parents << 16) | hash16, kind="stable")  # by directory, then hash
        names, bounds = _joined(list(map(suffixes.__getitem__, order.tolist())), fname)
        prefixes, prefix_bounds = _joined(_encode_all(flat.prefixes, fname), fname)
        return cls(
            {
                "first": np.concatenate([[0], np.cumsum(flat.counts)]).astype(np.int64),
                "hash16": hash16[order].astype(np.uint16),
                "target": np.array(flat.targets, np.int64)[order].astype(
                    np.int32 if num_files < 2**31 else np.int64
                ),
                "bounds": bounds.astype(np.uint32 if bounds[-1] < 2**32 else np.uint64),
                "names": names,
                "prefix_bounds": prefix_bounds,
                "prefixes": prefixes,
            },
            fname,
        )

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], num_files: int, fname: str) -> PathIndex:
        """An index of saved arrays, checked to describe a tree whose files are in
        ``[0, num_files)`` and whose lookups stay inside the arrays (a crafted index file can
        misdirect lookups, as a crafted pack can, but never crash or loop)."""
        problem = _array_problem(arrays, num_files)
        if problem:
            raise CorruptFileError(f"{fname}: {problem}")
        return cls(arrays, fname)

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays this index is made of, by the names in :data:`ARRAYS`."""
        return dict(self._arrays)

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
        cut, end = self._prefix_bound_of[d], self._prefix_bound_of[d + 1]
        suffix = _encode(name)
        if end > cut:
            if not suffix.startswith(self._prefix_bytes[cut:end]):
                return None
            suffix = suffix[end - cut :]
        h = crc32(suffix) & _HASH_MASK
        hi = self._first_of[d + 1]
        e = bisect_left(self._hash_of, h, self._first_of[d], hi)
        hash_of, bound_of, names = self._hash_of, self._bound_of, self._name_bytes
        while e < hi and hash_of[e] == h:
            if names[bound_of[e] : bound_of[e + 1]] == suffix:
                return self._target_of[e]
            e += 1
        return None

    def _prefix(self, d: int) -> bytes:
        return self._prefix_bytes[self._prefix_bound_of[d] : self._prefix_bound_of[d + 1]].tobytes()

    def children(self, d: int) -> list[tuple[str, int]]:
        """``(name, target)`` of directory ``d``'s entries, sorted by name (code points)."""
        prefix = self._prefix(d)
        lo, hi = self._first_of[d], self._first_of[d + 1]
        bounds = self._bounds[lo : hi + 1].tolist()
        raw = self._names[bounds[0] : bounds[-1]].tobytes()
        base = bounds[0]
        try:
            entries = [
                ((prefix + raw[s - base : e - base]).decode("utf-8", "surrogatepass"), t)
                for s, e, t in zip(bounds[:-1], bounds[1:], self._target[lo:hi].tolist())
            ]
        except UnicodeDecodeError as e:  # only a crafted index file: names come from str
            raise CorruptFileError(f"{self._fname}: an entry name is not UTF-8 ({e})") from None
        entries.sort()
        return entries

    def walk(self, d: int, recursive: bool) -> Iterator[tuple[str, int]]:
        """``(relative path, target)`` of the entries under directory ``d``, depth-first in name
        order (the packing order), each directory before its contents. Iterative: a crafted
        pack nested thousands of levels deep is listed like any other."""
        stack = [(iter(self.children(d)), "")]
        while stack:
            entries, prefix = stack[-1]
            for name, target in entries:
                yield prefix + name, target
                if recursive and target < 0:
                    stack.append((iter(self.children(-1 - target)), f"{prefix}{name}/"))
                    break
            else:
                stack.pop()


_DTYPES = {
    "first": ("<i8",),
    "hash16": ("<u2",),
    "target": ("<i4", "<i8"),
    "bounds": ("<u4", "<u8"),
    "names": ("|u1",),
    "prefix_bounds": ("<i8",),
    "prefixes": ("|u1",),
}


def _array_problem(a: dict[str, np.ndarray], num_files: int) -> str | None:
    """What is wrong with saved index arrays, or None. Vectorised: ~10 ms for 1.2M entries."""
    if sorted(a) != sorted(ARRAYS):
        return f"index arrays are {sorted(a)}, expected {sorted(ARRAYS)}"
    for name, dtypes in _DTYPES.items():
        if a[name].ndim != 1 or a[name].dtype.str not in dtypes:
            return f"index array {name!r} is {a[name].dtype.str}[{a[name].shape}]"
    first, target = a["first"], a["target"]
    dirs, entries = len(first) - 1, len(target)
    if dirs < 1 or first[0] != 0 or first[-1] != entries or (np.diff(first) < 0).any():
        return "index directory table is not a partition of its entries"
    for bounds, blob, count in (("bounds", "names", entries), ("prefix_bounds", "prefixes", dirs)):
        b = a[bounds]
        if len(b) != count + 1 or b[0] != 0 or b[-1] != len(a[blob]) or (np.diff(b) < 0).any():
            return f"index array {bounds!r} does not partition {blob!r}"
    if len(a["hash16"]) != entries or ((target >= num_files) | (target < -dirs)).any():
        return "index entries point outside the pack"
    dir_entries = np.flatnonzero(target < 0)
    child = -1 - target[dir_entries]
    parent = np.searchsorted(first, dir_entries, side="right") - 1
    if (child <= parent).any() or not (np.bincount(child, minlength=dirs)[1:] == 1).all():
        return "index directories do not form a tree"
    return _names_problem(a)


def _names_problem(a: dict[str, np.ndarray]) -> str | None:
    """The metadata's name rules, applied to saved arrays: no ``/`` or NUL in a name, none of
    :data:`INVALID_NAMES`. Vectorised, but for the names of at most 2 bytes."""
    for blob, bounds_of in (("names", "bounds"), ("prefixes", "prefix_bounds")):
        for byte, problem in ((0, _nul), (ord("/"), _slash)):  # the metadata's order
            found = np.flatnonzero(a[blob] == byte)
            if len(found):
                i = int(np.searchsorted(a[bounds_of], found[0], side="right")) - 1
                name = a[blob][a[bounds_of][i] : a[bounds_of][i + 1]].tobytes()
                return problem(name.decode("utf-8", "replace"))
    per_dir = np.diff(a["first"])
    prefix_start = np.repeat(a["prefix_bounds"][:-1], per_dir)
    prefix_end = np.repeat(a["prefix_bounds"][1:], per_dir)
    bounds = a["bounds"].astype(np.int64)
    lengths = prefix_end - prefix_start + np.diff(bounds)
    for e in np.flatnonzero(lengths <= max(map(len, INVALID_NAMES))).tolist():
        name = (
            a["prefixes"][prefix_start[e] : prefix_end[e]].tobytes()
            + a["names"][bounds[e] : bounds[e + 1]].tobytes()
        )
        if name.decode("utf-8", "replace") in INVALID_NAMES:
            return _invalid_name(name.decode())
    return None


class _Flattened:
    """The tree breadth-first: per directory (root = 0) its entry count and the name prefix all
    its entries share; per entry its name minus that prefix and its target. Refuses
    anything but str names mapping to file indices in ``[0, num_files)`` or to directories.

    Work is done a directory at a time with C-level list operations: 1.2M entries take ~1 s.
    """

    def __init__(self, tree: Tree, num_files: int, fname: str) -> None:
        self.counts: list[int] = []
        self.prefixes: list[str] = []
        self.suffixes: list[str] = []
        self.targets: list[int] = []
        self._fname, self._num_files = fname, num_files
        dirs: list[dict] = [tree]
        self._seen = {id(tree)}
        for node in dirs:  # ``dirs`` grows while we walk it
            self._add_dir(node, dirs)

    def _add_dir(self, node: dict, dirs: list[dict]) -> None:
        keys, values = list(dict.keys(node)), list(dict.values(node))
        if set(map(type, keys)) - {str}:
            bad = next(k for k in keys if type(k) is not str)
            raise CorruptFileError(f"{self._fname}: packed-folder entry name {bad!r} is not a str")
        for bad in INVALID_NAMES:
            if dict.__contains__(node, bad):
                raise CorruptFileError(f"{self._fname}: {_invalid_name(bad)}")
        prefix = os.path.commonprefix([min(keys), max(keys)]) if keys else ""
        self.counts.append(len(keys))
        self.prefixes.append(prefix)
        self.suffixes.extend([k[len(prefix) :] for k in keys] if prefix else keys)
        if keys and set(map(type, values)) == {int} and min(values) >= 0 and max(values) < self._num_files:
            self.targets.extend(values)  # the common case: a directory of files only
            return
        for name, value in zip(keys, values):
            if type(value) is int and 0 <= value < self._num_files:
                self.targets.append(value)
            elif isinstance(value, dict) and id(value) not in self._seen:
                self._seen.add(id(value))
                self.targets.append(-1 - len(dirs))
                dirs.append(value)
            else:
                why = (
                    "appears twice"
                    if isinstance(value, dict)
                    else f"is {value!r}, outside [0, {self._num_files})"
                    if type(value) is int
                    else f"is a {type(value).__name__}"
                )
                raise CorruptFileError(
                    f"{self._fname}: packed-folder entry {name!r} {why}; "
                    "expected a file's sample index or a directory"
                )
