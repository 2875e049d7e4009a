"""Read a rendered PyTorchJob v1 or TrainJob into the replicas the local runner starts.

The CRD schemas are not shipped with the package, so this checks the fields the runner relies
on, and names the field path in every error (``spec.pytorchReplicaSpecs.Master.replicas:
expected 1, got 2``). Operator defaults are applied here, as the operator's defaulter would:
replicas 1, PyTorchJob ``restartPolicy`` ``OnFailure``, ``terminationGracePeriodSeconds`` 30.

A TrainJob is read against the stock ``torch-distributed`` runtime (container ``node``): its pod
template is not in the manifest, so the command must come from ``spec.trainer.command``. The
JobSet webhook defaults the pods' ``restartPolicy`` to ``OnFailure`` and the batch Job's
``backoffLimit`` is Kubernetes' default 6; ``spec.runtimePatches`` may set the node pods'
``restartPolicy``, ``terminationGracePeriodSeconds``, volumes and mounts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from hfai_runtime.local.operator_env import (
    PYTORCHJOB_CONTAINER,
    TRAINJOB_CONTAINER,
    TRAINJOB_REPLICATED_JOB,
    TRAINJOB_RUNTIME_NUM_NODES,
    injected_env,
    pytorchjob_replica_specs,
    replica_count,
)

RESTART_POLICIES = ("Always", "OnFailure", "Never", "ExitCode")
DEFAULT_GRACE_SECONDS = 30
PYTORCHJOB_API = "kubeflow.org/v1"
TRAINJOB_API = "trainer.kubeflow.org/v1alpha1"
TRAINJOB_RUNTIME = "torch-distributed"
TRAINJOB_BACKOFF_LIMIT = 6  # batch/v1 Job's default; the stock runtime does not set one
TRAINJOB_RESTART_POLICIES = ("OnFailure", "Never")  # what a batch/v1 Job's pods may use
TRAINJOB_POD_PATH = ("spec.runtimePatches[].trainingRuntimeSpec.template.spec"
                     ".replicatedJobs[name=node].template.spec.template.spec")


@dataclass(frozen=True)
class Mount:
    """A container's ``volumeMount``: the path, its volume's name and ``subPath``."""

    path: str
    volume: str
    sub_path: str = ""


@dataclass(frozen=True)
class Replica:
    """One pod of the job, as the runner starts it."""

    name: str  # the pod name's suffix: master-0, worker-1, node-0
    replica_type: str  # Master / Worker / node
    index: int
    command: tuple[str, ...]  # the container's command, as written
    args: tuple[str, ...]  # and its args
    env: dict[str, str]  # the container's own env, then the operator's (later wins)
    restart_policy: str
    grace_seconds: float
    working_dir: str = ""
    mounts: tuple[Mount, ...] = ()


@dataclass(frozen=True)
class LocalJob:
    """A validated job: its replicas and the run policy the runner enforces."""

    kind: str
    name: str
    replicas: tuple[Replica, ...]
    backoff_limit: int | None
    suspend: bool
    active_deadline_seconds: float | None


class ManifestError(ValueError):
    """A manifest the runner cannot run; the message names the file and the field."""


def load_job(path: str | Path) -> LocalJob:
    """Read and validate the single job document in ``path``."""
    path = Path(path)
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except (OSError, yaml.YAMLError) as exc:
        raise ManifestError(f"{path}: cannot read a YAML manifest: {exc}") from exc
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise ManifestError(f"{path}: expected exactly one job document, found {len(docs)}")
    try:
        return parse_job(docs[0])
    except ValueError as exc:
        raise ManifestError(f"{path}: {exc}") from exc


def parse_job(doc: Mapping[str, Any]) -> LocalJob:
    """Validate ``doc`` (a PyTorchJob v1 or a TrainJob) and list its replicas."""
    kind = doc.get("kind")
    if kind == "PyTorchJob":
        _expect_equal(doc, "apiVersion", PYTORCHJOB_API)
        return _parse_pytorchjob(doc)
    if kind == "TrainJob":
        _expect_equal(doc, "apiVersion", TRAINJOB_API)
        return _parse_trainjob(doc)
    raise ValueError(f"kind: expected PyTorchJob or TrainJob, got {kind!r}")


def _parse_pytorchjob(doc: Mapping[str, Any]) -> LocalJob:
    name = _name(doc)
    spec = _mapping(doc.get("spec"), "spec")
    specs = pytorchjob_replica_specs(doc)
    if "Master" not in specs:
        raise ValueError("spec.pytorchReplicaSpecs.Master: required (the operator needs one)")
    replicas = []
    for rtype in ("Master", "Worker"):
        if rtype not in specs:
            continue
        path = f"spec.pytorchReplicaSpecs.{rtype}"
        rspec = specs[rtype]
        count = replica_count(rspec, path)
        if rtype == "Master" and count != 1:
            raise ValueError(f"{path}.replicas: expected 1, got {count}")
        policy = _restart_policy(rspec, path, RESTART_POLICIES)
        template = _mapping(rspec.get("template"), f"{path}.template")
        pod = _mapping(template.get("spec"), f"{path}.template.spec")
        container = _container(pod, PYTORCHJOB_CONTAINER, f"{path}.template.spec")
        for index in range(count):
            replicas.append(_replica(
                doc, rtype, index, container, pod, policy,
                pod_path=f"{path}.template.spec",
                container_path=f"{path}.template.spec.containers[name={PYTORCHJOB_CONTAINER}]",
            ))
    run_policy = _mapping(spec.get("runPolicy") or {}, "spec.runPolicy")
    return LocalJob(
        kind="PyTorchJob",
        name=name,
        replicas=tuple(replicas),
        backoff_limit=_optional_int(run_policy, "backoffLimit", "spec.runPolicy"),
        suspend=_optional_bool(run_policy, "suspend", "spec.runPolicy"),
        active_deadline_seconds=_optional_int(run_policy, "activeDeadlineSeconds",
                                              "spec.runPolicy"),
    )


def _parse_trainjob(doc: Mapping[str, Any]) -> LocalJob:
    name = _name(doc)
    spec = _mapping(doc.get("spec"), "spec")
    runtime = _mapping(spec.get("runtimeRef"), "spec.runtimeRef").get("name")
    if runtime != TRAINJOB_RUNTIME:
        raise ValueError(
            f"spec.runtimeRef.name: expected {TRAINJOB_RUNTIME!r} (the only runtime whose pod "
            f"template the local runner knows), got {runtime!r}"
        )
    trainer = _mapping(spec.get("trainer"), "spec.trainer")
    nodes = trainer.get("numNodes", TRAINJOB_RUNTIME_NUM_NODES)
    if not isinstance(nodes, int) or isinstance(nodes, bool) or nodes < 1:
        raise ValueError(f"spec.trainer.numNodes: expected a positive integer, got {nodes!r}")
    pod = _trainjob_pod_patch(spec)
    container = _container(pod, TRAINJOB_CONTAINER, TRAINJOB_POD_PATH, required=False)
    container = {
        **container,
        "command": trainer.get("command"),
        "args": trainer.get("args"),
        "env": list(container.get("env") or []) + list(trainer.get("env") or []),
    }
    policy = _restart_policy(pod, TRAINJOB_POD_PATH, TRAINJOB_RESTART_POLICIES)
    replicas = tuple(
        _replica(doc, TRAINJOB_REPLICATED_JOB, i, container, pod, policy,
                 pod_path=TRAINJOB_POD_PATH, container_path="spec.trainer")
        for i in range(nodes)
    )
    return LocalJob(
        kind="TrainJob",
        name=name,
        replicas=replicas,
        backoff_limit=TRAINJOB_BACKOFF_LIMIT,
        suspend=_optional_bool(spec, "suspend", "spec"),
        active_deadline_seconds=_optional_int(spec, "activeDeadlineSeconds", "spec"),
    )


def _trainjob_pod_patch(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The node pods' spec as ``spec.runtimePatches`` patch it (later patches win)."""
    pod: dict[str, Any] = {}
    for i, patch in enumerate(spec.get("runtimePatches") or []):
        base = f"spec.runtimePatches[{i}].trainingRuntimeSpec.template.spec.replicatedJobs"
        jobs = ((patch.get("trainingRuntimeSpec") or {}).get("template") or {}).get("spec") or {}
        for j, rjob in enumerate(jobs.get("replicatedJobs") or []):
            if rjob.get("name") != TRAINJOB_REPLICATED_JOB:
                continue
            job_spec = (rjob.get("template") or {}).get("spec") or {}
            patched = (job_spec.get("template") or {}).get("spec")
            pod.update(_mapping(patched or {}, f"{base}[{j}].template.spec.template.spec"))
    return pod


