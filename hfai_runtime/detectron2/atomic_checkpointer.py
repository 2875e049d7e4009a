"""``AtomicCheckpointer``: detectron2's checkpointer whose saves are atomic and whose resume
survives a damaged ``OUTPUT_DIR``.

fvcore writes the checkpoint and ``last_checkpoint`` in place, so a kill during a save can leave
a truncated file that the next ``resume_or_load`` fails on -- with a ``miniz`` or ``EOFError``
traceback that does not name the file. Here, as detectron2 extends fvcore, a subclass:

* every save (suspend, periodic, final) goes through :func:`hfai_runtime.atomic.atomic_write`,
  with torch's per-record zlib CRC off and one ISA-L CRC-32 of the whole file written beside it
  (:mod:`hfai_runtime.checksum`): the save runs at disk speed and the file is still checked;
* a resume checks the file against that CRC first (:func:`verify_checkpoint`): a damaged one is
  refused by name, and the fallback below takes the previous one;
* a resume loads only data: the runtime's own ``.pth`` checkpoints inside ``OUTPUT_DIR``, with
  ``weights_only`` loading (else :class:`CheckpointRefused`, or the file is skipped; the rules
  are in :mod:`~hfai_runtime.detectron2.checkpoint_trust`);
* a named checkpoint that cannot be resumed from (missing, a directory, empty, truncated, not a
  training checkpoint) is reported by name and the newest complete checkpoint in ``OUTPUT_DIR``
  is used instead, loudly; when there is none, :class:`CheckpointRefused` says what to do.

Only local directories (what a pod mounts) get this; other PathManager URIs keep fvcore's
behaviour, with a warning.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from typing import Any

import torch
from detectron2.checkpoint import DetectionCheckpointer
from fvcore.common.checkpoint import Checkpointer

from hfai_runtime import checksum
from hfai_runtime.atomic import AtomicFile, atomic_write, is_temporary, remove_stale_temporaries
from hfai_runtime.detectron2._compat import end_failed_load, with_mixin
from hfai_runtime.detectron2.checkpoint_trust import (
    CHECKPOINT_SUFFIX,
    TAG_FILE,
    CheckpointRefused,
    UnusableCheckpoint,
    checked_tag_name,
    fallback_problem,
    load_checkpoint_data,
)


class AtomicSaves:
    """The overrides, on top of any fvcore ``Checkpointer`` (see :class:`AtomicCheckpointer`)."""

    _checking_resumable = False

    def _is_local(self) -> bool:
        return bool(self.save_dir) and "://" not in str(self.save_dir)

    def save(self, name: str, **extra: Any) -> None:
        """fvcore's ``save``, written atomically; leftovers of a killed save are removed first."""
        if not self._is_local() or not self.save_to_disk:
            super().save(name, **extra)
            return
        remove_stale_temporaries(self.save_dir)
        data = {"model": self.model.state_dict()}
        data.update((key, obj.state_dict()) for key, obj in self.checkpointables.items())
        data.update(extra)
        basename = f"{name}.pth"
        if os.path.basename(basename) != basename:
            raise ValueError(f"checkpoint name {name!r}: expected a file name, without a directory")
        path = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", path)
        save_checked(data, path)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        """fvcore's ``tag_last_checkpoint``, atomically."""
        if not self._is_local():
            super().tag_last_checkpoint(last_filename_basename)
            return
        tag = last_filename_basename.encode()
        atomic_write(os.path.join(self.save_dir, TAG_FILE), lambda handle: handle.write(tag))

    def get_checkpoint_file(self) -> str:
        """The file ``last_checkpoint`` names ("" when it names none), refused when a resume
        must not load it (outside ``OUTPUT_DIR``, not a ``.pth``: see
        :func:`~hfai_runtime.detectron2.checkpoint_trust.checked_tag_name`)."""
        if not self._is_local():
            return super().get_checkpoint_file()
        name = _read_tag(os.path.join(self.save_dir, TAG_FILE))
        return checked_tag_name(name, self.save_dir) if name else ""

    def resume_or_load(self, path: str, *, resume: bool = True) -> dict[str, Any]:
        """fvcore's ``resume_or_load``, falling back to the newest complete checkpoint in
        ``OUTPUT_DIR`` when the one ``last_checkpoint`` names cannot be resumed from."""
        if not (resume and self._is_local() and self.has_checkpoint()):
            return super().resume_or_load(path, resume=resume)
        tag, named = os.path.join(self.save_dir, TAG_FILE), ""
        try:
            named = self.get_checkpoint_file()
            return self._load_resumable(named)
        except UnusableCheckpoint as err:  # the tag itself: "<tag> names no file"
            problem = f"{tag} {err.reason.removeprefix('it ')}" if err.path == tag else str(err)
            self.logger.error("%s", problem)
        for candidate in self._complete_candidates(exclude=named):
            try:
                checkpoint = self._load_resumable(candidate)
            except UnusableCheckpoint as err:
                self.logger.error("%s", err)
                continue
            self.logger.warning(
                "Resumed from %s instead: the newest complete checkpoint in %s", candidate, self.save_dir
            )
            return checkpoint
        raise CheckpointRefused(
            f"{problem}, and {self.save_dir} holds no other complete checkpoint: put the checkpoint "
            f"back, or delete {os.path.join(self.save_dir, TAG_FILE)} to start from MODEL.WEIGHTS"
        )

    def _load_resumable(self, path: str) -> dict[str, Any]:
        """``load(path)`` with every checkpointable, or :class:`UnusableCheckpoint`."""
        if not path:
            raise UnusableCheckpoint(os.path.join(self.save_dir, TAG_FILE), "it names no file")
        if not os.path.isfile(path):
            raise UnusableCheckpoint(path, _not_a_file(path))
        if os.path.getsize(path) == 0:
            raise UnusableCheckpoint(path, "it is empty (0 bytes)")
        if not verify_checkpoint(path):
            self.logger.warning("%s has no %s file: loaded unchecked", path, checksum.SIDECAR_SUFFIX)
        self._checking_resumable = True
        try:
            return self.load(path)
        except UnusableCheckpoint:
            end_failed_load(self)  # the next candidate is loaded by the same checkpointer
            raise
        finally:
            self._checking_resumable = False

    def _load_file(self, filename: str) -> dict[str, Any]:
        """detectron2's ``_load_file`` (``MODEL.WEIGHTS``: the user's choice); while resuming,
        :func:`~hfai_runtime.detectron2.checkpoint_trust.load_checkpoint_data` instead: data
        only, and a file that does not read as a training checkpoint raises
        :class:`UnusableCheckpoint` naming it (before anything is loaded)."""
        if not self._checking_resumable:
            return super()._load_file(filename)
        return load_checkpoint_data(filename, str(self.save_dir))

    def _complete_candidates(self, exclude: str) -> Iterator[str]:
        """The ``*.pth`` files in ``OUTPUT_DIR`` other than ``exclude``, newest first; a symbolic
        link out of ``OUTPUT_DIR`` is skipped, with an error naming it."""
        files = []
        with os.scandir(self.save_dir) as entries:
            for entry in entries:
                if (
                    not entry.name.endswith(CHECKPOINT_SUFFIX)
                    or is_temporary(entry.name)
                    or entry.path == exclude
                ):
                    continue
                problem = fallback_problem(entry.path, str(self.save_dir))
                if problem is None:
                    files.append(entry)
                elif entry.is_symlink():
                    self.logger.error("%s", UnusableCheckpoint(entry.path, problem))
        files.sort(key=lambda entry: (entry.stat().st_mtime_ns, entry.name), reverse=True)
        return (entry.path for entry in files)


