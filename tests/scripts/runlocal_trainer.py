"""A stand-in for train_net.py in the run-local tests: "trains" with a checkpoint file.

Each step sleeps --step seconds. SIGTERM only sets a flag (as the real runtime does); after the
current step the script saves the iteration it finished, writes the runtime's ``suspended``
record and exits 143. On start it resumes from the file and writes ``training_started`` with
the next iteration; each step writes a ``progress`` record. The records are the runtime's own
format (:func:`hfai_runtime.records.format_record`). Other flags make it misbehave on purpose.

``--restart-guard`` keeps the runtime's restart ledger in --ckpt-dir with the runtime's own
:class:`~hfai_runtime.distributed.restarts.RestartGuard`, where ``SuspendCheckpointer`` does (at
the start, at a suspend, at the end). ``--gang`` stands in for the ranks' agreement on a
SIGTERM: a signalled rank writes the time into ``suspend-requested`` in --ckpt-dir, and every rank
started before it stops at its next step (exit 143), as the collective makes them.
``--oom-at N`` SIGKILLs the process at iteration N of every start, as the kernel's OOM killer
does a container over its memory limit (exit 137, no checkpoint).
"""

import argparse
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

from hfai_runtime.distributed.restarts import End, Limits, RestartGuard, RestartLimitReached
from hfai_runtime.records import RecordKind, format_record

# Line by line whatever PYTHONUNBUFFERED says, so a test can also run it with the variable unset.
print = partial(print, flush=True)
parser = argparse.ArgumentParser()
parser.add_argument("--iters", type=int, default=3)
parser.add_argument("--step", type=float, default=0.05)
parser.add_argument("--ckpt-dir", default="")
parser.add_argument("--exit", type=int, help="exit with this code right away")
parser.add_argument("--exit-once", type=int, help="exit with this code on the first attempt only")
parser.add_argument("--ignore-sigterm", action="store_true")
parser.add_argument("--restart-guard", action="store_true")
parser.add_argument("--gang", action="store_true")
parser.add_argument("--oom-at", type=int, default=-1)
parser.add_argument("--print-env", default="", help="comma-separated variables to print")
parser.add_argument(
    "--detach", action="store_true", help="start `setsid sleep 1000` (a process that leaves the pod's group)"
)
args = parser.parse_args()

rank = os.environ.get("RANK", os.environ.get("PET_NODE_RANK", "0"))
for name in filter(None, args.print_env.split(",")):
    print(f"env {name}={os.environ.get(name, '<unset>')}")
if args.detach:
    child = subprocess.Popen(["setsid", "sleep", "1000"])
    print(f"detached pid {child.pid}")
if args.exit is not None:
    print(f"exiting with {args.exit}")
    sys.exit(args.exit)
if args.exit_once is not None:
    marker = os.path.join(args.ckpt_dir, f"attempted-{rank}")
    if not os.path.exists(marker):
        open(marker, "w").close()
        print(f"first attempt: exiting with {args.exit_once}")
        sys.exit(args.exit_once)

stop = False


born = time.time()
gang_file = os.path.join(args.ckpt_dir, "suspend-requested")


def on_sigterm(signum, frame):
    global stop
    stop = True
    if args.gang:  # the time of the request, in the file (an mtime may not change on rewrite)
        with open(gang_file + ".tmp", "w") as f:
            f.write(repr(time.time()))
        os.replace(gang_file + ".tmp", gang_file)


def gang_stopped() -> bool:
    try:
        with open(gang_file) as f:
            return args.gang and float(f.read()) >= born
    except (FileNotFoundError, ValueError):
        return False


signal.signal(signal.SIGTERM, signal.SIG_IGN if args.ignore_sigterm else on_sigterm)
ckpt = os.path.join(args.ckpt_dir, f"ckpt-{rank}") if args.ckpt_dir else ""
start = int(open(ckpt).read()) + 1 if ckpt and os.path.exists(ckpt) else 0
guard = RestartGuard(Path(args.ckpt_dir), Limits.from_environ()) if args.restart_guard else None
if guard is not None and rank == "0":
    try:
        guard.on_start(start)
    except RestartLimitReached as limit:
        print(
            format_record(
                RecordKind.STOPPED, iteration=start, exit_code=limit.code, reason=limit.reason, rank=0
            )
        )
        sys.exit(limit.code)
print(format_record(RecordKind.TRAINING_STARTED, iteration=start, rank=int(rank)))
for it in range(start, args.iters):
    time.sleep(args.step)
    print(
        format_record(
            RecordKind.PROGRESS,
            iteration=it,
            max_iter=args.iters,
            loss=round(1.0 / (it + 1), 4),
            rank=int(rank),
        )
    )
    if it == args.oom_at:
        os.kill(os.getpid(), signal.SIGKILL)
    if stop or gang_stopped():
        if guard is not None and rank == "0":
            guard.on_end(End.SUSPENDED, it)
        if ckpt:
            with open(ckpt + ".tmp", "w") as f:
                f.write(str(it))
            os.replace(ckpt + ".tmp", ckpt)
        print(format_record(RecordKind.SUSPENDED, iteration=it, exit_code=143, rank=int(rank)))
        sys.exit(143)
if guard is not None and rank == "0":
    guard.on_end(End.COMPLETED, args.iters)
print("done")
