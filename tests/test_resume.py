"""Exact resume: a run suspended by SIGTERM and resumed ends with weights bit-identical to an
uninterrupted run -- real detectron2 (Faster R-CNN R18, random flip and multi-scale resize,
aspect-ratio grouping), 1 machine x 2 processes over gloo, DATALOADER.NUM_WORKERS 0 and 2."""

from __future__ import annotations

import re

import pytest
import torch

from _dist_train import prepare_data
from _dist_util import start, topology_envs, wait_all

pytestmark = pytest.mark.slow

MAX_ITER, SIGTERM_AT = 6, 2


def _train(data, out, log, *, workers: int, sigterm_at: int = -1) -> int:
    args = ["tests/_dist_train.py", "--data", str(data), "--out", str(out), "--max-iter", str(MAX_ITER),
            "--workers", str(workers), "--sigterm-at", str(sigterm_at)]
    [code] = wait_all([start(args, topology_envs("1x2")[0], log)], timeout=300)
    return code


def _weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return prepare_data(tmp_path_factory.mktemp("resume_data"))


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    assert _train(data, out, out / "run.log", workers=0) == 0, (out / "run.log").read_text()
    return _weights(out / "model_final.pth")


@pytest.mark.parametrize("workers", [0, 2])
def test_suspended_and_resumed_run_is_bit_identical(workers, data, uninterrupted, tmp_path):
    out = tmp_path / "out"
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    assert _train(data, out, first, workers=workers, sigterm_at=SIGTERM_AT) == 143, first.read_text()
    assert (out / "last_checkpoint").read_text() == f"model_{SIGTERM_AT:07d}.pth"
    assert not (out / "model_final.pth").exists()

    assert _train(data, out, second, workers=workers) == 0, second.read_text()
    assert re.search(rf"Starting training from iteration {SIGTERM_AT + 1}\b", second.read_text())

    resumed = _weights(out / "model_final.pth")
    at_suspend = _weights(out / f"model_{SIGTERM_AT:07d}.pth")
    assert resumed.keys() == uninterrupted.keys()
    different = [k for k in resumed if not torch.equal(resumed[k], uninterrupted[k])]
    assert different == [], f"{len(different)} tensors differ, e.g. {different[:3]}"
    # The comparison has teeth: training after the resume changed the weights.
    assert any(not torch.equal(resumed[k], at_suspend[k]) for k in resumed if resumed[k].is_floating_point())