class AtomicCheckpointer(AtomicSaves, DetectionCheckpointer):
    """``DetectionCheckpointer`` with atomic saves and a resume that survives a damaged
    ``OUTPUT_DIR`` (see the module docstring)."""


def make_saves_atomic(checkpointer: Checkpointer) -> None:
    """Give an existing checkpointer (``DefaultTrainer.checkpointer``, or any fvcore
    ``Checkpointer``) :class:`AtomicCheckpointer`'s behaviour, keeping its own class's."""
    if "://" in str(checkpointer.save_dir):
        checkpointer.logger.warning(
            "Checkpoints in %s are written in place (not atomically)", checkpointer.save_dir
        )
    with_mixin(checkpointer, AtomicSaves)


def save_checked(data: Any, path: str) -> None:
    """``torch.save(data)`` to ``path`` atomically, with its CRC-32 sidecar.

    torch's zip writer computes a zlib CRC-32 per record, the larger part of a save's time
    (bench/preemption.py); it is switched off for this save (``set_crc32_options``, torch >= 2.6)
    and the whole file's CRC-32 is computed with ISA-L as the bytes go out instead. Order: the
    old sidecar goes, the file is renamed into place, then its sidecar is: a kill in between
    leaves a complete file without a sidecar (loaded unchecked), never one refused wrongly.
    """
    checksum.remove_sidecar(path)
    with AtomicFile(path) as file, _torch_crc_off():
        writer = checksum.Crc32Writer(file.handle)
        torch.save(data, writer)
    checksum.write_sidecar(path, writer.crc, writer.size)


def verify_checkpoint(path: str) -> bool:
    """Check ``path`` against the CRC-32 its save wrote beside it: True when it matches, False
    when there is none (a checkpoint of plain detectron2); :class:`UnusableCheckpoint` naming
    the file and what differs when it is damaged. Loaders call it before ``torch.load``."""
    try:
        return checksum.verify(path)
    except checksum.ChecksumMismatch as err:
        raise UnusableCheckpoint(path, str(err)) from None


@contextlib.contextmanager
def _torch_crc_off() -> Iterator[None]:
    """torch's per-record CRC-32 off for one save (on again after; no-op on torch < 2.6)."""
    serialization = torch.serialization
    if not hasattr(serialization, "set_crc32_options"):
        yield
        return
    previous = serialization.get_crc32_options()
    serialization.set_crc32_options(False)
    try:
        yield
    finally:
        serialization.set_crc32_options(previous)


def _not_a_file(path: str) -> str:
    if os.path.isdir(path):
        return "it is a directory"
    return "it is not a regular file" if os.path.lexists(path) else "it does not exist"


def _read_tag(path: str) -> str:
    """The file name in ``last_checkpoint``, "" when it cannot be read as one (fvcore returns
    "" when the file vanished too). Only a regular file is opened: a FIFO would block."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return ""
        with open(path, "rb") as handle:
            raw = handle.read(4096)
        return raw.decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""
