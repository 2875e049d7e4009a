"""The run-local timeline of a job on a cluster, rebuilt from what the API server keeps.

Sources, each mapped to run-local's event kinds (``started``, ``preempted``, ``stopping``,
``exited``, ``restarting``, ``trains_from``, ``stopped_at``, ``suspended``, ``resumed``,
``Succeeded``, ``Failed``):

* the job's **conditions** (``Suspended``, ``Restarting``, ``Succeeded``/``Complete``,
  ``Failed``);
* **events** on the job and its pods: the kubelet's ``Started`` and ``Killing``, the
  scheduler's ``Preempted``, the Training Operator's ``SuccessfulCreatePod`` (a second
  creation of one pod name is a recreation), ``ExitedWithCode`` and ``<Kind>Restarting`` /
  ``Suspended`` / ``Resumed`` / ``Succeeded`` / ``Failed``
  (pkg/controller.v1/common/{pod,job}.go@v1.9.4), Kueue's ``Stopped`` and ``Started``
  (pkg/controller/jobframework/reconciler.go@v0.19.2);
* the **pods** still there: their containers' start and end times and exit codes, and a
  ``DisruptionTarget`` condition (preemption, eviction);
* the runtime's **records** in those pods' logs (:mod:`hfai_runtime.records`):
  ``training_started`` (resumed at iteration N) and ``suspended`` (stopped at iteration N).

What the API server no longer has cannot be shown: a recreated pod's log goes with the old
pod, events expire (one hour by default) and repeats of one event (same object, reason and
message) are folded into one with a count. ``watch`` therefore observes the job until it ends,
so each pod's records are read before the operator deletes it. Two sources reporting the same
thing (a container's start time and the kubelet's ``Started`` event) give one event.
"""

from __future__ import annotations

import re
import time as clock
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hfai_runtime.cluster import pods as podinfo
from hfai_runtime.cluster.api import Cluster, ClusterError
from hfai_runtime.cluster.jobs import get_job
from hfai_runtime.cluster.logs import (
    LogLine,
    parse_time,
    read_log,
    records,
    split_lines,
)
from hfai_runtime.kube.kinds import JobKind
from hfai_runtime.records import RecordKind
from hfai_runtime.timeline import Event, EventKind

SAME_EVENT_SECONDS = 2.0  # two sources within this of each other report one event
# The Training Operator's ExitedWithCode message (pkg/controller.v1/common/pod.go@v1.9.4).
EXITED_WITH_CODE = re.compile(r"Pod: [^.\s]+\.(?P<pod>\S+) exited with code (?P<code>-?\d+)")
CREATED_POD = re.compile(r"Created pod: (?P<pod>\S+)")


@dataclass
class _Item:
    at: datetime
    replica: str
    kind: EventKind
    detail: str
    value: int | None = None


