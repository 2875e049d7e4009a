"""Only regular files: opening inputs without ever blocking, replacing nothing else.

``open()`` of a FIFO waits for a writer and a read of a character device may never end, so a
FIFO named ``x.ffr`` (or swapped in for a file between listing a folder and reading it) would
hang a reader or ``pack_folder`` forever. Every input file is therefore opened with
``O_NONBLOCK`` (which returns at once for a FIFO and changes nothing for a regular file) and
checked with ``fstat`` on the descriptor actually opened, before any byte is read.

Outputs are written to a temporary file and renamed over their name, and a rename replaces
whatever the name held: a device node, a FIFO, a socket, a symbolic link (as root,
``ffr pack src /dev/null`` would have replaced ``/dev/null``). :func:`check_replaceable` refuses
all but a regular file or nothing.
"""

from __future__ import annotations

import os
import stat

from .errors import FFRecordError

_KINDS = {
    stat.S_IFIFO: "FIFO",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
    stat.S_IFDIR: "directory",
    stat.S_IFLNK: "symbolic link",
}


def kind(mode: int) -> str:
    """``"FIFO"``, ``"socket"`` ...: what a non-regular file is, for error messages."""
    return _KINDS.get(stat.S_IFMT(mode), "special file")


def open_regular(path: str, why: str) -> tuple[int, os.stat_result]:
    """A read-only descriptor on the regular file ``path`` and its ``fstat``.

    Anything else raises :class:`FFRecordError` naming ``path``, its kind and ``why`` only
    regular files will do; nothing is read from it and the descriptor is closed.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FFRecordError(f"{path}: is a {kind(info.st_mode)}, not a regular file; {why}")
    except BaseException:
        os.close(fd)
        raise
    return fd, info


def check_replaceable(path: str) -> None:
    """Refuse (:class:`FFRecordError` naming ``path`` and its kind) to write a new file over
    anything but a regular file or nothing. A symbolic link is refused too: the rename would
    replace the link, not the file it points at."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(info.st_mode):
        raise FFRecordError(
            f"{path}: is a {kind(info.st_mode)}, not a regular file; a new file replaces only a "
            "regular file (or nothing): remove it or choose another name"
        )
