"""Suspend costs: the per-step agreement between ranks, and SIGTERM -> exit with its phases.

1. Agreement per step, 2-16 processes on this machine (gloo over loopback): ``agree()``
   (blocking: what a step pays below ``HFAI_SUSPEND_OVERLAP_FROM`` ranks, default 16) against
   the overlapped :class:`StepAgreement` (started after one step, read after the next, with
   ``STEP_S`` of other work between them).
2. A stated model for 64-512 ranks: gloo's ring all-reduce takes 2 (P - 1) sequential hops
   (reduce-scatter, then all-gather: gloo/allreduce.cc, ``ring``), so blocking costs
   2 (P - 1) x per-hop latency every step; overlapped, the same time is hidden behind a step
   and only what exceeds the step shows.
3. SIGTERM -> exit of the tiny detectron2 job (tools/tiny_train.py: Faster R-CNN
   R18, 64 px, 1 machine x 2 processes on CPU), signalled (rank 1) at a random moment; the time
   is split into waiting for the step(s), saving, and teardown, from the SUSPENDED record the
   signalled rank writes (:mod:`hfai_runtime.records`). Target: teardown <= 0.5 s.

    .venv/bin/python -m bench.suspend
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from hfai_runtime.records import RecordKind, parse_record

REPO = Path(__file__).resolve().parent.parent
SIZES = (2, 4, 8, 16)
BLOCKING_CALLS, OVERLAPPED_CALLS, WARMUP = 400, 200, 40
#: The "other work" between starting an agreement and reading it, in part 1: a short step.
STEP_S = 0.020
#: Part 2's model: per-hop latency of a small message between machines, and a step's length.
HOP_S, MODEL_STEP_S, MODEL_SIZES = 30e-6, 0.5, (64, 128, 256, 512)
LATENCY_TRIALS = 3
TEARDOWN_TARGET_S = 0.5


def _agree_worker(rank: int, world: int, port: int, results) -> None:
    import torch.distributed as dist

    from hfai_runtime.distributed.rendezvous import init_process_group
    from hfai_runtime.distributed.suspend import (
        StepAgreement,
        agree,
        release_agreement_group,
    )

    init_process_group(
        "gloo",
        master_addr="127.0.0.1",
        master_port=port,
        rank=rank,
        world_size=world,
        connect_timeout=timedelta(seconds=300),
    )
    blocking, overlapped = [], []
    for i in range(WARMUP + BLOCKING_CALLS):
        began = time.perf_counter_ns()
        agree(False)
        if i >= WARMUP:
            blocking.append(time.perf_counter_ns() - began)
    agreement = StepAgreement(overlap_from_ranks=2)
    for i in range(WARMUP + OVERLAPPED_CALLS):
        time.sleep(STEP_S)  # the step the agreement overlaps
        began = time.perf_counter_ns()
        agreement.after_step(i, last=i == WARMUP + OVERLAPPED_CALLS - 1)
        if i > WARMUP:  # the first call of an attempt blocks
            overlapped.append(time.perf_counter_ns() - began)
    if rank == 0:
        results.put((blocking, overlapped))
    release_agreement_group()
    dist.destroy_process_group()


def agreement_costs(world: int) -> tuple[list[int], list[int]]:
    """Rank 0's per-step cost (ns) of the blocking and of the overlapped agreement."""
    from hfai_runtime.distributed.rendezvous import free_port

    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    port = free_port()
    workers = [
        context.Process(target=_agree_worker, args=(rank, world, port, results)) for rank in range(world)
    ]
    for worker in workers:
        worker.start()
    blocking, overlapped = results.get(timeout=900)
    for worker in workers:
        worker.join()
    return sorted(blocking), sorted(overlapped)


def _us(samples: list[int], quantile: float) -> float:
    return samples[min(len(samples) - 1, int(quantile * len(samples)))] / 1e3


def print_agreement_table() -> None:
    print(
        f"per-step agreement, gloo over loopback on {os.cpu_count()} CPUs (processes share them); "
        f"overlapped = read after {STEP_S * 1e3:.0f} ms of other work"
    )
    print(
        "  ranks   blocking p10 / median / p90 (us)   overlapped p10 / median / p90 (us)   "
        "blocking / overlapped (medians)"
    )
    for world in SIZES:
        blocking, overlapped = agreement_costs(world)
        ratio = statistics.median(blocking) / statistics.median(overlapped)
        print(
            f"  {world:5d}   {_us(blocking, 0.1):8.1f} / {_us(blocking, 0.5):7.1f} / {_us(blocking, 0.9):7.1f}   "
            f"{_us(overlapped, 0.1):10.1f} / {_us(overlapped, 0.5):7.1f} / {_us(overlapped, 0.9):7.1f}   "
            f"{ratio:10.1f}x"
        )


