"""Model state that ``state_dict`` misses: numbers kept as plain attributes, per rank.

detectron2's one-stage detectors (RetinaNet, FCOS) normalise their loss by an exponential
moving average of the number of foreground anchors, ``loss_normalizer``, which
``DenseDetector._ema_update`` keeps as a plain float attribute (dense_detector.py@v0.6). It is
neither a parameter nor a buffer, so no checkpoint holds it and a resumed run restarts it from
its initial value. Each rank updates it from its own batches (no all-reduce), so every rank has
its own value.

:class:`AttributeState` treats any number like it the same way: model attributes (outside
parameters and buffers) that are ``int``/``float``/``bool`` and change during training are
gathered from every rank after each step, saved with the checkpoint (one entry per rank) and
put back on each rank at resume. Other attributes that change during training cannot be saved
so: at save time they are named in a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from numbers import Number
from typing import Any

import torch
from detectron2.utils import comm
from torch.nn.parallel import DistributedDataParallel

logger = logging.getLogger(__name__)

# nn.Module's own bookkeeping (``training``, the hook dicts, ...): not model state.
_MODULE_INTERNALS = frozenset(torch.nn.Module().__dict__)
_VALUE_TYPES = (Number, str, bytes, type(None))


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside detectron2's DDP wrapper (whose own attributes are DDP's)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def _attributes(model: torch.nn.Module) -> Iterator[tuple[str, str, Any]]:
    """``(module path, attribute, value)`` of the plain attributes of every submodule."""
    for path, module in model.named_modules():
        for name, value in vars(module).items():
            if name not in _MODULE_INTERNALS:
                yield path, name, value


def _key(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _fingerprint(value: Any) -> Any:
    """Equal for an unchanged attribute: immutable scalars by value, anything else by identity."""
    return ("value", type(value), value) if isinstance(value, _VALUE_TYPES) else ("id", id(value))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float))  # bool too; numpy's float64 is a float


class AttributeState:
    """Snapshot at the start of training, per-step gathering, save, restore and the warning."""

    def __init__(self) -> None:
        self.model: torch.nn.Module | None = None
        self._baseline: dict[str, Any] = {}
        self._tracked: list[str] | None = None  # agreed by all ranks after the first step
        self._slots: list[tuple[str, torch.nn.Module, str]] = []
        self._restored: set[str] = set()
        self._per_rank: list[dict[str, float | int | bool]] = []
        self._warned: frozenset[str] = frozenset()

    def start(self, model: torch.nn.Module) -> None:
        """Remember the attributes as training starts (after any resume has restored them)."""
        self.model = unwrap(model)
        self._baseline = {_key(p, n): _fingerprint(v) for p, n, v in _attributes(self.model)}

    def _changed(self) -> Iterator[tuple[str, Any]]:
        for path, name, value in _attributes(self.model):
            key = _key(path, name)
            if self._baseline.get(key) != _fingerprint(value):
                yield key, value

    def _local_values(self) -> dict[str, Any]:
        missing = object()
        values = ((key, getattr(module, name, missing)) for key, module, name in self._slots)
        return {key: value for key, value in values if value is not missing}

    def after_step(self) -> None:
        """A collective (every rank calls it after every step): gather the tracked numbers."""
        world = comm.get_world_size()
        if self._tracked is None:  # the first step decides, the same way on every rank
            local = sorted({k for k, v in self._changed() if _is_number(v)} | self._restored)
            names = comm.all_gather(local) if world > 1 else [local]
            self._tracked = sorted(set().union(*names))
            modules = dict(self.model.named_modules())
            self._slots = [
                (key, modules[key.rpartition(".")[0]], key.rpartition(".")[2])
                for key in self._tracked
                if key.rpartition(".")[0] in modules
            ]
            if self._tracked:
                logger.info(
                    "Saving per-rank model attributes with each checkpoint: %s", ", ".join(self._tracked)
                )
        if self._tracked:
            local = self._local_values()
            self._per_rank = comm.all_gather(local) if world > 1 else [local]

    def state_dict(self) -> dict[str, Any]:
        """The gathered numbers (rank 0 saves); warns about changed attributes left out."""
        if self.model is not None:
            self._warn_unsaved()
        return {"per_rank": self._per_rank} if self._per_rank else {}

    def _warn_unsaved(self) -> None:
        tracked = set(self._tracked or ())
        unsaved = frozenset(
            f"{key} ({type(value).__name__})" for key, value in self._changed() if key not in tracked
        )
        if unsaved and unsaved != self._warned:
            logger.warning(
                "Model attributes changed during training but are not in the checkpoint, so a resumed "
                "run starts them afresh and will not match an uninterrupted one: %s. Keep such state "
                "in a registered buffer (register_buffer), or as int/float attributes, which are saved",
                ", ".join(sorted(unsaved)),
            )
            self._warned = unsaved

    def load_state_dict(self, state: dict[str, Any], model: torch.nn.Module) -> None:
        """Put this rank's saved numbers back on ``model`` (every rank loads the checkpoint)."""
        per_rank = state.get("per_rank") or []
        if not per_rank:
            return
        rank = comm.get_rank()
        if len(per_rank) != comm.get_world_size():
            logger.warning(
                "The checkpoint holds model attributes of %d ranks, this job has %d: ranks "
                "without their own start them from rank 0's",
                len(per_rank),
                comm.get_world_size(),
            )
        values = per_rank[rank] if rank < len(per_rank) else per_rank[0]
        modules = dict(unwrap(model).named_modules())
        for key, value in values.items():
            path, _, name = key.rpartition(".")
            if path not in modules:
                logger.warning("Checkpointed model attribute %s: no module %r in this model", key, path)
                continue
            setattr(modules[path], name, value)
            self._restored.add(key)
