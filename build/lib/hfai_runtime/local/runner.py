"""Run a job's replicas as local processes and apply the operator's semantics to them.

One supervisor loop owns every decision; reader threads only forward log lines. The rules:

* **restart policy** (per replica type, applied to that replica's own exit): ``ExitCode``
  restarts on codes >= 128 (signals: SIGTERM -> 143, SIGKILL -> 137) and fails the job on 1-127;
  ``OnFailure`` and ``Always`` restart on any non-zero code; ``Never`` fails the job. Exit 0 ends
  the replica (under ``Always`` too: a local run has to finish).
* **backoffLimit** -- as the operator's ``PastBackoffLimit``: the sum of the pods' container
  ``restartCount`` fails the job (``BackoffLimitExceeded``) once it reaches the limit. Only
  in-place restarts count (``OnFailure``/``Always``, done by the kubelet); under ``ExitCode`` the
  operator deletes and recreates the pod, whose count starts again at 0. Restarts happen at
  once (the kubelet's crash-loop back-off of 10 s, 20 s, ... is not modelled).
* **success** -- a PyTorchJob succeeds when ``master-0`` exits 0 (the operator's rule; the other
  replicas get their grace period to finish, then are stopped); a TrainJob when every node has.
* **stopping a replica** (preemption, suspension, a failed job) -- SIGTERM to the replica's main
  process only, as the kubelet signals PID 1 and tini forwards to its one child: relaying it to
  the workers is the launcher's job, and a local run should show when it does not. After the
  pod's ``terminationGracePeriodSeconds`` the whole process group gets SIGKILL, as does anything
  left in the group when the main process exits (a container dies with its PID 1).
* **suspension** (``runPolicy.suspend``, here ``--suspend-at``) stops every replica; their exits
  count as neither restarts nor failures; ``--resume-after`` seconds later (once all have stopped)
  every replica starts again. A manifest that is already suspended is admitted at once, as
  Kueue would.
* **activeDeadlineSeconds** fails the job with reason ``DeadlineExceeded``.

Every step is an :class:`Event` in :attr:`JobResult.events`; log lines that say where training
starts (detectron2's ``Starting training from iteration N``) and where a suspended run stopped
(``SuspendCheckpointer``'s ``Suspending at iteration N``) become events too.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from hfai_runtime.local.container import PathMap, free_port, process_argv, process_env
from hfai_runtime.local.manifest import LocalJob, Replica

TICK_SECONDS = 0.05
EOF_WAIT_SECONDS = 2.0  # how long to wait for a dead replica's log pipe to close

# Log lines that locate a run in its iterations (detectron2's TrainerBase.train and the
# SuspendCheckpointer's hook). Matched anywhere in a line, so logger prefixes do not matter.
TRAINS_FROM = re.compile(r"Starting training from iteration (\d+)")
STOPPED_AT = re.compile(r"suspend(?:ed|ing)? at iteration (\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class Event:
    """One step of the run. ``replica`` is empty for job-level events.

    ``kind`` is one of: ``started``, ``preempted``, ``suspended``, ``resumed``, ``killed``,
    ``exited`` (``value``: exit code), ``restarting``, ``trains_from`` / ``stopped_at``
    (``value``: iteration), ``stopping`` (the job ended; the replica is told to stop),
    ``Succeeded`` / ``Failed`` (the job's final condition; ``detail``: reason and message).
    """

    time: float
    replica: str
    kind: str
    detail: str
    value: int | None = None


@dataclass
class JobResult:
    """The job's final condition, as the operator would report it, and the timeline."""

    name: str
    condition: str  # Succeeded | Failed
    reason: str
    message: str
    events: list[Event] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        return self.condition == "Succeeded"

    def of_kind(self, kind: str, replica: str | None = None) -> list[Event]:
        return [e for e in self.events if e.kind == kind and replica in (None, e.replica)]

    def write_events(self, path: str | Path) -> None:
        """Write the events as JSON lines, atomically (a temp file renamed into place)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "w") as f:
            for event in self.events:
                f.write(json.dumps(asdict(event)) + "\n")
        os.replace(tmp, path)


@dataclass(frozen=True)
class At:
    """A moment of the run: ``seconds`` after its start or, with ``after_training``, after
    training first started (the first ``Starting training from iteration`` line), which does not
    depend on how long the imports and data loading take on this machine."""

    seconds: float
    after_training: bool = False

    @classmethod
    def parse(cls, text: str) -> "At":
        """``"12.5"`` or ``"train+3"``; ValueError otherwise."""
        after_training = text.startswith("train+")
        number = text[len("train+"):] if after_training else text
        try:
            seconds = float(number)
        except ValueError:
            seconds = -1.0
        if not seconds >= 0:
            raise ValueError(f"expected SECONDS or train+SECONDS, got {text!r}")
        return cls(seconds, after_training)

    def __str__(self) -> str:
        return f"train+{self.seconds:g}" if self.after_training else f"{self.seconds:g}"


@dataclass(frozen=True)
class RunOptions:
    """Where the job runs and what happens to it (the ``run-local`` flags)."""

    project_dir: Path
    data_dir: Path | None = None  # default: project_dir
    mounts: Mapping[str, Path] = field(default_factory=dict)  # container path -> local folder
    preempt: Sequence[tuple[str, At]] = ()  # (replica, when)
    suspend_at: At | None = None
    resume_after: float = 0.0
    args: Sequence[str] | None = None  # replaces every replica's container args
    python: str = sys.executable


@dataclass
class _Pod:
    """A running replica: its process, and when it is (to be) told to stop."""

    replica: Replica
    proc: subprocess.Popen
    attempt: int
    term_at: float | None = None  # when to send SIGTERM (None: not scheduled)
    term_sent: float | None = None
    killed: bool = False
    exited_at: float | None = None
    eof: bool = False


class LocalRunner:
    """Supervises one job run; see the module docstring for the rules it applies."""

    def __init__(self, job: LocalJob, options: RunOptions,
                 write: Callable[[str], None] = print):
        self.job = job
        self.options = options
        self.write = write
        self.events: list[Event] = []
        self.pods: dict[str, _Pod] = {}
        self.lines: queue.Queue = queue.Queue()
        self.attempts = {r.name: 0 for r in job.replicas}
        self.finished: set[str] = set()  # replicas that exited 0
        self.restart_counts = {r.name: 0 for r in job.replicas}  # the pods' restartCount
        self.preempts = list(options.preempt)
        self.suspend_at = options.suspend_at
        self.resume_at: float | None = None  # set while the job is suspended
        self.outcome: tuple[str, str, str] | None = None  # condition, reason, message
        self.training_started: float | None = None
        self.master_port = free_port()
        self.threads = max(1, len(os.sched_getaffinity(0)) // len(job.replicas))
        self.width = max(len(r.name) for r in job.replicas)
        self.start = time.monotonic()

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> JobResult:
        if self.job.suspend:
            self._event("", "resumed", "runPolicy.suspend is true in the manifest: admitting "
                                       "the job at once, as Kueue would")
        try:
            for replica in self.job.replicas:
                self._start(replica)
            while self.pods or self.outcome is None:
                self._drain_lines()
                now = self._now()
                self._apply_schedule(now)
                self._enforce_grace(now)
                self._reap(now)
                if not self.pods and self.outcome is None and self.resume_at is None:
                    self._finish("Failed", f"{self.job.kind}Failed", "no replica is running.")
        finally:
            self._kill_all()
        condition, reason, message = self.outcome
        self._event("", condition, f"{reason}: {message}")
        return JobResult(self.job.name, condition, reason, message, self.events)

    def _now(self) -> float:
        return time.monotonic() - self.start

    def _apply_schedule(self, now: float) -> None:
        """Preemptions, suspension and resumption that are due; the active deadline."""
        for name, at in [p for p in self.preempts if self._due(p[1], now)]:
            self.preempts.remove((name, at))
            self._preempt(name, at)
        if self.suspend_at is not None and self._due(self.suspend_at, now) and self.outcome is None:
            self.suspend_at = None
            self.resume_at = now + self.options.resume_after
            self._event("", "suspended", "runPolicy.suspend: true -- every pod is deleted "
                                         "(SIGTERM, SIGKILL after the grace period)")
            for pod in self.pods.values():
                self._terminate(pod)
        if self.resume_at is not None and not self.pods and now >= self.resume_at:
            self.resume_at = None
            self.finished.clear()
            self.restart_counts = dict.fromkeys(self.restart_counts, 0)  # new pods
            self._event("", "resumed", "runPolicy.suspend: false -- every replica starts again")
            for replica in self.job.replicas:
                self._start(replica)
        deadline = self.job.active_deadline_seconds
        if deadline is not None and self.outcome is None and now >= deadline:
            self._finish("Failed", "DeadlineExceeded",
                         f"the job was active longer than activeDeadlineSeconds ({deadline} s).")

    def _due(self, at: At, now: float) -> bool:
        if not at.after_training:
            return now >= at.seconds
        return self.training_started is not None and now >= self.training_started + at.seconds

    # -- processes --------------------------------------------------------------------------

    def _start(self, replica: Replica) -> None:
        opts = self.options
        paths = PathMap.for_replica(replica, opts.project_dir, opts.data_dir or opts.project_dir,
                                    opts.mounts)
        env = process_env(replica, os.environ, self.master_port, paths, self.threads)
        argv = process_argv(replica, env, paths, opts.python, opts.args)
        self.attempts[replica.name] += 1
        proc = subprocess.Popen(
            argv, cwd=opts.project_dir, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        pod = _Pod(replica, proc, self.attempts[replica.name])
        self.pods[replica.name] = pod
        threading.Thread(target=_pump, args=(pod, self.lines), daemon=True).start()
        shown = " ".join([os.path.basename(argv[0]), *argv[1:]])
        self._event(replica.name, "started", f"attempt {pod.attempt}, pid {proc.pid}: {shown}")

    def _terminate(self, pod: _Pod) -> None:
        """SIGTERM to the replica's main process now; SIGKILL follows after the grace period."""
        if pod.term_sent is None and pod.exited_at is None:
            pod.term_at = pod.term_sent = self._now()
            _signal(pod.proc.pid, signal.SIGTERM, group=False)

    def _enforce_grace(self, now: float) -> None:
        for pod in self.pods.values():
            if pod.exited_at is not None:
                continue
            if pod.term_sent is None and pod.term_at is not None and now >= pod.term_at:
                self._terminate(pod)
            grace = pod.replica.grace_seconds
            if pod.term_sent is not None and not pod.killed and now - pod.term_sent >= grace:
                pod.killed = True
                _signal(pod.proc.pid, signal.SIGKILL, group=True)
                self._event(pod.replica.name, "killed",
                            f"SIGKILL: killed after grace period (still running {grace:g} s "
                            f"after SIGTERM; terminationGracePeriodSeconds)")

    def _reap(self, now: float) -> None:
        for name, pod in list(self.pods.items()):
            code = pod.proc.poll()
            if code is None:
                continue
            if pod.exited_at is None:
                pod.exited_at = now
                _signal(pod.proc.pid, signal.SIGKILL, group=True)  # a container dies with PID 1
            if not pod.eof and now - pod.exited_at < EOF_WAIT_SECONDS:
                continue  # let its last log lines through first
            del self.pods[name]
            self._on_exit(pod.replica, code if code >= 0 else 128 - code)

    def _kill_all(self) -> None:
        """On the way out (normally nothing is left; after an error, nothing may stay behind)."""
        for pod in self.pods.values():
            _signal(pod.proc.pid, signal.SIGKILL, group=True)
            pod.proc.wait()
        self.pods.clear()

    # -- operator decisions -----------------------------------------------------------------

    def _on_exit(self, replica: Replica, code: int) -> None:
        self._event(replica.name, "exited", f"exit code {code}", code)
        if self.resume_at is not None or self.outcome is not None:
            return  # suspended or finished: pods are being deleted, not failing
        if code == 0:
            self.finished.add(replica.name)
            if self._job_succeeded():
                what = "master-0" if self.job.kind == "PyTorchJob" else "every node"
                self._finish("Succeeded", f"{self.job.kind}Succeeded",
                             f"{self.job.kind} {self.job.name} successfully completed "
                             f"({what} exited 0).")
            return
        policy = replica.restart_policy
        if not (policy in ("Always", "OnFailure") or (policy == "ExitCode" and code >= 128)):
            why = "codes 1-127 are permanent" if policy == "ExitCode" else "it never restarts"
            self._finish("Failed", f"{self.job.kind}Failed",
                         f"{replica.name} exited with code {code} under restartPolicy {policy} "
                         f"({why}).")
            return
        if policy == "ExitCode":
            self._event(replica.name, "restarting",
                        f"exit code {code} >= 128 is retryable under restartPolicy ExitCode: the "
                        f"operator recreates the pod (not counted in backoffLimit)")
            self.restart_counts[replica.name] = 0
        else:
            self.restart_counts[replica.name] += 1
            restarts, limit = sum(self.restart_counts.values()), self.job.backoff_limit
            if limit is not None and restarts >= limit:
                self._finish("Failed", "BackoffLimitExceeded",
                             f"{replica.name} exited with code {code}; {restarts} container "
                             f"restart(s) reached the job's backoff limit ({limit}).")
                return
            self._event(replica.name, "restarting",
                        f"exit code {code} under restartPolicy {policy}: the kubelet restarts the "
                        f"container (restarts {restarts}, backoffLimit "
                        f"{'unset' if limit is None else limit})")
        self._start(replica)

    def _job_succeeded(self) -> bool:
        if self.job.kind == "PyTorchJob":
            return self.job.replicas[0].name in self.finished
        return all(r.name in self.finished for r in self.job.replicas)

    def _finish(self, condition: str, reason: str, message: str) -> None:
        """Decide the job's condition and stop the replicas still running: at once after a
        failure; after a success, they first get one grace period to finish on their own."""
        self.outcome = (condition, reason, message)
        self.preempts.clear()
        for pod in self.pods.values():
            if pod.exited_at is not None:
                continue
            self._event(pod.replica.name, "stopping", f"the job {condition.lower()}")
            if condition == "Succeeded":
                pod.term_at = self._now() + pod.replica.grace_seconds
            else:
                self._terminate(pod)

    def _preempt(self, name: str, at: At) -> None:
        pod = self.pods.get(name)
        if pod is None or pod.exited_at is not None or pod.term_sent is not None:
            self._event(name, "preempted", f"at {at}: not running, nothing to preempt")
            return
        self._event(name, "preempted", f"SIGTERM (node preemption); SIGKILL in "
                                       f"{pod.replica.grace_seconds:g} s unless it exits")
        self._terminate(pod)

    # -- output -----------------------------------------------------------------------------

    def _drain_lines(self) -> None:
        """Print and parse the replicas' pending log lines (waits one tick when there are none)."""
        try:
            item = self.lines.get(timeout=TICK_SECONDS)
        except queue.Empty:
            return
        while item is not None:
            pod, line = item
            if line is None:
                pod.eof = True
            else:
                self.write(f"[{pod.replica.name:<{self.width}}] {line}")
                self._parse_progress(pod.replica.name, line)
            try:
                item = self.lines.get_nowait()
            except queue.Empty:
                item = None

    def _parse_progress(self, name: str, line: str) -> None:
        if match := TRAINS_FROM.search(line):
            n = int(match.group(1))
            if self.training_started is None:
                self.training_started = self._now()
            detail = f"resumed at iteration {n}" if n else "training from iteration 0"
            self._event(name, "trains_from", detail, n)
        elif match := STOPPED_AT.search(line):
            n = int(match.group(1))
            self._event(name, "stopped_at", f"stopped at iteration {n}", n)

    def _event(self, replica: str, kind: str, detail: str, value: int | None = None) -> None:
        event = Event(round(self._now(), 2), replica, kind, detail, value)
        self.events.append(event)
        who = f"{replica}: " if replica else ""
        self.write(f"[run-local {event.time:7.2f}s] {who}{kind} -- {detail}")


def run_job(job: LocalJob, options: RunOptions,
            write: Callable[[str], None] = print) -> JobResult:
    """Run ``job`` locally until it succeeds or fails; see :class:`LocalRunner`."""
    return LocalRunner(job, options, write).run()


def _pump(pod: _Pod, lines: queue.Queue) -> None:
    """Forward a replica's output lines to the supervisor; ``None`` marks the end."""
    for raw in iter(pod.proc.stdout.readline, b""):
        lines.put((pod, raw.decode("utf-8", "replace").rstrip("\r\n")))
    pod.proc.stdout.close()
    lines.put((pod, None))


def _signal(pid: int, sig: int, group: bool) -> None:
    """Signal a replica's main process or its whole process group; gone is fine."""
    try:
        if group:
            os.killpg(pid, sig)  # the replica is its group's leader (start_new_session)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
