"""Test helper: the exact-resume matrix for one world, in one launch.

    python tests/scripts/resume_matrix.py --data DIR --out DIR --workers N [--ref-dir DIR] [--models a,b,...]
                                   [--phases ref,interrupt,resume,periodic]

Launched by ``launch_from_env`` from the environment (the test picks the layout). For each model
(Mask R-CNN, Faster R-CNN, RetinaNet, FCOS; R18/BN, 64-px images, random flip and multi-scale
resize, aspect-ratio grouping), the same processes run four trainers in turn, each as
train_net.py runs one (HFAI's two lines, ``resume_or_load(resume=True)``):

1. ``ref``: uninterrupted, MAX_ITER iterations -- unless ``--ref-dir`` names the output of an
   earlier launch whose ``ref`` runs this one compares with (the layout and the number of
   DataLoader workers must not change the result either);
2. ``run``: a periodic checkpoint after iteration PERIODIC_AT, then the last rank sends itself
   SIGTERM after iteration SIGTERM_AT: every rank suspends there;
3. ``run`` again: resumed from the suspend checkpoint;
4. ``periodic``: resumed from the periodic checkpoint (what a kill before the suspend save
   leaves).

``--phases`` runs some of them (e.g. the interrupted run and its resume in two launches, as a
real preemption does). Rank 0 writes ``OUT/results.<phases>.json``: per model and source, the tensors of the final weights that
differ from ``ref``'s, whether training after the resume changed the weights at all, the
per-rank attributes the suspend checkpoint holds, and any warning about unsaved attributes.
Building the trainers once per process keeps the matrix affordable on a small CPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shutil
import signal
import sys
from pathlib import Path

MAX_ITER, PERIODIC_AT, SIGTERM_AT = 4, 1, 2
MODELS = ("mask_rcnn", "faster_rcnn", "retinanet", "fcos")
_ZOO = {
    "mask_rcnn": "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml",
    "faster_rcnn": "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml",
    "retinanet": "COCO-Detection/retinanet_R_50_FPN_1x.yaml",
    "fcos": "COCO-Detection/retinanet_R_50_FPN_1x.yaml",  # FCOS has no yacs config: same backbone
}


def config(model: str, out: Path, workers: int, checkpoint_period: int):
    from detectron2 import model_zoo
    from detectron2.config import get_cfg
    from detectron2.utils import comm

    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(_ZOO[model]))
    cfg.MODEL.DEVICE, cfg.MODEL.WEIGHTS = "cpu", ""
    cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.RESNETS.RES2_OUT_CHANNELS, cfg.MODEL.RESNETS.NORM = 18, 64, "BN"
    cfg.MODEL.FPN.OUT_CHANNELS = 64
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = cfg.MODEL.RETINANET.NUM_CLASSES = 3
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE, cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 64, 128
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM, cfg.MODEL.RETINANET.NUM_CONVS = 64, 2
    cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN, cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 200, 100
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (48, 56, 64), 96
    cfg.INPUT.RANDOM_FLIP = "horizontal"
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = ("matrix_train",), ()
    cfg.DATALOADER.NUM_WORKERS = workers
    cfg.SOLVER.IMS_PER_BATCH = 2 * comm.get_world_size()
    cfg.SOLVER.BASE_LR, cfg.SOLVER.STEPS, cfg.SOLVER.WARMUP_ITERS = 0.002, (), 2
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True  # from random weights: keep the losses finite
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.CHECKPOINT_PERIOD = MAX_ITER, checkpoint_period
    cfg.OUTPUT_DIR, cfg.SEED = str(out), 7
    cfg.freeze()
    return cfg


def _build_fcos(cfg):
    """FCOS as its lazy config builds it (common/models/fcos.py@v0.6), from the yacs config's
    RetinaNet backbone and sizes."""
    from detectron2.modeling import build_backbone
    from detectron2.modeling.meta_arch.fcos import FCOS, FCOSHead

    backbone = build_backbone(cfg)
    features = cfg.MODEL.RETINANET.IN_FEATURES
    shapes = [backbone.output_shape()[name] for name in features]
    head = FCOSHead(
        input_shape=shapes,
        conv_dims=[shapes[0].channels] * cfg.MODEL.RETINANET.NUM_CONVS,
        num_classes=cfg.MODEL.RETINANET.NUM_CLASSES,
        norm="",
        prior_prob=0.01,
    )
    model = FCOS(
        backbone=backbone,
        head=head,
        head_in_features=features,
        num_classes=cfg.MODEL.RETINANET.NUM_CLASSES,
        pixel_mean=cfg.MODEL.PIXEL_MEAN,
        pixel_std=cfg.MODEL.PIXEL_STD,
    )
    return model.to(cfg.MODEL.DEVICE)


def _trainer(model: str, cfg, sigterm_at: int):
    from detectron2.engine import DefaultTrainer, HookBase
    from detectron2.utils import comm

    from hfai_runtime.detectron2 import SuspendCheckpointer

    class Trainer(DefaultTrainer):
        @classmethod
        def build_model(cls, cfg):
            return _build_fcos(cfg) if model == "fcos" else super().build_model(cfg)

    class SigtermOnLastRank(HookBase):
        def after_step(self):
            if self.trainer.iter == sigterm_at and comm.get_rank() == comm.get_world_size() - 1:
                os.kill(os.getpid(), signal.SIGTERM)

    trainer = Trainer(cfg)
    trainer.register_hooks([SigtermOnLastRank(), SuspendCheckpointer(trainer.checkpointer)])
    return trainer


def train(
    model: str, out: Path, workers: int, *, sigterm_at: int = -1, checkpoint_period: int = 10**6
) -> str:
    """One trainer, as train_net.py runs it; "suspended" or "finished"."""
    from detectron2.utils import comm
    from detectron2.utils.env import seed_all_rng

    from hfai_runtime.distributed import suspend

    suspend._flag = suspend._Flag()  # a fresh process would start with no suspend pending
    seed_all_rng(7 + comm.get_rank())  # what default_setup does: same initial weights every run
    trainer = _trainer(model, config(model, out, workers, checkpoint_period), sigterm_at)
    trainer.resume_or_load(resume=True)
    try:
        trainer.train()
        return "finished"
    except suspend.JobSuspended:
        return "suspended"
    finally:
        del trainer
        gc.collect()  # DataLoader workers of this trainer end before the next one starts


def _weights(path: Path):
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def _compare(ref: dict, resumed: dict, at_resume: dict) -> dict:
    import torch

    different = [k for k in ref if not torch.equal(ref[k], resumed[k])]
    moved = any(not torch.equal(resumed[k], at_resume[k]) for k in resumed if resumed[k].is_floating_point())
    return {"tensors": len(ref), "different": different, "trained_after_resume": moved}


class _Warnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


PHASES = ("ref", "interrupt", "resume", "periodic")


def run_model(model: str, root: Path, workers: int, ref_root: Path, phases: tuple[str, ...]) -> dict | None:
    """The phases (in PHASES' order) for one model; rank 0 returns the comparisons."""
    from detectron2.utils import comm

    base, run, periodic = root / model, root / model / "run", root / model / "periodic"
    if "ref" in phases:
        assert train(model, base / "ref", workers) == "finished"
    if "interrupt" in phases:
        assert (
            train(model, run, workers, sigterm_at=SIGTERM_AT, checkpoint_period=PERIODIC_AT + 1)
            == "suspended"
        )
        if comm.is_main_process():
            periodic.mkdir()
            name = f"model_{PERIODIC_AT:07d}.pth"
            shutil.copy2(run / name, periodic / name)
            (periodic / "last_checkpoint").write_text(name)
        comm.synchronize()
    for source, out in (("resume", run), ("periodic", periodic)):
        if source in phases:
            assert train(model, out, workers) == "finished"
    if not comm.is_main_process():
        return None
    ref = _weights(ref_root / model / "ref" / "model_final.pth")["model"]
    suspend_ckpt = _weights(run / f"model_{SIGTERM_AT:07d}.pth")
    hook_state = next(
        (v for k, v in suspend_ckpt["trainer"]["hooks"].items() if "SuspendCheckpointer" in k), {}
    )
    results = {"model_attributes": hook_state.get("model_attributes", {})}
    if "resume" in phases:
        results["suspend"] = _compare(ref, _weights(run / "model_final.pth")["model"], suspend_ckpt["model"])
    if "periodic" in phases:
        results["periodic"] = _compare(
            ref,
            _weights(periodic / "model_final.pth")["model"],
            _weights(periodic / f"model_{PERIODIC_AT:07d}.pth")["model"],
        )
    return results


def main(args):
    from detectron2.data.datasets import register_coco_instances
    from detectron2.utils import comm

    rank = comm.get_rank()
    logging.basicConfig(
        stream=sys.stderr, level=logging.WARNING, format=f"[rank{rank}] %(name)s %(levelname)s: %(message)s"
    )
    warnings = _Warnings()
    logging.getLogger("hfai_runtime.detectron2.model_state").addHandler(warnings)
    data = Path(args.data)
    register_coco_instances(
        "matrix_train", {}, str(data / "annotations" / "instances_train2017.json"), str(data / "train2017")
    )
    results = {}
    for model in args.models.split(","):
        out = Path(args.out)
        ref_root = Path(args.ref_dir) if args.ref_dir else out
        results[model] = run_model(model, out, args.workers, ref_root, tuple(args.phases.split(",")))
        if results[model] is not None:
            results[model]["warnings"] = warnings.messages[:]
        warnings.messages.clear()
    if comm.is_main_process():
        (Path(args.out) / f"results.{args.phases}.json").write_text(json.dumps(results, indent=1))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--ref-dir", default=None)
    parser.add_argument("--phases", default=",".join(PHASES), help="a subset of " + ",".join(PHASES))
    return parser.parse_args(argv)


if __name__ == "__main__":
    from hfai_runtime.detectron2 import launch_from_env

    launch_from_env(main, args=(parse_args(),))
