"""Run a job's replicas as local processes and apply the operator's semantics to them.

One supervisor loop owns every decision; reader threads only forward log lines. The rules
follow training-operator v1.9.4 (PyTorchJob: ``pkg/controller.v1/common/job.go``, ``pod.go``,
``pkg/core/job.go``, ``pkg/controller.v1/pytorch/pytorchjob_controller.go``) and Trainer v2.3.0
with JobSet v0.12 (TrainJob):

* **restart policy** (PyTorchJob, per replica type, applied to that replica's own exit): ``ExitCode``
  recreates the pod on codes >= 128 (signals: SIGTERM -> 143, SIGKILL -> 137) and fails the job
  on 1-127; ``OnFailure`` and ``Always`` restart on any non-zero code; ``Never`` fails the job.
  Exit 0 ends the replica (under ``Always`` too: a local run has to finish).
* **backoffLimit** -- ``PastBackoffLimit``: the sum of the running pods' container
  ``restartCount`` fails the job once it reaches the limit. Only in-place restarts count
  (``OnFailure``/``Always``, done by the kubelet); under ``ExitCode`` the operator deletes and
  recreates the pod, whose count starts at 0. But ``backoffLimit: 0`` fails the job on the first
  failed pod of any policy (``ReconcileJobs``' ``exceedsBackoffLimit``: a new failure and
  ``retries + 1 > 0``). Restarts happen at once (no crash-loop back-off).
* **a TrainJob's pods** follow its runtime's JobSet (:mod:`hfai_runtime.local.jobset`): the
  Job's pod ``restartPolicy``, ``backoffLimit`` and ``podFailurePolicy`` (a preempted pod carries
  ``DisruptionTarget``), then the JobSet's ``failurePolicy``: without one the first failed Job
  fails it (``FailedJobs``); with one, a failed Job deletes and recreates every pod (a gang
  restart, once all are gone) up to ``maxRestarts`` times (``ReachedMaxRestarts``), and a
  ``FailJobSet`` rule on ``PodFailurePolicy`` fails it at once.
* **a batch/v1 Job's pod** (``job-0``) follows the Job controller
  (:mod:`hfai_runtime.local.job_controller`): ``podFailurePolicy``, then ``backoffLimit``; under
  ``restartPolicy: Never`` each counted failure gets a new pod, whose init containers run again,
  one after another (``pkg/controller/job/job_controller.go@v1.31.0``). A pod deleted (preempted)
  after an init container exited 0 never starts the next one: it ends as failed (143).
* **success** -- a PyTorchJob succeeds when ``master-0`` exits 0; a TrainJob when every node
  has (its JobSet's ``AllJobsCompleted``); a Job when its pod has (``Complete``,
  ``CompletionsReached``).
* **finished jobs** -- ``cleanPodPolicy`` ``Running``/``All`` delete the pods still running at
  once (SIGTERM, SIGKILL after the grace period); under ``None`` the operator leaves them
  running, which a local run cannot: they get one grace period to end, then are deleted.
* **stopping a replica** (preemption, suspension, deletion) -- SIGTERM to the replica's main
  process only, as the kubelet signals PID 1 and tini forwards to its one child: relaying it to
  the workers is the launcher's job, and a local run should show when it does not. After the
  pod's ``terminationGracePeriodSeconds`` every process of the pod gets SIGKILL, as does
  anything the pod left behind when its main process exits (a container dies with its PID 1).
* **suspension** (``runPolicy.suspend``, here ``--suspend-at``) stops every replica; their exits
  count as neither restarts nor failures; ``--resume-after`` seconds later (once all have stopped)
  every replica starts again. A manifest that is already suspended is admitted at once, as
  Kueue would.
* **activeDeadlineSeconds** counts from the job's start, and again from each resume (the
  operator resets ``status.startTime``); past it the job fails.

Conditions and reasons are the ones ``kubectl describe`` shows: ``PyTorchJobSucceeded`` /
``PyTorchJobFailed`` (for a failed replica, the backoff limit and the deadline alike); a
TrainJob's ``Complete`` / ``Failed`` with its JobSet's reasons (``AllJobsCompleted``,
``FailedJobs``, ``ReachedMaxRestarts``, ``FailJobSetFailurePolicyAction``) or Trainer's
``DeadlineExceeded``; a Job's ``Complete`` / ``Failed`` with the Job controller's reasons
(``BackoffLimitExceeded``, ``PodFailurePolicy``, ``DeadlineExceeded``).

Every step is an :class:`~hfai_runtime.timeline.Event`; the runtime's structured log
records (:mod:`hfai_runtime.records`) say where training starts and where a suspended run
stopped, and feed the live status (iteration, loss). Each pod attempt's output goes to
``<logs_dir>/<pod>-attempt<N>.log``, as ``kubectl logs [--previous]`` would show it.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO

from hfai_runtime.local.container import (
    LocalEngine,
    PathMap,
    ProcessEngine,
    command_problem,
    free_port,
    process_argv,
    process_env,
)
from hfai_runtime.local.job_controller import Decision, JobFailures
from hfai_runtime.local.jobset import Action, JobSetRestarts, Verdict
from hfai_runtime.local.manifest import CleanPodPolicy, LocalJob, Replica, RestartPolicy
from hfai_runtime.local.sandbox import log_problems, mount_problems, open_log
from hfai_runtime.records import Record, RecordKind, parse_record
from hfai_runtime.timeline import Event, EventKind, JobCondition, write_events

TICK_SECONDS = 0.05
EOF_WAIT_SECONDS = 2.0  # how long to wait for a dead replica's log pipe to close
# Where a pod's datasets are, for the frameworks whose convention run-local knows (detectron2's
# builtin datasets root): it must exist before the job starts.
DATASET_VARS = ("DETECTRON2_DATASETS",)


@dataclass
class JobResult:
    """The job's final condition, as the operator would report it, and the timeline.
    ``message`` is the operator's own; ``cause`` says which pod did what, locally."""

    name: str
    condition: JobCondition
    reason: str
    message: str
    cause: str = ""
    events: list[Event] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        return self.condition != JobCondition.FAILED

    def of_kind(self, kind: EventKind | str, replica: str | None = None) -> list[Event]:
        return [e for e in self.events if e.kind == kind and replica in (None, e.replica)]

    def write_events(self, path: str | Path) -> None:
        """Write the events as JSON lines, atomically."""
        write_events(path, self.events)


