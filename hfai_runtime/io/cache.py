"""Local copies of pack members, for code that needs a real path (``get_local_path``).

The cache lives in a private folder, ``<iopath cache>/ffrecord``: created 0700, refused if it is
a symbolic link or belongs to another user, and made 0700 if it is ours but open to others.
Below it nothing is ever reached through a symbolic link: each folder is opened with
``O_NOFOLLOW`` relative to its parent's descriptor, a cached file is only served if it is a
regular file opened with ``O_NOFOLLOW``, and new files are created ``O_EXCL`` under a temporary
name and renamed over the final one (which replaces a planted link instead of writing through
it). So a link planted anywhere in the cache can neither receive data nor serve it.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
TEMP_PREFIX = ".tmp-"


def private_folder(path: str) -> int:
    """A descriptor on the folder ``path``, created 0700 if missing; it must be ours."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    try:
        fd = os.open(path, _DIR_FLAGS)
    except OSError as e:
        raise PermissionError(
            f"{path}: the ffrecord cache folder is not a directory of its own ({e.strerror}); remove it"
        ) from None
    info = os.fstat(fd)
    if info.st_uid != os.getuid():
        os.close(fd)
        raise PermissionError(
            f"{path}: the ffrecord cache folder belongs to uid {info.st_uid}, "
            "not to you; set FVCORE_CACHE to a folder of your own"
        )
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.fchmod(fd, 0o700)
    return fd


def materialise(root: str, parts: list[str], read: Callable[[], bytes], force: bool) -> str:
    """``root/parts...``: the existing regular file, or ``read()`` written there atomically."""
    fd = private_folder(root)
    try:
        for name in parts[:-1]:
            child = _subfolder(fd, name, root)
            os.close(fd)
            fd = child
        if not force and _is_regular(fd, parts[-1]):
            return os.path.join(root, *parts)
        _write(fd, parts[-1], read())
    finally:
        os.close(fd)
    return os.path.join(root, *parts)


def _subfolder(parent: int, name: str, root: str) -> int:
    """The folder ``name`` in ``parent`` (created if missing), never through a link."""
    try:
        os.mkdir(name, 0o700, dir_fd=parent)
    except FileExistsError:
        pass
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except OSError as e:
        raise PermissionError(
            f"{root}: {name!r} in the ffrecord cache is not a plain folder "
            f"({e.strerror}); refusing to follow it"
        ) from None


def _is_regular(folder: int, name: str) -> bool:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder)
    except OSError:  # missing, or a planted link (ELOOP): write a fresh copy
        return False
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    finally:
        os.close(fd)


def _write(folder: int, name: str, data: bytes) -> None:
    tmp = f"{TEMP_PREFIX}{secrets.token_hex(8)}"
    fd = os.open(
        tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=folder
    )
    try:
        with open(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        os.unlink(tmp, dir_fd=folder)
        raise
