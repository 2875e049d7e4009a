"""Mount a pack on the local folder that holds it: missing files there are read from the pack.

detectron2's builtin datasets use plain local paths (``datasets/coco/train2017/1.jpg``), built
when ``detectron2.data`` is imported. Registering :class:`PackMountPathHandler` for the folder
that holds the pack makes those same paths readable without the loose files, whenever it is
registered -- no catalog entry needs rewriting:

* a file that exists on disk is served from disk (the annotations copied beside the pack,
  the pack itself, anything written there);
* a missing file is read from the pack, at the same relative path;
* writes, ``mkdirs`` and ``rm`` always go to disk.

iopath picks handlers by string prefix, so a path matches only when spelled with one of the
handler's folder spellings (normalised, with a leading ``./`` if relative, and absolute).
"""

from __future__ import annotations

import os
from typing import IO, Any

from iopath.common.file_io import NativePathHandler, PathHandler

from .handler import READ_MODES, FFRecordPathHandler


class PackMountPathHandler(PathHandler):
    """Serve ``<local_dir>/<path>`` from disk if it exists, else from ``<pack_uri>/<path>``."""

    def __init__(self, local_dir: str | os.PathLike, pack_uri: str, packs: FFRecordPathHandler) -> None:
        super().__init__()
        local_dir = os.path.normpath(local_dir)
        spellings = {local_dir, os.path.abspath(local_dir)}
        if not os.path.isabs(local_dir):
            spellings.add(os.path.join(".", local_dir))
        # Longest first, so that the remainder of a path is computed against the best match.
        self._prefixes = sorted({s.rstrip("/") + "/" for s in spellings}, key=len, reverse=True)
        self._pack_uri = pack_uri.rstrip("/")
        self._packs = packs
        self._disk = NativePathHandler()

    def _get_supported_prefixes(self) -> list[str]:
        return list(self._prefixes)

    def _in_pack(self, path: str) -> str:
        """The ``ffrecord://`` path that stands for the local ``path``."""
        prefix = next(p for p in self._prefixes if path.startswith(p))
        return f"{self._pack_uri}/{path[len(prefix) :]}"

    # -- reads: disk first, then the pack ---------------------------------------------------

    def _open(self, path: str, mode: str = "r", buffering: int = -1, **kwargs: Any) -> IO[str] | IO[bytes]:
        if mode in READ_MODES and not _on_disk(path):
            return self._packs._open(self._in_pack(path), mode, buffering, **kwargs)
        return self._disk._open(path, mode, buffering, **kwargs)

    def _get_local_path(self, path: str, force: bool = False, **kwargs: Any) -> str:
        if _on_disk(path):
            return self._disk._get_local_path(path, **kwargs)
        return self._packs._get_local_path(self._in_pack(path), force=force, **kwargs)

    def _ls(self, path: str, **kwargs: Any) -> list[str]:
        in_pack = self._in_pack(path)
        if not os.path.isdir(path):
            return self._packs._ls(in_pack, **kwargs)
        names = self._disk._ls(path, **kwargs)
        if self._packs._isdir(in_pack):
            on_disk = set(names)
            names += [n for n in self._packs._ls(in_pack) if n not in on_disk]
        return names

    def _exists(self, path: str, **kwargs: Any) -> bool:
        return self._disk._exists(path, **kwargs) or self._packs._exists(self._in_pack(path), **kwargs)

    def _isfile(self, path: str, **kwargs: Any) -> bool:
        if _on_disk(path):
            return self._disk._isfile(path, **kwargs)
        return self._packs._isfile(self._in_pack(path), **kwargs)

    def _isdir(self, path: str, **kwargs: Any) -> bool:
        return self._disk._isdir(path, **kwargs) or self._packs._isdir(self._in_pack(path), **kwargs)

    # -- writes: always the disk ------------------------------------------------------------

    def _mkdirs(self, path: str, **kwargs: Any) -> None:
        self._disk._mkdirs(path, **kwargs)

    def _rm(self, path: str, **kwargs: Any) -> None:
        self._disk._rm(path, **kwargs)

    def _copy(self, src_path: str, dst_path: str, overwrite: bool = False, **kwargs: Any) -> bool:
        return self._disk._copy(src_path, dst_path, overwrite, **kwargs)

    def _mv(self, src_path: str, dst_path: str, **kwargs: Any) -> bool:
        return self._disk._mv(src_path, dst_path, **kwargs)

    def _copy_from_local(
        self, local_path: str, dst_path: str, overwrite: bool = False, **kwargs: Any
    ) -> None:
        self._disk._copy_from_local(local_path, dst_path, overwrite, **kwargs)


def _on_disk(path: str) -> bool:
    """``os.path.exists``, a few times cheaper on a miss (no exception): it runs per image."""
    return os.access(path, os.F_OK)
