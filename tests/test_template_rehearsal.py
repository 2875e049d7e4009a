"""The generated README's local rehearsal works for every layout, flavour and config system.

The README runs the manifest with ``hfai-runtime run-local`` on CPU, which starts one process per
pod (``--cpu-procs-per-pod N`` for more), with the smoke config. The rehearsal keeps the
cluster's batch semantics: the global batch is the job's world size (one image per GPU),
split over whatever processes run locally, and detectron2's rescaling is off
(``SOLVER.REFERENCE_WORLD_SIZE 0``), so the README's 10-iteration schedule is not rescaled
(8x for the default 1 x 8 job on one process), and iteration N is the cluster's iteration N. The fast test checks that arithmetic with detectron2's
own rescaling for many layouts; the slow one runs the README's commands exactly as written, for
both config systems and both job flavours, the default 1 node x 8 GPUs among them.
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
from _template_render import commit_project, git, render


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


def local_process_counts(nodes: int, gpus: int) -> list[int]:
    """Every process count run-local can start for the job over which its batch splits: one per
    pod, or ``--cpu-procs-per-pod k`` per pod for each k that divides the pod's GPUs."""
    return [nodes * k for k in range(1, gpus + 1) if gpus % k == 0]


@pytest.mark.detectron2
@pytest.mark.parametrize(("nodes", "gpus"), [(1, 8), (2, 4), (1, 1), (3, 5), (4, 8), (1, 16)])
def test_rehearsal_keeps_the_cluster_batch_and_the_smoke_schedule(template_src, tmp_path, nodes, gpus):
    """The README's batch is the cluster's (world size), detectron2's own rescaling leaves it and
    the README's short schedule alone for every local process count."""
    from detectron2.config import get_cfg
    from detectron2.engine import DefaultTrainer

    project = render(template_src, tmp_path / "p", {"num_nodes": nodes, "gpus_per_node": gpus})
    keys = overrides(rehearsal_args((project / "README.md").read_text()))
    world = nodes * gpus
    assert keys["SOLVER.IMS_PER_BATCH"] == str(world), "the cluster's global batch"
    assert keys["SOLVER.REFERENCE_WORLD_SIZE"] == "0", "no rescaling to the local process count"
    # The smoke config's schedule (configs/smoke_cpu.yaml), then the README's overrides.
    cfg = get_cfg()
    solver = yaml.safe_load((project / "configs" / "smoke_cpu.yaml").read_text())["SOLVER"]
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.BASE_LR = solver["MAX_ITER"], solver["BASE_LR"]
    cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.STEPS = solver["WARMUP_ITERS"], ()
    cfg.merge_from_list([item for pair in keys.items() if pair[0] != "OUTPUT_DIR" for item in pair])
    assert 5 < cfg.SOLVER.MAX_ITER <= solver["MAX_ITER"], "a rehearsal-sized schedule, with room to suspend"
    for processes in local_process_counts(nodes, gpus):
        scaled = DefaultTrainer.auto_scale_workers(cfg, processes)
        assert scaled.SOLVER.MAX_ITER == cfg.SOLVER.MAX_ITER, (processes, "the schedule is not rescaled")
        assert world == scaled.SOLVER.IMS_PER_BATCH, (processes, "the cluster's global batch")
        assert solver["BASE_LR"] == scaled.SOLVER.BASE_LR, (processes, "the smoke learning rate")


def test_lazy_rehearsal_keeps_the_cluster_batch(template_src, tmp_path):
    """LazyConfigs have no rescaling: the README sets the cluster's global batch directly."""
    project = render(
        template_src, tmp_path / "p", {"config_system": "lazy", "num_nodes": 2, "gpus_per_node": 4}
    )
    args = rehearsal_args((project / "README.md").read_text())
    assert args[:2] == ["--config-file", "configs/smoke_cpu.py"]
    assert "dataloader.train.total_batch_size=8" in args
    assert "train.max_iter=10" in args, "a rehearsal-sized schedule"