@dataclass(frozen=True)
class At:
    """A moment of the run: ``seconds`` after its start or, with ``after_training``, after
    training first started (the first ``training_started`` record), which does not depend on
    how long the imports and data loading take on this machine."""

    seconds: float
    after_training: bool = False

    @classmethod
    def parse(cls, text: str) -> At:
        """``"12.5"`` or ``"train+3"``; ValueError otherwise."""
        after_training = text.startswith("train+")
        number = text[len("train+") :] if after_training else text
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
    logs_dir: Path | None = None  # each attempt's output as <pod>-attempt<N>.log
    engine: ProcessEngine = field(default_factory=LocalEngine)
    #: The job's clock, in seconds (read once per turn of the supervisor loop): deadlines, grace
    #: periods, suspension and the event times follow it. Tests inject one that advances a
    #: fixed step per turn, so the schedule does not depend on how loaded the machine is.
    clock: Callable[[], float] = time.monotonic
    #: Whether Kueue manages the job's kind, for a queue-labelled job: Kueue v0.19.2's default
    #: configuration does not manage PyTorchJobs (``--kueue-unmanaged``): the label is ignored.
    kueue_manages_kind: bool = True


class RunObserver:
    """What the runner tells the outside while it runs; every method does nothing here."""

    def on_event(self, event: Event) -> None:
        """A step of the timeline."""

    def on_line(self, replica: str, attempt: int, line: str) -> None:
        """One line of a pod's output."""

    def on_record(self, replica: str, record: Record) -> None:
        """A structured record found in a pod's output."""


