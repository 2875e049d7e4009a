"""``make demo``: the whole story on one CPU machine, with the commands a user would type.

1. Render a project from this template with copier (its defaults but 2 nodes x 1 GPU).
2. Make a small synthetic COCO-format dataset and pack it with ``hfai-runtime ffr pack``
   into the PVC's datasets folder, in HFAI's layout (coco/coco.ffr + coco/annotations/).
3. Run the rendered ``k8s/job.yaml`` (a Kubeflow PyTorchJob, 2 replicas) with
   ``hfai-runtime run-local``: real detectron2 on CPU over gloo, with the environment the
   operator injects. A few seconds into training worker-0 is preempted (SIGTERM to its
   launcher); every rank stops at the same iteration, checkpoints and exits 143; both
   replicas are recreated, resume from the next iteration and finish with a COCO evaluation.
4. Run the same job uninterrupted (or reuse the cached run of an identical setup) and compare:
   the largest weight difference, the iterations each attempt trained, and a picture -- the
   two loss curves with the preemption marked, over the pods' timeline.

Pod logs go to ``<work>/logs/<pod>-attempt<N>.log``; the terminal shows the story.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout: `python tools/demo.py`
CLI = [sys.executable, "-m", "hfai_runtime.cli"]

from hfai_runtime.records import RecordKind, parse_record  # noqa: E402
from hfai_runtime.timeline import Event, EventKind, read_events  # noqa: E402

SEED = 20240601
#: Pod states drawn in the Gantt chart, and their colours.
GANTT_COLOURS = {"running": "tab:green", "terminating": "tab:orange", "restarting": "tab:grey"}


def step(text: str) -> None:
    print(f"==> {text}", flush=True)


def show(cmd: Sequence[object], cwd: Path | None = None) -> None:
    """Print ``cmd`` as a user would type it (``hfai-runtime``, not this interpreter)."""
    words = [str(c) for c in cmd]
    if words[: len(CLI)] == CLI:
        words = ["hfai-runtime", *words[len(CLI) :]]
    print("$ " + (f"cd {shlex.quote(str(cwd))} && " if cwd else "") + shlex.join(words), flush=True)


def quiet_run(cmd: Sequence[object], **kwargs) -> None:
    """Show the command; run it with its output kept unless it fails."""
    show(cmd)
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        sys.exit(f"demo: the command above failed ({done.returncode}):\n{done.stdout}{done.stderr}")


def render(project: Path) -> None:
    import copier

    print(f"$ copier copy {REPO} {project} --defaults -d num_nodes=2 -d gpus_per_node=1")
    # vcs_ref=HEAD renders this checkout as it is, uncommitted changes included (copier warns
    # about those; here they are the point).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        copier.run_copy(
            str(REPO),
            str(project),
            data={"num_nodes": 2, "gpus_per_node": 1},
            defaults=True,
            vcs_ref="HEAD",
            quiet=True,
        )


def make_dataset(source: Path, datasets: Path) -> None:
    quiet_run(CLI + ["synth-coco", source, "--train", "32", "--val", "8", "--coco-categories"])
    (datasets / "coco").mkdir(parents=True)
    quiet_run(CLI + ["ffr", "pack", source, datasets / "coco" / "coco.ffr"])
    shutil.copytree(source / "annotations", datasets / "coco" / "annotations")


def config_args(project: Path, output: str, max_iter: int) -> list[str]:
    """The CPU-sized config instead of the GPU one; OUTPUT_DIR on the PVC; a fixed SEED, or
    detectron2 seeds each run differently and no two runs could be compared."""
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    return [
        "--config-file",
        "configs/smoke_cpu.yaml",
        "SOLVER.MAX_ITER",
        str(max_iter),
        "SEED",
        str(SEED),
        "OUTPUT_DIR",
        f"{answers['mount_path'].rstrip('/')}/output/{output}",
    ]


def run_job(
    project: Path, pvc: Path, work: Path, name: str, max_iter: int, extra: Sequence[str], quiet: bool
) -> int:
    """``run-local`` of the project's manifest, run in the project folder as a user would;
    logs under work/logs (or work/<name>-logs)."""
    logs = "logs" if name == "demo" else f"{name}-logs"
    up = Path(os.path.relpath(work, project))
    cmd = CLI + [
        "run-local",
        "k8s/job.yaml",
        "--data-dir",
        Path(os.path.relpath(pvc, project)),
        "--args",
        shlex.join(config_args(project, name, max_iter)),
        "--logs-dir",
        up / logs,
        "--events",
        up / f"{name}-events.jsonl",
        *extra,
    ]
    if quiet:
        cmd.append("--quiet")
    show(cmd, cwd=project)
    # One progress record per iteration (the runtime's default is every 20th): the picture's
    # loss curves and the per-attempt iterations are read from them.
    env = {**os.environ, "HFAI_PROGRESS_EVERY": "1"}
    return subprocess.run([str(c) for c in cmd], cwd=project, env=env).returncode


def reference_run(project: Path, pvc: Path, work: Path, cached: Path, max_iter: int) -> Path:
    """The uninterrupted run's output folder (its pod logs in ``logs/``), from ``cached`` if an
    identical setup ran before."""
    if (cached / "model_final.pth").is_file() and (cached / "logs").is_dir():
        step(f"3. the same job uninterrupted: reusing the identical setup's run in {cached}")
        return cached
    step("3. the same job uninterrupted, to compare with")
    if run_job(project, pvc, work, "reference", max_iter, [], quiet=True) != 0:
        sys.exit(f"demo: the uninterrupted run failed; see its logs in {work}/reference-logs")
    shutil.rmtree(cached, ignore_errors=True)
    cached.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(pvc / "output" / "reference", cached)
    shutil.copytree(work / "reference-logs", cached / "logs")
    return cached


def setup_key(project: Path, pvc: Path, max_iter: int) -> str:
    """A hash of everything the run's result depends on: the project, the runtime, the data."""
    digest = hashlib.sha256(str(max_iter).encode())
    for root in (project, REPO / "hfai_runtime", pvc / "datasets"):
        for path in sorted(root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(f"{root.name}/{path.relative_to(root)}".encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def largest_weight_difference(a: Path, b: Path) -> tuple[float, int, int]:
    """max |a - b| over the model's tensors, how many tensors differ, and how many there are."""
    import torch

    ma = torch.load(a, map_location="cpu", weights_only=True)["model"]
    mb = torch.load(b, map_location="cpu", weights_only=True)["model"]
    if ma.keys() != mb.keys():
        raise SystemExit(f"demo: {a} and {b} hold different tensors")
    diffs = [(ma[k].double() - mb[k].double()).abs().max().item() if ma[k].numel() else 0.0 for k in ma]
    return max(diffs), sum(d != 0 for d in diffs), len(diffs)


def attempt_iterations(logs: Path) -> list[tuple[str, int | None, int | None]]:
    """(log file, first iteration, last iteration) of each pod attempt, from the runtime's
    records in its log (as ``kubectl logs [--previous]`` shows them)."""
    out = []
    for log in sorted(logs.glob("*-attempt*.log")):
        first = last = None
        for line in log.read_text(errors="replace").splitlines():
            record = parse_record(line)
            if record is None or record.iteration is None:
                continue
            if record.kind == RecordKind.TRAINING_STARTED and first is None:
                first = record.iteration
            elif record.kind in (RecordKind.PROGRESS, RecordKind.SUSPENDED):
                last = record.iteration
        out.append((log.stem, first, last))
    return out


def read_losses(logs: Path, pod: str = "master-0") -> tuple[list[int], list[float]]:
    """(iteration, loss) of every step, from the ``progress`` records in ``pod``'s logs (rank 0
    logs the loss averaged over the ranks). Across attempts an iteration trained twice keeps
    its last value, as the checkpoint does."""
    losses: dict[int, float] = {}
    for log in sorted(logs.glob(f"{pod}-attempt*.log"), key=_attempt_number):
        for line in log.read_text(errors="replace").splitlines():
            record = parse_record(line)
            loss = None if record is None else record.fields.get("loss")
            if (
                record is not None
                and record.kind == RecordKind.PROGRESS
                and record.iteration is not None
                and isinstance(loss, (int, float))
            ):
                losses[record.iteration] = float(loss)
    iterations = sorted(losses)
    return iterations, [losses[i] for i in iterations]


def _attempt_number(log: Path) -> int:
    return int(log.stem.rsplit("-attempt", 1)[1])


def gantt_bars(events: Sequence[Event]) -> dict[str, list[tuple[float, float, str]]]:
    """Per pod, (start, duration, state) bars: running from started to SIGTERM (or exit),
    terminating from SIGTERM to exit, restarting from exit to the next start."""
    bars: dict[str, list[tuple[float, float, str]]] = {}
    since: dict[str, tuple[float, str]] = {}
    end = max((e.time for e in events), default=0.0)

    def close(pod: str, at: float, next_state: str | None) -> None:
        if pod in since:
            start, state = since.pop(pod)
            if at > start:
                bars.setdefault(pod, []).append((start, at - start, state))
        if next_state is not None:
            since[pod] = (at, next_state)

    for e in events:
        if e.kind == EventKind.STARTED:
            close(e.replica, e.time, "running")
        elif e.kind in (EventKind.PREEMPTED, EventKind.STOPPING) and e.replica in since:
            close(e.replica, e.time, "terminating")
        elif e.kind == EventKind.SUSPENDED:
            for pod in list(since):
                close(pod, e.time, "terminating")
        elif e.kind == EventKind.EXITED:
            close(e.replica, e.time, None)
        elif e.kind == EventKind.RESTARTING:
            since[e.replica] = (e.time, "restarting")
    for pod in list(since):
        close(pod, end, None)
    return bars


def plot(preempted_logs: Path, reference_logs: Path, events: Sequence[Event], out: Path) -> dict:
    """Draw the picture into ``out`` (PNG) and return what was drawn: both runs' losses (from
    their pod logs), the iterations where the preempted run stopped, and the Gantt bars."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    drawn = {
        "preempted": read_losses(preempted_logs),
        "reference": read_losses(reference_logs),
        "stopped_at": sorted({e.value for e in events if e.kind == EventKind.STOPPED_AT}),
        "bars": gantt_bars(events),
    }
    fig, (loss_ax, gantt_ax) = plt.subplots(2, 1, figsize=(9, 7), height_ratios=(3, 2))
    loss_ax.plot(*drawn["reference"], "-", color="tab:blue", lw=4, alpha=0.4, label="uninterrupted")
    loss_ax.plot(*drawn["preempted"], "--", color="tab:red", lw=1.5, label="preempted + resumed")
    for i, iteration in enumerate(drawn["stopped_at"]):
        loss_ax.axvline(
            iteration + 0.5,
            color="tab:orange",
            ls=":",
            label="preemption (suspend checkpoint)" if i == 0 else None,
        )
    loss_ax.set(xlabel="iteration", ylabel="total loss", title="Training loss")
    loss_ax.legend()
    pods = sorted(drawn["bars"])
    for row, pod in enumerate(pods):
        for start, width, state in drawn["bars"][pod]:
            gantt_ax.barh(row, width, left=start, color=GANTT_COLOURS[state], edgecolor="white")
    gantt_ax.set(
        yticks=range(len(pods)),
        yticklabels=pods,
        xlabel="seconds since the start",
        title="Pods (the preempted run)",
    )
    gantt_ax.legend(
        handles=[plt.Rectangle((0, 0), 1, 1, color=c, label=s) for s, c in GANTT_COLOURS.items()],
        loc="lower right",
    )
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out)
    return drawn


def summarize(work: Path, output: Path, reference: Path, picture: Path) -> None:
    events = read_events(work / "demo-events.jsonl")
    print()
    step("Summary")
    final = [e for e in events if e.kind == EventKind.FINISHED][-1]
    print(f"job: {final.detail}")
    for log, first, last in attempt_iterations(work / "logs"):
        trained = (
            "trained no iteration"
            if first is None or last is None
            else f"trained iterations {first} to {last}"
        )
        print(f"{log}: {trained}")
    diff, differing, total = largest_weight_difference(
        output / "model_final.pth", reference / "model_final.pth"
    )
    verdict = "bit-identical" if diff == 0 else f"{differing} of {total} tensors differ"
    print(f"final weights vs the uninterrupted run: largest difference {diff:g} ({verdict})")
    metrics = json.loads((output / "metrics.json").read_text().splitlines()[-1])
    scores = [f"{key} {metrics[key]:.1f}" for key in ("bbox/AP", "bbox/AP50", "segm/AP") if key in metrics]
    if scores:
        print("final COCO evaluation: " + ", ".join(scores))
    print(f"picture (loss curves over the pods' timeline): {picture}")
    print(f"pod logs: {work}/logs/   checkpoints and metrics: {output}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=REPO / "work" / "demo")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=REPO / "work" / "demo-reference",
        help="uninterrupted runs, by a hash of their setup",
    )
    parser.add_argument("--max-iter", type=int, default=60)
    parser.add_argument(
        "--preempt-after",
        type=float,
        default=8.0,
        help="seconds into training at which worker-0 is preempted",
    )
    args = parser.parse_args()

    work = args.work_dir.resolve()
    shutil.rmtree(work, ignore_errors=True)
    project, pvc = work / "myproj", work / "pvc"
    step(
        "1. a project from this template (2 nodes x 1 GPU) and a synthetic COCO dataset, packed "
        "onto the 'PVC'"
    )
    render(project)
    make_dataset(work / "coco-source", pvc / "datasets")
    cached = args.cache_dir.resolve() / setup_key(project, pvc, args.max_iter)
    step(
        f"2. the PyTorchJob on this machine, worker-0 preempted {args.preempt_after:g} s into "
        f"training (pod logs: {work}/logs)"
    )
    code = run_job(
        project,
        pvc,
        work,
        "demo",
        args.max_iter,
        ["--preempt", f"worker-0@train+{args.preempt_after:g}"],
        quiet=False,
    )
    if code != 0:
        print(f"\ndemo: the job failed; pod logs are in {work}/logs")
        return code
    reference = reference_run(project, pvc, work, cached, args.max_iter)
    output = pvc / "output" / "demo"
    picture = work / "preemption.png"
    plot(work / "logs", reference / "logs", read_events(work / "demo-events.jsonl"), picture)
    summarize(work, output, reference, picture)
    return 0


if __name__ == "__main__":
    sys.exit(main())
