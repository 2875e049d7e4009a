"""The packed-folder metadata sample: ``b"piouhjgbr" + pickle.dumps(tree)``, decoded safely.

``tree`` is the official convention: a nested ``collections.OrderedDict`` mapping each entry name
to its sample index (a file) or to another OrderedDict (a directory, possibly empty). The
official reader ``pickle.loads`` it, so opening a crafted file runs arbitrary code; the CRCs
are no protection, since an attacker recomputes them. Here the unpickler resolves no global but
``collections.OrderedDict`` and accepts no persistent ids, so nothing named in the file is ever
imported or called; then the decoded tree is checked to hold only str names, int indices and
dicts, and to be a tree (no shared or cyclic directories).

We write protocol 4: the official pack's default on Python 3.8 to 3.13 (byte-identical output
there), readable by every Python 3 since 3.4; 3.14's default, protocol 5, adds nothing here.
"""

from __future__ import annotations

import io
import pickle
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Union

from .errors import CorruptFileError, NotAPackedFolderError, UnsafeMetadataError

if TYPE_CHECKING:
    import numpy as np

MAGIC = b"piouhjgbr"
PICKLE_PROTOCOL = 4

Tree = Mapping[str, Union[int, "Tree"]]


class _SafeUnpickler(pickle.Unpickler):
    def __init__(self, data: memoryview, fname: str) -> None:
        super().__init__(io.BytesIO(data))
        self._fname = fname

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        raise UnsafeMetadataError(
            f"{self._fname}: packed-folder metadata refers to {module}.{name}; only "
            "collections.OrderedDict is allowed, so it was refused without running anything"
        )

    def persistent_load(self, pid):
        raise UnsafeMetadataError(f"{self._fname}: packed-folder metadata holds a persistent id; refused")


def encode(tree: Tree) -> bytes:
    """The metadata sample for ``tree`` (the last sample of a packed folder)."""
    return MAGIC + pickle.dumps(tree, protocol=PICKLE_PROTOCOL)


def decode(meta: bytes | memoryview | np.ndarray, fname: str) -> dict:
    """The directory tree stored in a metadata sample, loaded without executing anything."""
    meta = memoryview(meta).cast("B")
    if len(meta) <= len(MAGIC) or meta[: len(MAGIC)] != MAGIC:
        raise NotAPackedFolderError(
            f"{fname} is not a packed folder: its last sample is not a folder index "
            "(a plain FFRecord file; read its samples by index)"
        )
    try:
        tree = _SafeUnpickler(meta[len(MAGIC) :], fname).load()
    except UnsafeMetadataError:
        raise
    except Exception as e:  # any malformed pickle: truncated, bad opcode, wrong arguments ...
        raise CorruptFileError(f"{fname}: packed-folder metadata does not decode: {e}") from e
    if not isinstance(tree, dict):
        raise CorruptFileError(
            f"{fname}: packed-folder metadata is a {type(tree).__name__}, expected a dict of names"
        )
    return tree
