"""One test per private detectron2/fvcore access in ``hfai_runtime.detectron2._compat``, on real
upstream objects: when an upgrade renames or changes one, the test of that access fails and says
which, instead of a resume silently going wrong."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data.common import MapDataset
from detectron2.data.samplers import TrainingSampler
from detectron2.engine import HookBase, SimpleTrainer
from detectron2.engine.train_loop import TrainerBase

from hfai_runtime.detectron2 import _compat

pytestmark = pytest.mark.detectron2  # also run against detectron2 main (make test)


def test_training_sampler_stream_shard_and_seed():
    sampler = TrainingSampler(10, shuffle=True, seed=3)
    assert _compat.is_training_sampler(sampler), (
        "TrainingSampler lost _infinite_indices/_seed/_rank/_world_size"
    )
    assert _compat.sampler_shard(sampler) == (0, 1)
    assert _compat.sampler_seed(sampler) == 3
    # The unsharded stream is what the sampler shards by rank (here: rank 0 of 1, all of it).
    assert list(itertools.islice(_compat.sampler_stream(sampler), 25)) == list(
        itertools.islice(iter(sampler), 25)
    )
    before = list(itertools.islice(_compat.sampler_stream(sampler), 25))
    _compat.set_sampler_seed(sampler, 4)
    assert list(itertools.islice(_compat.sampler_stream(sampler), 25)) != before, "the stream ignores _seed"
    assert not _compat.is_training_sampler(torch.utils.data.SequentialSampler(range(3)))


@pytest.mark.parametrize("shuffle", [True, False])
def test_sampler_chunks_are_the_stream(shuffle):
    """Drawn epoch by epoch for TrainingSampler itself, read from the stream for a subclass that
    draws its own (RandomSubsetTrainingSampler): either way, the stream's indices in order."""
    from detectron2.data.samplers import RandomSubsetTrainingSampler

    for sampler in (
        TrainingSampler(7, shuffle=shuffle, seed=3),
        RandomSubsetTrainingSampler(7, 0.5, shuffle=shuffle, seed_shuffle=3, seed_subset=5),
    ):
        chunks = _compat.sampler_chunks(sampler)
        drawn = np.concatenate([next(chunks) for _ in range(3)])
        assert drawn.tolist()[:21] == list(itertools.islice(_compat.sampler_stream(sampler), 21))


def test_sampler_chunks_draw_what_the_sampler_draws_on_any_number_of_threads():
    """A size where torch's randperm takes its parallel path; the chunks draw on one thread."""
    threads = torch.get_num_threads()
    sampler = TrainingSampler(150_000, seed=9)
    try:
        torch.set_num_threads(4)
        expected = list(itertools.islice(_compat.sampler_stream(sampler), 300_000))
        chunks = _compat.sampler_chunks(sampler)
        assert np.concatenate([next(chunks), next(chunks)]).tolist() == expected
        assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(threads)


def test_map_dataset_items():
    items = [{"file_name": "a"}, {"file_name": "b"}]
    dataset = MapDataset(items, lambda d: d["file_name"])
    assert _compat.mapped_items(dataset) is items and dataset[1] == "b"


class _Sentinel(Exception):
    pass


class _Raising:
    """A data loader whose first batch raises: proves the trainer reads from it."""

    def __iter__(self):  # a generator: iter() works (0.6 calls it at once), next() raises
        raise _Sentinel
        yield


def _simple_trainer() -> SimpleTrainer:
    model = torch.nn.Linear(1, 1)

    class Loss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, batch):
            return {"loss": self.model(batch).sum()}

    loss = Loss()
    return SimpleTrainer(loss, [torch.ones(2, 1)] * 3, torch.optim.SGD(loss.parameters(), lr=0.1))


def test_replace_data_loader_of_a_simple_trainer():
    from detectron2.utils.events import EventStorage

    trainer = _simple_trainer()
    _compat.replace_data_loader(trainer, _Raising())
    assert trainer.data_loader.__class__ is _Raising
    with EventStorage(0), pytest.raises(_Sentinel):
        trainer.run_step()


