"""Exact resume: make the training data stream and the random state functions of the position.

Why: detectron2's ``TrainingSampler`` restarts its stream from the seed after a restart, the
DataLoader workers reseed from a fresh base seed, ``AspectRatioGroupedDataset`` loses the
samples it was holding, and the model's random draws (anchor sampling, dropout) continue from
whatever state the new process has. A resumed run then sees different data than an
uninterrupted one.

How: the job keeps one seed (the sampler's, shared by all ranks, saved in every checkpoint).
Then

* sample ``p`` of rank ``r``'s stream is the sampler's element ``r + p * world_size`` (as in
  ``TrainingSampler``), and it is mapped (read, augmented) with the python/numpy/torch RNGs
  seeded from ``(seed, r + p * world_size)``: the result does not depend on which process or
  DataLoader worker maps it, nor on ``DATALOADER.NUM_WORKERS``;
* batches are grouped by aspect ratio in the main process from the dataset dicts' ``width``/
  ``height``, so the grouping after ``n`` iterations can be replayed without reading an image:
  a resumed stream starts with the samples the buckets held, then continues where it stopped;
* before step ``i`` the global RNGs of rank ``r`` are seeded from ``(seed, r, i)``;
* numbers the model keeps outside ``state_dict`` (RetinaNet's and FCOS's ``loss_normalizer``)
  are saved per rank and restored (:mod:`hfai_runtime.detectron2.model_state`);
* TorchScript functions run unoptimized during training (``torch.jit.optimized_execution(False)``):
  the profiling executor runs a function's first calls, and calls with new shapes, through
  other code than later calls -- with the autograd of a differentiable graph in place of the
  ops' own -- so the gradients of RetinaNet's and FCOS's focal loss
  (``fvcore.nn.sigmoid_focal_loss_jit``) would depend on how many steps this process has run.

Any checkpoint -- suspend or periodic -- thus resumes exactly: bit-identical weights wherever
the kernels are deterministic (as on CPU). (The BatchNorm running statistics of ranks other
than 0 are not saved by detectron2; they do not affect training, only their evaluation.)
A data loader this module does not recognize (a custom ``build_train_loader``) is left alone,
with a warning: then only the RNG part applies and the data stream restarts from its seed, as
in plain detectron2.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.utils.data as torchdata
from detectron2.data.common import AspectRatioGroupedDataset, MapDataset, ToIterableDataset
from detectron2.engine import HookBase
from detectron2.utils import comm

from hfai_runtime.detectron2 import _compat
from hfai_runtime.detectron2.model_state import AttributeState

logger = logging.getLogger(__name__)


def _seed_from(*key: int) -> int:
    """A well-mixed 63-bit seed from a tuple of ints. Negative ones are taken modulo 2**64:
    detectron2 main (e0ec4e1, data/build.py) seeds its TrainingSampler with cfg.SEED, -1 by
    default, and SeedSequence accepts only non-negative entropy."""
    high, low = np.random.SeedSequence([k % 2**64 for k in key]).generate_state(2)
    return (int(high) << 31) ^ int(low)


def seed_all(seed: int) -> None:
    """Seed python's, numpy's and torch's (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


@contextmanager
def _scoped_seed(seed: int) -> Iterator[None]:
    """Seed the CPU generators for one sample's mapping, then put the previous states back."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def _identity(sample: Any) -> Any:
    return sample


@dataclass
class _Source:
    """The parts of detectron2's training loader that the resumable one reuses."""

    dataset: MapDataset  # dataset dicts + mapper
    sampler: torchdata.Sampler  # a TrainingSampler (see _compat.is_training_sampler)
    batch_size: int  # per rank
    num_workers: int
    group_by_aspect: bool

    @classmethod
    def find(cls, loader: Any) -> _Source | None:
        """Recognize ``build_detection_train_loader``'s output, or return None."""
        group = isinstance(loader, AspectRatioGroupedDataset)
        torch_loader = loader.dataset if group else loader
        if not isinstance(torch_loader, torchdata.DataLoader):
            return None
        stream = torch_loader.dataset
        if not (
            isinstance(stream, ToIterableDataset)
            and isinstance(stream.dataset, MapDataset)
            and _compat.is_training_sampler(stream.sampler)
            and stream.shard_sampler
        ):
            return None
        batch_size = loader.batch_size if group else torch_loader.batch_size
        return cls(stream.dataset, stream.sampler, batch_size, torch_loader.num_workers, group)

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """This rank's stream as ``(first position, dataset indices)`` arrays, consecutive."""
        rank, world = _compat.sampler_shard(self.sampler)
        drawn = 0  # indices of the whole job's stream before this chunk
        for chunk in _compat.sampler_chunks(self.sampler):
            skip = (rank - drawn) % world
            mine = chunk[skip::world]
            if len(mine):
                yield (drawn + skip - rank) // world, mine
            drawn += len(chunk)

    def positions(self, first: int) -> Iterator[tuple[int, int]]:
        """``(position, dataset index)`` of this rank's stream from ``first`` on; the positions
        before it are skipped chunk by chunk, without a Python object each."""
        for start, indices in self.chunks():
            if start + len(indices) > first:
                skip = max(0, first - start)
                yield from enumerate(indices[skip:].tolist(), start + skip)


