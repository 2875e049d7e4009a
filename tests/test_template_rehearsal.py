"""The generated README's local rehearsal works for every nodes x GPUs answer.

The README runs the manifest with ``hfai-runtime run-local`` on CPU, which starts as many
processes per pod as the job has GPUs per node, with the smoke config. A batch must split evenly
over the processes, so the README passes ``SOLVER.IMS_PER_BATCH`` = the job's process count and
``SOLVER.REFERENCE_WORLD_SIZE`` = the same, so that detectron2 rescales it should fewer
processes run. The fast test checks that arithmetic with detectron2's own rescaling for many
layouts; the slow one runs the README's commands exactly as written, for the default answers
(1 node x 8 GPUs) and a 2 x 4 project.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import yaml
from _template_hostile import bash_blocks, shell_commands
from _template_render import render


def rehearsal(readme: str) -> str:
    """The README's bash block that runs the manifest locally."""
    (block,) = [b for b in bash_blocks(readme) if "hfai-runtime run-local" in b]
    return block


def rehearsal_args(readme: str) -> list[str]:
    """The ``--args`` of the README's run-local command, split as run-local splits them."""
    (run_local,) = [c for c in shell_commands(readme) if c[:2] == ["hfai-runtime", "run-local"]]
    return shlex.split(run_local[run_local.index("--args") + 1])


def overrides(args: list[str]) -> dict[str, str]:
    """detectron2's ``KEY VALUE`` pairs after ``--config-file FILE``."""
    assert args[:2] == ["--config-file", "configs/smoke_cpu.yaml"]
    pairs = args[2:]
    return dict(zip(pairs[::2], pairs[1::2], strict=True))


@pytest.mark.detectron2
@pytest.mark.parametrize(("nodes", "gpus"), [(1, 8), (2, 4), (1, 1), (3, 5), (4, 8), (1, 16)])
def test_rehearsal_batch_splits_over_any_process_count(template_src, tmp_path, nodes, gpus):
    """For the job's processes, and for fewer (a runner that starts fewer on a small machine),
    detectron2's own rescaling gives a batch that splits evenly and a schedule long enough to
    suspend in."""
    from detectron2.config import get_cfg
    from detectron2.engine import DefaultTrainer

    project = render(template_src, tmp_path / "p", {"num_nodes": nodes, "gpus_per_node": gpus})
    keys = overrides(rehearsal_args((project / "README.md").read_text()))
    world = nodes * gpus
    assert keys["SOLVER.IMS_PER_BATCH"] == keys["SOLVER.REFERENCE_WORLD_SIZE"] == str(world)
    # The smoke config's schedule (configs/smoke_cpu.yaml), then the README's overrides.
    cfg = get_cfg()
    solver = yaml.safe_load((project / "configs" / "smoke_cpu.yaml").read_text())["SOLVER"]
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.BASE_LR = solver["MAX_ITER"], solver["BASE_LR"]
    cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.STEPS = solver["WARMUP_ITERS"], ()
    cfg.merge_from_list([item for pair in keys.items() if pair[0] != "OUTPUT_DIR" for item in pair])
    for processes in range(1, world + 1):
        scaled = DefaultTrainer.auto_scale_workers(cfg, processes)
        assert scaled.SOLVER.IMS_PER_BATCH % processes == 0, (processes, scaled.SOLVER.IMS_PER_BATCH)
        assert scaled.SOLVER.IMS_PER_BATCH // processes == 1, "one image per process"
        assert solver["MAX_ITER"] <= scaled.SOLVER.MAX_ITER, "no shorter than the smoke schedule"
        assert solver["BASE_LR"] * (1 + 1e-9) >= scaled.SOLVER.BASE_LR, "no hotter than the smoke LR"


def run_block(block: str, cwd: Path, timeout: float) -> tuple[int, str]:
    """Run a README block with ``bash -e``; on timeout stop every process it started (the pods
    and their DataLoader workers run in process groups of their own), then fail."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    log = cwd / "rehearsal.log"
    with log.open("w") as out:
        shell = subprocess.Popen(
            ["bash", "-e", "-c", block], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            code = shell.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for process in psutil.Process(shell.pid).children(recursive=True) + [psutil.Process(shell.pid)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()
            shell.wait()
            pytest.fail(f"the README's rehearsal ran over {timeout} s:\n{log.read_text()[-4000:]}")
    return code, log.read_text()


@pytest.mark.slow
@pytest.mark.timeout(3600)  # 8 CPU training processes, twice: minutes even on a quiet machine
@pytest.mark.parametrize("layout", [{}, {"num_nodes": 2, "gpus_per_node": 4}], ids=["defaults-1x8", "2x4"])
def test_readme_rehearsal_runs_as_written(template_src, tmp_path, layout):
    """synth-coco, ffr pack, run-local with --suspend-at and --resume-after: the README's block,
    run by bash in the project. The run suspends, writes a checkpoint, resumes from it, ends."""
    project = render(template_src, tmp_path / "project", layout)
    code, output_log = run_block(rehearsal((project / "README.md").read_text()), project, timeout=3300)
    assert code == 0, output_log[-6000:]
    output = project / "local-pvc" / "output" / "local"
    assert (output / "model_final.pth").is_file(), "the resumed run finished"
    starts = [
        int(i)
        for i in re.findall(r"Starting training from iteration (\d+)", (output / "log.txt").read_text())
    ]
    assert len(starts) == 2 and starts[0] == 0 and starts[1] > 0, f"not resumed from a checkpoint: {starts}"
