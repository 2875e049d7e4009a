"""Every use of a private name of detectron2 or fvcore by the detectron2 glue, in one place.

Exact resume has to reach inside detectron2's training loader and trainer: there is no public
API for "the sampler's stream from position n" or "replace the loader of a running trainer".
Each access is one small function here, checked against the versions below, and
``tests/test_compat.py`` exercises every one of them on real objects, so an upstream change
fails there, by name, rather than as a wrong resume.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from detectron2.data.samplers import TrainingSampler
from detectron2.engine.train_loop import HookBase, TrainerBase
from detectron2.utils import comm

#: The releases these accesses were checked against: detectron2 0.6 and main @ e0ec4e1 (what the
#: CUDA image compiles; ``make test`` runs tests/test_compat.py against both), fvcore
#: 0.1.5.post20221221.
CHECKED_AGAINST = {"detectron2": ("0.6", "main@e0ec4e1"), "fvcore": ("0.1.5.post20221221",)}


# --- detectron2.data.samplers.TrainingSampler (distributed_sampler.py@v0.6) -------------------


def is_training_sampler(sampler: Any) -> bool:
    """Whether ``sampler`` keeps ``TrainingSampler``'s seeded infinite stream."""
    return all(hasattr(sampler, name) for name in ("_infinite_indices", "_seed", "_rank", "_world_size"))


def sampler_stream(sampler: Any) -> Iterator[int]:
    """The whole job's index stream, before ``TrainingSampler`` shards it by rank."""
    return sampler._infinite_indices()


#: Indices per chunk of :func:`sampler_chunks` for a sampler whose stream it cannot draw by epochs.
STREAM_CHUNK = 1 << 16


def sampler_chunks(sampler: Any) -> Iterator[np.ndarray]:
    """:func:`sampler_stream` as consecutive int64 arrays, so that a resume can skip millions of
    indices without a Python object for each.

    ``TrainingSampler``'s own stream is drawn epoch by epoch as its ``_infinite_indices`` draws
    it (one ``randperm`` of a generator seeded with ``_seed``, or ``arange``: same on 0.6 and
    main@e0ec4e1); a subclass that overrides it (``RandomSubsetTrainingSampler``,
    ``RepeatFactorTrainingSampler``) is read from its stream in chunks of :data:`STREAM_CHUNK`.
    """
    if type(sampler)._infinite_indices is TrainingSampler._infinite_indices:
        generator = torch.Generator()
        generator.manual_seed(sampler._seed)
        while True:
            if sampler._shuffle:
                yield _randperm_one_thread(sampler._size, generator).numpy()
            else:
                yield np.arange(sampler._size, dtype=np.int64)
    stream = sampler_stream(sampler)
    while True:
        yield np.fromiter(itertools.islice(stream, STREAM_CHUNK), dtype=np.int64, count=STREAM_CHUNK)


