"""The job's own restart limits: a preemption budget and a crash-loop guard, kept in OUTPUT_DIR.

Why the runtime counts restarts itself: under a PyTorchJob's ``restartPolicy: ExitCode`` the
operator recreates every pod that exits >= 128 -- 143 after a preemption, but also 137 after an
OOM kill -- forever, and ``backoffLimit`` never trips (it counts container restarts, and the
recreated pods have none: pkg/core/job.go@v1.9.4 ``PastBackoffLimit``). A TrainJob's JobSet
counts gang restarts (``failurePolicy.maxRestarts``), but a pod the Job replaces after an
eviction (podFailurePolicy ``Ignore``) is not one of them. So each start of the training is
written down in ``OUTPUT_DIR/hfai-restarts.json`` (the PVC outlives the pods), and the start past
a limit ends the job with exit code 1, which no restart policy retries.

A *run* is the sequence of starts the cluster made of one submission: it ends with a permanent
exit (training completed, an error, or one of these limits). The first start after such an end
begins a new run with an empty count, so resubmitting a finished or failed job starts afresh;
deleting a running job and applying it again continues its count (delete the file to reset it).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path

from hfai_runtime.atomic import AtomicFile

LEDGER_NAME = "hfai-restarts.json"
MAX_PREEMPTIONS_VAR = "HFAI_MAX_PREEMPTIONS"
CRASH_LOOP_VAR = "HFAI_CRASH_LOOP_LIMIT"
DEFAULT_CRASH_LOOP_LIMIT = 3
#: The exit code of a job these limits stop: permanent under every restart policy the template
#: uses (ExitCode: 1-127; the TrainingRuntime's podFailurePolicy: anything but 137 and 143).
LIMIT_EXIT_CODE = 1


class End(str, Enum):
    """How one start of the training ended, as the runtime saw it (``None``: it never saw the
    end -- the process was killed: SIGKILL, exit 137)."""

    SUSPENDED = "suspended"  # a preemption: checkpoint written, exit with the suspend code
    COMPLETED = "completed"  # training reached its last iteration
    FAILED = "failed"  # an error ended it
    STOPPED = "stopped"  # one of these limits ended it


#: Ends after which the cluster does not restart the job: the next start is a new run.
FINAL_ENDS = (End.COMPLETED, End.FAILED, End.STOPPED)


@dataclass
class Start:
    """One start of the training: the iteration it resumed from, and how it ended."""

    start_iter: int
    started_at: float
    end: End | None = None
    end_iter: int | None = None

    def describe_end(self) -> str:
        if self.end is None:
            return (
                "killed without exiting (SIGKILL, exit code 137: OOMKilled -- the pod ran out of "
                "memory -- or a grace period too short for the checkpoint)"
            )
        return f"{self.end.value} at iteration {self.end_iter}"


@dataclass(frozen=True)
class Limits:
    """The two limits: restarts a run survives (``None``: no limit), and how many starts in a
    row may make no progress past the checkpoint they resumed from."""

    max_preemptions: int | None
    crash_loop: int = DEFAULT_CRASH_LOOP_LIMIT

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Limits:
        """``HFAI_MAX_PREEMPTIONS`` (unset: no limit) and ``HFAI_CRASH_LOOP_LIMIT`` (default 3;
        0 turns the guard off); a bad value is a ``ValueError`` naming the variable."""
        env = os.environ if environ is None else environ
        return cls(
            _whole_number(env, MAX_PREEMPTIONS_VAR, None),
            _whole_number(env, CRASH_LOOP_VAR, DEFAULT_CRASH_LOOP_LIMIT),
        )


class RestartLimitReached(SystemExit):
    """Raised on the start past a limit: exit code 1 (permanent), ``reason`` the one line said."""

    def __init__(self, reason: str):
        super().__init__(LIMIT_EXIT_CODE)
        self.reason = reason


@dataclass
class RestartGuard:
    """The restart ledger of one OUTPUT_DIR, and the decision at each start.

    When it runs: :meth:`on_start` once per start of the training, on global rank 0 only, after
    the checkpoint is loaded (so the iteration it resumed from is known) and before the first
    step; :meth:`on_end` when that start ends in a way the process sees (a suspend, completion,
    an error). Nothing runs per step. The ledger is rewritten atomically at each call.
    """

    directory: Path
    limits: Limits
    clock: Callable[[], float] = field(default=time.time, repr=False)  # seconds since the epoch

    @property
    def path(self) -> Path:
        return self.directory / LEDGER_NAME

    def on_start(self, start_iter: int) -> None:
        """Record this start; raise :class:`RestartLimitReached` when it is one too many."""
        starts = self.read()
        if starts and starts[-1].end in FINAL_ENDS:
            starts = []  # the previous run ended for good: this is a new submission
        previous = list(starts)
        starts.append(Start(start_iter, self.clock()))
        reason = self._over_limit(previous, start_iter)
        if reason is not None:
            starts[-1].end, starts[-1].end_iter = End.STOPPED, start_iter
        self._write(starts)
        if reason is not None:
            raise RestartLimitReached(reason)

    def on_end(self, end: End, iteration: int) -> None:
        """Record how the current start ended (no-op when there is none)."""
        starts = self.read()
        if starts and starts[-1].end is None:
            starts[-1].end, starts[-1].end_iter = end, iteration
            self._write(starts)

    def read(self) -> list[Start]:
        """The starts recorded so far (``[]`` for no file or an unreadable one: a damaged ledger
        must not stop a job, it only restarts the count)."""
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            return [
                Start(
                    int(s["start_iter"]),
                    float(s["started_at"]),
                    End(s["end"]) if s.get("end") else None,
                    None if s.get("end_iter") is None else int(s["end_iter"]),
                )
                for s in raw["starts"]
            ]
        except (OSError, ValueError, KeyError, TypeError):
            return []

    def _over_limit(self, previous: list[Start], start_iter: int) -> str | None:
        restarts, limit = len(previous), self.limits.max_preemptions
        if limit is not None and restarts > limit:
            return (
                f"the job was restarted {restarts} times (preempted or killed), more than "
                f"max_preemptions {limit} ({MAX_PREEMPTIONS_VAR}); the last start "
                f"{previous[-1].describe_end()}; not training again: exit {LIMIT_EXIT_CODE} "
                "(permanent). Resubmit the job to start a new count."
            )
        k = self.limits.crash_loop
        stuck = previous[-k:] if k else []
        if k and len(stuck) == k and all(s.start_iter >= start_iter for s in stuck):
            ends = sorted({s.describe_end() for s in stuck})
            return (
                f"crash loop: the last {k} starts all resumed from iteration {start_iter} and none "
                f"saved a checkpoint past it; they ended: {'; '.join(ends)}. Not training again: "
                f"exit {LIMIT_EXIT_CODE} (permanent). Fix the cause (for OOMKilled: a larger "
                f"memory limit or a smaller batch), then resubmit ({CRASH_LOOP_VAR}={k} sets "
                "how many starts without progress end the job)."
            )
        return None

    def _write(self, starts: list[Start]) -> None:
        records = [{**asdict(s), "end": s.end.value if s.end else None} for s in starts]
        with AtomicFile(self.path) as out:
            out.handle.write(json.dumps({"starts": records}, indent=1).encode())


def _whole_number(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()) or int(raw) > 1_000_000:
        raise ValueError(f"environment variable {name}={raw!r}: expected a whole number 0-1000000")
    return int(raw)
