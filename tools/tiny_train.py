"""A real, tiny detectron2 training job run the way train_net.py runs it, with probes.

    python tools/tiny_train.py --data DIR --out DIR [--max-iter N] [--workers N] ...

Run by the suspend and resume tests and by ``bench.suspend``; DIR holds a synthetic COCO tree
(``hfai_runtime.synthetic.make_coco_tree``; the tests pass ``landscape_every_other=True``).

Faster R-CNN R18-FPN (``--model mask_rcnn_r50``: Mask R-CNN R50-FPN, the zoo's backbone, for
the benchmark) on 64-px synthetic COCO images (half of them landscape, so aspect-ratio
grouping holds samples back), random flip and multi-scale resize on, launched by
``launch_from_env`` from the environment, with HFAI's two lines (``SuspendCheckpointer`` +
``resume_or_load(resume=True)``). Probes for the tests, all outside the code under test:

* ``OUT/started.rank<N>``: touched by rank N after its first step;
* ``--sigterm-at I``: the last rank sends itself SIGTERM after step I;
* ``--slow-mapper S``: the mapper sleeps S per sample (a busy data loader);
* ``--eval-period P``: COCO evaluation every P steps; it touches ``OUT/eval_started`` and
  records in ``OUT/eval_end_pending.rank<N>`` whether a suspend was pending when it ended;
* ``OUT/atexit.rank<N>`` and ``OUT/atexit.launcher<PET_NODE_RANK>``: written by ``atexit``
  handlers of rank N and of the launcher (a prompt exit must still run them).
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

#: Data set sizes: small enough to build in a second, large enough to wrap around epochs.
NUM_TRAIN, NUM_VAL = 12, 4


class SlowMapper:
    """detectron2's DatasetMapper, slowed down to keep the data loader busy."""

    def __init__(self, mapper, delay_s: float):
        self.mapper, self.delay_s = mapper, delay_s

    def __call__(self, dataset_dict):
        time.sleep(self.delay_s)
        return self.mapper(dataset_dict)


def _trainer_class(args):
    from detectron2.data import DatasetMapper, build_detection_train_loader
    from detectron2.engine import DefaultTrainer
    from detectron2.evaluation import COCOEvaluator
    from detectron2.utils import comm

    from hfai_runtime.detectron2 import SuspendCheckpointer

    out = Path(args.out)

    class ProbedEvaluator(COCOEvaluator):
        def reset(self):
            (out / "eval_started").touch()
            super().reset()

        def process(self, inputs, outputs):
            time.sleep(0.2)  # widen the window in which the test's SIGTERM lands
            super().process(inputs, outputs)

        def evaluate(self):
            pending = SuspendCheckpointer.suspend_pending()
            (out / f"eval_end_pending.rank{comm.get_rank()}").write_text(json.dumps(pending))
            return super().evaluate()

    class Trainer(DefaultTrainer):
        @classmethod
        def build_train_loader(cls, cfg):
            mapper = DatasetMapper(cfg, True)
            if args.slow_mapper:
                mapper = SlowMapper(mapper, args.slow_mapper)
            return build_detection_train_loader(cfg, mapper=mapper)

        @classmethod
        def build_evaluator(cls, cfg, dataset_name, output_folder=None):
            return ProbedEvaluator(dataset_name, output_dir=str(out / "inference"), use_fast_impl=False)

    return Trainer


def _probe_hook(args):
    from detectron2.engine import HookBase
    from detectron2.utils import comm

    class Probe(HookBase):
        def after_step(self):
            if self.trainer.iter == self.trainer.start_iter:
                (Path(args.out) / f"started.rank{comm.get_rank()}").touch()
            if self.trainer.iter == args.sigterm_at and comm.get_rank() == comm.get_world_size() - 1:
                os.kill(os.getpid(), signal.SIGTERM)

    return Probe()


#: ``--model``: the zoo config, and whether to shrink its backbone to R18.
MODELS = {
    "faster_rcnn_r18": ("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml", True),
    "mask_rcnn_r50": ("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml", False),
}


def setup(args):
    from detectron2 import model_zoo
    from detectron2.config import get_cfg
    from detectron2.utils import comm

    config, r18 = MODELS[args.model]
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(config))
    cfg.MODEL.DEVICE, cfg.MODEL.WEIGHTS = "cpu", ""
    if r18:
        cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.RESNETS.RES2_OUT_CHANNELS, cfg.MODEL.RESNETS.NORM = 18, 64, "BN"
    cfg.MODEL.ROI_HEADS.NUM_CLASSES, cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 3, 64
    cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN, cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 200, 100
    cfg.MODEL.RPN.PRE_NMS_TOPK_TEST, cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 100, 50
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (48, 56, 64), 96
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 64, 96
    cfg.INPUT.RANDOM_FLIP = "horizontal"
    cfg.DATASETS.TRAIN = ("dist_train",)
    cfg.DATASETS.TEST = ("dist_val",) if args.eval_period else ()
    cfg.DATALOADER.NUM_WORKERS = args.workers
    cfg.SOLVER.IMS_PER_BATCH = 2 * comm.get_world_size()
    cfg.SOLVER.BASE_LR, cfg.SOLVER.STEPS, cfg.SOLVER.WARMUP_ITERS = 0.002, (), 2
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True  # from random weights: keep the losses finite
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.CHECKPOINT_PERIOD = args.max_iter, args.checkpoint_period
    cfg.TEST.EVAL_PERIOD = args.eval_period
    cfg.OUTPUT_DIR, cfg.SEED = args.out, 7
    cfg.freeze()
    return cfg


def main(args):
    from detectron2.data.datasets import register_coco_instances
    from detectron2.utils import comm
    from detectron2.utils.env import seed_all_rng

    rank = comm.get_rank()
    atexit.register(Path(args.out, f"atexit.rank{rank}").touch)
    logging.basicConfig(
        stream=sys.stderr, level=logging.WARNING, format=f"[rank{rank}] %(name)s %(levelname)s: %(message)s"
    )
    data = Path(args.data)
    for split in ("train", "val"):
        register_coco_instances(
            f"dist_{split}",
            {},
            str(data / "annotations" / f"instances_{split}2017.json"),
            str(data / f"{split}2017"),
        )
    cfg = setup(args)
    seed_all_rng(cfg.SEED + rank)  # what default_setup does: same initial weights every run

    from hfai_runtime.detectron2 import SuspendCheckpointer

    trainer = _trainer_class(args)(cfg)
    trainer.register_hooks([_probe_hook(args), SuspendCheckpointer(trainer.checkpointer)])
    trainer.resume_or_load(resume=True)
    trainer.train()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", choices=sorted(MODELS), default="faster_rcnn_r18")
    parser.add_argument("--max-iter", type=int, default=10000)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--sigterm-at", type=int, default=-1)
    parser.add_argument("--slow-mapper", type=float, default=0.0)
    parser.add_argument("--eval-period", type=int, default=0)
    parser.add_argument("--checkpoint-period", type=int, default=100000)
    return parser.parse_args(argv)


if __name__ == "__main__":
    from hfai_runtime.detectron2 import launch_from_env

    arguments = parse_args()
    atexit.register(Path(arguments.out, f"atexit.launcher{os.environ.get('PET_NODE_RANK', 0)}").touch)
    launch_from_env(main, args=(arguments,))