def _replica(doc: Mapping[str, Any], rtype: str, index: int, container: Mapping[str, Any],
             pod: Mapping[str, Any], policy: str, pod_path: str, container_path: str) -> Replica:
    """Replica ``rtype``-``index``: its container's command, env (own + injected), policy, grace."""
    command = _strings(container.get("command"), f"{container_path}.command", required=True)
    args = _strings(container.get("args"), f"{container_path}.args", required=False)
    env = _container_env(container.get("env"), f"{container_path}.env")
    env.update(injected_env(doc, rtype, index))
    grace = _optional_int(pod, "terminationGracePeriodSeconds", pod_path, DEFAULT_GRACE_SECONDS)
    mounts = tuple(
        Mount(m["mountPath"], m.get("name", ""), m.get("subPath", ""))
        for m in container.get("volumeMounts") or []
        if isinstance(m, Mapping) and m.get("mountPath")
    )
    return Replica(f"{rtype.lower()}-{index}", rtype, index, tuple(command), tuple(args), env,
                   policy, float(grace), str(container.get("workingDir") or ""), mounts)


def _restart_policy(spec: Mapping[str, Any], path: str, allowed: tuple[str, ...]) -> str:
    """``restartPolicy`` (default ``OnFailure``: the PyTorchJob defaulter's and the JobSet
    webhook's) checked against ``allowed``."""
    policy = spec.get("restartPolicy", "OnFailure")
    if policy not in allowed:
        raise ValueError(f"{path}.restartPolicy: expected one of {', '.join(allowed)}, "
                         f"got {policy!r}")
    return policy


