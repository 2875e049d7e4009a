"""A user's training script in HFAI's style, run by ``test_coco_recipe.py`` in a subprocess.

``python tests/scripts/coco_recipe_job.py before|after|custom <tiny-config> <output-dir>``, from the folder
that holds ``datasets/coco/{coco.ffr,annotations}`` (and ``packs/mine.ffr`` for ``custom``):

* ``before`` -- ``register_ffrecord_handler`` before ``import detectron2``, as HFAI documents;
  trains on ``coco_2017_train`` and evaluates on ``coco_2017_val``;
* ``after`` -- the same with the call after detectron2's builtin datasets were registered;
* ``custom`` -- a second pack serves ``register_coco_instances(..., image_root="ffrecord://mine/...")``
  with its json read from the pack too; trains on both packs, evaluates on ``mine_val``.

Prints one JSON line with what the test checks.
"""

import json
import sys

order, tiny_config, output_dir = sys.argv[1:4]

if order == "before":
    from hfai_runtime.detectron2 import register_ffrecord_handler

    register_ffrecord_handler(ffr_file="datasets/coco/coco.ffr", ffr_prefix="coco")

import detectron2  # noqa: E402,F401  (HFAI: register before this line)
from detectron2 import model_zoo  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.data import DatasetCatalog  # noqa: E402  (registers the builtin datasets)
from detectron2.data.datasets import register_coco_instances  # noqa: E402
from detectron2.engine import DefaultTrainer  # noqa: E402
from detectron2.evaluation import COCOEvaluator  # noqa: E402

if order != "before":
    from hfai_runtime.detectron2 import register_ffrecord_handler

    register_ffrecord_handler(ffr_file="datasets/coco/coco.ffr", ffr_prefix="coco")

train, test = ("coco_2017_train",), "coco_2017_val"
if order == "custom":
    register_ffrecord_handler(ffr_file="packs/mine.ffr", ffr_prefix="mine")
    for split in ("train", "val"):
        register_coco_instances(
            f"mine_{split}",
            {},
            f"ffrecord://mine/annotations/instances_{split}2017.json",
            f"ffrecord://mine/{split}2017",
        )
    train, test = ("coco_2017_train", "mine_train"), "mine_val"

cfg = get_cfg()
cfg.merge_from_file(model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"))
cfg.merge_from_file(tiny_config)
cfg.MODEL.ROI_HEADS.NUM_CLASSES = 80
cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0  # 3 iterations from scratch: keep every detection
cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = train, (test,)
cfg.DATALOADER.NUM_WORKERS = 2  # forked workers read from the pack
cfg.SOLVER.MAX_ITER = 3
cfg.OUTPUT_DIR = output_dir

trainer = DefaultTrainer(cfg)
trainer.resume_or_load(resume=False)
trainer.train()
evaluator = COCOEvaluator(test, output_dir=output_dir, use_fast_impl=False)
results = DefaultTrainer.test(cfg, trainer.model, evaluators=[evaluator])
print(
    json.dumps(
        {
            "iterations": trainer.iter,
            "images": {name: [d["file_name"] for d in DatasetCatalog.get(name)] for name in (*train, test)},
            "results": {task: dict(metrics) for task, metrics in results.items()},
        }
    )
)
