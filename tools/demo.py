"""``make demo``: train and evaluate a tiny Mask R-CNN with real detectron2 on CPU.

Makes a synthetic COCO-format dataset (PNGs with boxes and polygon masks), trains for
SOLVER.MAX_ITER iterations, evaluates with the COCO API and says where the outputs are.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

HERE = Path(__file__).resolve().parent
ZOO_CONFIG = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"


def build_cfg(output_dir: Path, max_iter: int):
    from detectron2 import model_zoo
    from detectron2.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(ZOO_CONFIG))
    cfg.merge_from_file(str(HERE / "demo" / "mask_rcnn_cpu_tiny.yaml"))
    cfg.DATASETS.TRAIN = ("demo_train",)
    cfg.DATASETS.TEST = ("demo_val",)
    cfg.SOLVER.MAX_ITER = max_iter
    cfg.OUTPUT_DIR = str(output_dir)
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=Path("work/demo"))
    parser.add_argument("--max-iter", type=int, default=40)
    args = parser.parse_args()

    from detectron2.data.datasets import register_coco_instances
    from detectron2.engine import DefaultTrainer
    from detectron2.evaluation import COCOEvaluator
    from detectron2.utils.logger import setup_logger

    from hfai_runtime.synthetic import make_coco_tree

    setup_logger()
    logging.getLogger("detectron2").setLevel(logging.INFO)
    data = make_coco_tree(args.work_dir / "coco")
    print(f"demo: synthetic COCO-format dataset in {data}")
    for split in ("train", "val"):
        register_coco_instances(
            f"demo_{split}", {}, str(data / "annotations" / f"instances_{split}2017.json"),
            str(data / f"{split}2017"),
        )
    cfg = build_cfg(args.work_dir / "output", args.max_iter)
    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    evaluator = COCOEvaluator("demo_val", output_dir=cfg.OUTPUT_DIR, use_fast_impl=False)
    results = DefaultTrainer.test(cfg, trainer.model, evaluators=[evaluator])
    print(f"demo: COCO evaluation: {dict(results)}")
    print(f"demo: outputs (weights, metrics.json, evaluation) in {cfg.OUTPUT_DIR}")


if __name__ == "__main__":
    main()
