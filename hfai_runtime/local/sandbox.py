"""The host paths ``run-local`` touches stay inside its folders.

A manifest is input: its ``volumeMounts[].subPath`` and whatever symlinks sit in the data folder
decide where pods write. So every host path the runner derives from them is resolved here, one
component at a time, and refused when it would leave its root:

* a volume's folder is ``--data-dir`` (or the ``--mount`` folder given for that path) joined with
  the mount's ``subPath``; an absolute ``subPath`` or one with ``..`` is refused (the API server
  refuses both: ``validateLocalDescendingPath``, kubernetes
  ``pkg/apis/core/validation/validation.go``), and so is a symlink on the way whose target is
  outside the root;
* folders are created one component at a time, never through a symlink;
* pod logs are opened with ``O_NOFOLLOW``: a planted ``master-0-attempt1.log -> /etc/passwd`` is
  refused, not overwritten;
* the ``fsGroup`` grant (a root container engine) walks with ``os.fwalk`` without following
  symlinks, changes only directories and singly-linked regular files it opened with
  ``O_NOFOLLOW`` (a hard link may be someone else's file), and only under ``--data-dir``.

Paths are checked before any pod starts; a concurrent attacker who swaps a folder for a symlink
between the check and the pod's write is out of scope (the pods run as this user anyway).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import IO

from hfai_runtime.local.manifest import Mount, Replica

#: Container paths that stay the container's own (not mapped onto this machine).
UNMAPPED_MOUNTS = ("/dev/shm",)


class SandboxError(ValueError):
    """A host path that would leave run-local's folders; the message names it and the root."""


def descending(sub_path: str) -> PurePosixPath:
    """``sub_path`` as a relative path that only descends; SandboxError otherwise."""
    path = PurePosixPath(sub_path)
    if path.is_absolute():
        raise SandboxError(f"{sub_path!r} must be a relative path")
    if ".." in path.parts:
        raise SandboxError(f"{sub_path!r} must not contain '..'")
    return path


def inside(root: Path, sub_path: str) -> Path:
    """``root / sub_path``, checked to stay inside ``root`` with every existing symlink on the
    way followed; the folders that do not exist yet are not created here."""
    root = Path(os.path.realpath(root))
    path = root
    for part in descending(sub_path).parts:
        path = path / part
        if os.path.islink(path):
            target = Path(os.path.realpath(path))
            if not _within(target, root):
                raise SandboxError(f"{path} is a symlink to {target}, outside {root}")
        elif os.path.lexists(path) and not os.path.isdir(path):
            break  # a file where a folder is wanted: the pod finds out; nothing is created here
        elif not os.path.lexists(path):
            break
    return root / sub_path if sub_path else root


def volume_root(mount: Mount, data_dir: Path, overrides: Mapping[str, Path]) -> Path:
    """The folder a mount's ``subPath`` is taken in: its ``--mount`` folder, else ``--data-dir``."""
    return overrides.get(mount.path.rstrip("/"), data_dir)


def volume_folder(mount: Mount, data_dir: Path, overrides: Mapping[str, Path]) -> Path:
    """The host folder a ``volumeMount`` maps to (see the module docstring); SandboxError when
    its ``subPath`` would leave :func:`volume_root`."""
    return inside(volume_root(mount, data_dir, overrides), mount.sub_path)


def mount_problems(replicas: Sequence[Replica], data_dir: Path, overrides: Mapping[str, Path]) -> list[str]:
    """One line per volume mount whose folder would leave its root, naming replica and field."""
    problems = []
    for replica in replicas:
        for mount in replica.mounts:
            if mount.path in UNMAPPED_MOUNTS:
                continue
            try:
                volume_folder(mount, data_dir, overrides)
            except SandboxError as error:
                field = f"{replica.field_path}.volumeMounts[mountPath={mount.path}].subPath"
                problems.append(f"{replica.name}: {field}: {error}")
    return sorted(set(problems), key=problems.index)


def log_problems(logs_dir: Path, replicas: Sequence[Replica]) -> list[str]:
    """What stops the pods' logs from being written to ``logs_dir``: not a folder, or a pod's
    log name already taken by something that is not a regular file (a symlink, a FIFO)."""
    if os.path.lexists(logs_dir) and not os.path.isdir(logs_dir):
        return [f"--logs-dir {logs_dir}: not a folder"]
    taken = []
    for replica in replicas:
        for path in sorted(Path(logs_dir).glob(f"{replica.name}-attempt*.log")):
            if not stat.S_ISREG(os.lstat(path).st_mode):
                taken.append(
                    f"--logs-dir {logs_dir}: {path.name} is not a regular file; a pod log is never written through it"
                )
    return taken


def make_folders(root: Path, folder: Path) -> Path:
    """Create ``folder`` (under ``root``) one component at a time, refusing a symlink or a
    non-folder on the way that does not stay in ``root``; the folder, resolved. ``root`` itself
    (``--data-dir`` or a ``--mount`` folder, the user's choice) is made when missing, as the
    kubelet makes a volume's folder before the pod starts."""
    root = Path(os.path.realpath(root))
    try:
        os.makedirs(root, 0o755, exist_ok=True)
    except OSError as error:
        raise SandboxError(f"{root}: cannot make the folder ({error.strerror})") from None
    relative = Path(folder).relative_to(root) if Path(folder).is_absolute() else Path(folder)
    path = root
    for part in relative.parts:
        path = path / part
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            pass
        except OSError as error:
            raise SandboxError(f"{path}: cannot make the folder ({error.strerror})") from None
        real = Path(os.path.realpath(path))
        if not _within(real, root) or not real.is_dir():
            raise SandboxError(f"{path} is not a folder inside {root} (it resolves to {real})")
    return Path(os.path.realpath(path))


def open_log(folder: Path, name: str) -> IO[str]:
    """``folder/name`` opened for writing as a new or truncated regular file, never through a
    symlink and never a FIFO or device."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    path = Path(folder) / name
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as error:
        raise SandboxError(f"{path}: cannot write a pod log there ({error.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise SandboxError(f"{path}: not a regular file; a pod log is never written to it")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "w", encoding="utf-8")


def grant_fs_group(root: Path, folder: Path, gid: int) -> None:
    """As the kubelet applies ``fsGroup`` to a volume: ``folder`` and what is under it
    group-owned by ``gid`` and group-writable, folders setgid -- only when ``folder`` is inside
    ``root``, and only for what this walk opened itself without following a link."""
    root, folder = Path(os.path.realpath(root)), Path(os.path.realpath(folder))
    if not _within(folder, root):
        return
    for _, dirs, files, dir_fd in os.fwalk(folder, follow_symlinks=False):
        for name in [*dirs, *files]:
            _grant_entry(dir_fd, name, gid)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        _grant(fd, gid, 0o2070)
    finally:
        os.close(fd)


def _grant_entry(dir_fd: int, name: str, gid: int) -> None:
    info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    is_dir = stat.S_ISDIR(info.st_mode)
    if not (is_dir or (stat.S_ISREG(info.st_mode) and info.st_nlink == 1)):
        return  # symlinks, devices, FIFOs, sockets, hard-linked files: not ours to change
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_DIRECTORY if is_dir else 0)
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError:
        return  # replaced since the walk listed it
    try:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) == (info.st_dev, info.st_ino):
            _grant(fd, gid, 0o2070 if is_dir else 0o060)
    finally:
        os.close(fd)


def _grant(fd: int, gid: int, bits: int) -> None:
    os.fchown(fd, -1, gid)
    os.fchmod(fd, stat.S_IMODE(os.fstat(fd).st_mode) | bits)


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents
