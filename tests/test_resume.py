"""Exact resume: a run suspended by SIGTERM and resumed -- or restarted from a periodic checkpoint
-- ends with weights bit-identical to an uninterrupted run: real detectron2 (Faster R-CNN R18,
random flip and multi-scale resize, aspect-ratio grouping), 1 machine x 2 processes over gloo,
DATALOADER.NUM_WORKERS 0 and 2."""

from __future__ import annotations

import re

import pytest
import torch

from _dist_train import prepare_data
from _dist_util import start, topology_envs, wait_all

pytestmark = pytest.mark.slow

MAX_ITER, SIGTERM_AT = 6, 2


def _train(data, out, log, *, workers: int, sigterm_at: int = -1, checkpoint_period: int = 100000) -> int:
    args = ["tests/_dist_train.py", "--data", str(data), "--out", str(out), "--max-iter", str(MAX_ITER),
            "--workers", str(workers), "--sigterm-at", str(sigterm_at), "--checkpoint-period", str(checkpoint_period)]
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

    _check_resumed_exactly(data, out, second, workers, uninterrupted)


def test_resume_from_a_periodic_checkpoint_is_bit_identical(data, uninterrupted, tmp_path):
    """A job killed before it could write a suspend checkpoint (SIGKILL at the end of the grace
    period) restarts from the last periodic one: that resumes exactly too."""
    out = tmp_path / "out"
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    assert _train(data, out, first, workers=0, checkpoint_period=SIGTERM_AT + 1) == 0, first.read_text()
    # Roll the output back to what a kill after iteration SIGTERM_AT's periodic save leaves.
    (out / "model_final.pth").unlink()
    (out / "last_checkpoint").write_text(f"model_{SIGTERM_AT:07d}.pth")
    _check_resumed_exactly(data, out, second, 0, uninterrupted)


def _check_resumed_exactly(data, out, log, workers: int, uninterrupted: dict[str, torch.Tensor]) -> None:
    """Resume the run in ``out`` from its checkpoint at SIGTERM_AT; it must end where the
    uninterrupted run ended, bit for bit."""
    assert _train(data, out, log, workers=workers) == 0, log.read_text()
    assert re.search(rf"Starting training from iteration {SIGTERM_AT + 1}\b", log.read_text())

    resumed = _weights(out / "model_final.pth")
    at_suspend = _weights(out / f"model_{SIGTERM_AT:07d}.pth")
    assert resumed.keys() == uninterrupted.keys()
    different = [k for k in resumed if not torch.equal(resumed[k], uninterrupted[k])]
    assert different == [], f"{len(different)} tensors differ, e.g. {different[:3]}"
    # The comparison has teeth: training after the resume changed the weights.
    assert any(not torch.equal(resumed[k], at_suspend[k]) for k in resumed if resumed[k].is_floating_point())
