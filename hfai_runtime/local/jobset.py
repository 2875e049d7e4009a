"""A TrainJob's runtime as run-local applies it: the JobSet's restart rules for the node pods.

Trainer v2.3.0 runs a TrainJob as a JobSet built from its runtime's ``template.spec``
(a JobSet spec), so what happens after a pod fails is the runtime's: the Job's pod
``restartPolicy``, ``backoffLimit`` and ``podFailurePolicy`` (kubernetes
``pkg/controller/job/pod_failure_policy.go``@v1.31.0), then the JobSet's ``failurePolicy``
(jobset ``pkg/controllers/failure_policy.go``@v0.12.0). :class:`GangPolicy` is that, read from
the runtime document (the Job's part is :mod:`hfai_runtime.local.job_controller`'s): the stock
``torch-distributed`` (no failurePolicy, pods ``OnFailure``
as JobSet's webhook defaults them, ``backoffLimit`` 6) or the project's own
``k8s/runtime.yaml``.

The runtime is found as the cluster finds it, by kind and name in the namespace: here among the
documents given and the manifests in the TrainJob's folder.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from hfai_runtime.kube.kinds import TRAINJOB
from hfai_runtime.kube.reader import ManifestError, read_manifest
from hfai_runtime.local.job_controller import (
    DEFAULT_BACKOFF_LIMIT,
    Decision,
    JobFailures,
    JobPolicy,
    job_policy,
)

STOCK_RUNTIME = ("ClusterTrainingRuntime", "torch-distributed")
RUNTIME_KINDS = ("TrainingRuntime", "ClusterTrainingRuntime")
RUNTIME_API = TRAINJOB.api_version


@dataclass(frozen=True)
class GangPolicy:
    """The restart rules of a TrainJob's node pods: the node Job's, then the JobSet's."""

    runtime: str  # "ClusterTrainingRuntime torch-distributed", for messages
    job: JobPolicy  # the node Job's restartPolicy (JobSet's webhook defaults it to OnFailure), backoffLimit, podFailurePolicy
    max_restarts: int | None  # the JobSet's failurePolicy.maxRestarts; None: no failurePolicy
    fail_on_pod_failure_policy: bool  # failurePolicy rule: FailJobSet on reason PodFailurePolicy

    @property
    def restart_policy(self) -> str:
        return self.job.restart_policy

    @property
    def backoff_limit(self) -> int:
        return self.job.backoff_limit

    @property
    def ignore_disruptions(self) -> bool:
        return self.job.ignore_disruptions

    @property
    def retried_exit_codes(self) -> frozenset[int] | None:
        return self.job.retried_exit_codes


STOCK = GangPolicy(
    runtime="ClusterTrainingRuntime torch-distributed",
    job=JobPolicy("OnFailure", DEFAULT_BACKOFF_LIMIT),
    max_restarts=None,
    fail_on_pod_failure_policy=False,
)


def gang_policy(runtime: Mapping[str, Any]) -> GangPolicy:
    """The :class:`GangPolicy` of a (Cluster)TrainingRuntime document; ``ValueError`` naming the
    field for what run-local cannot model (several replicated Jobs, a podFailurePolicy rule
    :func:`~hfai_runtime.local.job_controller.job_policy` refuses)."""
    name = f"{runtime.get('kind')} {_get(runtime, 'metadata', 'name')}"
    jobset = _get(runtime, "spec", "template", "spec") or {}
    jobs = jobset.get("replicatedJobs") or []
    if len(jobs) != 1:
        raise ValueError(
            f"{name}: spec.template.spec.replicatedJobs: run-local runs one replicated Job (node), got {len(jobs)}"
        )
    job = _get(jobs[0], "template", "spec") or {}
    pod = _get(job, "template", "spec") or {}
    policy = job_policy(job, pod, f"{name}: spec.template.spec.replicatedJobs[0].template.spec")
    failure = jobset.get("failurePolicy")
    fail_on_pfp = any(
        r.get("action") == "FailJobSet" and "PodFailurePolicy" in (r.get("onJobFailureReasons") or [])
        for r in (failure or {}).get("rules") or []
    )
    return GangPolicy(
        runtime=name,
        job=policy,
        max_restarts=None if failure is None else int(failure.get("maxRestarts", 0)),
        fail_on_pod_failure_policy=fail_on_pfp,
    )


