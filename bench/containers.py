"""Containers vs. local processes: how long until training runs, and how fast a preemption ends.

The template's 2-node PyTorchJob (rendered with copier, CPU-sized config, a synthetic COCO on the
"PVC") runs twice with ``run-local``: as local processes, and as podman containers of the
project's image FROM the CPU base image (built first when missing; see
tools/containers/images.py). Each run preempts worker-0 a moment after training started.
Reported from the runner's timeline, per engine:

* **start -> first iteration**: the replicas' first ``started`` to the first ``trains_from``;
* **preemption -> exit**: ``preempted`` to worker-0's exit (SIGTERM through ``podman stop`` and
  tini in a container; straight to the launcher locally), and the ratio container / local. It
  includes finishing the current step and saving the checkpoint, so it follows the step time of
  each environment's torch (the image's is Debian's build when made offline).

    .venv/bin/python -m bench.containers        (podman, as root; skipped with the reason otherwise)
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import copier

from hfai_runtime.local.engine import ContainerEngine
from hfai_runtime.local.manifest import load_job
from hfai_runtime.local.runner import At, JobResult, RunOptions, run_job
from hfai_runtime.synthetic import packed_coco_pvc
from tools.containers import images

PROJECT = "localhost/d2-hfai-project:bench"
ANSWERS = {"num_nodes": 2, "gpus_per_node": 1, "image": PROJECT, "grace_seconds": 30}
MAX_ITER = 12
PREEMPT_AFTER_TRAINING_S = 2.0


def render_project(dest: Path) -> Path:
    """The template as copier would render it for a user (from this checkout's template)."""
    copier.run_copy(str(images.REPO), str(dest), data=ANSWERS, defaults=True, unsafe=False, quiet=True)
    return dest


def run(project: Path, pvc: Path, engine: ContainerEngine | None) -> JobResult:
    job = load_job(project / "k8s" / "job.yaml")
    storage = next(m.path for m in job.replicas[0].mounts if m.path != "/dev/shm")
    name = "podman" if engine else "process"
    args = [
        "--config-file",
        "configs/smoke_cpu.yaml",
        "OUTPUT_DIR",
        f"{storage}/output/{name}",
        "SOLVER.MAX_ITER",
        str(MAX_ITER),
        "DATALOADER.NUM_WORKERS",
        "1",
    ]
    if engine is not None:
        engine.args = args
    options = RunOptions(
        project_dir=project,
        data_dir=pvc,
        args=args,
        **({"engine": engine} if engine else {}),
        preempt=[("worker-0", At(PREEMPT_AFTER_TRAINING_S, after_training=True))],
    )
    result = run_job(job, options, write=lambda line: None)
    if not result.succeeded:
        raise SystemExit(f"bench.containers: the {name} run failed: {result.message}")
    return result


def timings(result: JobResult) -> tuple[float, float]:
    """(start -> first iteration, preemption -> worker-0's exit), in seconds."""
    started = result.of_kind("started")[0].time
    trains = result.of_kind("trains_from")[0].time
    preempted = result.of_kind("preempted", "worker-0")[0].time
    exited = result.of_kind("exited", "worker-0")[0].time
    return trains - started, exited - preempted


def main() -> None:
    if reason := images.unavailable():
        print(f"bench.containers: skipped: {reason}")
        return
    images.use_engine_settings()
    with tempfile.TemporaryDirectory(prefix="bench-containers-") as tmp:
        work = Path(tmp)
        checkout = images.clean_checkout(work / "checkout")
        base = images.base_tag(checkout)
        if not images.image_exists(base) and not images.DETECTRON2_TARBALL.exists():
            print(
                f"bench.containers: skipped: {images.DETECTRON2_TARBALL} is absent (the "
                f"detectron2 source the CPU image compiles)"
            )
            return
        seconds = images.build_base_image(checkout, base)
        print(
            f"CPU base image {base}: built in {seconds:.0f} s"
            if seconds
            else f"CPU base image {base}: built before"
        )
        project = render_project(work / "project")
        seconds = images.build_project_image(project, base, PROJECT)
        print(f"project image built in {seconds:.1f} s")
        pvc = packed_coco_pvc(work / "pvc", work / "source")
        local = timings(run(project, pvc, None))
        job = load_job(project / "k8s" / "job.yaml")
        with ContainerEngine(job, PROJECT, pvc) as engine:
            container = timings(run(project, pvc, engine))
    print("                          local    podman   ratio")
    for label, a, b in (
        ("start -> first iteration", local[0], container[0]),
        ("preemption -> exit", local[1], container[1]),
    ):
        print(f"{label:<24} {a:7.2f} s {b:7.2f} s  {b / a:5.2f}x")


if __name__ == "__main__":
    main()
