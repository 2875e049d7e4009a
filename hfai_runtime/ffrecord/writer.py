"""``FileWriter``: write exactly ``n`` samples into a new FFRecord file, atomically.

The samples go to a temporary file beside the target, ``.<name>.tmp-<pid>-<random>``; the
header is written last, then the file is fsynced and renamed over ``fname``. So a reader sees
either the previous file or the complete new one, never a partial file:

* ``close()`` with fewer samples than declared raises :class:`SampleCountError` and removes the
  temporary file (the official writer aborts the whole process here);
* an exception inside ``with FileWriter(...)`` removes it and lets the exception through;
* a process killed mid-write leaves only its ``.<name>.tmp-*`` file behind (nothing runs to
  delete it), which is safe to remove.

The file gets ordinary permissions (0666 minus the umask); the official writer makes it 0700.
Only a regular file (or nothing) is replaced: a device, FIFO, socket, directory or symbolic link
under ``fname`` is refused when the writer is made and again just before the rename
(:func:`~.files.check_replaceable`).
"""

from __future__ import annotations

import ctypes
import os
import secrets
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .errors import SampleCountError
from .files import check_replaceable
from .layout import crc32, encode_header, header_size
from .reader import PathLike

_WRITE_BUFFER = 1 << 20  # batches tiny samples into large writes
#: Written data is handed to the disk in chunks of this size while writing continues, so the
#: final ``fdatasync`` waits for the last chunk only, not for the whole file.
_WRITEBACK_CHUNK = 8 << 20
_SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start writeback of the range, do not wait


