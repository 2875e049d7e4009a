"""What a resume may load from ``OUTPUT_DIR``, and how: checkpoints are data, never code.

``OUTPUT_DIR`` is a folder that other people, scripts and pods write to, so a resume treats
what it finds there as untrusted input (issue 22):

* ``last_checkpoint`` must name a file name without control characters (a NUL byte, a newline:
  :class:`UnusableCheckpoint`, and the fallback search takes over), ending in ``.pth`` -- the
  runtime's own checkpoints. A ``.pkl`` is refused (:class:`CheckpointRefused`): detectron2
  loads it with ``pickle.load``, which runs whatever code the file names;
* the file must be inside ``OUTPUT_DIR`` -- checked on the descriptor actually opened
  (``/proc/self/fd``), so a symlink out, or one swapped in after the check, is refused;
* it is read with ``torch.load(weights_only=True)``, passed explicitly (so that
  ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` cannot turn it off), allowing on top of torch's own list
  only :data:`SAVED_STATE_GLOBALS`, inside a ``safe_globals`` context (nothing is added for the
  rest of the process). A file that names anything else (``os.system``, a class of the user's)
  is reported by name and nothing in it runs.

Model-zoo weights (``MODEL.WEIGHTS``, often a ``.pkl``) when there is nothing to resume are
detectron2's business, loaded as detectron2 loads them: that file is the user's choice, not
something found in a shared folder (docs/trust-boundaries.md).
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

try:
    from numpy._core.multiarray import scalar as _numpy_scalar
except ImportError:  # numpy < 2
    from numpy.core.multiarray import scalar as _numpy_scalar

#: fvcore's name for the file that names the checkpoint to resume from.
TAG_FILE = "last_checkpoint"
#: The suffix of the checkpoints the runtime writes (fvcore's ``Checkpointer.save``).
CHECKPOINT_SUFFIX = ".pth"

#: What a training checkpoint holds beyond torch's default ``weights_only`` list (tensors,
#: ``OrderedDict``, ``Counter``, plain containers and numbers): numpy scalars, which
#: ``AttributeState`` saves when a model keeps one as a plain attribute (``np.float64`` is a
#: ``float``). Each is rebuilt from a dtype and raw bytes; none calls anything of the file's.
SAVED_STATE_GLOBALS: list[Any] = [
    _numpy_scalar,
    np.dtype,
    *(type(np.dtype(code)) for code in "?bhilqBHILQefd"),
]


class CheckpointRefused(RuntimeError):
    """Training must not start: resuming would use a file it must not, or none is usable."""


class UnusableCheckpoint(ValueError):
    """A checkpoint file that cannot be resumed from; the message names it and says why."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"checkpoint {path} cannot be resumed from: {reason}")
        self.path, self.reason = path, reason


def checked_tag_name(name: str, output_dir: str) -> str:
    """The path of the checkpoint that ``last_checkpoint`` names (``name``), if a resume may
    load it; :class:`UnusableCheckpoint` for a name that is no file name, else
    :class:`CheckpointRefused` for a file outside ``output_dir`` or not a ``.pth``."""
    tag = os.path.join(output_dir, TAG_FILE)
    if not name.isprintable():
        raise UnusableCheckpoint(tag, f"it holds {name!r}, not a file name")
    path = os.path.join(output_dir, name)
    if not is_inside(os.path.realpath(path), output_dir):
        raise CheckpointRefused(
            f"{tag} names {name!r}, which is outside OUTPUT_DIR {output_dir}: refused. Resume only "
            "continues checkpoints of this OUTPUT_DIR; to start from another checkpoint, set "
            "MODEL.WEIGHTS and delete last_checkpoint"
        )
    if not name.endswith(CHECKPOINT_SUFFIX):
        raise CheckpointRefused(
            f"{tag} names {name!r}, not a {CHECKPOINT_SUFFIX} checkpoint of this runtime: refused "
            "(a .pkl is unpickled, which runs any code it names). To start from those weights, "
            "set MODEL.WEIGHTS to the file and delete last_checkpoint"
        )
    return path


def is_inside(path: str, output_dir: str) -> bool:
    """Whether the resolved ``path`` lies in ``output_dir`` (resolved too)."""
    root = os.path.realpath(output_dir)
    return os.path.commonpath([root, path]) == root


def fallback_problem(path: str, output_dir: str) -> str | None:
    """Why the fallback search must skip the candidate ``path`` (a ``*.pth`` entry of
    ``output_dir``), or None: only regular files inside ``output_dir`` qualify."""
    target = os.path.realpath(path)
    if not is_inside(target, output_dir):
        return f"it is a symbolic link to {target}, outside OUTPUT_DIR: refused"
    try:
        regular = stat.S_ISREG(os.stat(target).st_mode)
    except OSError as err:
        return f"it cannot be read ({err.strerror})"
    return None if regular else "it is not a regular file"


def load_checkpoint_data(path: str, output_dir: str) -> dict[str, Any]:
    """The training checkpoint at ``path``, read as data only (see the module docstring), or
    :class:`UnusableCheckpoint` naming the file and saying why."""
    if not path.endswith(CHECKPOINT_SUFFIX):
        raise UnusableCheckpoint(path, f"only {CHECKPOINT_SUFFIX} checkpoints are resumed from")
    with _open_inside(path, output_dir) as handle:
        try:
            with torch.serialization.safe_globals(SAVED_STATE_GLOBALS):
                loaded = torch.load(handle, map_location="cpu", weights_only=True)
        except Exception as err:  # torch.load's errors on damaged files vary: miniz, EOF, pickle
            raise UnusableCheckpoint(path, _load_error(err)) from None
    if not _is_training_checkpoint(loaded):
        raise UnusableCheckpoint(path, "it is not a training checkpoint (no model weights and iteration)")
    return loaded


def _open_inside(path: str, output_dir: str) -> io.BufferedReader:
    """``path`` opened for reading, once the descriptor is known to be a regular file inside
    ``output_dir`` (a FIFO opens without blocking and is refused)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        raise UnusableCheckpoint(path, f"it cannot be opened ({err.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnusableCheckpoint(path, "it is not a regular file")
        opened = _opened_path(fd, path)
        if not is_inside(opened, output_dir):
            raise UnusableCheckpoint(path, f"it leads to {opened}, outside OUTPUT_DIR: refused")
        return open(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _opened_path(fd: int, path: str) -> str:
    """Where the open descriptor ``fd`` really is (Linux); elsewhere ``path`` resolved now."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return os.path.realpath(path)


def _load_error(err: Exception) -> str:
    """One line for a failed load; for a file that names code, what it named."""
    message = f"{type(err).__name__}: {err}".strip()
    if "Weights only load failed" in message:
        named = next((line for line in message.splitlines() if "GLOBAL" in line or "got <" in line), "")
        return f"it holds more than data, which is never run ({named.strip() or 'unsupported global'})"
    return message.splitlines()[0]


def _is_training_checkpoint(loaded: Any) -> bool:
    """What a detectron2 trainer saves: the model's weights and the iteration (directly, as
    the checkpointer hooks pass it, or in the trainer's own state)."""
    if not isinstance(loaded, Mapping) or not isinstance(loaded.get("model"), Mapping):
        return False
    trainer = loaded.get("trainer")
    return "iteration" in loaded or (isinstance(trainer, Mapping) and "iteration" in trainer)
