"""Atomic file writes, the one way the package writes a file that others may read at any time.

``path`` holds either its old content or the complete new one, whatever happens during the
write (an exception, SIGKILL, power loss): the bytes go to a temporary file in the same
directory, which is fsynced, renamed over ``path``, and the directory is fsynced too.

The temporary files have a name of their own, ``.<name>.<8 hex digits>.hfai-partial``, so that
leftovers of a killed writer can be told apart from a user's files and removed
(:func:`remove_stale_temporaries`) without touching anything else. The bottom layer: no torch.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable
from typing import IO, Any

#: The suffix of every temporary file :class:`AtomicFile` creates.
TEMP_SUFFIX = ".hfai-partial"

_TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{8}" + re.escape(TEMP_SUFFIX))


def is_temporary(name: str) -> bool:
    """Whether ``name`` (a file name, no directory) is one of :class:`AtomicFile`'s temporaries."""
    return _TEMP_NAME.fullmatch(name) is not None


class AtomicFile:
    """A new file for ``path``, written through :attr:`handle` (binary), published by
    :meth:`commit` or dropped by :meth:`discard`; until then ``path`` is untouched.

    As a context manager it commits on success and discards on an exception. The file gets the
    permissions a plain ``open`` would give (0o666 minus the umask).
    """

    def __init__(self, path: str | os.PathLike, buffering: int = -1):
        self.path = os.fspath(path)
        directory, name = os.path.split(self.path)
        self.temporary = os.path.join(directory, f".{name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
        try:
            fd = os.open(self.temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.path}: its directory does not exist") from None
        self.handle: IO[bytes] = open(fd, "wb", buffering=buffering)

    def commit(self) -> None:
        """fsync the file, rename it over ``path``, fsync the directory; discard on failure."""
        try:
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()
            os.replace(self.temporary, self.path)
        except BaseException:
            self.discard()
            raise
        fsync_directory(os.path.dirname(os.path.abspath(self.path)))

    def discard(self) -> None:
        """Close and remove the temporary file (idempotent)."""
        self.handle.close()
        try:
            os.unlink(self.temporary)
        except FileNotFoundError:
            pass

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Write ``path`` atomically: ``write`` fills a binary file handle; on an exception the
    temporary file is removed, ``path`` is left as it was, and the exception propagates."""
    with AtomicFile(path) as file:
        write(file.handle)


def fsync_directory(directory: str | os.PathLike) -> None:
    """Make a rename in ``directory`` durable (POSIX: the entry lives in the directory). Best
    effort: some file systems refuse to open or fsync a directory; the rename is done anyway."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def remove_stale_temporaries(directory: str | os.PathLike) -> list[str]:
    """Delete the temporaries a killed writer left in ``directory`` -- only those (a user's
    ``.notes.partial`` stays) -- and return their names.

    Only for directories that one process writes at a time (a job's ``OUTPUT_DIR``, written by
    its rank 0): another writer's temporary file in progress would be removed too.
    """
    removed = []
    with os.scandir(directory) as entries:
        for entry in entries:
            if is_temporary(entry.name) and entry.is_file(follow_symlinks=False):
                try:
                    os.unlink(entry.path)
                except FileNotFoundError:
                    continue
                removed.append(entry.name)
    return removed
