"""``register_ffrecord_handler``: HFAI's one call that makes detectron2 read datasets from packs.

HFAI's recipe, unchanged::

    datasets/coco/coco.ffr          # hfai_runtime.ffrecord.pack_folder("coco/", ...)
    datasets/coco/annotations/      # copied out beside it

    register_ffrecord_handler(ffr_file="datasets/coco/coco.ffr", ffr_prefix="coco")

After it, on detectron2's PathManager (and fvcore's and iopath's global ones, which other
libraries use):

* ``ffrecord://coco/<path>`` reads ``<path>`` from the pack -- for custom datasets, e.g.
  ``register_coco_instances(..., image_root="ffrecord://coco/train2017")``;
* the pack is also *mounted* on the folder it sits in: any file under ``datasets/coco/`` that is
  missing on disk is read from the pack at the same relative path. That is what serves the
  builtin ``coco_2017_train``/``coco_2017_val``, whose paths detectron2 fixes at import time as
  ``$DETECTRON2_DATASETS/coco/train2017/...`` (default ``datasets``). Files present on disk (the
  copied annotations) are read from disk.

Why a mount rather than rewriting the builtin catalog entries: path lookups happen at read
time, so the call works the same before or after ``import detectron2`` (HFAI requires before;
both are supported), needs no knowledge of how each builtin dataset is registered, and leaves
every other path untouched. The builtin paths match when the pack's folder and
``DETECTRON2_DATASETS`` are spelled consistently (both relative to the working directory, or
either of them absolute).

Registrations belong to the process. Forked DataLoader workers (detectron2's default on Linux)
inherit them, and the open pack reader with them. A process started fresh -- detectron2's
``launch`` and our launcher spawn one per GPU; a ``spawn``/``forkserver`` DataLoader -- needs the
call again. At the top of the training script, as HFAI does, every such process runs it (they
import the script); at the start of ``main``, only the launched workers do.
"""

from __future__ import annotations

import functools
import logging
import os

from hfai_runtime.io import FFRecordPathHandler, PackMountPathHandler

logger = logging.getLogger(__name__)

#: Every registered pack, served under ``ffrecord://``; one handler shared by all PathManagers.
_PACKS = FFRecordPathHandler()
#: Absolute folder -> the pack URI mounted on it.
_MOUNTS: dict[str, str] = {}


def register_ffrecord_handler(ffr_file: str | os.PathLike, ffr_prefix: str) -> None:
    """Serve ``ffr_file`` as ``ffrecord://<ffr_prefix>/`` and mount it on its own folder.

    Calling it again with the same arguments (e.g. in every spawned process) is harmless; a
    prefix already bound to another file raises ``ValueError``. The pack is opened here, so a
    missing file or one that is not a pack is reported at once, naming the file.
    """
    ffr_file = os.fspath(ffr_file)
    uri = _PACKS.add_pack(ffr_prefix, ffr_file)
    _mount(os.path.dirname(ffr_file) or ".", uri)
    logger.info("Reading %s/ from %s", uri, ffr_file)


def _mount(folder: str, uri: str) -> None:
    """Let the pack at ``uri`` stand in for missing files under ``folder`` (once per folder)."""
    key = os.path.abspath(folder)
    if key in _MOUNTS:
        if _MOUNTS[key] != uri:
            logger.warning(
                "%s/ already stands in for missing files under %s/; %s/ is not mounted there",
                _MOUNTS[key],
                folder,
                uri,
            )
        return
    _MOUNTS[key] = uri
    handler = PackMountPathHandler(folder, uri, _PACKS)
    for manager in _path_managers():
        manager.register_handler(handler, allow_override=False)
    logger.info("Files missing under %s/ are read from %s/", folder, uri)


@functools.cache
def _path_managers() -> tuple:
    """detectron2's own PathManager and fvcore's and iopath's global ones, serving ``ffrecord://``."""
    from detectron2.utils.file_io import PathManager as detectron2_manager
    from fvcore.common.file_io import PathManager as fvcore_manager
    from iopath.common.file_io import g_pathmgr

    managers = (detectron2_manager, fvcore_manager, g_pathmgr)
    for manager in managers:
        manager.register_handler(_PACKS, allow_override=False)
    return managers