def _randperm_one_thread(size: int, generator: torch.Generator) -> torch.Tensor:
    """``torch.randperm`` on one thread: the same permutation as on several (the generator
    decides it; tests/test_compat.py checks), 10x faster on a machine whose cores are busy --
    the other ranks' -- where the threads of its parallel path wait for one another."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torch.randperm(size, generator=generator)
    finally:
        torch.set_num_threads(threads)


def sampler_shard(sampler: Any) -> tuple[int, int]:
    """``(rank, world_size)``: this rank takes every ``world_size``-th index from ``rank``."""
    return sampler._rank, sampler._world_size


def sampler_seed(sampler: Any) -> int:
    return int(sampler._seed)


def set_sampler_seed(sampler: Any, seed: int) -> None:
    sampler._seed = seed


# --- detectron2.data.common.MapDataset (common.py@v0.6) ---------------------------------------


def mapped_items(dataset: Any) -> Any:
    """The dataset dicts a ``MapDataset`` maps (its mapper is applied on ``__getitem__``)."""
    return dataset._dataset


# --- detectron2.engine: DefaultTrainer around SimpleTrainer (defaults.py, train_loop.py@v0.6) ---


def inner_trainer(trainer: Any) -> Any:
    """The ``SimpleTrainer`` that runs the steps: ``DefaultTrainer._trainer``, or ``trainer``."""
    return getattr(trainer, "_trainer", trainer)


def inner_trainer_unsaved(trainer: Any) -> Any:
    """The inner trainer if the outer one's ``state_dict`` leaves it out, else None.

    detectron2 0.6's ``DefaultTrainer`` inherits ``TrainerBase.state_dict`` (iteration and
    hooks only: no optimizer); later versions save ``"_trainer"`` themselves.
    """
    inner = getattr(trainer, "_trainer", None)
    if inner is None or trainer.__class__.state_dict is not TrainerBase.state_dict:  # a proxy's too
        return None
    return inner


def replace_data_loader(inner: Any, loader: Any) -> None:
    """Make ``inner`` (a ``SimpleTrainer``) take its next batches from ``loader``: its public
    ``reset_data_loader`` after 0.6 (train_loop.py@e0ec4e1), by hand in 0.6, which has none."""
    if hasattr(inner, "reset_data_loader"):
        inner.reset_data_loader(lambda: loader)
        return
    inner.data_loader = loader
    inner._data_loader_iter = iter(loader)


def run_hook_first(trainer: Any, hook: HookBase) -> None:
    """Register ``hook`` before every other hook (``register_hooks`` appends), so that its
    ``after_step`` runs before a checkpointer's. Safe from within another hook's
    ``before_train``: the list being iterated is not changed, a new one replaces it."""
    hook.trainer = trainer if isinstance(trainer, weakref.ProxyTypes) else weakref.proxy(trainer)
    trainer._hooks = [hook, *trainer._hooks]


# --- detectron2.utils.comm and engine.defaults, for the launcher (comm.py, defaults.py@v0.6) ----


def create_local_process_group(procs_per_machine: int) -> None:
    """The group of this machine's ranks, which ``comm.get_local_rank/size`` use: detectron2's
    ``comm.create_local_process_group`` where it has one (after 0.6), else the same by hand.
    A collective: every rank calls it."""
    if hasattr(comm, "create_local_process_group"):
        comm.create_local_process_group(procs_per_machine)
        return
    machine = dist.get_rank() // procs_per_machine
    for index in range(dist.get_world_size() // procs_per_machine):
        group = dist.new_group(list(range(index * procs_per_machine, (index + 1) * procs_per_machine)))
        if index == machine:
            comm._LOCAL_PROCESS_GROUP = group


def forget_process_groups() -> None:
    """Drop the references detectron2 keeps to process groups (the local group, the cached
    gloo group), before ``destroy_process_group``: a group's threads end with its last one."""
    comm._LOCAL_PROCESS_GROUP = None
    comm._get_global_gloo_group.cache_clear()
    create = getattr(comm, "create_local_process_group", None)
    if hasattr(create, "cache_clear"):  # lru_cached after 0.6: it would not create a new group
        create.cache_clear()


def let_create_ddp_model_use(ddp_class: type) -> None:
    """Make ``detectron2.engine.defaults.create_ddp_model`` wrap models in ``ddp_class`` (it
    looks ``DistributedDataParallel`` up in its module's globals), however it was imported."""
    from detectron2.engine import defaults

    defaults.DistributedDataParallel = ddp_class


# --- detectron2.checkpoint.DetectionCheckpointer (detection_checkpoint.py@e0ec4e1) -----------


def end_failed_load(checkpointer: Any) -> None:
    """Let ``checkpointer`` load again after a ``load`` that raised. After 0.6,
    ``DetectionCheckpointer.load`` keeps the URL being loaded in ``_parsed_url_during_load``,
    asserts on entry that it is None and resets it only when the load returns: one failed load
    would make every later one fail that assertion. 0.6 has no such attribute."""
    if getattr(checkpointer, "_parsed_url_during_load", None) is not None:
        checkpointer._parsed_url_during_load = None


# --- fvcore.common.checkpoint.Checkpointer (checkpoint.py@0.1.5.post20221221) -----------------


def with_mixin(obj: Any, mixin: type) -> None:
    """Give ``obj`` the behaviour of ``mixin`` on top of its own class (a subclass of both, made
    once per class), so a checkpointer detectron2 already built gains the overrides that the
    ``AtomicCheckpointer`` subclass has, whatever subclass of ``Checkpointer`` it is."""
    cls = type(obj)
    if isinstance(obj, mixin):
        return
    combined = _MIXED.get((mixin, cls))
    if combined is None:
        combined = type(f"{mixin.__name__}{cls.__name__}", (mixin, cls), {"__module__": mixin.__module__})
        _MIXED[(mixin, cls)] = combined
    obj.__class__ = combined


_MIXED: dict[tuple[type, type], type] = {}
