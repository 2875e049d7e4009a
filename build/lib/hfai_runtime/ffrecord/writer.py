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
"""

from __future__ import annotations

import os
import secrets
import warnings
from pathlib import Path

import numpy as np

from .errors import SampleCountError
from .layout import crc32, encode_header, header_size
from .reader import PathLike

_WRITE_BUFFER = 1 << 20  # batches tiny samples into large writes


def _as_bytes(data, fname: str, index: int) -> memoryview:
    """A flat byte view of ``data``, whatever its element type: its *byte* length is written."""
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(f"{fname}: sample {index} is a {type(data).__name__}; expected bytes, "
                        "bytearray, memoryview or a numpy array") from None
    if not view.c_contiguous:
        raise ValueError(f"{fname}: sample {index} is not a C-contiguous buffer; "
                         "pass numpy.ascontiguousarray(...) instead")
    return view.cast("B") if view.ndim != 1 or view.format != "B" else view


class FileWriter:
    """Writes ``n`` samples, in order, to ``fname`` (replaced atomically on a complete close)."""

    def __init__(self, fname: PathLike, n: int) -> None:
        self.fname = os.fspath(fname)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"{self.fname}: the number of samples must be an int >= 0, got {n!r}")
        self.n = int(n)
        self.count = 0
        self._crcs = np.zeros(self.n, np.uint32)
        self._lengths = np.zeros(self.n, np.int64)
        target = Path(self.fname)
        self._tmp = str(target.with_name(
            f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"))
        try:
            fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.fname}: its directory does not exist") from None
        self._file = open(fd, "wb", buffering=_WRITE_BUFFER)
        self._file.seek(header_size(self.n))

    def write_one(self, data) -> None:
        """Append one sample: bytes, bytearray, memoryview or a C-contiguous numpy array."""
        if self._file is None:
            raise ValueError(f"{self.fname}: write_one() on a closed FileWriter")
        if self.count >= self.n:
            raise SampleCountError(f"{self.fname}: sample {self.count} exceeds the "
                                   f"{self.n} samples declared to FileWriter")
        view = _as_bytes(data, self.fname, self.count)
        self._crcs[self.count] = crc32(view)
        self._lengths[self.count] = view.nbytes
        self._file.write(view)
        self.count += 1

    def close(self) -> None:
        """Write the header and publish the file; with fewer than ``n`` samples, discard it."""
        if self._file is None:
            return
        if self.count != self.n:
            self.discard()
            raise SampleCountError(f"{self.fname}: wrote {self.count} of the {self.n} declared "
                                   "samples; the file was not created")
        try:
            self._file.flush()
            os.pwrite(self._file.fileno(), encode_header(self._crcs, self._lengths), 0)
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._tmp, self.fname)
        except BaseException:
            self.discard()
            raise
        self._file = None
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

    def __enter__(self) -> "FileWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()

    def __del__(self) -> None:
        if getattr(self, "_file", None) is not None:
            warnings.warn(f"{self.fname}: FileWriter garbage-collected before close(); "
                          "the partial file was discarded", ResourceWarning, stacklevel=2)
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