def _load_sync_file_range():
    """libc's ``sync_file_range`` (Linux), which Python's ``os`` does not expose; or None."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_sync_file_range = _load_sync_file_range()


def temp_prefix(target_name: str) -> str:
    """How the temporary files of a writer of ``target_name`` start (``pack_folder`` skips
    them when the output file sits inside the folder being packed)."""
    return f".{target_name}.tmp-"


def _as_bytes(data, fname: str, index: int) -> memoryview:
    """A flat byte view of ``data``, whatever its element type: its *byte* length is written."""
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(
            f"{fname}: sample {index} is a {type(data).__name__}; expected bytes, "
            "bytearray, memoryview or a numpy array"
        ) from None
    if not view.c_contiguous:
        raise ValueError(
            f"{fname}: sample {index} is not a C-contiguous buffer; pass numpy.ascontiguousarray(...) instead"
        )
    return view.cast("B") if view.ndim != 1 or view.format != "B" else view


class FileWriter:
    """Writes ``n`` samples, in order, to ``fname`` (replaced atomically on a complete close).

    ``durable=False`` skips the fsyncs: the rename stays atomic, but after a power loss the
    file may be missing or empty -- for files that can be rebuilt, such as a pack's index."""

    def __init__(self, fname: PathLike, n: int, durable: bool = True) -> None:
        self.fname = os.fspath(fname)
        self.durable = durable
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"{self.fname}: the number of samples must be an int >= 0, got {n!r}")
        self.n = int(n)
        self.count = 0
        self._crcs = np.zeros(self.n, np.uint32)
        self._lengths = np.zeros(self.n, np.int64)
        check_replaceable(self.fname)
        target = Path(self.fname)
        self._tmp = str(target.with_name(f"{temp_prefix(target.name)}{os.getpid()}-{secrets.token_hex(4)}"))
        try:
            fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.fname}: its directory does not exist") from None
        self._file = open(fd, "wb", buffering=_WRITE_BUFFER)
        self._file.seek(header_size(self.n))
        self._end = self._synced = header_size(self.n)  # bytes written; writeback started

    def write_one(self, data) -> None:
        """Append one sample: bytes, bytearray, memoryview or a C-contiguous numpy array."""
        self.write_parts([data])

    def write_parts(self, parts: Iterable) -> None:
        """Append one sample given as consecutive chunks (each like ``write_one``'s ``data``),
        its CRC computed across them: a large file streamed through a reused buffer costs the
        buffer's memory, not the file's size."""
        if self._file is None:
            raise ValueError(f"{self.fname}: write_one() on a closed FileWriter")
        if self.count >= self.n:
            raise SampleCountError(
                f"{self.fname}: sample {self.count} exceeds the {self.n} samples declared to FileWriter"
            )
        crc = length = 0
        for part in parts:
            view = _as_bytes(part, self.fname, self.count)
            crc = crc32(view, crc)
            self._file.write(view)
            length += view.nbytes
            self._wrote(view.nbytes, buffered=True)
        self._crcs[self.count] = crc
        self._lengths[self.count] = length
        self.count += 1

    def write_batch(self, data: memoryview, lengths: list[int]) -> None:
        """Append ``len(lengths)`` samples stored back to back in ``data`` with one system
        call, CRCs computed from ``data`` itself: no copy into a buffer (``pack_folder``
        reads files straight into ``data``)."""
        if self._file is None:
            raise ValueError(f"{self.fname}: write_batch() on a closed FileWriter")
        if self.count + len(lengths) > self.n:
            raise SampleCountError(
                f"{self.fname}: {self.count + len(lengths)} samples exceed "
                f"the {self.n} declared to FileWriter"
            )
        view = _as_bytes(data, self.fname, self.count)
        if sum(lengths) != view.nbytes:
            raise ValueError(
                f"{self.fname}: write_batch() got {view.nbytes} bytes for samples "
                f"of {sum(lengths)} bytes in all"
            )
        start = 0
        for i, length in enumerate(lengths, self.count):
            self._crcs[i] = crc32(view[start : start + length])
            self._lengths[i] = length
            start += length
        self._file.flush()
        fd, written = self._file.fileno(), 0
        while written < view.nbytes:
            written += os.write(fd, view[written:])
        self._file.seek(self._end + view.nbytes)  # the buffered file's idea of the position
        self.count += len(lengths)
        self._wrote(view.nbytes, buffered=False)

    def _wrote(self, nbytes: int, buffered: bool) -> None:
        """Start writeback of what the kernel holds once a chunk has accumulated."""
        self._end += nbytes
        in_kernel = self._end - (_WRITE_BUFFER if buffered else 0)
        if self.durable and _sync_file_range is not None and in_kernel - self._synced >= _WRITEBACK_CHUNK:
            _sync_file_range(
                self._file.fileno(), self._synced, in_kernel - self._synced, _SYNC_FILE_RANGE_WRITE
            )  # a failure only costs the overlap
            self._synced = in_kernel

    def close(self) -> None:
        """Write the header and publish the file; with fewer than ``n`` samples, discard it."""
        if self._file is None:
            return
        if self.count != self.n:
            self.discard()
            raise SampleCountError(
                f"{self.fname}: wrote {self.count} of the {self.n} declared samples; the file was not created"
            )
        try:
            self._file.flush()
            os.pwrite(self._file.fileno(), encode_header(self._crcs, self._lengths), 0)
            if self.durable:
                os.fdatasync(self._file.fileno())  # the data and the size; the rest is metadata
            self._file.close()
            check_replaceable(self.fname)  # again: it may have been swapped while we wrote
            os.replace(self._tmp, self.fname)
        except BaseException:
            self.discard()
            raise
        self._file = None
        if self.durable:
            _fsync_dir(os.path.dirname(os.path.abspath(self.fname)))

    def discard(self) -> None:
        """Abandon the file: close and remove the temporary file; ``fname`` is left untouched."""
        if self._file is None:
            return
        file, self._file = self._file, None
        try:
            file.close()
        except OSError:
            pass
        try:
            os.unlink(self._tmp)
        except FileNotFoundError:
            pass

    def __enter__(self) -> FileWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()

    def __del__(self) -> None:
        if getattr(self, "_file", None) is not None:
            warnings.warn(
                f"{self.fname}: FileWriter garbage-collected before close(); the partial file was discarded",
                ResourceWarning,
                stacklevel=2,
            )
            self.discard()

    def __repr__(self) -> str:
        return f"FileWriter({self.fname!r}, n={self.n}, written={self.count})"


def _fsync_dir(path: str) -> None:
    """Make the rename itself durable (best effort: not every file system allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