@dataclass
class Timeline:
    """Accumulates observations of one job; :meth:`events` is the timeline so far."""

    kind: JobKind
    name: str
    origin: datetime | None = None
    job: dict = field(default_factory=dict)
    _items: list[_Item] = field(default_factory=list)
    _seen: set = field(default_factory=set)
    _created: dict[str, list[datetime]] = field(default_factory=dict)

    def observe(
        self,
        job: Mapping[str, Any],
        pods: Iterable[Mapping[str, Any]],
        events: Iterable[Mapping[str, Any]],
        logs: Mapping[str, list[LogLine]],
    ) -> None:
        """Add what one look at the API server showed; ``logs`` maps pod uid to its log."""
        self.job = dict(job)
        self.origin = self.origin or parse_time(job["metadata"].get("creationTimestamp"))
        pods = list(pods)
        self._pods(pods)
        known = {p["metadata"].get("uid"): self.kind.replica_name(p) for p in pods}
        for uid, lines in logs.items():
            if uid in known:
                self._records(uid, known[uid], lines)
        occurrences = sorted((at, n, event) for n, event in enumerate(events) for at in _occurrences(event))
        for at, _, event in occurrences:
            self._event(event, at, known)
        self._conditions(job)

    def events(self) -> list[Event]:
        origin = self.origin or min((i.at for i in self._items), default=None)
        ordered = sorted(enumerate(self._items), key=lambda pair: (pair[1].at, pair[0]))
        return [
            Event(round((i.at - origin).total_seconds(), 2), i.replica, i.kind, i.detail, i.value)
            for _, i in ordered
        ]

    def finished(self) -> Mapping[str, Any] | None:
        """The job's final condition (Succeeded/Complete or Failed), if it has one."""
        return final_condition(self.kind, self.job)

    def _meaning(self, code: int) -> str:
        return podinfo.exit_meaning(code, podinfo.suspend_exit_code(self.job))

    # -- sources ---------------------------------------------------------------------------

    def _add(
        self,
        key: tuple,
        at: datetime | None,
        replica: str,
        kind: EventKind,
        detail: str,
        value: int | None = None,
    ) -> None:
        if at is None or key in self._seen:
            return
        self._seen.add(key)
        for item in self._items:
            if (item.replica, item.kind, item.value) == (replica, kind, value) and abs(
                (item.at - at).total_seconds()
            ) <= SAME_EVENT_SECONDS:
                return
        self._items.append(_Item(at, replica, kind, detail, value))

    def _conditions(self, job: Mapping[str, Any]) -> None:
        for c in (job.get("status") or {}).get("conditions") or []:
            ctype, status = c.get("type"), c.get("status")
            at = parse_time(c.get("lastTransitionTime"))
            key = ("condition", ctype, status, c.get("lastTransitionTime"))
            why = f"{c.get('reason', '')}: {c.get('message', '')}"
            if ctype == "Suspended" and status == "True":
                self._add(key, at, "", EventKind.SUSPENDED, why)
            elif ctype == "Suspended" and status == "False":
                self._add(key, at, "", EventKind.RESUMED, why)
            elif ctype == "Restarting" and status == "True":
                self._add(key, at, "", EventKind.RESTARTING, why)
            elif ctype in (self.kind.success_condition, "Failed") and status == "True":
                self._add(
                    key,
                    at,
                    "",
                    EventKind.FINISHED,
                    f"{ctype} ({c.get('reason', '')}): {c.get('message', '')}",
                )

    def _pods(self, pods: list[Mapping[str, Any]]) -> None:
        for pod in pods:
            uid, name = pod["metadata"].get("uid"), pod["metadata"]["name"]
            replica = self.kind.replica_name(pod)
            status = podinfo.container_status(pod, podinfo.log_container(self.kind, pod))
            for state in (status.get("lastState"), status.get("state")):
                for phase, fields in (state or {}).items():
                    started = parse_time(fields.get("startedAt"))
                    self._add(
                        ("start", uid, fields.get("startedAt")),
                        started,
                        replica,
                        EventKind.STARTED,
                        f"pod {name}: container started",
                    )
                    if phase == "terminated":
                        code = int(fields.get("exitCode", 0))
                        self._add(
                            ("exit", uid, fields.get("finishedAt")),
                            parse_time(fields.get("finishedAt")),
                            replica,
                            EventKind.EXITED,
                            f"exit code {code}: {self._meaning(code)}",
                            code,
                        )
            for c in (pod.get("status") or {}).get("conditions") or []:
                if c.get("type") == "DisruptionTarget" and c.get("status") == "True":
                    self._add(
                        ("disruption", uid),
                        parse_time(c.get("lastTransitionTime")),
                        replica,
                        EventKind.PREEMPTED,
                        f"{c.get('reason')}: {c.get('message')}",
                    )

    def _records(self, uid: str, replica: str, lines: list[LogLine]) -> None:
        for at, record in records(lines):
            n = record.iteration
            if n is None:
                continue
            if record.kind is RecordKind.TRAINING_STARTED:
                detail = f"resumed at iteration {n}" if n else "training from iteration 0"
                self._add(("trains_from", uid, n), at, replica, EventKind.TRAINS_FROM, detail, n)
            elif record.kind is RecordKind.SUSPENDED:
                saved = record.fields.get("checkpoint")
                detail = f"stopped at iteration {n}" + (f", checkpoint {saved}" if saved else "")
                self._add(("stopped_at", uid, n), at, replica, EventKind.STOPPED_AT, detail, n)

    def _event(self, event: Mapping[str, Any], at: datetime, known: Mapping[str, str]) -> None:
        """One occurrence (at ``at``) of an event about the job or one of its pods."""
        involved = event.get("involvedObject") or {}
        reason, message = event.get("reason", ""), " ".join(str(event.get("message", "")).split())
        key = ("event", event.get("metadata", {}).get("uid"), at)
        if involved.get("kind") == "Pod":
            replica = known.get(involved.get("uid")) or self.kind.replica_of_pod_name(
                self.name, involved.get("name", "")
            )
            if replica:
                self._pod_event(key, at, replica, reason, message)
        elif involved.get("kind") == self.kind.kind and involved.get("name") == self.name:
            self._job_event(key, at, reason, message)

    def _pod_event(self, key: tuple, at: datetime, replica: str, reason: str, message: str) -> None:
        if reason == "Started":
            self._add(key, at, replica, EventKind.STARTED, f"kubelet: {message}")
        elif reason in ("Preempted", "Evicted"):
            self._add(key, at, replica, EventKind.PREEMPTED, f"{reason}: {message}")
        elif reason == "Killing":
            self._add(
                key,
                at,
                replica,
                EventKind.STOPPING,
                f"kubelet: {message} (SIGTERM; SIGKILL after the grace period)",
            )

    def _job_event(self, key: tuple, at: datetime, reason: str, message: str) -> None:
        kind = self.kind.kind
        if reason == "ExitedWithCode" and (match := EXITED_WITH_CODE.search(message)):
            replica = self.kind.replica_of_pod_name(self.name, match["pod"]) or match["pod"]
            code = int(match["code"])
            self._add(key, at, replica, EventKind.EXITED, f"exit code {code}: {self._meaning(code)}", code)
        elif reason == "SuccessfulCreatePod" and (match := CREATED_POD.search(message)):
            self._pod_created(at, match["pod"])
        elif reason in (f"{kind}Suspended", "Stopped"):
            self._add(key, at, "", EventKind.SUSPENDED, f"{reason}: {message}")
        elif reason in (f"{kind}Resumed", "Started"):
            self._add(key, at, "", EventKind.RESUMED, f"{reason}: {message}")
        elif reason == f"{kind}Restarting":
            self._add(key, at, "", EventKind.RESTARTING, f"{reason}: {message}")
        elif reason in (f"{kind}Succeeded", f"{kind}Failed"):
            condition = "Failed" if reason.endswith("Failed") else self.kind.success_condition
            self._add(key, at, "", EventKind.FINISHED, f"{condition} ({reason}): {message}")

    def _pod_created(self, at: datetime, pod: str) -> None:
        """A pod name the operator creates a second time was recreated."""
        creations = self._created.setdefault(pod, [])
        if any(abs((at - seen).total_seconds()) <= SAME_EVENT_SECONDS for seen in creations):
            return
        creations.append(at)
        if len(creations) > 1:
            replica = self.kind.replica_of_pod_name(self.name, pod) or pod
            self._add(
                ("created", pod, at),
                at,
                replica,
                EventKind.RESTARTING,
                f"pod {pod} recreated by the operator",
            )


