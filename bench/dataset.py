"""Images/s through detectron2's ``DatasetMapper`` (is_train=True), reading the same images from
an FFRecord pack and as loose files, in the same run.

Three ways to name the same image:

* ``loose``  -- ``<dir>/coco/train2017/N.png``, the baseline;
* ``pack``   -- ``ffrecord://bench/train2017/N.png``, a custom dataset on a pack;
* ``mount``  -- ``<dir>/datasets/coco/train2017/N.png`` with the loose file absent: HFAI's recipe,
  the way detectron2's builtin datasets reach the pack (one failed ``stat``, then the pack).

Each variant maps every image once per round; rounds alternate the order of the variants, and
each variant's fastest round counts (as ``timeit`` does: on a shared machine, slower rounds
measure the neighbours). Also timed: the raw read alone (``PathManager.open(...).read()``) and a
``DataLoader`` with 2 forked workers. Everything sits in the page cache: this measures the
handler's CPU overhead, not the disk (a pack's gain on a cold network filesystem -- one open file
instead of one per image -- is not shown here).

``python -m bench.dataset [--rounds N]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Callable

PREFIX = "bench"
#: (image side in px, number of images): the tests' tiny images, and larger ones where decoding
#: and resizing dominate.
CASES = ((64, 400), (320, 120))


def _make_data(root: Path, size: int, count: int) -> dict[str, list[dict]]:
    """Loose files, a pack of them, the pack mounted on a folder without them; dataset dicts."""
    from detectron2.data.datasets import load_coco_json

    from hfai_runtime.detectron2 import register_ffrecord_handler
    from hfai_runtime.ffrecord import pack_folder
    from hfai_runtime.synthetic import make_coco_tree

    coco = make_coco_tree(root / "coco", num_train=count, num_val=0, image_size=size)
    mounted = root / "datasets" / "coco"
    mounted.mkdir(parents=True)
    pack_folder(str(coco), str(mounted / "coco.ffr"))
    register_ffrecord_handler(mounted / "coco.ffr", f"{PREFIX}{size}")
    json_file = str(coco / "annotations" / "instances_train2017.json")
    roots = {"loose": str(coco / "train2017"), "pack": f"ffrecord://{PREFIX}{size}/train2017",
             "mount": str(mounted / "train2017")}
    return {name: load_coco_json(json_file, image_root) for name, image_root in roots.items()}


def _mapper(size: int):
    from detectron2.config import get_cfg
    from detectron2.data import DatasetMapper

    cfg = get_cfg()
    cfg.MODEL.MASK_ON = True
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (size,), size
    return DatasetMapper(cfg, is_train=True)


def _read(dicts: list[dict]) -> None:
    from detectron2.utils.file_io import PathManager

    for d in dicts:
        with PathManager.open(d["file_name"], "rb") as f:
            f.read()


def _loader(mapper) -> Callable[[list[dict]], None]:
    import torch.utils.data
    from detectron2.data.common import MapDataset

    def run(dicts: list[dict]) -> None:
        loader = torch.utils.data.DataLoader(
            MapDataset(dicts, mapper), batch_size=None, num_workers=2,
            multiprocessing_context="fork", collate_fn=lambda x: x,
        )
        for _ in loader:
            pass

    return run


def _images_per_s(work: Callable[[list[dict]], None], variants: dict[str, list[dict]], rounds: int) -> dict[str, float]:
    """Images/s of each variant's fastest round of ``work``, alternating the variants' order."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            start = time.perf_counter()
            work(variants[name])
            times[name].append(time.perf_counter() - start)
    return {name: len(variants[name]) / min(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    import numpy as np

    print(f"{'images':>12} {'stage':>18} {'loose img/s':>12} {'pack':>8} {'mount':>8}")
    for size, count in CASES:
        with tempfile.TemporaryDirectory(prefix="bench-dataset-") as tmp:
            variants = _make_data(Path(tmp), size, count)
            mapper = _mapper(size)
            np.random.seed(0)
            stages = {
                "read only": _read,
                "DatasetMapper": lambda dicts: [mapper(d) for d in dicts],
                "DataLoader(2 wk)": _loader(mapper),
            }
            for stage, work in stages.items():
                rate = _images_per_s(work, variants, args.rounds)
                print(f"{count:>5} x {size:>3}px {stage:>18} {rate['loose']:>12.0f} "
                      f"{rate['pack'] / rate['loose']:>7.2f}x {rate['mount'] / rate['loose']:>7.2f}x", flush=True)


if __name__ == "__main__":
    main()
