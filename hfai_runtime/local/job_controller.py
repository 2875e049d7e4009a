"""What the batch/v1 Job controller does about a failed pod: podFailurePolicy, then backoffLimit.

Shared by a plain Job (the generated project's ``k8s/eval-job.yaml`` and ``k8s/pack-job.yaml``)
and a TrainJob's node Job (:mod:`hfai_runtime.local.jobset`, which adds the JobSet's
failurePolicy on top). It mirrors kubernetes v1.31.0:

* ``pkg/controller/job/pod_failure_policy.go@v1.31.0`` ``matchPodFailurePolicy``: the rules
  are tried in order and the first that matches decides. ``onPodConditions`` matches a pod
  carrying the condition (here only ``DisruptionTarget``, which a preempted pod gets);
  ``onExitCodes`` matches when a container that exited non-zero (exit 0 is never matched)
  -- of ``containerName`` when given -- has a code ``In`` / ``NotIn`` the values. ``FailJob``
  fails the Job at once (reason ``PodFailurePolicy``), ``Ignore`` replaces the pod without
  counting, ``Count`` (or no matching rule) counts it against ``backoffLimit``.
* ``pkg/controller/job/job_controller.go@v1.31.0``: under pod ``restartPolicy: Never`` every
  counted failed pod is replaced by a new one and the Job fails once the failed pods exceed
  ``backoffLimit`` (``failed > backoffLimit``); under ``OnFailure`` the kubelet restarts the
  container in place and the container restarts count (``pastBackoffLimitOnFailure``:
  ``restarts >= backoffLimit``). The reasons are ``BackoffLimitExceeded`` and
  ``PodFailurePolicy``; the messages are the controller's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

DEFAULT_BACKOFF_LIMIT = 6  # batch/v1 Job's default (pkg/apis/batch/v1/defaults.go@v1.31.0)
DISRUPTION_TARGET = "DisruptionTarget"


class PodFailure(str, Enum):
    """What a Job's podFailurePolicy makes of a failed pod (the first matching rule's action)."""

    IGNORE = "Ignore"  # replace the pod, count nothing
    FAIL_JOB = "FailJob"  # the Job fails at once, reason PodFailurePolicy
    COUNT = "Count"  # counts against backoffLimit (also: no rule matched)


class ExitCodeOperator(str, Enum):
    """``onExitCodes.operator``."""

    IN = "In"
    NOT_IN = "NotIn"


@dataclass(frozen=True)
class PodFailureRule:
    """One ``podFailurePolicy.rules[]`` entry: on the DisruptionTarget condition, or on exit codes."""

    action: PodFailure
    on_disruption: bool = False  # onPodConditions: [{type: DisruptionTarget}]
    operator: ExitCodeOperator | None = None  # onExitCodes
    values: frozenset[int] = frozenset()
    container: str | None = None  # onExitCodes.containerName

    def matches(self, container: str, code: int, disrupted: bool) -> bool:
        if self.operator is None:
            return self.on_disruption and disrupted
        if code == 0 or self.container not in (None, container):
            return False
        return (code in self.values) == (self.operator == ExitCodeOperator.IN)


@dataclass(frozen=True)
class JobPolicy:
    """A Job's failure handling: its pods' restartPolicy, backoffLimit and podFailurePolicy."""

    restart_policy: str  # Never / OnFailure
    backoff_limit: int
    rules: tuple[PodFailureRule, ...] = ()

    def pod_failure(self, container: str, code: int, disrupted: bool) -> tuple[PodFailure, int | None]:
        """The verdict on a pod whose ``container`` exited ``code``, with the matching rule's
        index (``None``: no rule matched, the failure counts)."""
        for i, rule in enumerate(self.rules):
            if rule.matches(container, code, disrupted):
                return rule.action, i
        return PodFailure.COUNT, None

    @property
    def ignore_disruptions(self) -> bool:
        return any(r.on_disruption and r.action == PodFailure.IGNORE for r in self.rules)

    @property
    def retried_exit_codes(self) -> frozenset[int] | None:
        """The codes a ``FailJob`` on ``NotIn`` rule lets through (``None``: no such rule)."""
        for rule in self.rules:
            if rule.action == PodFailure.FAIL_JOB and rule.operator == ExitCodeOperator.NOT_IN:
                return rule.values
        return None


def job_policy(job_spec: Mapping[str, Any], pod_spec: Mapping[str, Any], path: str) -> JobPolicy:
    """The :class:`JobPolicy` of a Job spec at ``path`` (and its pod template's spec);
    ``ValueError`` naming the field for a rule run-local cannot model (``FailIndex``: Indexed
    Jobs only; a pod condition other than DisruptionTarget, which no local pod gets)."""
    limit = job_spec.get("backoffLimit", DEFAULT_BACKOFF_LIMIT)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise ValueError(f"{path}.backoffLimit: expected a non-negative integer, got {limit!r}")
    policy = job_spec.get("podFailurePolicy") or {}
    rules = policy.get("rules") if isinstance(policy, Mapping) else None
    if not isinstance(rules or [], list):
        raise ValueError(f"{path}.podFailurePolicy.rules: expected a list")
    parsed = tuple(_rule(rule, f"{path}.podFailurePolicy.rules[{i}]") for i, rule in enumerate(rules or []))
    restart = pod_spec.get("restartPolicy") or "OnFailure"  # a Job's pods: Never or OnFailure
    return JobPolicy(str(restart), limit, parsed)


def _rule(rule: Any, path: str) -> PodFailureRule:
    if not isinstance(rule, Mapping):
        raise ValueError(f"{path}: expected a mapping")
    action = _member(PodFailure, rule.get("action"), f"{path}.action")
    conditions = rule.get("onPodConditions")
    if conditions is not None:
        types = [c.get("type") if isinstance(c, Mapping) else c for c in conditions or []]
        if types != [DISRUPTION_TARGET]:
            raise ValueError(
                f"{path}.onPodConditions: run-local's pods carry only {DISRUPTION_TARGET} (on "
                f"preemption), got {types!r}"
            )
        return PodFailureRule(action, on_disruption=True)
    codes = rule.get("onExitCodes")
    if not isinstance(codes, Mapping):
        raise ValueError(f"{path}: expected onExitCodes or onPodConditions")
    operator = _member(ExitCodeOperator, codes.get("operator"), f"{path}.onExitCodes.operator")
    values = codes.get("values")
    if not isinstance(values, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in values
    ):
        raise ValueError(f"{path}.onExitCodes.values: expected a list of integers, got {values!r}")
    container = codes.get("containerName")
    return PodFailureRule(action, operator=operator, values=frozenset(values), container=container)


def _member(enum: type[Enum], value: Any, path: str) -> Any:
    """``enum(value)``, or a ValueError naming ``path`` and the values run-local models."""
    try:
        return enum(value)
    except ValueError:
        expected = ", ".join(m.value for m in enum)
        raise ValueError(f"{path}: run-local models {expected}, got {value!r}") from None


class Decision(str, Enum):
    """The Job controller's answer to one failed pod."""

    REPLACE = "replace"  # a new pod (Never) or a restarted container (OnFailure)
    FAILED = "failed"  # the Job fails


@dataclass(frozen=True)
class JobVerdict:
    decision: Decision
    detail: str  # what happened, for the timeline
    reason: str = ""  # the Job's Failed condition reason (FAILED)
    message: str = ""  # and the controller's message


class JobFailures:
    """One Job's counted failures. :meth:`on_failed_pod` for every pod that exits non-zero
    while the Job runs; :meth:`reset` when the Job is recreated (a JobSet restart)."""

    def __init__(self, policy: JobPolicy, pod_name: str):
        self.policy = policy
        self.pod_name = pod_name  # for the PodFailurePolicy message: namespace/pod
        self.failed = 0

    def reset(self) -> None:
        self.failed = 0

    def on_failed_pod(self, replica: str, container: str, code: int, disrupted: bool) -> JobVerdict:
        verdict, index = self.policy.pod_failure(container, code, disrupted)
        cause = f"{replica} exited with code {code}"
        if verdict == PodFailure.IGNORE:
            why = "after a disruption (DisruptionTarget)" if disrupted else f"(rule {index})"
            return JobVerdict(
                Decision.REPLACE,
                f"{cause} {why}: podFailurePolicy Ignore -- the Job replaces the pod, nothing is counted",
            )
        if verdict == PodFailure.FAIL_JOB:
            # pod_failure_policy.go@v1.31.0 matchPodFailurePolicy
            message = (
                f"Container {container} for pod {self.pod_name} failed with exit code {code} "
                f"matching FailJob rule at index {index}"
            )
            return JobVerdict(
                Decision.FAILED,
                f"{cause}: podFailurePolicy FailJob (rule {index})",
                "PodFailurePolicy",
                message,
            )
        self.failed += 1
        limit = self.policy.backoff_limit
        in_place = self.policy.restart_policy in ("OnFailure", "Always")
        if (self.failed >= limit) if in_place else (self.failed > limit):
            return JobVerdict(
                Decision.FAILED,
                f"{cause}: {self.failed} counted failure(s), backoffLimit {limit}",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            )
        how = "the kubelet restarts the container" if in_place else "the Job creates a new pod"
        return JobVerdict(Decision.REPLACE, f"{cause}: {how} ({self.failed} counted, backoffLimit {limit})")
