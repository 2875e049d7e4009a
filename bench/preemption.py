"""The whole price of one preemption, phase by phase, and what it does to goodput.

    .venv/bin/python -m bench.preemption [--out DIR]

1. **Phases** of one preemption of a real job (tools/tiny_train.py, CPU, 64-px synthetic COCO):
   the tiny model (Faster R-CNN R18-FPN, 1 machine x 2 processes) and Mask R-CNN R50-FPN (the
   zoo's model, 1 process). SIGTERM (to rank 1, or to the one process) -> the ranks' agreed stop
   -> save -> the launcher's exit, from the SUSPENDED record and the bench's clock; then the
   same command again (a pod's restart) -> first resumed step, split by the STARTUP record's
   marks (:mod:`hfai_runtime.startup`). Baselines from the same run: an empty interpreter's
   start, ``import torch, detectron2.engine``, an idle interpreter's exit with both imported.
2. **Save**: the Mask R-CNN checkpoint's state saved as the runtime saves it (torch's CRC off,
   ISA-L CRC-32 sidecar, fsync) and as torch saves by default (its zlib CRC on, + fsync),
   against writing the same number of bytes with ``os.write`` + fsync, alternating, best of 3.
3. **Replay at scale**: a COCO-sized stream (118,287 images, 62 % landscape, 16 images per
   iteration over 8 ranks) resumed at 1k-270k iterations: the main process's replay of the
   aspect-ratio buckets, and each of 4 DataLoader workers' skip to its first sample, against
   skipping detectron2's own ``TrainingSampler`` iterator to the same position.
4. **Goodput** under a preemption every 10 / 30 / 120 minutes on average, from the measured
   phases (the model: :func:`goodput`), as a table and a PNG plot (``--out``, default
   bench/results/).
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.suspend import interpreter_exit_s, job_env, rank1_pid, records
from hfai_runtime.records import RecordKind

REPO = Path(__file__).resolve().parent.parent
JOB_TIMEOUT_S = 900
#: (name in tables, tools/tiny_train.py --model, processes)
JOBS = (
    ("tiny (Faster R-CNN R18, 1x2)", "faster_rcnn_r18", 2),
    ("Mask R-CNN R50-FPN (1x1)", "mask_rcnn_r50", 1),
)
#: The restart's parts: (label, STARTUP mark where it ends); each starts where the previous ends.
RESTART_PARTS = (
    ("launcher: interpreter, imports, spawn", "process_started"),
    ("rank: interpreter + imports", "worker_started"),
    ("rank: join the process group", "joined"),
    ("model, optimizer, data loader build", "trainer_built"),
    ("checkpoint load (+ CRC check)", "checkpoint_loaded"),
    ("data stream replay", "replayed"),
    ("first step", "first_step"),
)


@dataclass
class Preemption:
    """One preemption of one job, in seconds."""

    stop: float  # SIGTERM -> the ranks agreed to stop (the step in flight finishes: useful work)
    save: float  # the suspend checkpoint, written and fsynced, every rank past the barrier
    exit: float  # save done -> the launcher process is gone
    restart: dict[str, float]  # pod start -> first resumed step, by part (RESTART_PARTS)
    checkpoint_bytes: int
    step: float


# --- 1. phases -----------------------------------------------------------------------------


def _start(model: str, procs: int, data: Path, out: Path, log: Path) -> subprocess.Popen:
    with open(log, "ab") as handle:
        return subprocess.Popen(
            [sys.executable, "tools/tiny_train.py", "--model", model, "--data", str(data), "--out", str(out)],
            cwd=REPO,
            env=job_env(procs),
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_for(log: Path, kind: RecordKind, launcher: subprocess.Popen, count: int = 1) -> list[dict]:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while len(found := records(log, kind)) < count:
        if time.monotonic() > deadline or launcher.poll() is not None:
            raise RuntimeError(f"no {kind.value} record; see {log}")
        time.sleep(0.02)
    return found


def preempt(model: str, procs: int, data: Path, work: Path) -> Preemption:
    """Train, SIGTERM, wait for the exit; restart, wait for the first resumed step; kill it."""
    out, log = work / model, work / f"{model}.log"
    launcher = _start(model, procs, data, out, log)
    _wait_for(log, RecordKind.PROGRESS, launcher)
    target = rank1_pid(launcher) if procs > 1 else launcher.pid
    sent = time.monotonic()
    os.kill(target, signal.SIGTERM)
    code = launcher.wait(timeout=JOB_TIMEOUT_S)
    total = time.monotonic() - sent
    [suspended] = [r for r in records(log, RecordKind.SUSPENDED) if r["since_signal_s"] is not None]
    if code != 143:
        raise RuntimeError(f"the job exited {code}, not 143; see {log}")
    launched = time.time()
    restarted = _start(model, procs, data, out, log)
    startups = _wait_for(log, RecordKind.STARTUP, restarted, count=2 * procs)
    os.killpg(restarted.pid, signal.SIGKILL)
    restarted.wait()
    marks = next(r for r in startups[procs:] if r["rank"] == 0)
    if marks["iteration"] != suspended["iteration"] + 1:
        raise RuntimeError(
            f"resumed at {marks['iteration']}, suspended at {suspended['iteration']}; see {log}"
        )
    restart, previous = {}, launched
    for label, name in RESTART_PARTS:
        restart[label] = marks.get(name, previous) - previous
        previous = marks.get(name, previous)
    wait, save = suspended["since_signal_s"], suspended["save_s"]
    return Preemption(
        wait,
        save,
        total - wait - save,
        restart,
        Path(suspended["checkpoint"]).stat().st_size,
        suspended["step_s"],
    )


def _run_s(code: str) -> float:
    """Wall time of ``python -c code`` (best of 3)."""
    times = []
    for _ in range(3):
        began = time.monotonic()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        times.append(time.monotonic() - began)
    return min(times)


def print_phases(runs: dict[str, Preemption]) -> None:
    empty = _run_s("pass")
    imports = _run_s("import torch, detectron2.engine")
    idle_exit = min(interpreter_exit_s() for _ in range(3))
    print(
        f"baselines, this run: empty interpreter start+exit {empty:.2f} s; "
        f"+ import torch, detectron2.engine {imports:.2f} s; idle exit with both imported {idle_exit:.2f} s"
    )
    names = list(runs)
    print(f"  {'phase (s)':44s}" + "".join(f"{n[:28]:>30s}" for n in names))
    rows = [
        ("SIGTERM -> agreed stop (step finishes)", lambda p: p.stop),
        ("save (write + fsync + CRC, barrier)", lambda p: p.save),
        ("save -> launcher exit", lambda p: p.exit),
        *((f"restart: {label}", lambda p, label=label: p.restart[label]) for label, _ in RESTART_PARTS),
        ("restart: pod start -> first step, total", lambda p: sum(p.restart.values())),
    ]
    for label, value in rows:
        print(f"  {label:44s}" + "".join(f"{value(runs[n]):30.2f}" for n in names))
    for name, p in runs.items():
        imported = p.restart["rank: interpreter + imports"]
        print(
            f"  {name}: checkpoint {p.checkpoint_bytes / 1e6:.0f} MB; step {p.step:.2f} s; exit / idle "
            f"interpreter's exit {p.exit / idle_exit:.1f}x; rank start / bare imports {imported / imports:.1f}x"
        )


# --- 2. save -------------------------------------------------------------------------------


def _fsynced_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def print_save(checkpoint: Path, work: Path, rounds: int = 5) -> None:
    import torch

    from hfai_runtime.detectron2.atomic_checkpointer import save_checked

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    raw = checkpoint.read_bytes()

    def torch_default(path: Path) -> None:
        with open(path, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())

    ways = {
        "os.write + fsync (raw)": lambda path: _fsynced_write(path, raw),
        "torch.save, its zlib CRC (default) + fsync": torch_default,
        "runtime: CRC off, ISA-L CRC sidecar, atomic": lambda path: save_checked(state, str(path)),
    }
    best = dict.fromkeys(ways, float("inf"))
    for round_ in range(rounds):
        for name in ways if round_ % 2 == 0 else reversed(ways):
            target = work / f"save{round_}.pth"
            os.sync()  # each starts with no other dirty pages to write back
            began = time.perf_counter()
            ways[name](target)
            best[name] = min(best[name], time.perf_counter() - began)
            target.unlink()
            Path(f"{target}.crc32").unlink(missing_ok=True)
    print(f"save of the Mask R-CNN checkpoint ({len(raw) / 1e6:.0f} MB), best of {rounds}, to {work}")
    raw_s = best["os.write + fsync (raw)"]
    for name, seconds in best.items():
        print(
            f"  {name:46s} {seconds:6.2f} s   {len(raw) / seconds / 1e6:7.0f} MB/s   {raw_s / seconds:5.2f}x raw"
        )


# --- 3. replay at scale --------------------------------------------------------------------

COCO_IMAGES, COCO_LANDSCAPE, RANKS, IMAGES_PER_RANK, WORKERS = 118_287, 0.62, 8, 2, 4
RESUME_AT = (0, 1_000, 10_000, 100_000, 270_000)  # 0: a fresh start, the workers' fork alone


def _first_of_each_worker(source, seed: int, done: int) -> list[float]:
    """Seconds from asking a resumed loader for data to each DataLoader worker's first sample
    (forked workers: each skips the stream to its first position itself)."""
    from hfai_runtime.detectron2.resume import ResumableTrainLoader

    loader = ResumableTrainLoader(source, seed, done)
    began = time.time()
    firsts: dict[int, float] = {}
    for batch in loader:
        for sample in batch:
            firsts.setdefault(sample["worker"], sample["mapped_at"] - began)
        if len(firsts) == WORKERS:
            return [firsts[w] for w in sorted(firsts)]
    raise AssertionError("unreachable: the stream is infinite")


class _StampingMapper:
    """Maps a dataset dict to when and in which DataLoader worker it was mapped."""

    def __call__(self, record: dict) -> dict:
        import torch.utils.data as torchdata

        info = torchdata.get_worker_info()
        return {"mapped_at": time.time(), "worker": -1 if info is None else info.id}


def _coco_sized_source(rank: int):
    import numpy as np
    from detectron2.data.common import MapDataset
    from detectron2.data.samplers import TrainingSampler

    from hfai_runtime.detectron2.resume import _Source

    landscape = np.random.default_rng(0).random(COCO_IMAGES) < COCO_LANDSCAPE
    dicts = [{"width": 640 if wide else 480, "height": 480 if wide else 640} for wide in landscape.tolist()]
    sampler = TrainingSampler(COCO_IMAGES, seed=5)
    sampler._rank, sampler._world_size = rank, RANKS  # the shard of rank `rank` of 8
    return _Source(
        MapDataset(dicts, _StampingMapper()), sampler, IMAGES_PER_RANK, WORKERS, group_by_aspect=True
    )


def print_replay() -> None:
    from hfai_runtime.detectron2.resume import ResumableTrainLoader

    print(
        f"replay at scale: {COCO_IMAGES} images ({COCO_LANDSCAPE:.0%} landscape), {RANKS} ranks x "
        f"{IMAGES_PER_RANK} images per iteration, rank 7; {WORKERS} DataLoader workers (forked)"
    )
    print(
        "  iteration   main: replay (s)   workers: first sample (s, incl. fork)   "
        "baseline: skip TrainingSampler's iterator (s)   baseline / replay"
    )
    source = _coco_sized_source(RANKS - 1)
    for done in RESUME_AT:
        began = time.perf_counter()
        ResumableTrainLoader(source, 5, done)
        replay_s = time.perf_counter() - began
        firsts = _first_of_each_worker(source, 5, done)
        began = time.perf_counter()
        next(itertools.islice(iter(source.sampler), done * IMAGES_PER_RANK, None))
        baseline_s = time.perf_counter() - began
        verdict = "ok" if replay_s + max(firsts) <= 2.0 else "OVER 2 s"
        print(
            f"  {done:9,d}   {replay_s:16.3f}   {' / '.join(f'{f:.2f}' for f in firsts):>38s}   "
            f"{baseline_s:45.3f}   {baseline_s / replay_s:15.1f}x  [{verdict}]"
        )


# --- 4. goodput ----------------------------------------------------------------------------

#: The model's stated inputs (not measured here): a GPU step of Mask R-CNN R50-FPN 1x, 16 images
#: on 8 V100s (detectron2 MODEL_ZOO.md, "train time (s/iter)" 0.261); detectron2's default
#: ``SOLVER.CHECKPOINT_PERIOD`` (config/defaults.py@v0.6: 5000); the time a replacement pod takes
#: to be scheduled and started (image cached) -- the same for every policy.
GPU_STEP_S, CHECKPOINT_PERIOD, RESCHEDULE_S, DATASET = 0.261, 5000, 60.0, COCO_IMAGES
IMAGES_PER_STEP = 16
INTERVALS_MIN = (10, 30, 120)


def goodput(interval_s: float, p: Preemption) -> dict[str, float]:
    """Share of wall time spent on steps that count, with preemptions arriving at random, on
    average every ``interval_s`` (exponential gaps, counted from a pod's start).

    Every policy pays, per preemption, the reschedule (stated) and the restart up to the first
    step (measured: imports, build, checkpoint load, replay where it applies), and a periodic save
    every 5,000 steps. With gaps T ~ Exp(I) and a start-up R: E[max(0, T - R)] = I e^(-R/I).

    * ``runtime``: SIGTERM -> stop after the step in flight -> save -> exit (inside the grace
      period, before the next pod starts); nothing is lost.
    * ``detectron2 default``: no suspend hook, SIGTERM ends the process at once; the steps since
      the last periodic checkpoint are lost: E[periods completed] = e^(-R/I) q / (1 - q),
      q = e^(-P/I), with P the checkpoint period in seconds.
    * ``inexact suspend``: saves like the runtime, but the restarted data stream starts a new
      random permutation (detectron2 0.6 draws a new sampler seed per start): attempts of m
      images (their mean, here) draw without replacement only within themselves, so an epoch's
      worth of steps shows 1 - (1 - m/N)^(N/m) of the N images; the repeats count as lost.
    """
    restart = RESCHEDULE_S + sum(v for k, v in p.restart.items() if k != "first step")
    replay = p.restart["data stream replay"]
    period_s = CHECKPOINT_PERIOD * GPU_STEP_S + p.save
    periodic_share = CHECKPOINT_PERIOD * GPU_STEP_S / period_s
    suspend_cycle_s = interval_s + p.save + p.exit

    def trained_s(startup_s: float) -> float:
        return interval_s * math.exp(-startup_s / interval_s)

    runtime = trained_s(restart) * periodic_share / suspend_cycle_s
    q = math.exp(-period_s / interval_s)
    periods = math.exp(-(restart - replay) / interval_s) * q / (1 - q)
    default = periods * CHECKPOINT_PERIOD * GPU_STEP_S / interval_s
    inexact_s = trained_s(restart - replay) * periodic_share
    images = inexact_s / GPU_STEP_S * IMAGES_PER_STEP
    coverage = 1.0 if images >= DATASET else 1 - (1 - images / DATASET) ** (DATASET / max(images, 1.0))
    inexact = inexact_s * coverage / suspend_cycle_s
    return {"runtime (exact suspend)": runtime, "detectron2 default": default, "inexact suspend": inexact}


def print_goodput(p: Preemption, out: Path) -> Path:
    print(
        f"goodput, Mask R-CNN R50-FPN: measured save {p.save:.2f} s, exit {p.exit:.2f} s, restart to the "
        f"first step {sum(v for k, v in p.restart.items() if k != 'first step'):.2f} s (CPU, this machine); "
        f"stated: step {GPU_STEP_S} s (8 V100, MODEL_ZOO.md), checkpoint every {CHECKPOINT_PERIOD} steps, "
        f"reschedule {RESCHEDULE_S:.0f} s"
    )
    policies = list(goodput(600, p))
    print("  preempted every" + "".join(f"{name:>26s}" for name in policies))
    for minutes in INTERVALS_MIN:
        shares = goodput(minutes * 60, p)
        print(f"  {minutes:9d} min " + "".join(f"{100 * shares[n]:25.1f}%" for n in policies))
    return _plot(p, out)


def _plot(p: Preemption, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    minutes = np.geomspace(5, 480, 200)
    curves = [goodput(m * 60, p) for m in minutes]
    figure, axes = plt.subplots(figsize=(7, 4.2))
    for name in curves[0]:
        axes.plot(minutes, [100 * c[name] for c in curves], label=name)
    for m in INTERVALS_MIN:
        axes.axvline(m, color="0.85", linewidth=0.8, zorder=0)
    axes.set_xscale("log")
    axes.set_xticks([5, 10, 30, 60, 120, 240, 480], ["5", "10", "30", "60", "120", "240", "480"])
    axes.set(
        xlabel="mean minutes between preemptions (exponential gaps)",
        ylabel="goodput: wall time on useful steps (%)",
        ylim=(0, 100),
        title="Mask R-CNN R50-FPN, 8 GPUs (model: bench/preemption.py)",
    )
    axes.legend(loc="lower right")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "goodput.png"
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    print(f"  plot: {path}")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="where the plot goes")
    args = parser.parse_args(argv)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    from hfai_runtime.synthetic import make_coco_tree

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "data"
        make_coco_tree(data, num_train=12, num_val=4, image_size=64, seed=3)
        runs = {name: preempt(model, procs, data, work) for name, model, procs in JOBS}
        print_phases(runs)
        mask_rcnn = runs[JOBS[1][0]]
        checkpoint = max((work / JOBS[1][1]).glob("model_*.pth"))
        print_save(checkpoint, work)
    print_replay()
    print_goodput(mask_rcnn, args.out)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