class _MappedStream(torchdata.IterableDataset):
    """Yields ``(dataset index, mapped dict)``: first the ``held`` ``(position, index)`` pairs,
    then the stream from position ``start`` on. DataLoader workers take turns, so the loader's
    output order is the stream order for any number of workers."""

    def __init__(self, source: _Source, seed: int, held: list[tuple[int, int]], start: int):
        self.source, self.seed, self.held, self.start = source, seed, held, start

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        info = torchdata.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        rank, world = _compat.sampler_shard(self.source.sampler)
        wanted = itertools.chain(self.held, self.source.positions(self.start))
        for turn, (position, index) in enumerate(wanted):
            if turn % workers == worker:
                with _scoped_seed(_seed_from(self.seed, rank + position * world)):
                    mapped = self.source.dataset[index]
                yield index, mapped  # outside the scope: the consumer's RNG is its own


class _Tail:
    """The last ``keep`` ``(position, index)`` pairs appended to a bucket."""

    def __init__(self, keep: int):
        self.keep = keep
        self.positions = self.indices = np.empty(0, dtype=np.int64)

    def extend(self, positions: np.ndarray, indices: np.ndarray) -> None:
        self.positions = _last(np.concatenate([self.positions, positions]), self.keep)
        self.indices = _last(np.concatenate([self.indices, indices]), self.keep)

    def last(self, count: int) -> list[tuple[int, int]]:
        return list(
            zip(_last(self.positions, count).tolist(), _last(self.indices, count).tolist(), strict=True)
        )


def _last(array: np.ndarray, count: int) -> np.ndarray:
    """The last ``count`` elements, all when there are fewer."""
    return array[max(0, len(array) - count) :]


class ResumableTrainLoader:
    """Batches of the trainer's stream after ``batches_done`` batches, identical to what an
    uninterrupted run would yield from there."""

    def __init__(self, source: _Source, seed: int, batches_done: int):
        self.source, self.seed = source, seed
        self._aspect = self._aspect_buckets() if source.group_by_aspect else None
        self.held, self.start = self._replay(batches_done)

    def _aspect_buckets(self) -> np.ndarray:
        """0 for landscape, 1 otherwise, per dataset index (as ``AspectRatioGroupedDataset``)."""
        dicts = _compat.mapped_items(self.source.dataset)
        buckets = np.empty(len(dicts), dtype=np.int8)
        for index in range(len(dicts)):
            record = dicts[index]
            if "width" not in record or "height" not in record:
                raise ValueError(f"dataset dict {index} has no width/height: cannot group by aspect ratio")
            buckets[index] = 0 if record["width"] > record["height"] else 1
        return buckets

    def _replay(self, batches_done: int) -> tuple[list[tuple[int, int]], int]:
        """The ``(position, index)`` pairs still held in the buckets after ``batches_done``
        batches, and the next position to read: bookkeeping only, no image is read, vectorized
        over the stream's chunks (a bucket emits a batch each time its count reaches the batch
        size, so the batches emitted up to a position are a monotone function of it)."""
        size = self.source.batch_size
        if self._aspect is None:
            return [], batches_done * size
        if not batches_done:
            return [], 0
        counts = np.zeros(2, dtype=np.int64)  # samples per bucket before this chunk
        tails = [_Tail(size - 1), _Tail(size - 1)]  # the last size - 1 of each bucket
        for start, indices in self.source.chunks():
            portrait = self._aspect[indices].astype(bool)
            cumulative = [counts[0] + np.cumsum(~portrait), counts[1] + np.cumsum(portrait)]
            emitted = cumulative[0] // size + cumulative[1] // size
            at = int(np.searchsorted(emitted, batches_done))  # the position of the last batch
            end = min(at + 1, len(indices))
            positions = np.arange(start, start + end)
            for bucket, members in enumerate((~portrait[:end], portrait[:end])):
                tails[bucket].extend(positions[members], indices[:end][members])
            if at < len(indices):
                held = [pair for b in (0, 1) for pair in tails[b].last(int(cumulative[b][at] % size))]
                return sorted(held), start + at + 1
            counts = np.array([cumulative[0][-1], cumulative[1][-1]])
        raise AssertionError("unreachable: the stream is infinite")

    def __iter__(self) -> Iterator[list[dict]]:
        loader = torchdata.DataLoader(
            _MappedStream(self.source, self.seed, self.held, self.start),
            batch_size=None,
            num_workers=self.source.num_workers,
            collate_fn=_identity,
            generator=torch.Generator().manual_seed(self.seed),
        )
        size = self.source.batch_size
        buckets: list[list[dict]] = [[], []]
        for index, mapped in loader:
            bucket = buckets[0 if self._aspect is None else self._aspect[index]]
            bucket.append(mapped)
            if len(bucket) == size:
                yield bucket[:]
                bucket.clear()


