"""The Kueue Workload of a job: its admission, and deactivating it to suspend the job.

Kueue creates one Workload per job it manages (the job carries the
``kueue.x-k8s.io/queue-name`` label) and owns the job's ``suspend`` field: while the Workload is
admitted, its reconciler undoes a user's ``suspend: true``. Setting the Workload's
``spec.active`` to false is Kueue's own way to stop a job (it evicts the Workload with reason
``Deactivated``, ``InactiveWorkload`` before v0.10, and suspends the job); true requeues it
(kueue pkg/controller/jobframework/reconciler.go@v0.19.2). The Workload is found by its owner
reference to the job. ``v1beta1`` is served by every Kueue release up to v0.19 (which stores
``v1beta2`` and still serves ``v1beta1``).

Kueue manages only the kinds its configuration lists (``integrations.frameworks``). Its default
configuration at v0.19.2 (config/components/manager/controller_manager_config.yaml@v0.19.2)
lists ``trainer.kubeflow.org/trainjob`` and ``batch/job`` but has ``kubeflow.org/pytorchjob``
commented out: there a queue label on a PyTorchJob is ignored, no Workload is ever made, and
the job runs unqueued. :func:`wait_for_workload` waits a bounded time for the Workload, and
:func:`no_workload` says what its absence means and how to turn the integration on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from hfai_runtime.cluster.api import Cluster

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
GROUP, VERSION, PLURAL = "kueue.x-k8s.io", "v1beta1", "workloads"
#: How long ``job submit`` and ``job suspend|resume`` wait for Kueue to create a Workload.
WORKLOAD_WAIT_SECONDS = 10.0
WORKLOAD_POLL_SECONDS = 1.0
#: Kueue's integration name of each kind (``integrations.frameworks``) ...
FRAMEWORKS = {
    "PyTorchJob": "kubeflow.org/pytorchjob",
    "TrainJob": "trainer.kubeflow.org/trainjob",
    "Job": "batch/job",
}
#: ... and those its default configuration enables (controller_manager_config.yaml@v0.19.2).
ENABLED_BY_DEFAULT = frozenset({"trainer.kubeflow.org/trainjob", "batch/job"})


def queue_name(job: Mapping[str, Any]) -> str | None:
    """The LocalQueue the job was submitted to, or ``None`` when Kueue does not manage it."""
    return ((job.get("metadata") or {}).get("labels") or {}).get(QUEUE_LABEL)


def workload_of(cluster: Cluster, job: Mapping[str, Any]) -> dict | None:
    """The Workload whose owner reference is ``job``, or ``None`` when Kueue made none yet."""
    uid = job["metadata"].get("uid")
    listing = cluster.call(
        "list Kueue Workloads",
        cluster.custom().list_namespaced_custom_object,
        GROUP,
        VERSION,
        cluster.namespace,
        PLURAL,
    )
    for workload in listing.get("items", []):
        owners = workload.get("metadata", {}).get("ownerReferences") or []
        if any(owner.get("uid") == uid for owner in owners):
            return workload
    return None


def set_active(cluster: Cluster, workload: Mapping[str, Any], active: bool) -> dict:
    """Patch the Workload's ``spec.active``."""
    name = workload["metadata"]["name"]
    return cluster.call(
        f"patch Kueue Workload {name}",
        cluster.custom().patch_namespaced_custom_object,
        GROUP,
        VERSION,
        cluster.namespace,
        PLURAL,
        name,
        {"spec": {"active": active}},
    )


def admission(workload: Mapping[str, Any]) -> str:
    """One line: admitted by which ClusterQueue, or pending / evicted / inactive and why."""
    spec, status = workload.get("spec") or {}, workload.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}

    def true(kind: str) -> Mapping[str, Any] | None:
        condition = conditions.get(kind)
        return condition if condition and condition.get("status") == "True" else None

    name = workload.get("metadata", {}).get("name", "?")
    queue = spec.get("queueName", "?")
    if spec.get("active") is False:
        return f"Workload {name}: deactivated (spec.active: false); resume to requeue it"
    if done := true("Finished"):
        return f"Workload {name}: finished ({_why(done)})"
    if true("Admitted"):
        cluster_queue = (status.get("admission") or {}).get("clusterQueue", "?")
        return f"Workload {name}: admitted by ClusterQueue {cluster_queue} (LocalQueue {queue})"
    if evicted := true("Evicted"):
        return f"Workload {name}: evicted, waiting to be readmitted ({_why(evicted)})"
    reserved = conditions.get("QuotaReserved")
    if reserved:
        return f"Workload {name}: pending in LocalQueue {queue} ({_why(reserved)})"
    return f"Workload {name}: pending in LocalQueue {queue} (not yet considered)"


def _why(condition: Mapping[str, Any]) -> str:
    reason, message = condition.get("reason", ""), condition.get("message", "")
    return f"{reason}: {message}" if reason and message else reason or message


def wait_for_workload(
    cluster: Cluster,
    job: Mapping[str, Any],
    timeout_s: float = WORKLOAD_WAIT_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict | None:
    """The job's Workload, looking every second for at most ``timeout_s`` (0: one look); ``None``
    when Kueue made none in that time. ``clock`` and ``sleep`` are injectable for tests."""
    deadline = clock() + timeout_s
    while True:
        workload = workload_of(cluster, job)
        left = deadline - clock()
        if workload is not None or left <= 0:
            return workload
        sleep(min(WORKLOAD_POLL_SECONDS, left))


def no_workload(kind: str, name: str, queue: str, waited_s: float) -> str:
    """One line: no Workload appeared for a queue-labelled job, what that means, what to do."""
    framework = FRAMEWORKS.get(kind, kind)
    if framework in ENABLED_BY_DEFAULT:
        why = (
            f"Kueue's default configuration manages {kind}s ({framework}): is Kueue running, "
            f"and is LocalQueue {queue} in this namespace?"
        )
    else:
        why = (
            f"Kueue does not manage {kind}s -- its default configuration (v0.19.2) has "
            f'"{framework}" commented out of integrations.frameworks -- so the label is ignored and '
            f'the job runs unqueued; to queue it, add "{framework}" to integrations.frameworks in '
            "the kueue-manager-config ConfigMap and restart kueue-controller-manager (docs/cluster.md)"
        )
    return f"{kind} {name} is labelled {QUEUE_LABEL}={queue}, but no Kueue Workload appeared in {waited_s:g} s: {why}"