def test_inner_trainer_of_default_trainer():
    """DefaultTrainer keeps its SimpleTrainer as ``_trainer``; in 0.6 its state_dict leaves it out
    (later versions save it as "_trainer", and then the hook must not save it again)."""
    from detectron2.engine import DefaultTrainer

    assert "self._trainer" in _source(DefaultTrainer.__init__), "DefaultTrainer no longer has _trainer"
    inner = _simple_trainer()
    outer = TrainerBase()
    outer._trainer = inner
    assert _compat.inner_trainer(outer) is inner and _compat.inner_trainer(inner) is inner
    assert _compat.inner_trainer_unsaved(outer) is inner
    saves_inner = "_trainer" in _source(DefaultTrainer.state_dict)
    assert (DefaultTrainer.state_dict is TrainerBase.state_dict) != saves_inner


def _source(function) -> str:
    import inspect

    return inspect.getsource(function)


def test_run_hook_first_from_within_before_train():
    calls = []

    class Recorder(HookBase):
        def __init__(self, name):
            self.name = name

        def before_train(self):
            calls.append(("before_train", self.name))
            if self.name == "late":
                _compat.run_hook_first(self.trainer, Recorder("first"))

        def after_step(self):
            calls.append(("after_step", self.name))

    trainer = TrainerBase()
    trainer.register_hooks([Recorder("early"), Recorder("late")])
    trainer.before_train()
    trainer.after_step()
    assert calls == [
        ("before_train", "early"),
        ("before_train", "late"),
        ("after_step", "first"),
        ("after_step", "early"),
        ("after_step", "late"),
    ]


def test_with_mixin_keeps_the_checkpointers_own_class(tmp_path):
    class Mixin:
        def save(self, name, **extra):
            return ("mixin", super().save.__qualname__)

    class Users(DetectionCheckpointer):
        pass

    for cls in (DetectionCheckpointer, Users):
        checkpointer = cls(torch.nn.Linear(1, 1), str(tmp_path))
        _compat.with_mixin(checkpointer, Mixin)
        _compat.with_mixin(checkpointer, Mixin)  # idempotent
        assert isinstance(checkpointer, cls) and isinstance(checkpointer, Mixin)
        assert type(checkpointer).__mro__[1:3] == (Mixin, cls)
        assert checkpointer.save("x") == ("mixin", "Checkpointer.save")


def test_a_failed_load_does_not_block_the_next(tmp_path):
    checkpointer = DetectionCheckpointer(torch.nn.Linear(1, 1), str(tmp_path))
    checkpointer.save("good")
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(Exception, match="zip archive|pickle|load"):
        checkpointer.load(str(tmp_path / "bad.pth"))
    _compat.end_failed_load(checkpointer)
    assert checkpointer.load(str(tmp_path / "good.pth")) == {}  # every saved key was restored


@pytest.fixture
def one_process_group(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        yield
    finally:
        _compat.forget_process_groups()
        dist.destroy_process_group()


def test_local_process_group_create_and_forget(one_process_group):
    from detectron2.utils import comm

    _compat.create_local_process_group(1)
    assert (comm.get_local_rank(), comm.get_local_size()) == (0, 1)
    assert comm._LOCAL_PROCESS_GROUP is not None
    _compat.forget_process_groups()
    assert comm._LOCAL_PROCESS_GROUP is None and comm._get_global_gloo_group.cache_info().currsize == 0
    _compat.create_local_process_group(1)  # and again, as a second job in this process would
    assert comm.get_local_size() == 1


def test_create_ddp_model_uses_the_class_given():
    from detectron2.engine import defaults

    original = defaults.DistributedDataParallel

    class Wrapper(torch.nn.parallel.DistributedDataParallel):
        pass

    try:
        _compat.let_create_ddp_model_use(Wrapper)
        assert defaults.create_ddp_model.__globals__["DistributedDataParallel"] is Wrapper
    finally:
        _compat.let_create_ddp_model_use(original)
