"""The resumable training stream, in one process: started after n batches it yields exactly
what the uninterrupted stream yields from batch n on, whatever the number of DataLoader workers
-- with detectron2's own dataset, sampler and DatasetMapper (random flip, multi-scale resize)
and aspect-ratio grouping holding samples back across batches."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch

pytestmark = pytest.mark.detectron2  # also run against detectron2 main (make test)

BATCHES, BATCH = 9, 2


@pytest.fixture(scope="module")
def source(tiny_coco):
    from detectron2.config import get_cfg
    from detectron2.data import DatasetCatalog, build_detection_train_loader
    from detectron2.data.datasets import register_coco_instances

    from hfai_runtime.detectron2.resume import _Source

    root = tiny_coco
    name = "resume_stream_train"
    register_coco_instances(
        name, {}, str(root / "annotations" / "instances_train2017.json"), str(root / "train2017")
    )
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = (name,)
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (48, 56, 64), 96
    cfg.SOLVER.IMS_PER_BATCH = BATCH
    loader = build_detection_train_loader(cfg)
    yield _Source.find(loader)
    DatasetCatalog.remove(name)


def _batches(source, seed: int, done: int, workers: int, count: int):
    from hfai_runtime.detectron2.resume import ResumableTrainLoader

    source.num_workers = workers
    loader = ResumableTrainLoader(source, seed, done)
    return loader.held, list(itertools.islice(loader, count))


def _same(a: list[dict], b: list[dict]) -> bool:
    return all(
        x["file_name"] == y["file_name"]
        and torch.equal(x["image"], y["image"])
        and torch.equal(x["instances"].gt_boxes.tensor, y["instances"].gt_boxes.tensor)
        for x, y in zip(a, b, strict=True)
    )


def test_detectron2_loader_is_recognized(source):
    assert source is not None and source.group_by_aspect and source.batch_size == BATCH


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("grouping", [True, False])
def test_resumed_stream_continues_the_uninterrupted_one(source, workers, grouping):
    source = dataclasses.replace(source, group_by_aspect=grouping)
    _, full = _batches(source, 11, 0, 0, BATCHES)
    held_anywhere = False
    for done in range(1, BATCHES):
        held, rest = _batches(source, 11, done, workers, BATCHES - done)
        held_anywhere |= bool(held)
        assert all(_same(a, b) for a, b in zip(full[done:], rest, strict=True)), f"after {done} batches"
    assert held_anywhere == grouping, "aspect-ratio grouping should (only) hold samples back"
    # Augmentations really are random: flipped/resized differently under another seed.
    _, other = _batches(source, 12, 0, 0, BATCHES)
    assert not all(_same(a, b) for a, b in zip(full, other))


def _bucket_by_bucket(source, aspect, batches_done: int) -> tuple[list[tuple[int, int]], int]:
    """The definition the vectorized replay must meet: ``AspectRatioGroupedDataset``'s buckets
    filled sample by sample; what they hold after ``batches_done`` batches, and what comes next."""
    buckets: list[list[tuple[int, int]]] = [[], []]
    emitted, position = 0, -1
    positions = source.positions(0)
    while emitted < batches_done:
        position, index = next(positions)
        bucket = buckets[aspect[index]]
        bucket.append((position, index))
        if len(bucket) == source.batch_size:
            bucket.clear()
            emitted += 1
    return sorted(buckets[0] + buckets[1]), position + 1


@pytest.mark.parametrize("landscape", [0.0, 0.05, 0.5, 1.0])
def test_replay_matches_the_buckets_filled_one_by_one(landscape):
    """Vectorized over the stream, across epochs and ranks, with rare and absent buckets."""
    import numpy as np
    from detectron2.data.common import MapDataset
    from detectron2.data.samplers import TrainingSampler

    from hfai_runtime.detectron2.resume import ResumableTrainLoader, _Source

    rng = np.random.default_rng(int(landscape * 100))
    for size, world in [(1, 1), (2, 3), (4, 2), (3, 8)]:
        dicts = [{"width": 4 if rng.random() < landscape else 3, "height": 3} for _ in range(23)]
        sampler = TrainingSampler(len(dicts), seed=int(rng.integers(1000)))
        sampler._rank, sampler._world_size = world - 1, world
        source = _Source(MapDataset(dicts, _identity), sampler, size, 0, group_by_aspect=True)
        for done in [0, 1, 2, 5, 17, 60]:
            loader = ResumableTrainLoader(source, 0, done)
            assert (loader.held, loader.start) == _bucket_by_bucket(source, loader._aspect, done), (
                size,
                done,
            )


def _identity(x):
    return x