class PlainObserver(RunObserver):
    """Every event and every pod's output as prefixed lines: ``[worker-0] ...``."""

    def __init__(self, write: Callable[[str], None], width: int = 8):
        self.write, self.width = write, width

    def on_event(self, event: Event) -> None:
        who = f"{event.replica}: " if event.replica else ""
        self.write(f"[run-local {event.time:7.2f}s] {who}{event.kind.value} -- {event.detail}")

    def on_line(self, replica: str, attempt: int, line: str) -> None:
        self.write(f"[{replica:<{self.width}}] {line}")


@dataclass
class _Pod:
    """A running replica: its process, and when it is (to be) told to stop."""

    replica: Replica
    proc: object  # subprocess.Popen
    attempt: int
    marker: str
    log: IO[str] | None = None
    term_at: float | None = None  # when to send SIGTERM (None: not scheduled)
    term_sent: float | None = None
    killed: bool = False
    disrupted: bool = False  # preempted: the pod carries the condition DisruptionTarget
    exited_at: float | None = None
    exited_wall: float = 0.0  # time.monotonic() at the exit: waiting for the pipe is real time
    eof: bool = False
    step: int = 0  # which of the pod's containers runs: its init containers, then the main one

    @property
    def container(self) -> Replica:
        return _containers(self.replica)[self.step]


