"""The environment the bootstrap builds: real detectron2 0.6 that trains on CPU, offline; and
the second pass's detectron2 main @ e0ec4e1 (``--detectron2=e0ec4e1``), built the same way."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from hfai_runtime.synthetic import make_coco_tree

pytestmark = pytest.mark.detectron2
REPO = Path(__file__).resolve().parent.parent
TINY_CONFIG = REPO / "tests" / "configs" / "mask_rcnn_cpu_tiny.yaml"
ZOO_CONFIG = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"


_WHERE = "import detectron2, importlib.metadata as m, json; print(json.dumps([detectron2.__file__, m.version('detectron2')]))"


def test_the_detectron2_under_test_is_imported_here_and_by_launched_processes(detectron2_version):
    """The second pass really swaps detectron2: in this process and in a child started as the
    tests start jobs (this environment, ``sys.executable``), whose own children inherit it."""
    import detectron2

    here = [detectron2.__file__, importlib.metadata.version("detectron2")]
    child = subprocess.run(
        [sys.executable, "-c", _WHERE],
        env=dict(os.environ),
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(child.stdout) == here and here[1] == detectron2_version
    from_environment = Path(detectron2.__file__).resolve().is_relative_to(Path(sys.prefix).resolve())
    assert from_environment == (detectron2_version == "0.6"), here


def test_second_pass_without_the_source_skips_naming_what_it_needs(tmp_path):
    """Where detectron2 main's source tarball is absent, the second pass skips, saying where it
    looked and which variable moves it (and exits 0: nothing failed, nothing went uncollected)."""
    env = {
        **os.environ,
        "D2_HFAI_SHARED": str(tmp_path / "nowhere"),
        "D2_HFAI_CACHE": str(tmp_path / "cache"),
    }
    args = ["-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-m", "detectron2", "--detectron2=e0ec4e1"]
    result = subprocess.run(
        [sys.executable, *args, "tests/test_compat.py"], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "passed" not in result.stdout and " skipped" in result.stdout, result.stdout[-3000:]
    assert f"{tmp_path / 'nowhere'}/vendor/detectron2-e0ec4e1.tar.gz" in result.stdout
    assert "D2_HFAI_SHARED" in result.stdout and not (tmp_path / "cache").exists()


def test_model_zoo_configs_ship_with_the_package(detectron2_version):
    from detectron2 import model_zoo

    configs = Path(model_zoo.get_config_file(ZOO_CONFIG)).parents[1]
    files = [p for p in configs.rglob("*") if p.suffix in {".yaml", ".py"}]
    # v0.6 ships 128 model-zoo configs (the sdist's own setup.py packaged none of them); main @
    # e0ec4e1 has 130 in its top-level configs/ folder, which the wheel moves into the package.
    assert len(files) == {"0.6": 128, "0.6+e0ec4e1": 130}[detectron2_version]
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
    spec = importlib.util.spec_from_file_location(
        "d2_wheel_build", REPO / "hfai_runtime/devenv/detectron2_wheel/build.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("prepare, expected", [("prepare_sdist", "5d2e9e51"), ("prepare_source", "11090227")])
def test_wheel_builder_refuses_a_changed_archive(tmp_path, prepare, expected):
    builder = _load_wheel_builder()
    fake = tmp_path / "detectron2.tar.gz"
    fake.write_bytes(b"not the reviewed archive")
    with pytest.raises(SystemExit, match=f"sha256 .* expected {expected}"):
        getattr(builder, prepare)(fake, tmp_path / "src")
    assert not (tmp_path / "src").exists()


def test_wheel_builder_refuses_an_sdist_with_cpp_sources(tmp_path):
    builder = _load_wheel_builder()
    sdist = tmp_path / "sdist.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        for name, payload in [
            ("__init__.py", b'__version__ = "0.6"\n'),
            ("layers/csrc/nms_rotated.cpp", b"//"),
        ]:
            info = tarfile.TarInfo(f"pb1-detectron2-0.6/detectron2/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    src = builder.unpack(sdist, tmp_path / "src", "pb1-detectron2-0.6")
    with pytest.raises(SystemExit, match="ships C\\+\\+ sources .*nms_rotated.cpp"):
        builder.refuse_compiled(src)


def test_environment_report_describes_the_cpu_build():
    """default_setup() logs collect_env_info(), which queries the compiled extension."""
    from detectron2.utils.collect_env import collect_env_info

    report = collect_env_info()
    assert "pure-Python CPU build" in report
