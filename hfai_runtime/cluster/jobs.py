"""Finding a job by name, applying a manifest, and suspending or resuming a job."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hfai_runtime.cluster import kueue
from hfai_runtime.cluster.api import (
    FIELD_MANAGER,
    Cluster,
    NotFound,
    ResourceMissing,
)
from hfai_runtime.kube.kinds import KINDS, JobKind

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
RUNTIME_API = ("trainer.kubeflow.org", "v1alpha1")  # TrainingRuntime (Trainer v2.3.0)
RUNTIME_KIND = ("trainer.kubeflow.org/v1alpha1", "TrainingRuntime")


def is_runtime(doc: Mapping[str, Any]) -> bool:
    """Whether ``doc`` is a namespaced TrainingRuntime (what a TrainJob of the template runs on)."""
    return (doc.get("apiVersion"), doc.get("kind")) == RUNTIME_KIND


def runtime_exists(cluster: Cluster, name: str) -> bool:
    """Whether the TrainingRuntime ``name`` is in the cluster's namespace."""
    try:
        cluster.call(
            f"get TrainingRuntime {name}",
            cluster.custom().get_namespaced_custom_object,
            *RUNTIME_API,
            cluster.namespace,
            "trainingruntimes",
            name,
        )
    except NotFound:
        return False
    return True


def _job_call(cluster: Cluster, kind: JobKind, verb: str, method: str, name: str, *args: Any, **kwargs: Any):
    """``CustomObjectsApi.<method>`` on the job ``name`` of ``kind`` in the cluster's namespace."""
    return cluster.call(
        f"{verb} {kind.describe(name)}",
        getattr(cluster.custom(), method),
        *(kind.group, kind.version, cluster.namespace, kind.plural, name, *args),
        **kwargs,
    )


def get_job(cluster: Cluster, kind: JobKind, name: str) -> dict:
    return _job_call(cluster, kind, "get", "get_namespaced_custom_object", name)


def find_job(cluster: Cluster, name: str, kind: JobKind | None = None) -> tuple[JobKind, dict]:
    """The job called ``name``: a PyTorchJob, else a TrainJob (or only ``kind``).

    A kind whose CRD is not installed is skipped; only when none is installed does that become
    the error, so a cluster with only one of the operators works without ``--kind``.
    """
    kinds = (kind,) if kind else KINDS
    missing = []
    for candidate in kinds:
        try:
            return candidate, get_job(cluster, candidate, name)
        except NotFound:
            continue
        except ResourceMissing:
            missing.append(candidate)
    if len(missing) == len(kinds):
        apis = ", ".join(f"{k.plural}.{k.group}/{k.version}" for k in kinds)
        raise ResourceMissing(
            f"{apis}: not served by this cluster (404): is the Kubeflow "
            f"Training Operator / Trainer installed (its CRDs)?"
        )
    looked = " or ".join(k.kind for k in kinds if k not in missing)
    raise NotFound(f"job {name} not found: no {looked} of that name in namespace {cluster.namespace}")


def apply_runtime(cluster: Cluster, manifest: Mapping[str, Any], force: bool = False) -> dict:
    """Create or update a namespaced TrainingRuntime by server-side apply (see :func:`apply_job`):
    the TrainJob that references it needs it in its namespace first."""
    name = manifest["metadata"]["name"]
    return cluster.call(
        f"apply TrainingRuntime {name}",
        cluster.custom().patch_namespaced_custom_object,
        *RUNTIME_API,
        cluster.namespace,
        "trainingruntimes",
        name,
        dict(manifest),
        field_manager=FIELD_MANAGER,
        force=force,
        _content_type=APPLY_CONTENT_TYPE,
    )


def apply_job(cluster: Cluster, kind: JobKind, manifest: Mapping[str, Any], force: bool = False) -> dict:
    """Create or update the job by server-side apply, as field manager ``hfai-runtime``.

    Server-side apply records which fields this tool set, so a later ``job submit`` of an edited
    manifest changes exactly those, and a conflict with another manager (``kubectl edit``) is
    refused unless ``force`` (``kubectl apply --server-side --force-conflicts``).
    """
    name = manifest["metadata"]["name"]
    return _job_call(
        cluster,
        kind,
        "apply",
        "patch_namespaced_custom_object",
        name,
        dict(manifest),
        field_manager=FIELD_MANAGER,
        force=force,
        _content_type=APPLY_CONTENT_TYPE,
    )


def set_suspended(
    cluster: Cluster,
    kind: JobKind,
    job: Mapping[str, Any],
    suspend: bool,
    workload_wait_s: float = kueue.WORKLOAD_WAIT_SECONDS,
) -> str:
    """Suspend or resume the job; returns one line saying what was done.

    Under Kueue the Workload is (de)activated instead of the job's ``suspend`` field, which
    Kueue's reconciler would set back (see :mod:`.kueue`). A queue-labelled job whose Workload
    does not appear within ``workload_wait_s`` is one Kueue does not manage (the label is
    ignored): its own ``suspend`` field is set, and the line says why.
    """
    name = job["metadata"]["name"]
    queue = kueue.queue_name(job)
    if queue:
        workload = kueue.wait_for_workload(cluster, job, workload_wait_s)
        if workload is None:
            unmanaged = kueue.no_workload(kind.kind, name, queue, workload_wait_s)
            return f"{unmanaged}. So: {_set_suspend_field(cluster, kind, job, suspend)}"
        kueue.set_active(cluster, workload, not suspend)
        effect = (
            "Kueue evicts it and suspends the job"
            if suspend
            else "Kueue requeues it and resumes the job once it is admitted again"
        )
        return (
            f"{kind.describe(name)}: Workload {workload['metadata']['name']} "
            f"spec.active={str(not suspend).lower()}; {effect}"
        )
    return _set_suspend_field(cluster, kind, job, suspend)


def _set_suspend_field(cluster: Cluster, kind: JobKind, job: Mapping[str, Any], suspend: bool) -> str:
    """Set the job's own ``suspend`` field (no Kueue in the way); one line saying what it does."""
    name = job["metadata"]["name"]
    if kind.suspended(job) == suspend:
        state = "suspended" if suspend else "not suspended"
        return f"{kind.describe(name)}: already {state}"
    _job_call(cluster, kind, "patch", "patch_namespaced_custom_object", name, kind.suspend_patch(suspend))
    effect = (
        "the operator deletes every pod (SIGTERM, then the grace period)"
        if suspend
        else "the operator recreates the pods, which resume from the last checkpoint"
    )
    return f"{kind.describe(name)}: {'.'.join(kind.suspend_path)}={str(suspend).lower()}; {effect}"
