"""``ffrecord://<prefix>/<path>``: an iopath handler that reads files out of FFRecord packs.

A pack (made by :func:`hfai_runtime.ffrecord.pack_folder`) holds a whole folder. Registered under
a *prefix*, its member ``train2017/1.jpg`` is ``ffrecord://coco/train2017/1.jpg`` to any code that
goes through an iopath ``PathManager`` -- which is how detectron2 opens every image and json.

Each pack is opened once, when it is added. Forked DataLoader workers inherit the open reader
and its index as they are: the reader maps the file and keeps no file offset, so sharing
it across ``fork`` is safe and costs no memory per worker. A handler that is pickled (e.g. into
a spawned process) travels as its pack names and reopens them there.
"""

from __future__ import annotations

import errno
import io
import os
from typing import IO, Any

from iopath.common.file_io import PathHandler, get_cache_dir

from hfai_runtime.ffrecord import PackedFolder

from .cache import materialise

SCHEME = "ffrecord://"
_NOT_NAMES = frozenset(("", ".", ".."))
#: The ``open`` modes a pack serves (it is read-only).
READ_MODES = frozenset(("r", "rt", "tr", "rb", "br"))


class _Pack:
    """One registered pack file and the :class:`PackedFolder` open on it (which pickles as its
    file name and reopens on unpickling)."""

    def __init__(self, prefix: str, ffr_file: str, check_data: bool) -> None:
        self.prefix = prefix
        self.ffr_file = ffr_file
        self.folder = PackedFolder(ffr_file, check_data=check_data)


