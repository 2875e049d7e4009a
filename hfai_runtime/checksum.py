"""CRC-32 sidecars: a file's checksum written beside it, checked before the file is trusted.

Why: a checkpoint written atomically is complete when it is renamed into place, but it can be
damaged later (a copy between buckets, a failing disk, a partial restore). torch's own zip
records carry a CRC-32 per record, computed with zlib while saving -- half of a save's time
(bench/preemption.py) -- and checked only in parts on load. Instead the saver computes one
CRC-32 with ISA-L while the bytes go out (:class:`Crc32Writer`, several times zlib's speed),
writes it to ``<file>.crc32`` (:func:`write_sidecar`), and a loader calls :func:`verify` first.

A file without a sidecar (written by plain detectron2, or before this existed) is not checked:
:func:`verify` returns False and the caller says so. The bottom layer: no torch.
"""

from __future__ import annotations

import os
import re
from typing import IO

try:  # ISA-L computes CRC-32 several times faster than zlib (the same polynomial and values).
    from isal.isal_zlib import crc32
except ImportError:  # pragma: no cover - isal is a declared dependency
    from zlib import crc32

from hfai_runtime.atomic import atomic_write

#: Appended to a file's name for its sidecar.
SIDECAR_SUFFIX = ".crc32"
_SIDECAR = re.compile(r"crc32=([0-9a-f]{8}) size=([0-9]+)\n")
_READ_CHUNK = 16 << 20


class ChecksumMismatch(ValueError):
    """The file's bytes do not match its sidecar: it was damaged after it was written."""


class Crc32Writer:
    """A binary file handle that computes the CRC-32 and the size of what goes through it."""

    def __init__(self, handle: IO[bytes]):
        self.handle, self.crc, self.size = handle, 0, 0

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data).cast("B")
        self.crc = crc32(view, self.crc)
        self.size += len(view)
        return self.handle.write(view)

    def flush(self) -> None:
        self.handle.flush()


def sidecar_path(path: str | os.PathLike) -> str:
    return os.fspath(path) + SIDECAR_SUFFIX


def write_sidecar(path: str | os.PathLike, crc: int, size: int) -> None:
    """Write ``path``'s sidecar atomically (after ``path`` itself is in place)."""
    text = f"crc32={crc:08x} size={size}\n".encode()
    atomic_write(sidecar_path(path), lambda handle: handle.write(text))


def remove_sidecar(path: str | os.PathLike) -> None:
    """Remove ``path``'s sidecar, if any: before ``path`` is replaced, so that a kill between the
    new file and its new sidecar leaves the new file unchecked rather than refused."""
    try:
        os.unlink(sidecar_path(path))
    except FileNotFoundError:
        pass


def file_crc32(path: str | os.PathLike) -> tuple[int, int]:
    """The CRC-32 and the size of the file at ``path``."""
    crc, size = 0, 0
    with open(path, "rb", buffering=0) as handle:
        buffer = bytearray(_READ_CHUNK)
        view = memoryview(buffer)
        while count := handle.readinto(buffer):
            crc = crc32(view[:count], crc)
            size += count
    return crc, size


def verify(path: str | os.PathLike) -> bool:
    """Check ``path`` against its sidecar: True when it matches, False when it has none;
    :class:`ChecksumMismatch` (saying what differs) when it does not match, or when the sidecar
    is not one this module wrote."""
    try:
        with open(sidecar_path(path), "rb") as handle:
            raw = handle.read(64)
    except FileNotFoundError:
        return False
    match = _SIDECAR.fullmatch(raw.decode("ascii", errors="replace"))
    if match is None:
        raise ChecksumMismatch(f"its checksum file {sidecar_path(path)} is not one the runtime writes")
    expected_crc, expected_size = int(match[1], 16), int(match[2])
    crc, size = file_crc32(path)
    if size != expected_size:
        raise ChecksumMismatch(
            f"it has {size} bytes, {expected_size} were written (truncated or appended to)"
        )
    if crc != expected_crc:
        raise ChecksumMismatch(
            f"its CRC-32 is {crc:08x}, {expected_crc:08x} was written: the file was damaged after the save"
        )
    return True
