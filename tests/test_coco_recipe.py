"""HFAI's COCO recipe, unchanged, on a synthetic COCO-layout dataset whose loose images are gone.

The user's folder holds only ``datasets/coco/coco.ffr`` (packed from ``coco/``) and
``datasets/coco/annotations/`` copied beside it. One ``register_ffrecord_handler`` call, before or
after ``import detectron2``, and detectron2's builtin ``coco_2017_train``/``coco_2017_val`` train
a real (tiny) Mask R-CNN and evaluate it, reading every image from the pack in forked DataLoader
workers. Each run is a fresh process (``tests/scripts/coco_recipe_job.py``), because detectron2 reads
``DETECTRON2_DATASETS`` once, at import.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hfai_runtime.synthetic import coco_thing_categories, make_coco_tree

HERE = Path(__file__).resolve().parent
TINY_CONFIG = HERE / "configs" / "mask_rcnn_cpu_tiny.yaml"
NUM_TRAIN, NUM_VAL = 4, 2


def _pack_and_delete(folder: Path, ffr_file: Path) -> None:
    from hfai_runtime.ffrecord import pack_folder

    ffr_file.parent.mkdir(parents=True, exist_ok=True)
    pack_folder(str(folder), str(ffr_file))
    shutil.rmtree(folder)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``datasets/coco/{coco.ffr,annotations/}`` and ``packs/mine.ffr``; no loose images anywhere."""
    work = tmp_path_factory.mktemp("recipe")
    coco = make_coco_tree(
        work / "coco", num_train=NUM_TRAIN, num_val=NUM_VAL, categories=coco_thing_categories()
    )
    shutil.copytree(coco / "annotations", work / "datasets" / "coco" / "annotations")
    _pack_and_delete(coco, work / "datasets" / "coco" / "coco.ffr")
    mine = make_coco_tree(
        work / "mine", num_train=NUM_TRAIN, num_val=NUM_VAL, categories=coco_thing_categories(), seed=7
    )
    _pack_and_delete(mine, work / "packs" / "mine.ffr")
    assert not list(work.rglob("*.png"))
    return work


def _run_job(workdir: Path, order: str, datasets_root: str) -> dict:
    env = {
        **os.environ,
        "DETECTRON2_DATASETS": datasets_root,
        "FVCORE_CACHE": str(workdir / f"cache-{order}"),
    }
    out = workdir / f"output-{order}"
    proc = subprocess.run(
        [sys.executable, str(HERE / "scripts" / "coco_recipe_job.py"), order, str(TINY_CONFIG), str(out)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, f"{order}: exit {proc.returncode}\n{proc.stderr[-6000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _check_trained_and_evaluated(report: dict, workdir: Path) -> None:
    assert report["iterations"] == 3
    for task in ("bbox", "segm"):
        ap = report["results"][task]["AP"]
        assert isinstance(ap, float) and 0.0 <= ap <= 100.0, (task, ap)
    for images in report["images"].values():
        assert images and not any((workdir / name).exists() for name in images), "images must come from packs"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("order", "datasets_root"),
    [("before", "datasets"), ("after", "<absolute>")],
    ids=["before-import", "after-import"],
)
def test_builtin_coco_trains_and_evaluates_from_the_pack(
    workdir: Path, order: str, datasets_root: str
) -> None:
    # "after" also spells DETECTRON2_DATASETS absolutely while ffr_file stays relative.
    root = str(workdir / "datasets") if datasets_root == "<absolute>" else datasets_root
    report = _run_job(workdir, order, root)
    _check_trained_and_evaluated(report, workdir)
    train, val = report["images"]["coco_2017_train"], report["images"]["coco_2017_val"]
    assert len(train) == NUM_TRAIN and len(val) == NUM_VAL
    assert train[0] == os.path.join(root, "coco", "train2017", "000000000001.png")
    # The json came from the annotations folder on disk: nothing was copied out of the pack.
    assert not (workdir / f"cache-{order}" / "ffrecord").exists()


@pytest.mark.slow
def test_custom_dataset_under_ffrecord_uri_beside_the_builtin_pack(workdir: Path) -> None:
    report = _run_job(workdir, "custom", "datasets")
    _check_trained_and_evaluated(report, workdir)
    assert report["images"]["mine_val"][0] == "ffrecord://mine/val2017/000000000001.png"
    assert len(report["images"]["mine_train"]) == NUM_TRAIN
    # Its json was read through get_local_path: copied once out of the pack into the cache.
    cached = sorted(p.name for p in (workdir / "cache-custom" / "ffrecord").rglob("*.json"))
    assert cached == ["instances_train2017.json", "instances_val2017.json"]