class ExactResume:
    """What :class:`~hfai_runtime.detectron2.checkpoint.SuspendCheckpointer` does for exact
    resume: attach at ``before_train``, reseed at ``before_step``, persist the seed and the
    model's per-rank attributes.

    It also persists the optimizer when the trainer does not: detectron2 0.6's
    ``DefaultTrainer.state_dict`` omits its inner ``SimpleTrainer`` (optimizer momenta, AMP
    scaler), which later detectron2 saves as ``"_trainer"``.
    """

    def __init__(self) -> None:
        self.seed: int | None = None
        self.attributes = AttributeState()
        self._training_scope = contextlib.ExitStack()

    def state_dict(self, trainer: Any) -> dict:
        state: dict[str, Any] = {} if self.seed is None else {"seed": self.seed}
        inner = _compat.inner_trainer_unsaved(trainer)
        if inner is not None:
            state["inner_trainer"] = inner.state_dict()
        attributes = self.attributes.state_dict()
        if attributes:
            state["model_attributes"] = attributes
        return state

    def load_state_dict(self, state: dict, trainer: Any) -> None:
        if "seed" in state:
            self.seed = int(state["seed"])
        inner = _compat.inner_trainer_unsaved(trainer)
        if inner is not None and "inner_trainer" in state:
            inner.load_state_dict(state["inner_trainer"])
        if "model_attributes" in state:
            self.attributes.load_state_dict(state["model_attributes"], _compat.inner_trainer(trainer).model)

    def attach(self, trainer: Any) -> None:
        """Take over the trainer's data loader, positioned after ``trainer.start_iter`` batches,
        start saving the model's per-rank attributes, and run TorchScript unoptimized until
        training ends."""
        inner = _compat.inner_trainer(trainer)
        self.attributes.start(inner.model)
        self._training_scope.enter_context(torch.jit.optimized_execution(False))
        _compat.run_hook_first(trainer, _FirstHook(self))
        source = _Source.find(inner.data_loader)
        if self.seed is None:
            self.seed = _compat.sampler_seed(source.sampler) if source else comm.shared_random_seed()
        if source is None:
            logger.warning(
                "Exact resume: unrecognized training data loader %s; the data stream "
                "will restart from its seed after a resume",
                type(inner.data_loader).__name__,
            )
            return
        _compat.set_sampler_seed(source.sampler, self.seed)
        try:
            loader = ResumableTrainLoader(source, self.seed, trainer.start_iter)
        except ValueError as err:
            logger.warning("Exact resume: %s; keeping detectron2's data loader", err)
            return
        _compat.replace_data_loader(inner, loader)  # the old iterator and its workers go with it
        logger.info(
            "Exact resume: data stream at iteration %d (seed %d, %d held samples)",
            trainer.start_iter,
            self.seed,
            len(loader.held),
        )

    def before_step(self, iteration: int) -> None:
        seed_all(_seed_from(self.seed, comm.get_rank(), iteration))

    def after_train(self) -> None:
        self._training_scope.close()


class _FirstHook(HookBase):
    """The part of :class:`ExactResume` that runs before every other hook: after each step it
    gathers the model's per-rank attributes (a collective), so that a checkpointer hook saving
    at this step saves this step's values; after training it undoes the TorchScript setting."""

    def __init__(self, resume: ExactResume):
        self.resume = resume

    def after_step(self) -> None:
        self.resume.attributes.after_step()

    def after_train(self) -> None:
        self.resume.after_train()