class FFRecordPathHandler(PathHandler):
    """Serves ``ffrecord://<prefix>/<path>`` from the packs added with :meth:`add_pack`.

    Several packs coexist; a path goes to the pack with the longest matching prefix. Packs are
    read-only: files open in ``r``/``rb`` mode only, as in-memory file objects.
    :meth:`_get_local_path` copies a member to a cache file, for code that needs a real path
    (detectron2 loads COCO json that way).
    """

    def __init__(self) -> None:
        super().__init__()
        self._packs: dict[str, _Pack] = {}
        self._prefix_depth = 0  # the most names in a registered prefix

    def add_pack(self, prefix: str, ffr_file: str | os.PathLike, *, check_data: bool = True) -> str:
        """Serve ``ffr_file`` under ``ffrecord://<prefix>/`` and return that root (no slash).

        The pack is opened here, in this process, so that a missing file or one that is not a
        pack fails now, naming it. Re-adding the same pair is a no-op.
        """
        prefix = _clean_prefix(prefix)
        ffr_file = os.path.abspath(os.fspath(ffr_file))
        if not os.path.exists(ffr_file):  # (a FIFO or a device is refused, by name, when opened)
            raise FileNotFoundError(errno.ENOENT, f"FFRecord pack for prefix {prefix!r} not found", ffr_file)
        known = self._packs.get(prefix)
        if known is not None and known.ffr_file != ffr_file:
            raise ValueError(
                f"ffrecord prefix {prefix!r} is already registered for {known.ffr_file}; "
                f"cannot register it again for {ffr_file}"
            )
        if known is None:
            self._packs[prefix] = _Pack(prefix, ffr_file, check_data)
            self._prefix_depth = max(self._prefix_depth, prefix.count("/") + 1)
        return SCHEME + prefix

    @property
    def packs(self) -> dict[str, str]:
        """Registered prefixes and their pack files."""
        return {prefix: pack.ffr_file for prefix, pack in self._packs.items()}

    def _get_supported_prefixes(self) -> list[str]:
        return [SCHEME]

    # -- path resolution -------------------------------------------------------------------

    def _resolve(self, path: str) -> tuple[_Pack, str]:
        """Split ``ffrecord://<prefix>/<member>`` into its pack and member path (``""``: root)."""
        if not path.startswith(SCHEME):
            raise ValueError(f"{path!r} is not an {SCHEME} path")
        parts = path[len(SCHEME) :].split("/")
        if not _NOT_NAMES.isdisjoint(parts):  # rare; skipped on the per-image path
            if ".." in parts:
                raise ValueError(f"{path!r}: '..' is not allowed in {SCHEME} paths")
            parts = [p for p in parts if p not in _NOT_NAMES]
        # Longest prefix first; prefixes are rarely more than one name deep.
        for n in range(min(len(parts), self._prefix_depth), 0, -1):
            pack = self._packs.get("/".join(parts[:n]))
            if pack is not None:
                return pack, "/".join(parts[n:])
        registered = ", ".join(sorted(self._packs)) or "none"
        raise FileNotFoundError(
            errno.ENOENT,
            f"no FFRecord pack is registered for this path (registered prefixes: {registered}); "
            "call hfai_runtime.detectron2.register_ffrecord_handler(ffr_file, ffr_prefix) first",
            path,
        )

    @staticmethod
    def _read(pack: _Pack, member: str, path: str) -> bytes:
        """The bytes of ``member``; errors name ``path``, the ``ffrecord://`` path asked for."""
        try:
            return pack.folder.read_one(member).tobytes()
        except (FileNotFoundError, IsADirectoryError) as e:
            raise _with_path(e, f"{member or '/'!r} is not a file in pack {pack.ffr_file}", path) from None

    # -- PathHandler API -------------------------------------------------------------------

    def _open(
        self,
        path: str,
        mode: str = "r",
        buffering: int = -1,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
        **kwargs: Any,
    ) -> IO[str] | IO[bytes]:
        """Return the member as an in-memory file; text mode decodes UTF-8 unless told otherwise."""
        self._check_kwargs(kwargs)
        if mode not in READ_MODES:
            raise ValueError(f"{path}: FFRecord packs are read-only; cannot open with mode {mode!r}")
        data = io.BytesIO(self._read(*self._resolve(path), path))
        if "b" in mode:
            return data
        return io.TextIOWrapper(data, encoding=encoding or "utf-8", errors=errors, newline=newline)

    def _get_local_path(self, path: str, force: bool = False, **kwargs: Any) -> str:
        """Copy the member to ``<iopath cache>/ffrecord/<prefix>-<pack id>/<member>`` once.

        The cache file is written to a temporary name in the same folder and renamed, so a file
        under the final name is always complete, even with several ranks racing on it; the
        folder is private and no symbolic link in it is followed (see :mod:`.cache`). The pack
        id is the open reader's :meth:`~hfai_runtime.ffrecord.FileReader.fingerprint` (inode,
        size, change time, header CRC): a replaced pack gets a fresh folder even if its size
        and mtime are the old ones. The cache root is iopath's (``$FVCORE_CACHE`` or
        ``~/.torch/iopath_cache``).
        """
        self._check_kwargs(kwargs)
        pack, member = self._resolve(path)
        if not member:
            raise IsADirectoryError(errno.EISDIR, f"the root of pack {pack.ffr_file} is not a file", path)
        folder = f"{pack.prefix.replace('/', '_')}-{pack.folder.reader.fingerprint()[:16]}"
        return materialise(
            os.path.join(get_cache_dir(), "ffrecord"),
            [folder, *member.split("/")],
            lambda: self._read(pack, member, path),
            force,
        )

    def _ls(self, path: str, **kwargs: Any) -> list[str]:
        self._check_kwargs(kwargs)
        pack, member = self._resolve(path)
        try:
            return pack.folder.list(member)
        except (FileNotFoundError, NotADirectoryError) as e:
            raise _with_path(e, f"{member!r} is not a directory in pack {pack.ffr_file}", path) from None

    def _exists(self, path: str, **kwargs: Any) -> bool:
        self._check_kwargs(kwargs)
        pack, member = self._resolve(path)
        return pack.folder.exists(member)

    def _isfile(self, path: str, **kwargs: Any) -> bool:
        self._check_kwargs(kwargs)
        pack, member = self._resolve(path)
        return pack.folder.is_file(member)

    def _isdir(self, path: str, **kwargs: Any) -> bool:
        self._check_kwargs(kwargs)
        pack, member = self._resolve(path)
        return pack.folder.is_dir(member)


def _clean_prefix(prefix: str) -> str:
    parts = [p for p in str(prefix).split("/") if p]
    if not parts or any(p in (".", "..") or ":" in p for p in parts):
        raise ValueError(f"invalid ffrecord prefix {prefix!r}: expected a name such as 'coco'")
    return "/".join(parts)


_ERRNO = {FileNotFoundError: errno.ENOENT, IsADirectoryError: errno.EISDIR, NotADirectoryError: errno.ENOTDIR}


def _with_path(error: OSError, message: str, path: str) -> OSError:
    """The reader's error, retold with the ``ffrecord://`` path the caller used as its filename."""
    return type(error)(_ERRNO.get(type(error), error.errno), message, path)
