"""Atomic file writes, the one way the package writes a file that others may read at any time.

``path`` holds either its old content or the complete new one, whatever happens during the
write (an exception, SIGKILL, power loss): the bytes go to a temporary file in the same
directory, which is fsynced, renamed over ``path``, and the directory is fsynced too.

The temporary files have a name of their own, ``.<name>.<8 random characters>.hfai-partial``,
so that leftovers of a killed writer can be told apart from a user's files and removed
(:func:`remove_stale_temporaries`) without touching anything else. The bottom layer: no torch.
"""

from __future__ import annotations

import os
import re
import tempfile
from typing import IO, Any, Callable

#: The suffix of every temporary file :func:`atomic_write` creates.
TEMP_SUFFIX = ".hfai-partial"

# mkstemp's random part: 8 characters of tempfile._RandomNameSequence (lower-case letters,
# digits, "_"), between ".<name>." and the suffix.
_TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}" + re.escape(TEMP_SUFFIX))


def is_temporary(name: str) -> bool:
    """Whether ``name`` (a file name, no directory) is one of :func:`atomic_write`'s temporaries."""
    return _TEMP_NAME.fullmatch(name) is not None


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Write ``path`` atomically: ``write`` fills a binary file handle; on an exception the
    temporary file is removed, ``path`` is left as it was, and the exception propagates."""
    directory, name = os.path.split(os.fspath(path))
    directory = directory or "."
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=TEMP_SUFFIX, dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    fsync_directory(directory)


def fsync_directory(directory: str | os.PathLike) -> None:
    """Make a rename in ``directory`` durable (POSIX: the entry lives in the directory)."""
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove_stale_temporaries(directory: str | os.PathLike) -> list[str]:
    """Delete the temporaries a killed :func:`atomic_write` left in ``directory`` -- only those
    (a user's ``.notes.partial`` stays) -- and return their names.

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