class LocalRunner:
    """Supervises one job run; see the module docstring for the rules it applies."""

    def __init__(self, job: LocalJob, options: RunOptions, observer: RunObserver | None = None):
        self.job = job
        self.options = options
        self.observer = observer or RunObserver()
        self.events: list[Event] = []
        self.pods: dict[str, _Pod] = {}
        self.lines: queue.Queue = queue.Queue()
        self.attempts = {r.name: 0 for r in job.replicas}
        self.finished: set[str] = set()  # replicas that exited 0
        self.restart_counts = {r.name: 0 for r in job.replicas}  # the pods' restartCount
        self.preempts = list(options.preempt)
        self.suspend_at = options.suspend_at
        self.resume_at: float | None = None  # set while the job is suspended
        # A TrainJob's JobSet: its restarts, and whether it is recreating its Jobs now.
        self.jobset = JobSetRestarts(job.gang, job.name) if job.gang is not None else None
        self.gang_restarting = False
        # A batch/v1 Job's counted pod failures (its pod: <job>-job-0 here).
        self.batch = JobFailures(job.policy, f"{job.name}-job-0") if job.policy is not None else None
        self.runtime_stopped = ""  # why the runtime's restart limits ended the job, if they did
        self.outcome: tuple[JobCondition, str, str, str] | None = None
        self.training_started: float | None = None
        self.master_port = free_port()
        self.threads = max(1, len(os.sched_getaffinity(0)) // len(job.replicas))
        self.run_id = uuid.uuid4().hex[:12]
        self.start = options.clock()
        self.now = 0.0  # the job's time, read from the clock once per turn of the loop
        self.active_since = 0.0  # the operator's status.startTime, reset on resume

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> JobResult:
        if self.options.logs_dir is not None:
            self.options.logs_dir.mkdir(parents=True, exist_ok=True)
        if not self._admit():
            condition, reason, message, cause = self.outcome
            return JobResult(self.job.name, condition, reason, message, cause, self.events)
        try:
            for replica in self.job.replicas:
                self._start(replica)
            while self.pods or self.outcome is None:
                self._drain_lines()
                self.now = now = self.options.clock() - self.start
                self._apply_schedule(now)
                self._enforce_grace(now)
                self._reap(now)
                if (
                    not self.pods
                    and self.outcome is None
                    and self.resume_at is None
                    and not self.gang_restarting
                ):
                    self._fail(f"{self.job.kind}Failed", "no replica is running.", "")
        finally:
            self._kill_all()
        condition, reason, message, cause = self.outcome
        return JobResult(self.job.name, condition, reason, message, cause, self.events)

    def _admit(self) -> bool:
        """Kueue's part before any pod starts; False when the job would never start."""
        queue, kind = self.job.queue, self.job.kind
        if queue and not self.options.kueue_manages_kind:
            self._event(
                "",
                EventKind.RESUMED if not self.job.suspend else EventKind.SUSPENDED,
                f"kueue.x-k8s.io/queue-name={queue} is ignored: Kueue does not manage {kind}s here (its "
                f"default configuration, v0.19.2, leaves them out): no Workload, no queueing",
            )
            if self.job.suspend:
                self._fail(
                    "Suspended",
                    "the manifest is suspended and Kueue, which does not manage it, never admits it",
                    "hfai-runtime job resume (or kubectl patch) would have to unsuspend it",
                )
                return False
        elif queue:
            self._event(
                "", EventKind.RESUMED, f"Kueue admits the Workload (LocalQueue {queue}): the job starts"
            )
        elif self.job.suspend:
            self._event(
                "",
                EventKind.RESUMED,
                "runPolicy.suspend is true in the manifest: admitting the job at once, as Kueue would",
            )
        return True

    def _now(self) -> float:
        return self.now

    def _apply_schedule(self, now: float) -> None:
        """Preemptions, suspension and resumption that are due; the active deadline."""
        for name, at in [p for p in self.preempts if self._due(p[1], now)]:
            self.preempts.remove((name, at))
            self._preempt(name, at)
        if self.suspend_at is not None and self._due(self.suspend_at, now) and self.outcome is None:
            self.suspend_at = None
            self.resume_at = now + self.options.resume_after
            self._event(
                "",
                EventKind.SUSPENDED,
                "runPolicy.suspend: true -- every pod is deleted (SIGTERM, SIGKILL after the grace period)",
            )
            for pod in self.pods.values():
                self._terminate(pod)
        if self.resume_at is not None and not self.pods and now >= self.resume_at:
            self.resume_at = None
            self.finished.clear()
            self.restart_counts = dict.fromkeys(self.restart_counts, 0)  # new pods
            self.active_since = now  # job.go@v1.9.4: status.startTime = now on resume
            self._event("", EventKind.RESUMED, "runPolicy.suspend: false -- every replica starts again")
            for replica in self.job.replicas:
                self._start(replica)
        if self.gang_restarting and not self.pods and self.outcome is None:
            self._recreate_gang()
        deadline = self.job.active_deadline_seconds
        if (
            deadline is not None
            and self.outcome is None
            and self.resume_at is None
            and now - self.active_since >= deadline
        ):
            self._deadline_exceeded(deadline)

    def _due(self, at: At, now: float) -> bool:
        if not at.after_training:
            return now >= at.seconds
        return self.training_started is not None and now >= self.training_started + at.seconds

    # -- processes --------------------------------------------------------------------------

    def _start(self, replica: Replica) -> None:
        """A new pod (attempt) of ``replica``: its first container starts."""
        self.attempts[replica.name] += 1
        attempt = self.attempts[replica.name]
        log = None
        if self.options.logs_dir is not None:
            log = open_log(self.options.logs_dir, f"{replica.name}-attempt{attempt}.log")
        self._start_container(_Pod(replica, None, attempt, "", log))

    def _start_container(self, pod: _Pod) -> None:
        """Start ``pod``'s container number ``pod.step`` (a new process, the same pod and log)."""
        opts, replica, container = (
            _options_for(self.options, pod.replica, pod.step),
            pod.replica,
            pod.container,
        )
        argv, env, _ = pod_process(container, opts, self.master_port, self.threads)
        pod.marker = f"{self.run_id}/{replica.name}/{pod.attempt}/{pod.step}"
        pod.proc = opts.engine.start(container, argv, env, opts.project_dir, pod.marker)
        pod.exited_at, pod.eof = None, False
        self.pods[replica.name] = pod
        threading.Thread(target=_pump, args=(pod, self.lines), daemon=True).start()
        described = f"pid {pod.proc.pid}: {opts.engine.describe(pod.proc, argv)}"
        if replica.init:
            described = f"container {container.container}, {described}"
        if pod.step:
            self._event(replica.name, EventKind.NEXT_CONTAINER, described, pod.step)
        else:
            self._event(replica.name, EventKind.STARTED, f"attempt {pod.attempt}, {described}", pod.attempt)

    def _terminate(self, pod: _Pod) -> None:
        """SIGTERM to the replica's main process now; SIGKILL follows after the grace period."""
        if pod.term_sent is None and pod.exited_at is None:
            pod.term_at = pod.term_sent = self._now()
            self.options.engine.terminate(pod.proc)

    def _enforce_grace(self, now: float) -> None:
        for pod in self.pods.values():
            if pod.exited_at is not None:
                continue
            if pod.term_sent is None and pod.term_at is not None and now >= pod.term_at:
                self._terminate(pod)
            grace = pod.replica.grace_seconds
            if pod.term_sent is not None and not pod.killed and now - pod.term_sent >= grace:
                pod.killed = True
                self.options.engine.kill_all(pod.proc, pod.marker)
                self._event(
                    pod.replica.name,
                    EventKind.KILLED,
                    f"SIGKILL: killed after grace period (still running {grace:g} s "
                    f"after SIGTERM; terminationGracePeriodSeconds)",
                )

    def _reap(self, now: float) -> None:
        for name, pod in list(self.pods.items()):
            code = pod.proc.poll()
            if code is None:
                continue
            if pod.exited_at is None:
                pod.exited_at, pod.exited_wall = now, time.monotonic()
                self.options.engine.kill_all(pod.proc, pod.marker)  # a container dies with PID 1
            if not pod.eof and time.monotonic() - pod.exited_wall < EOF_WAIT_SECONDS:
                continue  # let its last log lines through first
            code = code if code >= 0 else 128 - code
            if code == 0 and pod.step + 1 < len(_containers(pod.replica)):
                if pod.term_sent is None and self.outcome is None:
                    self._event(
                        name, EventKind.EXITED, f"init container {pod.container.container}: exit code 0", 0
                    )
                    pod.step += 1
                    self._start_container(pod)
                    continue
                code = 143  # deleted between its containers: the pod failed, the next never ran
            del self.pods[name]
            if pod.log is not None:
                pod.log.close()
            self._on_exit(pod.replica, code, pod.disrupted, pod.container.container)

    def _kill_all(self) -> None:
        """On the way out (normally nothing is left; after an error, nothing may stay behind)."""
        for pod in self.pods.values():
            self.options.engine.kill_all(pod.proc, pod.marker)
            pod.proc.wait()
            if pod.log is not None:
                pod.log.close()
        self.pods.clear()

    # -- operator decisions -----------------------------------------------------------------

    def _on_exit(self, replica: Replica, code: int, disrupted: bool = False, container: str = "") -> None:
        self._event(replica.name, EventKind.EXITED, f"exit code {code}", code)
        if self.resume_at is not None or self.outcome is not None or self.gang_restarting:
            return  # suspended, finished or restarting: pods are being deleted, not failing
        if code == 0:
            self.finished.add(replica.name)
            if self._job_succeeded():
                self._succeed()
            return
        if self.jobset is not None:
            self._apply_jobset(replica, self.jobset.on_failed_pod(replica.name, code, disrupted))
            return
        if self.batch is not None:
            verdict = self.batch.on_failed_pod(replica.name, container, code, disrupted)
            if verdict.decision == Decision.FAILED:
                self._fail(verdict.reason, verdict.message, verdict.detail)
            else:
                self._event(replica.name, EventKind.RESTARTING, verdict.detail)
                self._start(replica)
            return
        policy = replica.restart_policy
        cause = f"{replica.name} exited with code {code} under restartPolicy {policy.value}"
        limit = self.job.backoff_limit
        if limit == 0:
            self._backoff_exceeded(f"{cause}; backoffLimit 0 fails the job on its first failed pod")
            return
        retryable = policy in (RestartPolicy.ALWAYS, RestartPolicy.ON_FAILURE) or (
            policy == RestartPolicy.EXIT_CODE and code >= 128
        )
        if not retryable:
            why = "codes 1-127 are permanent" if policy == RestartPolicy.EXIT_CODE else "it never restarts"
            self._replica_failed(replica, f"{cause} ({why})")
            return
        if policy == RestartPolicy.EXIT_CODE:
            self._event(
                replica.name,
                EventKind.RESTARTING,
                f"exit code {code} (>= 128) under restartPolicy ExitCode: the operator "
                f"recreates the pod (not counted in backoffLimit)",
            )
            self.restart_counts[replica.name] = 0
        else:
            self.restart_counts[replica.name] += 1
            restarts = sum(self.restart_counts.values())
            if limit is not None and restarts >= limit:
                self._backoff_exceeded(
                    f"{cause}; {restarts} container restart(s) reached the job's backoff limit ({limit})"
                )
                return
            self._event(
                replica.name,
                EventKind.RESTARTING,
                f"exit code {code} under restartPolicy {policy.value}: the kubelet "
                f"restarts the container (restarts {restarts}, backoffLimit "
                f"{'unset' if limit is None else limit})",
            )
        self._start(replica)

    def _apply_jobset(self, replica: Replica, verdict: Verdict) -> None:
        """What a TrainJob's Job and JobSet controllers decided on a failed node pod."""
        if verdict.action == Action.REPLACE:
            self._event(replica.name, EventKind.RESTARTING, verdict.detail)
            self._start(replica)
        elif verdict.action == Action.RESTART_GANG:
            self._event("", EventKind.RESTARTING, verdict.detail)
            self.gang_restarting = True
            for pod in self.pods.values():
                self._terminate(pod)
        else:
            self._fail(verdict.reason, verdict.message, verdict.detail)

    def _recreate_gang(self) -> None:
        """Every pod of the JobSet is gone: its new Jobs start every node again."""
        self.gang_restarting = False
        self.finished.clear()
        self.restart_counts = dict.fromkeys(self.restart_counts, 0)
        self.jobset.gang_restarted()
        for replica in self.job.replicas:
            self._start(replica)

    def _job_succeeded(self) -> bool:
        if self.job.kind in ("PyTorchJob", "Job"):
            return self.job.replicas[0].name in self.finished
        return all(r.name in self.finished for r in self.job.replicas)

    def _succeed(self) -> None:
        name = self.job.name
        if self.job.kind == "PyTorchJob":  # pytorchjob_controller.go@v1.9.4 UpdateJobStatus
            self._finish(
                JobCondition.SUCCEEDED,
                "PyTorchJobSucceeded",
                f"PyTorchJob {name} is successfully completed.",
                "master-0 exited 0",
            )
        elif self.job.kind == "Job":  # job_controller.go@v1.31.0 newSuccessCondition
            self._finish(
                JobCondition.COMPLETE,
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                "job-0 exited 0",
            )
        else:  # jobset_controller.go@v0.12.0 makeCompletedConditionsOpts
            self._finish(
                JobCondition.COMPLETE,
                "AllJobsCompleted",
                "jobset completed successfully",
                "every node exited 0",
            )

    def _replica_failed(self, replica: Replica, cause: str) -> None:
        name, rtype = self.job.name, replica.replica_type
        if replica.restart_policy == RestartPolicy.EXIT_CODE:  # pod.go@v1.9.4 ReconcilePods
            self._fail(
                "PyTorchJobFailed", f'job "{name}" is failing because "{rtype}" replica(s) failed.', cause
            )
        else:  # Never: pytorchjob_controller.go@v1.9.4 UpdateJobStatus
            self._fail(
                "PyTorchJobFailed", f"PyTorchJob {name} is failed because 1 {rtype} replica(s) failed.", cause
            )

    def _backoff_exceeded(self, cause: str) -> None:
        # job.go@v1.9.4 ReconcileJobs (a TrainJob's pods: :meth:`_apply_jobset`)
        self._fail(
            "PyTorchJobFailed",
            f"Job {self.job.name} has failed because it has reached the specified backoff limit",
            cause,
        )

    def _deadline_exceeded(self, deadline: float) -> None:
        cause = f"active for {deadline:g} s since it started or last resumed"
        if self.job.kind == "TrainJob":  # trainjob_types.go@v2.3.0 TrainJobDeadlineExceededReason
            self._fail("DeadlineExceeded", "TrainJob exceeded its activeDeadlineSeconds", cause)
        elif self.job.kind == "Job":  # job_controller.go@v1.31.0 pastActiveDeadline
            self._fail("DeadlineExceeded", "Job was active longer than specified deadline", cause)
        else:  # job.go@v1.9.4 ReconcileJobs, core/job.go PastActiveDeadline
            self._fail(
                "PyTorchJobFailed",
                f"Job {self.job.name} has failed because it was active longer than specified deadline",
                cause,
            )

    def _fail(self, reason: str, message: str, cause: str) -> None:
        if self.runtime_stopped:
            cause = f"{cause}; the runtime stopped: {self.runtime_stopped}"
        self._finish(JobCondition.FAILED, reason, message, cause)

    def _finish(self, condition: JobCondition, reason: str, message: str, cause: str) -> None:
        """Decide the job's condition and delete the pods still running (see cleanPodPolicy in
        the module docstring)."""
        self.outcome = (condition, reason, message, cause)
        self._event("", EventKind.FINISHED, f"{condition.value} ({reason}): {message}")
        self.preempts.clear()
        at_once = self.job.clean_pod_policy != CleanPodPolicy.NONE
        for pod in self.pods.values():
            if pod.exited_at is not None:
                continue
            if at_once:
                self._event(
                    pod.replica.name,
                    EventKind.STOPPING,
                    f"the job is {condition.value}: cleanPodPolicy "
                    f"{self.job.clean_pod_policy.value} deletes the pod",
                )
                self._terminate(pod)
            else:
                self._event(
                    pod.replica.name,
                    EventKind.STOPPING,
                    f"the job is {condition.value}: cleanPodPolicy None leaves the pod "
                    f"running; deleted here after {pod.replica.grace_seconds:g} s",
                )
                pod.term_at = self._now() + pod.replica.grace_seconds

    def preempt(self, name: str) -> None:
        """Preempt ``name``'s node now (an observer may call it, e.g. on a record)."""
        self._preempt(name, At(self._now()))

    def _preempt(self, name: str, at: At) -> None:
        pod = self.pods.get(name)
        if pod is None or pod.exited_at is not None or pod.term_sent is not None:
            self._event(name, EventKind.PREEMPTED, f"at {at}: not running, nothing to preempt")
            return
        self._event(
            name,
            EventKind.PREEMPTED,
            f"SIGTERM (node preemption: condition DisruptionTarget); SIGKILL in "
            f"{pod.replica.grace_seconds:g} s unless it exits",
        )
        pod.disrupted = True
        self._terminate(pod)

    # -- output -----------------------------------------------------------------------------

    def _drain_lines(self) -> None:
        """Log and parse the replicas' pending output lines (waits one tick when there are
        none)."""
        try:
            item = self.lines.get(timeout=TICK_SECONDS)
        except queue.Empty:
            return
        while item is not None:
            pod, line = item
            if line is None:
                pod.eof = True
            else:
                if pod.log is not None:
                    pod.log.write(line + "\n")
                    pod.log.flush()
                self.observer.on_line(pod.replica.name, pod.attempt, line)
                if (record := parse_record(line)) is not None:
                    self._on_record(pod.replica.name, record)
            try:
                item = self.lines.get_nowait()
            except queue.Empty:
                item = None

    def _on_record(self, name: str, record: Record) -> None:
        self.observer.on_record(name, record)
        if record.kind == RecordKind.STOPPED:
            self.runtime_stopped = str(record.fields.get("reason", ""))
        n = record.iteration
        if n is None:
            return
        if record.kind == RecordKind.TRAINING_STARTED:
            if self.training_started is None:
                self.training_started = self._now()
            detail = f"resumed at iteration {n}" if n else "training from iteration 0"
            self._event(name, EventKind.TRAINS_FROM, detail, n)
        elif record.kind == RecordKind.SUSPENDED:
            self._event(name, EventKind.STOPPED_AT, f"stopped at iteration {n}", n)

    def _event(self, replica: str, kind: EventKind, detail: str, value: int | None = None) -> None:
        event = Event(round(self._now(), 2), replica, kind, detail, value)
        self.events.append(event)
        self.observer.on_event(event)


def _containers(replica: Replica) -> tuple[Replica, ...]:
    """A pod's containers in the order they run: a batch Job's init containers, then its own."""
    return (*replica.init, replica)


def _options_for(options: RunOptions, replica: Replica, step: int) -> RunOptions:
    """``--args`` replaces the args of a pod's main container, not of its init containers."""
    return options if step == len(replica.init) else replace(options, args=None)


def pod_process(
    replica: Replica, options: RunOptions, master_port: int, threads: int
) -> tuple[list[str], dict[str, str], PathMap]:
    """The argv and environment that start ``replica`` here, and its path map."""
    paths = _path_map(replica, options)
    env = process_env(replica, os.environ, master_port, paths, threads)
    argv = process_argv(replica, env, paths, options.python, options.args)
    return argv, env, paths


def _path_map(replica: Replica, options: RunOptions) -> PathMap:
    return PathMap.for_replica(
        replica, options.project_dir, options.data_dir or options.project_dir, options.mounts
    )


def preflight(job: LocalJob, options: RunOptions, required: Sequence[str] = ()) -> list[str]:
    """What would stop the job here before any pod starts, one line each, naming the replica
    and field: a command that cannot start, and a dataset folder (``DETECTRON2_DATASETS``, or
    each of ``required``, container or local paths) that is not where the mounts put it."""
    data_dir = options.data_dir or options.project_dir
    containers = [c for replica in job.replicas for c in _containers(replica)]
    problems = mount_problems(containers, data_dir, options.mounts)
    if options.logs_dir is not None:
        problems += log_problems(options.logs_dir, job.replicas)
    if problems:
        return problems  # every path below would be mapped through them
    steps = [(c, _options_for(options, r, i)) for r in job.replicas for i, c in enumerate(_containers(r))]
    for replica, step_options in steps:
        try:
            argv, env, _ = pod_process(replica, step_options, 0, 1)
        except ValueError as exc:
            problems.append(f"{replica.name}: {replica.field_path}.command: {exc}")
            continue
        if (problem := command_problem(argv, env, options.project_dir)) is not None:
            problems.append(f"{replica.name}: {replica.field_path}.command: {problem}")
    paths = _path_map(job.replicas[0], options)
    wanted = [
        (f"{var}={job.replicas[0].env[var]}", job.replicas[0].env[var])
        for var in DATASET_VARS
        if var in job.replicas[0].env
    ]
    wanted += [(f"--require {path}", path) for path in required]
    for what, path in wanted:
        local = options.project_dir / paths.rewrite(path)  # relative: the pod's working folder
        if not local.exists():
            problems.append(
                f"{what}: {local} (under --data-dir {data_dir}) does not exist; put the dataset there first"
            )
    return problems


def run_job(
    job: LocalJob,
    options: RunOptions,
    write: Callable[[str], None] | None = print,
    observer: RunObserver | None = None,
) -> JobResult:
    """Run ``job`` locally until it succeeds or fails; see :class:`LocalRunner`. Progress goes
    to ``observer``, or else as prefixed lines to ``write`` (``None``: nowhere)."""
    if observer is None and write is not None:
        observer = PlainObserver(write, max(len(r.name) for r in job.replicas))
    return LocalRunner(job, options, observer).run()


def _pump(pod: _Pod, lines: queue.Queue) -> None:
    """Forward a replica's output lines to the supervisor; ``None`` marks the end (of this
    process's output: not once the pod has moved on to its next container)."""
    proc = pod.proc
    for raw in iter(proc.stdout.readline, b""):
        lines.put((pod, raw.decode("utf-8", "replace").rstrip("\r\n")))
    proc.stdout.close()
    if pod.proc is proc:
        lines.put((pod, None))