def print_model() -> None:
    from hfai_runtime.distributed.suspend import DEFAULT_OVERLAP_FROM

    print(
        f"model, 64-512 ranks: ring all-reduce = 2 (P - 1) hops x {HOP_S * 1e6:.0f} us per hop "
        f"(stated), against a {MODEL_STEP_S:.1f} s step; below {DEFAULT_OVERLAP_FROM} ranks the "
        f"agreement blocks: at most {2 * (DEFAULT_OVERLAP_FROM - 2) * HOP_S * 1e3:.2f} ms a step"
    )
    print("  ranks   hops   blocking per step   share of step   overlapped wait (what exceeds the step)")
    for world in MODEL_SIZES:
        hops = 2 * (world - 1)
        cost = hops * HOP_S
        print(
            f"  {world:5d}   {hops:4d}   {cost * 1e3:13.1f} ms   {100 * cost / MODEL_STEP_S:11.1f} %   "
            f"{max(0.0, cost - MODEL_STEP_S) * 1e3:10.1f} ms"
        )


def job_env(procs: int = 2) -> dict[str, str]:
    """The environment of a 1-machine job of ``procs`` processes, as PyTorchJob sets it."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("PET_") and k not in ("RANK", "WORLD_SIZE")
    }
    env.update(
        PET_NNODES="1",
        PET_NODE_RANK="0",
        PET_NPROC_PER_NODE=str(procs),
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        HFAI_PROGRESS_EVERY="1",
    )
    return env


def records(log: Path, kind: RecordKind) -> list[dict]:
    """The fields of every ``kind`` record in the log file ``log``."""
    lines = log.read_text(errors="replace").splitlines()
    return [r.fields for r in map(parse_record, lines) if r is not None and r.kind == kind]


def rank1_pid(launcher: subprocess.Popen) -> int:
    """The PID of the second rank a launcher spawned."""
    import psutil

    children = [c for c in psutil.Process(launcher.pid).children() if "spawn_main" in " ".join(c.cmdline())]
    return sorted(children, key=lambda c: c.create_time())[1].pid


def suspend_phases(data: Path, work: Path, rng: random.Random) -> dict[str, float]:
    """One SIGTERM -> exit of the tiny job, split by the signalled rank's SUSPENDED record."""
    out = work / f"out{rng.random():.6f}"
    log = work / f"{out.name}.log"
    with open(log, "wb") as handle:
        launcher = subprocess.Popen(
            [sys.executable, "tools/tiny_train.py", "--data", str(data), "--out", str(out)],
            cwd=REPO,
            env=job_env(),
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 300
    while not records(log, RecordKind.PROGRESS):  # rank 0 finished a step: both are training
        if time.monotonic() > deadline or launcher.poll() is not None:
            raise RuntimeError(f"the job did not start; see {log}")
        time.sleep(0.05)
    time.sleep(rng.uniform(0.5, 2.0))
    sent = time.monotonic()
    os.kill(rank1_pid(launcher), signal.SIGTERM)
    code = launcher.wait(timeout=300)
    total = time.monotonic() - sent
    signalled = [r for r in records(log, RecordKind.SUSPENDED) if r["since_signal_s"] is not None]
    if code != 143 or len(signalled) != 1:
        raise RuntimeError(f"unexpected suspend (exit {code}); see {log}")
    [record] = signalled
    wait_s, save_s = record["since_signal_s"], record["save_s"]
    return {
        "total": total,
        "wait": wait_s,
        "save": save_s,
        "teardown": total - wait_s - save_s,
        "step": record["step_s"],
        "steps_to_stop": record["steps_to_stop"],
    }


def interpreter_exit_s() -> float:
    """How long an idle interpreter that imported torch and detectron2 takes to exit: the floor
    under the teardown of part 3 (each rank and the launcher exit one)."""
    code = "import time, torch, detectron2.engine; print(time.monotonic(), flush=True)"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return time.monotonic() - float(child.stdout.split()[-1])


def print_phases() -> None:
    from hfai_runtime.synthetic import make_coco_tree

    rng = random.Random()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "data"
        make_coco_tree(data, num_train=12, num_val=4, image_size=64, seed=3)
        runs = [suspend_phases(data, work, rng) for _ in range(LATENCY_TRIALS)]
    print(
        f"SIGTERM -> exit, tiny detectron2 job (Faster R-CNN R18, 64 px, 1 machine x 2 processes, CPU); "
        f"step {statistics.median(r['step'] for r in runs):.2f} s, up to {runs[0]['steps_to_stop']} step(s) "
        f"before the stop ({'overlapped' if runs[0]['steps_to_stop'] > 1 else 'blocking'} agreement)"
    )
    print(f"  total (s)   wait for step(s)   save   teardown   [teardown target {TEARDOWN_TARGET_S} s]")
    for r in runs:
        verdict = "ok" if r["teardown"] <= TEARDOWN_TARGET_S else "OVER"
        print(
            f"  {r['total']:9.2f}   {r['wait']:16.2f}   {r['save']:4.2f}   {r['teardown']:8.2f}   [{verdict}]"
        )
    print(
        f"  for scale: an idle interpreter with torch + detectron2 imported exits in {interpreter_exit_s():.2f} s "
        "on this machine now"
    )


def main() -> None:
    print_agreement_table()
    print_model()
    print_phases()


if __name__ == "__main__":
    main()