def runtime_key(trainjob: Mapping[str, Any]) -> tuple[str, str]:
    """``(kind, name)`` of the runtime a TrainJob references (trainjob_types.go@v2.3.0 defaults
    the kind to ClusterTrainingRuntime)."""
    ref = _get(trainjob, "spec", "runtimeRef") or {}
    return str(ref.get("kind") or "ClusterTrainingRuntime"), str(ref.get("name"))


def find_runtime(
    trainjob: Mapping[str, Any], docs: Iterable[Mapping[str, Any]], folder: Path | None
) -> Mapping[str, Any] | None:
    """The runtime document the TrainJob references, among ``docs`` or the ``*.yaml`` manifests
    of ``folder``; ``None`` when it is the stock runtime (not a document) or not found."""
    key = runtime_key(trainjob)
    candidates = list(docs)
    if folder is not None:
        for path in sorted(folder.glob("*.yaml")):
            try:  # the one reader: a FIFO or an alias bomb beside the job costs nothing
                candidates += read_manifest(path).documents
            except ManifestError:
                continue  # another file of the folder that is not a manifest
    for doc in candidates:
        if doc.get("apiVersion") == RUNTIME_API and (doc.get("kind"), _get(doc, "metadata", "name")) == key:
            return doc
    return None


class Action(str, Enum):
    """What the Job and JobSet controllers do about one failed node pod."""

    REPLACE = "replace"  # the Job (re)starts that pod: podFailurePolicy Ignore, or under backoffLimit
    RESTART_GANG = "restart-gang"  # the JobSet recreates every Job (failurePolicy RestartJobSet)
    FAIL = "fail"  # the JobSet, and the TrainJob with it, fails


@dataclass(frozen=True)
class Verdict:
    action: Action
    detail: str  # what happened, for the timeline
    reason: str = ""  # the JobSet's condition reason (FAIL)
    message: str = ""  # and its message (FAIL)


class JobSetRestarts:
    """The node Job's failure count and the JobSet's restarts of one TrainJob run.

    When it runs: :meth:`on_failed_pod` for every node pod that exits non-zero while the job is
    running (not while it is suspended, restarting or finished); :meth:`gang_restarted` when the
    JobSet has recreated its Jobs (their counts start again).
    """

    def __init__(self, gang: GangPolicy, jobset: str):
        self.gang = gang
        self.first_job = f"{jobset}-node-0"  # the one node Job (replicatedJob node, index 0)
        self.restarts = 0  # the JobSet's status.restarts
        # The node Job's counted pod failures (container restarts under OnFailure).
        self.node_job = JobFailures(gang.job, f"{self.first_job}-0")

    def on_failed_pod(self, replica: str, code: int, disrupted: bool) -> Verdict:
        verdict = self.node_job.on_failed_pod(replica, TRAINJOB.container, code, disrupted)
        if verdict.decision == Decision.REPLACE:
            return Verdict(Action.REPLACE, verdict.detail)
        return self._job_failed(verdict.reason, verdict.detail)

    def gang_restarted(self) -> None:
        self.node_job.reset()

    def _job_failed(self, job_reason: str, cause: str) -> Verdict:
        """failure_policy.go@v0.12.0 ``executeFailurePolicy`` for the failed node Job."""
        first = f"(first failed job: {self.first_job})"
        gang = self.gang
        if gang.max_restarts is None:
            message = f"jobset failed due to one or more job failures {first}"
            return Verdict(Action.FAIL, cause, "FailedJobs", message)
        if job_reason == "PodFailurePolicy" and gang.fail_on_pod_failure_policy:
            message = f"applying FailJobSet failure policy action {first}"
            return Verdict(Action.FAIL, cause, "FailJobSetFailurePolicyAction", message)
        if self.restarts >= gang.max_restarts:
            message = f"jobset failed due to reaching max number of restarts {first}"
            detail = (
                f"{cause}; restarted {self.restarts} time(s), failurePolicy.maxRestarts {gang.max_restarts}"
            )
            return Verdict(Action.FAIL, detail, "ReachedMaxRestarts", message)
        self.restarts += 1
        return Verdict(
            Action.RESTART_GANG,
            f"{cause}: the Job failed ({job_reason}); failurePolicy RestartJobSet deletes and "
            f"recreates every pod (restart {self.restarts} of at most {gang.max_restarts})",
        )


def _get(value: Any, *keys: str) -> Any:
    for key in keys:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value
