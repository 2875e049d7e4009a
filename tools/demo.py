"""``make demo``: the whole story on one CPU machine, with the commands a user would type.

1. Render a project from this template with copier (its defaults but 2 nodes x 1 GPU).
2. Make a small synthetic COCO-format dataset and pack it with ``hfai-runtime ffr pack``
   into the PVC's datasets folder, in HFAI's layout (coco/coco.ffr + coco/annotations/).
3. Run the rendered ``k8s/job.yaml`` (a Kubeflow PyTorchJob, 2 replicas) with
   ``hfai-runtime run-local``: real detectron2 on CPU over gloo, with the environment the
   operator injects. A few seconds into training worker-0 is preempted (SIGTERM to its
   launcher); every rank stops at the same iteration, checkpoints and exits 143; both
   replicas are recreated, resume from the next iteration and finish with a COCO evaluation.
4. Print what happened, from the runner's event timeline.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "hfai_runtime.cli"]


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    print("$ " + shlex.join(str(c) for c in cmd), flush=True)
    return subprocess.run([str(c) for c in cmd], **kwargs)


def render(project: Path) -> None:
    import copier

    step(f"copier copy {REPO} {project} --defaults -d num_nodes=2 -d gpus_per_node=1")
    # vcs_ref=HEAD renders this checkout as it is, uncommitted changes included.
    copier.run_copy(str(REPO), str(project), data={"num_nodes": 2, "gpus_per_node": 1},
                    defaults=True, vcs_ref="HEAD", quiet=True)
    print(f"rendered {sorted(p.name for p in project.iterdir())}")


def make_dataset(source: Path, datasets: Path) -> None:
    step("a synthetic COCO-format dataset, packed into the PVC's datasets folder")
    run(CLI + ["synth-coco", source, "--train", "32", "--val", "8", "--coco-categories"], check=True)
    print(f"$ mkdir -p {datasets}/coco")
    (datasets / "coco").mkdir(parents=True)
    run(CLI + ["ffr", "pack", source, datasets / "coco" / "coco.ffr"], check=True)
    print(f"$ cp -r {source}/annotations {datasets}/coco/annotations")
    shutil.copytree(source / "annotations", datasets / "coco" / "annotations")


def run_job(project: Path, pvc: Path, events: Path, max_iter: int, preempt_after: float) -> int:
    step("hfai-runtime run-local k8s/job.yaml: the PyTorchJob on this machine, one replica "
         f"preempted {preempt_after:g} s into training")
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    # The CPU-sized config instead of the GPU one; OUTPUT_DIR on the PVC, as in the manifest.
    config_args = ["--config-file", "configs/smoke_cpu.yaml", "SOLVER.MAX_ITER", str(max_iter),
                   "OUTPUT_DIR", f"{answers['mount_path'].rstrip('/')}/output/demo"]
    cmd = CLI + ["run-local", project / "k8s" / "job.yaml", "--data-dir", pvc,
                 "--args", shlex.join(config_args), "--preempt", f"worker-0@train+{preempt_after:g}",
                 "--events", events]
    return run(cmd, cwd=project).returncode


def summarize(events_file: Path, output: Path) -> None:
    events = [json.loads(line) for line in events_file.read_text().splitlines()]

    def values(kind: str, replica: str | None = None) -> list:
        return [e["value"] for e in events if e["kind"] == kind and replica in (None, e["replica"])]

    step("what happened")
    for name in ("master-0", "worker-0"):
        print(f"{name}: stopped at iteration {values('stopped_at', name)}, exit codes "
              f"{values('exited', name)}")
    print(f"training started from iteration {values('trains_from', 'master-0')} (master-0's log)")
    final = [e for e in events if not e["replica"]][-1]
    print(f"job: {final['kind']} -- {final['detail']}")
    metrics = json.loads((output / "metrics.json").read_text().splitlines()[-1])
    print("final COCO evaluation: " + ", ".join(
        f"{key} {metrics[key]:.1f}" for key in ("bbox/AP", "bbox/AP50", "segm/AP", "segm/AP50")
        if key in metrics))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=REPO / "work" / "demo")
    parser.add_argument("--max-iter", type=int, default=60)
    parser.add_argument("--preempt-after", type=float, default=8.0,
                        help="seconds into training at which worker-0 is preempted")
    args = parser.parse_args()

    work = args.work_dir.resolve()
    shutil.rmtree(work, ignore_errors=True)
    project, pvc = work / "myproj", work / "pvc"
    render(project)
    make_dataset(work / "coco-source", pvc / "datasets")
    code = run_job(project, pvc, work / "events.jsonl", args.max_iter, args.preempt_after)
    if code == 0:
        summarize(work / "events.jsonl", pvc / "output" / "demo")
    print(f"\nrendered project: {project}\ncheckpoints, metrics and evaluation: {pvc}/output/demo"
          f"\nevent timeline (JSON lines): {work}/events.jsonl")
    return code


if __name__ == "__main__":
    sys.exit(main())
