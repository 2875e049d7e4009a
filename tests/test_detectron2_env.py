"""The environment the bootstrap builds: real detectron2 0.6 that trains on CPU, offline."""

from __future__ import annotations

import importlib.util
import io
import tarfile
from pathlib import Path

import pytest
import torch

from hfai_runtime.synthetic import make_coco_tree

REPO = Path(__file__).resolve().parent.parent
TINY_CONFIG = REPO / "tests" / "configs" / "mask_rcnn_cpu_tiny.yaml"
ZOO_CONFIG = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"


def test_model_zoo_configs_ship_with_the_package():
    from detectron2 import model_zoo

    configs = Path(model_zoo.get_config_file(ZOO_CONFIG)).parents[1]
    files = [p for p in configs.rglob("*") if p.suffix in {".yaml", ".py"}]
    # v0.6 ships 128 model-zoo configs; the sdist's own setup.py packaged none of them.
    assert len(files) == 128
    cfg = model_zoo.get_config(ZOO_CONFIG)
    assert cfg.MODEL.MASK_ON and cfg.MODEL.RESNETS.DEPTH == 50


def test_tiny_mask_rcnn_trains_on_cpu(tmp_path):
    from detectron2 import model_zoo
    from detectron2.config import get_cfg
    from detectron2.data.datasets import register_coco_instances
    from detectron2.engine import DefaultTrainer

    data = make_coco_tree(tmp_path / "coco", num_train=4, num_val=0)
    register_coco_instances(
        "env_check_train", {}, str(data / "annotations/instances_train2017.json"), str(data / "train2017")
    )
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(ZOO_CONFIG))
    cfg.merge_from_file(str(TINY_CONFIG))
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = ("env_check_train",), ()
    cfg.SOLVER.MAX_ITER = 3
    cfg.OUTPUT_DIR = str(tmp_path / "out")
    trainer = DefaultTrainer(cfg)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    assert trainer.iter == 3  # iterations 0, 1, 2 ran; the loop leaves iter one past the last
    losses = trainer.storage.history("total_loss").values()
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(v)) for v, _ in losses)
    changed = sum(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    assert changed > len(before) // 2
    assert next(trainer.model.parameters()).device.type == "cpu"


def _nms_rotated():
    from detectron2.layers import nms_rotated

    nms_rotated(torch.rand(3, 5) * 10, torch.rand(3), 0.5)


def _iou_rotated():
    from detectron2.structures import RotatedBoxes, pairwise_iou_rotated

    boxes = RotatedBoxes(torch.tensor([[5.0, 5.0, 4.0, 2.0, 30.0]]))
    pairwise_iou_rotated(boxes, boxes)


def _roi_align_rotated():
    from detectron2.layers import ROIAlignRotated

    rois = torch.tensor([[0.0, 4.0, 4.0, 4.0, 2.0, 30.0]])
    ROIAlignRotated((2, 2), spatial_scale=1.0, sampling_ratio=0)(torch.rand(1, 1, 8, 8), rois)


@pytest.mark.parametrize("call", [_nms_rotated, _iou_rotated, _roi_align_rotated])
def test_compiled_only_ops_raise_a_clear_error(call):
    from detectron2._C import CompiledOpUnavailable

    with pytest.raises(CompiledOpUnavailable, match="compiled C\\+\\+/CUDA op.*CUDA image"):
        call()


def _load_wheel_builder():
    spec = importlib.util.spec_from_file_location("d2_wheel_build", REPO / "tools/detectron2_wheel/build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_wheel_builder_refuses_a_changed_sdist(tmp_path):
    builder = _load_wheel_builder()
    fake = tmp_path / "pb1-detectron2-0.6.tar.gz"
    fake.write_bytes(b"not the reviewed sdist")
    with pytest.raises(SystemExit, match="sha256 .* expected 5d2e9e51"):
        builder.check_sdist(fake)


def test_wheel_builder_refuses_an_sdist_with_cpp_sources(tmp_path):
    builder = _load_wheel_builder()
    sdist = tmp_path / "sdist.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        payload = b"// a compiled op"
        info = tarfile.TarInfo("pb1-detectron2-0.6/detectron2/layers/csrc/nms_rotated.cpp")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(SystemExit, match="ships C\\+\\+ sources"):
        builder.unpack(sdist, tmp_path / "src")


def test_environment_report_describes_the_cpu_build():
    """default_setup() logs collect_env_info(), which queries the compiled extension."""
    from detectron2.utils.collect_env import collect_env_info

    report = collect_env_info()
    assert "pure-Python CPU build" in report
