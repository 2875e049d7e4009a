"""Exact resume, for every model family the template offers (Mask R-CNN, Faster R-CNN,
RetinaNet) and FCOS, at 1 machine x 2 processes and 2 machines x 1 process, with
``DATALOADER.NUM_WORKERS`` 0 and 2, resumed from a suspend and from a periodic checkpoint: the
final weights are bit-identical to an uninterrupted run's, on real detectron2 over gloo.

Each world is launched once and runs all its trainers in turn (tests/scripts/resume_matrix.py); the
first one's uninterrupted runs are the reference for all (so the layout and the number of
DataLoader workers must not change the result either). One more case resumes in a fresh
launch, as a real preemption does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from _dist_util import start, topology_envs, wait_all

pytestmark = pytest.mark.slow

MODELS = ("mask_rcnn", "faster_rcnn", "retinanet", "fcos")
WORLDS = (("1x2", 0), ("2x1", 2), ("1x2", 2), ("2x1", 0))  # the first computes the reference
SOURCES = ("suspend", "periodic")


def _launch(data: Path, out: Path, layout: str, workers: int, *extra: str) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "tests/scripts/resume_matrix.py",
        "--data",
        str(data),
        "--out",
        str(out),
        "--workers",
        str(workers),
        *extra,
    ]
    logs = [out / f"launcher{i}.log" for i in range(2)]
    codes = wait_all([start(args, env, log) for env, log in zip(topology_envs(layout), logs)], timeout=900)
    assert set(codes) == {0}, "\n".join(log.read_text()[-3000:] for log in logs if log.exists())
    [results] = out.glob("results.*.json")
    return json.loads(results.read_text())


@pytest.fixture(scope="module")
def matrix_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("matrix")


def _reference(root: Path) -> Path:
    """The output of the first world, whose uninterrupted runs are the reference."""
    return root / f"{WORLDS[0][0]}-w{WORLDS[0][1]}"


@pytest.fixture(scope="module")
def world(tiny_coco, matrix_root) -> Callable[[str, int], dict]:
    """A world's results, launched on first use (the reference world before any other); a
    failed launch fails every test of that world without running again."""
    results: dict[tuple[str, int], dict | AssertionError] = {}
    first = _reference(matrix_root)

    def launched(layout: str, workers: int) -> dict:
        if (layout, workers) not in results:
            out, ref = matrix_root / f"{layout}-w{workers}", []
            if out != first:
                launched(*WORLDS[0])  # its uninterrupted runs are every world's reference
                ref = ["--ref-dir", str(first)]
            try:
                results[(layout, workers)] = _launch(tiny_coco, out, layout, workers, *ref)
            except AssertionError as failure:
                results[(layout, workers)] = failure
            if out != first:  # compared already; the reference world's stay for later worlds
                _drop_checkpoints(out)
        result = results[(layout, workers)]
        if isinstance(result, AssertionError):
            raise result
        return result

    return launched


def _drop_checkpoints(out: Path) -> None:
    """Each world writes a few hundred MB of checkpoints; keep the results, not the weights."""
    for checkpoint in out.rglob("*.pth"):
        checkpoint.unlink()


def _worlds() -> list:
    """The worlds as test parameters. Only the reference world runs in the second pass
    (``--detectron2=e0ec4e1``): it covers every model and both sources in one launch."""
    return [
        pytest.param(
            layout, workers, id=f"{layout}-workers{workers}", marks=pytest.mark.detectron2 if i == 0 else ()
        )
        for i, (layout, workers) in enumerate(WORLDS)
    ]


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("layout, workers", _worlds())
@pytest.mark.parametrize("model", MODELS)
def test_resumed_run_is_bit_identical(world, model, layout, workers, source):
    result = world(layout, workers)[model]
    comparison = result[source]
    different = comparison["different"]
    assert different == [], (
        f"{len(different)} of {comparison['tensors']} tensors differ, e.g. {different[:3]}"
    )
    assert comparison["trained_after_resume"], (
        "the comparison has no teeth: no weight changed after the resume"
    )
    assert result["warnings"] == [], "no model attribute of these models may go unsaved"


@pytest.mark.parametrize("layout, workers", _worlds())
@pytest.mark.parametrize("model", ["retinanet", "fcos"])
def test_one_stage_detectors_save_their_loss_normalizer_per_rank(world, model, layout, workers):
    """The state the checkpoint used to miss: one EMA per rank, and the ranks' values differ (so
    restoring rank 0's everywhere would not do)."""
    per_rank = world(layout, workers)[model]["model_attributes"]["per_rank"]
    values = [entry["loss_normalizer"] for entry in per_rank]
    assert len(values) == 2 and values[0] != values[1], values


@pytest.mark.parametrize("layout, workers", _worlds())
def test_two_stage_detectors_save_no_attributes(world, layout, workers):
    results = world(layout, workers)
    assert results["mask_rcnn"]["model_attributes"] == results["faster_rcnn"]["model_attributes"] == {}


@pytest.mark.detectron2
def test_resume_in_a_fresh_launch_is_bit_identical(tiny_coco, world, matrix_root, tmp_path):
    """RetinaNet suspended, then resumed by a new launch (new processes, cold TorchScript)."""
    world(*WORLDS[0])
    ref = ["--ref-dir", str(_reference(matrix_root)), "--models", "retinanet"]
    _launch(tiny_coco, tmp_path / "interrupt", "1x2", 0, *ref, "--phases", "interrupt")
    (tmp_path / "interrupt" / "results.interrupt.json").rename(tmp_path / "first.json")
    results = _launch(tiny_coco, tmp_path / "interrupt", "1x2", 0, *ref, "--phases", "resume")
    assert results["retinanet"]["suspend"]["different"] == []
    assert results["retinanet"]["suspend"]["trained_after_resume"]
