"""Suspend costs: the per-step agreement between 2 ranks, and SIGTERM -> exit latency.

1. ``agree()`` (one int all-reduced over gloo on loopback) timed at 2 ranks, against a 100 ms
   step and against the real tiny detectron2 step measured in part 2.
2. The tiny detectron2 job of the tests (tests/_dist_train.py: Faster R-CNN R18, 64 px,
   1 machine x 2 processes on CPU) is sent SIGTERM (to rank 1) at a random moment; the
   latency to its exit is split into waiting for the step to end, saving, and exiting, from
   the hook's own log line. Target: latency <= one step + save + 2 s.

    .venv/bin/python -m bench.suspend
"""

from __future__ import annotations

import multiprocessing
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
AGREE_CALLS, AGREE_WARMUP = 3000, 200
LATENCY_TRIALS = 3
STEP_S = 0.100


def _agree_worker(rank: int, port: int, results) -> None:
    import torch.distributed as dist

    from hfai_runtime.distributed.rendezvous import init_process_group
    from hfai_runtime.distributed.suspend import agree

    init_process_group("gloo", master_addr="127.0.0.1", master_port=port, rank=rank, world_size=2,
                       connect_timeout=timedelta(seconds=60))
    samples = []
    for i in range(AGREE_WARMUP + AGREE_CALLS):
        began = time.perf_counter_ns()
        agree(False)
        if i >= AGREE_WARMUP:
            samples.append(time.perf_counter_ns() - began)
    if rank == 0:
        results.put(samples)
    dist.destroy_process_group()


def agreement_cost_us() -> tuple[float, float]:
    """Median and 90th percentile of one ``agree()`` at 2 ranks, in microseconds."""
    from hfai_runtime.distributed.rendezvous import free_port

    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    port = free_port()
    workers = [context.Process(target=_agree_worker, args=(rank, port, results)) for rank in range(2)]
    for worker in workers:
        worker.start()
    samples = sorted(results.get(timeout=300))
    for worker in workers:
        worker.join()
    return statistics.median(samples) / 1e3, samples[int(0.9 * len(samples))] / 1e3


def _job_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PET_") and k not in ("RANK", "WORLD_SIZE")}
    env.update(PET_NNODES="1", PET_NODE_RANK="0", PET_NPROC_PER_NODE="2", OMP_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    return env


def _rank1_pid(launcher: subprocess.Popen) -> int:
    import psutil

    children = [c for c in psutil.Process(launcher.pid).children() if "spawn_main" in " ".join(c.cmdline())]
    return sorted(children, key=lambda c: c.create_time())[1].pid


def suspend_latency(data: Path, work: Path, rng: random.Random) -> dict[str, float]:
    """One SIGTERM -> exit measurement of the tiny job, split from the hook's log line."""
    from hfai_runtime.distributed.suspend import suspend_exit_code

    out = work / f"out{rng.random():.6f}"
    log = work / f"{out.name}.log"
    with open(log, "wb") as handle:
        launcher = subprocess.Popen(
            [sys.executable, "tests/_dist_train.py", "--data", str(data), "--out", str(out)],
            cwd=REPO, env=_job_env(), stdout=handle, stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 300
    while len(list(out.glob("started.rank*"))) < 2:
        if time.monotonic() > deadline or launcher.poll() is not None:
            raise RuntimeError(f"the job did not start; see {log}")
        time.sleep(0.05)
    time.sleep(rng.uniform(0.5, 2.0))
    sent = time.monotonic()
    os.kill(_rank1_pid(launcher), signal.SIGTERM)
    code = launcher.wait(timeout=300)
    total = time.monotonic() - sent
    text = log.read_text(errors="replace")
    match = re.search(r"\[rank1\].*SIGTERM ([\d.]+) s ago, ranks agreed in ([\d.]+) ms, checkpoint saved in "
                      r"([\d.]+) s, last step took ([\d.]+) s", text)
    if code != suspend_exit_code(_job_env()) or match is None:
        raise RuntimeError(f"unexpected suspend (exit {code}); see {log}")
    wait_s, agree_ms, save_s, step_s = map(float, match.groups())
    return {"total": total, "wait": wait_s, "save": save_s, "exit": total - wait_s - save_s,
            "step": step_s, "agree_ms": agree_ms}


def main() -> None:
    median_us, p90_us = agreement_cost_us()
    print(f"agreement at 2 ranks (gloo, loopback): median {median_us:.1f} us, p90 {p90_us:.1f} us "
          f"= {100 * median_us / (STEP_S * 1e6):.3f} % of a {STEP_S * 1e3:.0f} ms step (target < 0.5 %)")

    sys.path.insert(0, str(REPO / "tests"))
    from _dist_train import prepare_data

    rng = random.Random()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = prepare_data(work / "data")
        runs = [suspend_latency(data, work, rng) for _ in range(LATENCY_TRIALS)]
    step = statistics.median(r["step"] for r in runs)
    print(f"tiny detectron2 step (Faster R-CNN R18, 64 px, 2 ranks on CPU): {step:.3f} s; "
          f"agreement = {100 * median_us / (step * 1e6):.4f} % of it")
    print("SIGTERM -> exit latency (s):   total   wait-for-step   save   exit   [budget: step + save + 2]")
    for r in runs:
        budget = r["step"] + r["save"] + 2.0
        print(f"  {r['total']:18.2f} {r['wait']:15.2f} {r['save']:7.2f} {r['exit']:6.2f}   "
              f"[{budget:.2f}: {'ok' if r['total'] <= budget else 'OVER'}, ratio {r['total'] / budget:.2f}]")


if __name__ == "__main__":
    main()
