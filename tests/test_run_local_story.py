"""The demo's story as a test: the rendered PyTorchJob, run locally, survives a preemption.

The template is rendered with copier (2 nodes x 1 GPU, otherwise defaults), a synthetic
COCO-format dataset is packed into the PVC's datasets folder the way the job reads it, and
``run-local`` runs the manifest with real detectron2 on CPU and gloo (the CPU-sized
``configs/smoke_cpu.yaml`` through ``--args``). A few seconds into training worker-0 is preempted
(SIGTERM to its launcher). Asserted from the runner's events and the checkpoints on the "PVC":
both replicas left training with exit 143 and were recreated, the one checkpoint written is the
suspend checkpoint at iteration N (every rank that logs where it stopped says N), the run resumed
at iteration N + 1 and the job succeeded, with its final evaluation.
"""

from __future__ import annotations

import pytest
from _template_render import render, smoke_args, template_repo

from hfai_runtime.local.manifest import load_job
from hfai_runtime.local.runner import At, RunOptions, run_job
from hfai_runtime.synthetic import packed_coco_pvc

pytestmark = pytest.mark.slow

ANSWERS = {"num_nodes": 2, "gpus_per_node": 1}
MAX_ITER = 12
PREEMPT_AFTER_TRAINING_S = 2.0


def test_a_preempted_replica_stops_every_rank_and_the_job_resumes(tmp_path):
    project = render(template_repo(tmp_path / "template"), tmp_path / "project", ANSWERS)
    job = load_job(project / "k8s" / "job.yaml")
    assert [r.name for r in job.replicas] == ["master-0", "worker-0"]
    storage = next(m.path for m in job.replicas[0].mounts if m.path != "/dev/shm")
    pvc = packed_coco_pvc(tmp_path / "pvc", tmp_path / "source")

    lines: list[str] = []
    options = RunOptions(
        project_dir=project,
        data_dir=pvc,
        args=smoke_args(f"{storage}/output/story", MAX_ITER),
        preempt=[("worker-0", At(PREEMPT_AFTER_TRAINING_S, after_training=True))],
    )
    result = run_job(job, options, lines.append)
    log = "\n".join(lines)
    # The job's condition as kubectl describe shows it.
    assert (result.condition, result.reason) == ("Succeeded", "PyTorchJobSucceeded"), log[-6000:]
    assert result.succeeded, log[-6000:]

    assert len(result.of_kind("preempted", "worker-0")) == 1
    for name in ("master-0", "worker-0"):  # both left with the suspend code, both came back
        assert [e.value for e in result.of_kind("exited", name)][0] == 143, log[-6000:]
        assert len(result.of_kind("restarting", name)) == 1
    assert [e.value for e in result.of_kind("exited", "master-0")] == [143, 0]
    # The worker ends with the master; should it still be tearing down when the master succeeds,
    # the template's cleanPodPolicy Running deletes it then (SIGTERM: 143), as on a cluster.
    assert [e.value for e in result.of_kind("exited", "worker-0")][1] in (0, 143)
    output = pvc / "output" / "story"  # OUTPUT_DIR on the PVC, mapped to the data folder
    suspend_checkpoints = sorted(output.glob("model_0*.pth"))
    assert len(suspend_checkpoints) == 1  # CHECKPOINT_PERIOD is 1000: only the suspend wrote one
    iteration = int(suspend_checkpoints[0].stem.split("_")[1])
    assert 0 <= iteration < MAX_ITER - 1
    # Every rank says where it stopped, and it is that iteration (the ranks agree each step).
    stops = sorted((e.replica, e.value) for e in result.of_kind("stopped_at"))
    assert stops == [("master-0", iteration), ("worker-0", iteration)], log[-6000:]
    starts = [e.value for e in result.of_kind("trains_from", "master-0")]
    assert starts == [0, iteration + 1]  # resumed at the next iteration
    assert (output / "model_final.pth").is_file()
    assert "Evaluation results for coco_2017_val" in log  # the final COCO evaluation ran