def _container(pod: Mapping[str, Any], name: str, path: str, required: bool = True) -> dict:
    containers = pod.get("containers") or []
    if not isinstance(containers, list):
        raise ValueError(f"{path}.containers: expected a list")
    found = [c for c in containers if isinstance(c, Mapping) and c.get("name") == name]
    if not found:
        if not required:
            return {"name": name}
        raise ValueError(f"{path}.containers: expected a container named {name!r}")
    return dict(found[0])


def _container_env(env: Any, path: str) -> dict[str, str]:
    """``env`` as a dict. ``valueFrom`` needs a cluster (secrets, field refs), so it is refused."""
    if env is None:
        return {}
    if not isinstance(env, list):
        raise ValueError(f"{path}: expected a list of {{name, value}}")
    out: dict[str, str] = {}
    for i, item in enumerate(env):
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise ValueError(f"{path}[{i}].name: expected a string")
        if "valueFrom" in item:
            raise ValueError(f"{path}[{i}].valueFrom: not available locally "
                             f"({item['name']}); use value")
        value = item.get("value", "")
        if not isinstance(value, str):
            raise ValueError(f"{path}[{i}].value: expected a string, got {value!r} "
                             f"(quote it in YAML)")
        out[item["name"]] = value
    return out


def _strings(value: Any, path: str, required: bool) -> list[str]:
    if value is None and not required:
        return []
    if (not isinstance(value, list) or (required and not value)
            or not all(isinstance(v, str) for v in value)):
        why = " (there is no image here to take an entrypoint from)" if required else ""
        raise ValueError(f"{path}: expected a list of strings{why}, got {value!r}")
    return list(value)


def _name(doc: Mapping[str, Any]) -> str:
    name = _mapping(doc.get("metadata"), "metadata").get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"metadata.name: expected a non-empty string, got {name!r}")
    return name


def _mapping(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{path}: expected a mapping, got {value!r}")
    return value


def _expect_equal(doc: Mapping[str, Any], key: str, expected: str) -> None:
    if doc.get(key) != expected:
        raise ValueError(f"{key}: expected {expected!r} for kind {doc.get('kind')}, "
                         f"got {doc.get(key)!r}")


def _optional_int(obj: Mapping[str, Any], key: str, path: str,
                  default: int | None = None) -> int | None:
    """``obj[key]``, a non-negative integer, or ``default`` when unset (or null, as the API
    server treats it)."""
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{path}.{key}: expected a non-negative integer, got {value!r}")
    return value


def _optional_bool(obj: Mapping[str, Any], key: str, path: str) -> bool:
    value = obj.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"{path}.{key}: expected true or false, got {value!r}")
    return value
