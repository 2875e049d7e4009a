"""Images/s through detectron2's ``DatasetMapper`` (is_train=True), reading the same images from
an FFRecord pack and as loose files, in the same run.

Three ways to name the same image:

* ``loose``  -- ``<dir>/coco/train2017/N.png``, the baseline;
* ``pack``   -- ``ffrecord://bench<side>/train2017/N.png``, a custom dataset on a pack;
* ``mount``  -- ``<dir>/datasets/coco/train2017/N.png`` with the loose file absent: HFAI's recipe,
  the way detectron2's builtin datasets reach the pack (one failed ``stat``, then the pack).

In this process, the variants take turns image by image (the order alternating), each call is
timed in CPU time (``time.process_time``: on a shared machine, wall time mostly measures the
neighbours), and each variant's fastest round counts, as with ``timeit``. Timed so: the raw read
alone (``PathManager.open(...).read()``) and ``DatasetMapper``. A ``DataLoader`` with 2 forked
workers is timed by wall clock per pass over all images, variants alternating; it is the noisiest
figure. Everything sits in the page cache: this measures the handler's CPU overhead, not the
disk (a pack's gain on a cold network filesystem -- one open file instead of one per image -- is
not shown here).

``python -m bench.dataset [--rounds N]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

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
    roots = {
        "loose": str(coco / "train2017"),
        "pack": f"ffrecord://{PREFIX}{size}/train2017",
        "mount": str(mounted / "train2017"),
    }
    return {name: load_coco_json(json_file, image_root) for name, image_root in roots.items()}


def _mapper(size: int):
    from detectron2.config import get_cfg
    from detectron2.data import DatasetMapper

    cfg = get_cfg()
    cfg.MODEL.MASK_ON = True
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (size,), size
    return DatasetMapper(cfg, is_train=True)


def _read(d: dict) -> None:
    from detectron2.utils.file_io import PathManager

    with PathManager.open(d["file_name"], "rb") as f:
        f.read()


def _per_image(
    work: Callable[[dict], object], variants: dict[str, list[dict]], rounds: int
) -> dict[str, float]:
    """Images per CPU-second of ``work``, the variants taking turns image by image."""
    names = list(variants)
    count = len(variants[names[0]])
    cpu = {name: [0.0] * rounds for name in names}
    for r in range(rounds):
        for i in range(count):
            for name in names if (i + r) % 2 == 0 else reversed(names):
                start = time.process_time()
                work(variants[name][i])
                cpu[name][r] += time.process_time() - start
    return {name: count / min(t) for name, t in cpu.items()}


def _loader(mapper, variants: dict[str, list[dict]], rounds: int) -> dict[str, float]:
    """Images per wall-second through a DataLoader with 2 forked workers, a pass per variant."""
    import torch.utils.data
    from detectron2.data.common import MapDataset

    names = list(variants)
    wall: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            loader = torch.utils.data.DataLoader(
                MapDataset(variants[name], mapper),
                batch_size=None,
                num_workers=2,
                multiprocessing_context="fork",
                collate_fn=lambda x: x,
            )
            start = time.perf_counter()
            for _ in loader:
                pass
            wall[name].append(time.perf_counter() - start)
    return {name: len(variants[name]) / min(t) for name, t in wall.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    import numpy as np

    print(
        "pack, mount: images/s relative to loose files (read only and DatasetMapper: per CPU-second;"
        " DataLoader: per wall-second)"
    )
    print(f"{'images':>12} {'stage':>18} {'loose img/s':>12} {'pack':>8} {'mount':>8}")
    for size, count in CASES:
        with tempfile.TemporaryDirectory(prefix="bench-dataset-") as tmp:
            variants = _make_data(Path(tmp), size, count)
            mapper = _mapper(size)
            np.random.seed(0)
            rates = {
                "read only": _per_image(_read, variants, args.rounds),
                "DatasetMapper": _per_image(mapper, variants, args.rounds),
                "DataLoader(2 wk)": _loader(mapper, variants, args.rounds),
            }
            for stage, rate in rates.items():
                print(
                    f"{count:>5} x {size:>3}px {stage:>18} {rate['loose']:>12.0f} "
                    f"{rate['pack'] / rate['loose']:>7.2f}x {rate['mount'] / rate['loose']:>7.2f}x",
                    flush=True,
                )


if __name__ == "__main__":
    main()
