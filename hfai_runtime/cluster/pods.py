"""The job's pods as the API server reports them: replicas, phases, restarts and exit codes."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from hfai_runtime.cluster.api import Cluster
from hfai_runtime.kube.kinds import JobKind

# The runtime's default exit code after a suspend, as hfai_runtime.distributed.suspend's
# (not imported from there: it imports torch).
SUSPEND_EXIT_CODE = 143
SUSPEND_EXIT_CODE_ENV = "HFAI_SUSPEND_EXIT_CODE"
KILLED_EXIT_CODE = 137  # SIGKILL: the grace period ran out


def list_pods(cluster: Cluster, kind: JobKind, name: str) -> list[dict]:
    """The job's pods (as the API server's JSON), sorted by replica name then creation."""
    pods = cluster.json(
        f"list the pods of {kind.describe(name)}",
        cluster.core().list_namespaced_pod,
        cluster.namespace,
        label_selector=kind.pod_selector(name),
    ).get("items", [])
    return sorted(pods, key=lambda p: (kind.replica_name(p), p["metadata"].get("creationTimestamp", "")))


def log_container(kind: JobKind, pod: Mapping[str, Any]) -> str:
    """The container whose log and exit code tell the training story: the kind's, else the
    pod's first (a TrainJob's initializer pods run other containers)."""
    names = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
    return kind.container if kind.container in names or not names else names[0]


def container_status(pod: Mapping[str, Any], container: str) -> dict:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return next((s for s in statuses if s.get("name") == container), {})


def last_exit_code(pod: Mapping[str, Any], container: str) -> int | None:
    """The container's exit code: its current state's if it has ended, else the previous
    run's (an in-place restart), else ``None``."""
    status = container_status(pod, container)
    for state in (status.get("state"), status.get("lastState")):
        terminated = (state or {}).get("terminated")
        if terminated and terminated.get("exitCode") is not None:
            return int(terminated["exitCode"])
    return None


def suspend_exit_code(job: Mapping[str, Any]) -> int:
    """The code the job's processes exit with after a suspend: ``HFAI_SUSPEND_EXIT_CODE`` as
    the manifest sets it in any container's env (a PyTorchJob's replicas, a TrainJob's
    ``spec.trainer.env``), else the runtime's default."""
    for value in _env_values(job.get("spec"), SUSPEND_EXIT_CODE_ENV):
        if str(value).isdigit():
            return int(value)
    return SUSPEND_EXIT_CODE


def _env_values(node: Any, name: str) -> Iterator[Any]:
    if isinstance(node, dict):
        if node.get("name") == name and "value" in node:
            yield node["value"]
        for child in node.values():
            yield from _env_values(child, name)
    elif isinstance(node, list):
        for child in node:
            yield from _env_values(child, name)


def exit_meaning(code: int, suspend_code: int = SUSPEND_EXIT_CODE) -> str:
    """What an exit code means for a job under ``restartPolicy: ExitCode``
    (pkg/util/train/train_util.go@v1.9.4 ``IsRetryableExitCode``: codes >= 128 are retried);
    ``suspend_code`` is the job's :func:`suspend_exit_code`."""
    if code == 0:
        return "succeeded"
    if code == suspend_code:
        return "suspended at a checkpoint (SIGTERM), retried"
    if code == KILLED_EXIT_CODE:
        return "SIGKILL: killed at the end of the grace period, retried from the last checkpoint"
    if code >= 128:
        return f"signal {code - 128}: retried"
    return "permanent failure: ExitCode does not retry codes 1-127"


def pod_phase(pod: Mapping[str, Any]) -> str:
    """The pod's phase, with the reason when it is being deleted or has one (Evicted...)."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    phase = status.get("phase", "Unknown")
    if meta.get("deletionTimestamp"):
        return f"{phase}, terminating"
    return f"{phase} ({status['reason']})" if status.get("reason") else phase