def final_condition(kind: JobKind, job: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") in (kind.success_condition, "Failed") and c.get("status") == "True":
            return c
    return None


def observe(
    cluster: Cluster, kind: JobKind, name: str, timeline: Timeline, job: Mapping[str, Any] | None = None
) -> None:
    """One look at the job: the object (``job`` when just read), its pods, the namespace's
    events and the pods' logs."""
    job = job or get_job(cluster, kind, name)
    pods = podinfo.list_pods(cluster, kind, name)
    events = cluster.json("list events", cluster.core().list_namespaced_event, cluster.namespace)
    logs = {}
    for pod in pods:
        try:
            text = read_log(
                cluster, pod["metadata"]["name"], podinfo.log_container(kind, pod), timestamps=True
            )
        except ClusterError:
            continue  # a pod not started yet has no log
        logs[pod["metadata"]["uid"]] = split_lines(text, timestamps=True)
    timeline.observe(job, pods, events.get("items", []), logs)


def watch(cluster: Cluster, kind: JobKind, job: Mapping[str, Any], interval: float) -> Timeline:
    """Observe the job (``job``: as just read) every ``interval`` seconds until it succeeds
    or fails."""
    name = job["metadata"]["name"]
    timeline = Timeline(kind, name)
    observe(cluster, kind, name, timeline, job)
    while not timeline.finished():
        clock.sleep(interval)
        observe(cluster, kind, name, timeline)
    return timeline


def _occurrences(event: Mapping[str, Any]) -> list[datetime]:
    """When an event happened. Repeats of one event are folded into one with a count: it keeps
    the first and the latest time (those between are lost). The operator's ``ExitedWithCode``
    repeats at every reconcile of one exit, so only its first time counts."""
    series = event.get("series") or {}
    first = parse_time(
        event.get("firstTimestamp")
        or event.get("eventTime")
        or event.get("metadata", {}).get("creationTimestamp")
    )
    last = parse_time(series.get("lastObservedTime") or event.get("lastTimestamp")) or first
    count = int(event.get("count") or series.get("count") or 1)
    if first is None:
        return []
    if count > 1 and last != first and event.get("reason") != "ExitedWithCode":
        return [first, last]
    return [first]