@pytest.mark.parametrize(
    ("answers", "replica"),
    [
        ({}, "master-0"),
        ({"num_nodes": 3, "gpus_per_node": 2}, "worker-1"),
        ({"job_flavour": "trainjob"}, "node-0"),
        ({"job_flavour": "trainjob", "num_nodes": 2, "gpus_per_node": 4}, "node-1"),
    ],
)
def test_container_rehearsal_preempts_a_replica_the_job_has(template_src, tmp_path, answers, replica):
    """The README's container rehearsal preempts the job's last replica by the name run-local
    (and the cluster) gives it: a TrainJob has node-N pods, no master-0."""
    from hfai_runtime.local.manifest import load_job

    project = render(template_src, tmp_path / "p", answers)
    readme = (project / "README.md").read_text()
    preempted = re.findall(r"--preempt ([a-z]+-[0-9]+)@", readme)
    assert preempted == [replica]
    assert replica in {r.name for r in load_job(project / "k8s" / "job.yaml").replicas}


def run_block(block: str, cwd: Path, timeout: float) -> tuple[int, str]:
    """Run a README block with ``bash -e``; on timeout stop every process it started (the pods
    and their DataLoader workers run in process groups of their own), then fail."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    log = cwd.parent / f"{cwd.name}-rehearsal.log"  # beside the project: not one of its files
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


#: The README rehearsals run as written: both config systems, both job flavours, the default
#: 1 node x 8 GPUs and a two-node job (a worker that must follow the suspend agreement).
REHEARSALS = {
    "defaults-1x8": {},
    "yacs-trainjob-2x4": {"job_flavour": "trainjob", "num_nodes": 2, "gpus_per_node": 4},
    "lazy-1x8": {"config_system": "lazy"},
    "lazy-trainjob-2x4": {
        "config_system": "lazy",
        "job_flavour": "trainjob",
        "num_nodes": 2,
        "gpus_per_node": 4,
    },
}


@pytest.mark.slow
@pytest.mark.detectron2
@pytest.mark.timeout(1800)  # a minute on two idle cores; many on a loaded machine
@pytest.mark.parametrize("layout", REHEARSALS.values(), ids=REHEARSALS.keys())
def test_readme_rehearsal_runs_as_written(template_src, tmp_path, layout):
    """synth-coco, ffr pack, run-local with --suspend-at and --resume-after: the README's block,
    run by bash in the project. The run suspends, writes a checkpoint, resumes from it, trains
    the README's schedule (not a rescaled one) and evaluates the final model."""
    project = render(template_src, tmp_path / "project", layout)
    commit_project(project, "generated")
    code, output_log = run_block(rehearsal((project / "README.md").read_text()), project, timeout=1700)
    assert code == 0, output_log[-6000:]
    # The project's .gitignore covers what the rehearsal wrote (data, packs, checkpoints, pod logs).
    assert git(project, "status", "--porcelain", "--untracked-files=all") == ""
    output = project / "local-pvc" / "output" / "local"
    assert (output / "model_final.pth").is_file(), "the resumed run finished"
    log = (output / "log.txt").read_text()
    starts = [int(i) for i in re.findall(r"Starting training from iteration (\d+)", log)]
    assert len(starts) == 2 and starts[0] == 0 and starts[1] > 0, f"not resumed from a checkpoint: {starts}"
    iterations = [int(i) for i in re.findall(r"\biter: (\d+)", log)]
    assert iterations and max(iterations) == 9, "the README's 10 iterations, not a rescaled schedule"
    assert "copypaste: Task: bbox" in log, "the final model was evaluated (print_csv_format)"
    for text in [log, *(p.read_text() for p in (project / "run-local-logs").glob("*.log"))]:
        assert "\x1b" not in text, "log files hold no colour codes (train_net.py's plain_text_logs)"
