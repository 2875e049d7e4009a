"""Read a rendered PyTorchJob v1, TrainJob or batch/v1 Job into the replicas the local runner starts.

This module parses; :mod:`hfai_runtime.check` judges. ``run-local`` runs the admission check
(CRD schema, CEL rules, the operators' webhooks, the Pod rules) on the same documents first, so
what is checked here is only what the runner itself needs: types it reads, values it cannot
run locally (``valueFrom``, NUL bytes, more than :data:`MAX_LOCAL_PODS` pods), each naming the
field path. Operator defaults are applied as the operator's defaulter would: Worker replicas 1,
PyTorchJob ``restartPolicy`` ``OnFailure``, ``cleanPodPolicy`` ``None``,
``terminationGracePeriodSeconds`` 30.

A TrainJob is read against the runtime it references (container ``node``): the stock
``torch-distributed``, or a (Cluster)TrainingRuntime document beside it (the template's
``k8s/runtime.yaml``), whose JobSet restart rules the runner applies (:mod:`.jobset`); the
command must come from ``spec.trainer.command``. Under the stock runtime the JobSet webhook
defaults the pods' ``restartPolicy`` to ``OnFailure`` (``pkg/webhooks/jobset_webhook.go@v0.12.0``)
and the batch Job keeps Kubernetes' default ``backoffLimit`` 6. ``spec.runtimePatches`` patch the
``node`` pods (later patches win); what a patch may set is the TrainJob webhook's and the CRD
schema's to say.

A batch/v1 Job (the template's ``k8s/eval-job.yaml`` and ``k8s/pack-job.yaml``) runs one pod,
replica ``job-0`` (run-local's name for the pod the Job controller names ``<job>-<random>``;
``--preempt job-0@...`` preempts it): ``parallelism`` and ``completions`` must be 1 (unset means
1). Its init containers run one after another before its one container, as the kubelet runs
them; nothing is injected into its environment (no operator). Its failure handling
(``restartPolicy``, ``backoffLimit``, ``podFailurePolicy``) is :mod:`.job_controller`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any

from hfai_runtime.kube.kinds import PYTORCHJOB, TRAINJOB
from hfai_runtime.kube.reader import Manifest, ManifestError, read_manifest, shown
from hfai_runtime.local.job_controller import JobPolicy, job_policy
from hfai_runtime.local.jobset import STOCK, STOCK_RUNTIME, GangPolicy, find_runtime, gang_policy, runtime_key
from hfai_runtime.local.operator_env import (
    TRAINJOB_RUNTIME_NUM_NODES,
    injected_env,
    pytorchjob_replica_specs,
    replica_count,
)


class RestartPolicy(str, Enum):
    """A replica's ``restartPolicy`` (``pkg/apis/kubeflow.org/v1/common_types.go@v1.9.4``)."""

    ALWAYS = "Always"
    ON_FAILURE = "OnFailure"
    NEVER = "Never"
    #: Codes >= 128 (signals) recreate the pod; 1-127 are permanent failures.
    EXIT_CODE = "ExitCode"


class CleanPodPolicy(str, Enum):
    """Which pods the operator deletes once the job finished (``runPolicy.cleanPodPolicy``)."""

    ALL = "All"
    RUNNING = "Running"
    NONE = "None"


DEFAULT_GRACE_SECONDS = 30
#: More pods than this would only thrash one machine (a cluster job can have many more); counted
#: before any replica is built, so ``replicas: 2147483647`` costs nothing.
MAX_LOCAL_PODS = 64
BATCH_JOB_KIND, BATCH_JOB_API = "Job", "batch/v1"
BATCH_JOB_REPLICA = "job"  # run-local's replica name for a Job's pod: job-0
TRAINJOB_POD_PATH = (
    "spec.runtimePatches[].trainingRuntimeSpec.template.spec"
    ".replicatedJobs[name=node].template.spec.template.spec"
)


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
    restart_policy: RestartPolicy
    grace_seconds: float
    working_dir: str = ""
    mounts: tuple[Mount, ...] = ()
    field_path: str = ""  # the container's path in the manifest, for messages
    container: str = ""  # the container's name (a Job's podFailurePolicy matches on it)
    #: A batch Job's init containers, run in order before this container (each a Replica of
    #: the same name, for its own command, env and mounts).
    init: tuple[Replica, ...] = ()


@dataclass(frozen=True)
class LocalJob:
    """A validated job: its replicas and the run policy the runner enforces."""

    kind: str
    name: str
    replicas: tuple[Replica, ...]
    backoff_limit: int | None
    suspend: bool
    active_deadline_seconds: float | None
    clean_pod_policy: CleanPodPolicy = CleanPodPolicy.NONE
    procs_per_node: str = "auto"  # nprocPerNode / numProcPerNode as the operator passes it
    procs_per_node_path: str = ""  # the manifest field that sets it
    declared_procs_per_node: str = "auto"  # the same before run-local's cap
    gang: GangPolicy | None = None  # a TrainJob's: its runtime's restart rules (local/jobset.py)
    queue: str | None = None  # its Kueue LocalQueue (label kueue.x-k8s.io/queue-name), if any
    policy: JobPolicy | None = None  # a batch/v1 Job's failure handling (local/job_controller.py)


def load_job(path: str | Path, procs_per_node_cap: int | None = None) -> LocalJob:
    """Read the manifest at ``path`` (:func:`~hfai_runtime.kube.reader.read_manifest`) and
    :func:`job_of` it: a :class:`ManifestError` naming the file otherwise."""
    return job_of(read_manifest(path), procs_per_node_cap)


def job_of(manifest: Manifest, procs_per_node_cap: int | None = None) -> LocalJob:
    """The job of a manifest already read, which must hold exactly one document; see
    :func:`parse_job` for the cap."""
    if len(manifest.documents) != 1:
        raise ManifestError(
            manifest.source, f"expected exactly one job document, found {len(manifest.documents)}"
        )
    doc = manifest.documents[0]
    folder = Path(manifest.source).parent
    try:
        runtime = find_runtime(doc, [], folder) if doc.get("kind") == "TrainJob" else None
        return parse_job(doc, procs_per_node_cap, runtime)
    except ValueError as exc:
        raise ManifestError(manifest.source, str(exc)) from exc


def parse_job(
    doc: Mapping[str, Any], procs_per_node_cap: int | None = None, runtime: Mapping[str, Any] | None = None
) -> LocalJob:
    """Validate ``doc`` (a PyTorchJob v1, a TrainJob or a batch/v1 Job) and list its replicas.

    ``procs_per_node_cap`` (run-local's ``--cpu-procs-per-pod``) lowers ``nprocPerNode`` /
    ``numProcPerNode`` before the operator's environment is computed, so ``WORLD_SIZE`` and
    ``PET_NPROC_PER_NODE`` agree with the processes each pod really starts; a non-numeric value
    (``auto``) becomes the cap, since ``auto`` on a machine without GPUs means every CPU.

    ``runtime``: the (Cluster)TrainingRuntime document a TrainJob references (not needed for the
    stock ``torch-distributed``); its JobSet's restart rules become the job's :attr:`LocalJob.gang`.
    """
    kind = doc.get("kind")
    if kind == "PyTorchJob":
        _expect_equal(doc, "apiVersion", PYTORCHJOB.api_version)
        keys, parse = ("spec", "nprocPerNode"), _parse_pytorchjob
    elif kind == "TrainJob":
        _expect_equal(doc, "apiVersion", TRAINJOB.api_version)
        keys = ("spec", "trainer", "numProcPerNode")

        def parse(doc: Mapping[str, Any]) -> LocalJob:
            return _parse_trainjob(doc, runtime)

    elif kind == BATCH_JOB_KIND:
        _expect_equal(doc, "apiVersion", BATCH_JOB_API)
        return _parse_batch_job(doc)  # one pod, no processes-per-node field to cap
    else:
        raise ValueError(f"kind: expected PyTorchJob, TrainJob or Job, got {kind!r}")
    declared = parse(doc)
    if procs_per_node_cap is None:
        return declared
    job = parse(_capped(doc, keys, procs_per_node_cap))
    return replace(job, declared_procs_per_node=declared.procs_per_node)


def _capped(doc: Mapping[str, Any], keys: tuple[str, ...], cap: int | None) -> Mapping[str, Any]:
    """``doc`` with the processes-per-node field at ``keys`` lowered to ``cap``."""
    if cap is None:
        return doc
    parent: Any = doc
    for key in keys[:-1]:
        parent = parent.get(key) if isinstance(parent, Mapping) else None
    if not isinstance(parent, Mapping):
        return doc  # the validation below names the missing section
    value = parent.get(keys[-1])
    number = (
        value
        if isinstance(value, int) and not isinstance(value, bool)
        else (int(value) if isinstance(value, str) and value.isascii() and value.isdigit() else None)
    )
    if number is not None and number <= cap:
        return doc
    capped = cap if keys[-1] == "numProcPerNode" else str(cap)
    return _with(doc, keys, capped)


def _with(doc: Mapping[str, Any], keys: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A copy of ``doc`` with ``doc[keys[0]][keys[1]]... = value`` (the rest shared)."""
    out = dict(doc)
    out[keys[0]] = value if len(keys) == 1 else _with(doc[keys[0]], keys[1:], value)
    return out


def _parse_pytorchjob(doc: Mapping[str, Any]) -> LocalJob:
    name = _name(doc)
    spec = _mapping(doc.get("spec"), "spec")
    specs = pytorchjob_replica_specs(doc)
    if "Master" not in specs:
        raise ValueError("spec.pytorchReplicaSpecs.Master: required (the operator needs one)")
    counts = {
        rtype: replica_count(specs[rtype], f"spec.pytorchReplicaSpecs.{rtype}")
        for rtype in PYTORCHJOB.replica_types
        if rtype in specs
    }
    _within_local_pods(
        sum(counts.values()), f"spec.pytorchReplicaSpecs.{max(counts, key=counts.get)}.replicas"
    )
    replicas = []
    for rtype, count in counts.items():
        path = f"spec.pytorchReplicaSpecs.{rtype}"
        rspec = specs[rtype]
        policy = _restart_policy(rspec, path)
        template = _mapping(rspec.get("template"), f"{path}.template")
        pod = _mapping(template.get("spec"), f"{path}.template.spec")
        container = _container(pod, PYTORCHJOB.container, f"{path}.template.spec")
        for index in range(count):
            replicas.append(
                _replica(
                    doc,
                    rtype,
                    index,
                    container,
                    pod,
                    policy,
                    pod_path=f"{path}.template.spec",
                    container_path=f"{path}.template.spec.containers[name={PYTORCHJOB.container}]",
                )
            )
    run_policy = _mapping(spec.get("runPolicy") or {}, "spec.runPolicy")
    clean = run_policy.get("cleanPodPolicy", CleanPodPolicy.NONE.value)
    if clean not in {p.value for p in CleanPodPolicy}:
        raise ValueError(f"spec.runPolicy.cleanPodPolicy: expected All, Running or None, got {clean!r}")
    return LocalJob(
        kind="PyTorchJob",
        name=name,
        replicas=tuple(replicas),
        backoff_limit=_optional_int(run_policy, "backoffLimit", "spec.runPolicy"),
        suspend=_optional_bool(run_policy, "suspend", "spec.runPolicy"),
        active_deadline_seconds=_optional_int(run_policy, "activeDeadlineSeconds", "spec.runPolicy"),
        clean_pod_policy=CleanPodPolicy(clean),
        procs_per_node=str(spec.get("nprocPerNode", "auto")),
        procs_per_node_path="spec.nprocPerNode",
        declared_procs_per_node=str(spec.get("nprocPerNode", "auto")),
        queue=_queue(doc),
    )


def _within_local_pods(pods: int, path: str) -> None:
    if pods > MAX_LOCAL_PODS:
        raise ValueError(f"{path}: {pods} pods; run-local starts at most {MAX_LOCAL_PODS} on one machine")


def _parse_trainjob(doc: Mapping[str, Any], runtime: Mapping[str, Any] | None) -> LocalJob:
    name = _name(doc)
    spec = _mapping(doc.get("spec"), "spec")
    _mapping(spec.get("runtimeRef"), "spec.runtimeRef")
    gang = _gang(doc, runtime)
    trainer = _mapping(spec.get("trainer"), "spec.trainer")
    nodes = trainer.get("numNodes", TRAINJOB_RUNTIME_NUM_NODES)
    if not isinstance(nodes, int) or isinstance(nodes, bool) or nodes < 1:
        raise ValueError(f"spec.trainer.numNodes: expected a positive integer, got {nodes!r}")
    _within_local_pods(nodes, "spec.trainer.numNodes")
    pod = {**_runtime_pod(runtime), **_trainjob_pod_patch(spec)}
    container = _container(pod, TRAINJOB.container, TRAINJOB_POD_PATH, required=False)
    container = {
        **container,
        "command": trainer.get("command"),
        "args": trainer.get("args"),
        "env": list(trainer.get("env") or []),
    }
    replicas = tuple(
        _replica(
            doc,
            TRAINJOB.replica_types[0],
            i,
            container,
            pod,
            RestartPolicy(gang.restart_policy),
            pod_path=TRAINJOB_POD_PATH,
            container_path="spec.trainer",
        )
        for i in range(nodes)
    )
    return LocalJob(
        kind="TrainJob",
        name=name,
        replicas=replicas,
        backoff_limit=gang.backoff_limit,
        suspend=_optional_bool(spec, "suspend", "spec"),
        active_deadline_seconds=_optional_int(spec, "activeDeadlineSeconds", "spec"),
        # JobSet deletes the child Jobs of a finished JobSet, and with them every pod.
        clean_pod_policy=CleanPodPolicy.ALL,
        procs_per_node=replicas[0].env["PET_NPROC_PER_NODE"],
        procs_per_node_path="spec.trainer.numProcPerNode",
        declared_procs_per_node=replicas[0].env["PET_NPROC_PER_NODE"],
        gang=gang,
        queue=_queue(doc),
    )


def _parse_batch_job(doc: Mapping[str, Any]) -> LocalJob:
    """A batch/v1 Job of one pod (job_controller.go@v1.31.0 starts ``parallelism`` pods until
    ``completions`` succeeded; run-local models the one-pod Job the template ships)."""
    name = _name(doc)
    spec = _mapping(doc.get("spec"), "spec")
    for field in ("parallelism", "completions"):
        if spec.get(field, 1) != 1:
            raise ValueError(f"spec.{field}: run-local runs a Job of one pod (1), got {spec[field]!r}")
    if spec.get("completionMode", "NonIndexed") != "NonIndexed":
        raise ValueError(
            f"spec.completionMode: run-local runs NonIndexed Jobs, got {spec['completionMode']!r}"
        )
    pod_path = "spec.template.spec"
    pod = _mapping(_mapping(spec.get("template"), "spec.template").get("spec"), pod_path)
    policy = job_policy(spec, pod, "spec")
    if policy.restart_policy not in (RestartPolicy.NEVER.value, RestartPolicy.ON_FAILURE.value):
        raise ValueError(
            f"{pod_path}.restartPolicy: expected Never or OnFailure (a Job's pods), got {policy.restart_policy!r}"
        )
    restart = RestartPolicy(policy.restart_policy)
    containers = pod.get("containers")
    if not isinstance(containers, list) or len(containers) != 1:
        count = len(containers) if isinstance(containers, list) else containers
        raise ValueError(f"{pod_path}.containers: run-local runs a pod of one container, got {count!r}")
    init = pod.get("initContainers") or []
    if not isinstance(init, list):
        raise ValueError(f"{pod_path}.initContainers: expected a list")
    steps = []
    for i, container in enumerate([*init, *containers]):
        section = "initContainers" if i < len(init) else "containers"
        path = f"{pod_path}.{section}[name={_mapping(container, f'{pod_path}.{section}').get('name')}]"
        if section == "initContainers" and container.get("restartPolicy") == "Always":
            raise ValueError(f"{path}.restartPolicy: sidecar containers (Always) are not run locally")
        steps.append(_replica(doc, BATCH_JOB_REPLICA, 0, container, pod, restart, pod_path, path))
    replica = replace(steps[-1], init=tuple(steps[:-1]))
    return LocalJob(
        kind=BATCH_JOB_KIND,
        name=name,
        replicas=(replica,),
        backoff_limit=policy.backoff_limit,
        suspend=_optional_bool(spec, "suspend", "spec"),
        active_deadline_seconds=_optional_int(spec, "activeDeadlineSeconds", "spec"),
        # job_controller.go@v1.31.0: a finished Job's active pods are deleted.
        clean_pod_policy=CleanPodPolicy.ALL,
        queue=_queue(doc),
        policy=policy,
    )


def _queue(doc: Mapping[str, Any]) -> str | None:
    labels = (doc.get("metadata") or {}).get("labels") or {}
    queue = labels.get("kueue.x-k8s.io/queue-name") if isinstance(labels, Mapping) else None
    return queue if isinstance(queue, str) and queue else None


def _gang(doc: Mapping[str, Any], runtime: Mapping[str, Any] | None) -> GangPolicy:
    """The restart rules of the runtime the TrainJob references: the stock torch-distributed's,
    or the given runtime document's; ``ValueError`` when it is neither."""
    kind, name = runtime_key(doc)
    if (kind, name) == STOCK_RUNTIME:
        return STOCK
    if runtime is None:
        raise ValueError(
            f"spec.runtimeRef: {kind} {name!r} is not among the manifests: put it beside the TrainJob "
            "(the template renders it as k8s/runtime.yaml), as the cluster needs it applied first"
        )
    return gang_policy(runtime)


def _runtime_pod(runtime: Mapping[str, Any] | None) -> dict[str, Any]:
    """The runtime's node pod spec, which the TrainJob's patches and trainer fields complete
    (its restart policy is the gang policy's)."""
    jobs = (((runtime or {}).get("spec") or {}).get("template") or {}).get("spec", {}).get(
        "replicatedJobs"
    ) or [{}]
    pod = dict(((jobs[0].get("template") or {}).get("spec") or {}).get("template", {}).get("spec") or {})
    pod.pop("restartPolicy", None)
    pod.pop("containers", None)  # the node container: image from spec.trainer, patches below
    return pod


def _trainjob_pod_patch(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The ``node`` pods' spec as ``spec.runtimePatches`` patch it, later patches winning."""
    pod: dict[str, Any] = {}
    patches = spec.get("runtimePatches") or []
    if not isinstance(patches, list):
        raise ValueError("spec.runtimePatches: expected a list")
    for i, patch in enumerate(patches):
        base = f"spec.runtimePatches[{i}]"
        jobs = _mapping(patch, base).get("trainingRuntimeSpec") or {}
        jobs = ((jobs.get("template") or {}).get("spec") or {}).get("replicatedJobs") or []
        for j, rjob in enumerate(jobs):
            if not isinstance(rjob, Mapping) or rjob.get("name") != TRAINJOB.replica_types[0]:
                continue
            job_spec = (rjob.get("template") or {}).get("spec") or {}
            path = f"{base}.trainingRuntimeSpec.template.spec.replicatedJobs[{j}].template.spec.template.spec"
            pod.update(_mapping((job_spec.get("template") or {}).get("spec") or {}, path))
    return pod


def _replica(
    doc: Mapping[str, Any],
    rtype: str,
    index: int,
    container: Mapping[str, Any],
    pod: Mapping[str, Any],
    policy: str,
    pod_path: str,
    container_path: str,
) -> Replica:
    """Replica ``rtype``-``index``: its container's command, env (own + injected), policy, grace."""
    command = _strings(container.get("command"), f"{container_path}.command", required=True)
    if command and not command[0].strip():
        raise ValueError(f"{container_path}.command[0]: expected a program, got {command[0]!r}")
    args = _strings(container.get("args"), f"{container_path}.args", required=False)
    env = _container_env(container.get("env"), f"{container_path}.env")
    env.update(injected_env(doc, rtype, index))
    grace = _optional_int(pod, "terminationGracePeriodSeconds", pod_path, DEFAULT_GRACE_SECONDS)
    mounts = tuple(
        Mount(m["mountPath"], m.get("name", ""), m.get("subPath", ""))
        for m in container.get("volumeMounts") or []
        if isinstance(m, Mapping) and m.get("mountPath")
    )
    return Replica(
        f"{rtype.lower()}-{index}",
        rtype,
        index,
        tuple(command),
        tuple(args),
        env,
        policy,
        float(grace),
        str(container.get("workingDir") or ""),
        mounts,
        container_path,
        str(container.get("name") or ""),
    )


def _restart_policy(spec: Mapping[str, Any], path: str) -> RestartPolicy:
    """``restartPolicy``, ``OnFailure`` when unset (the PyTorchJob defaulter's)."""
    policy = spec.get("restartPolicy", RestartPolicy.ON_FAILURE.value)
    try:
        return RestartPolicy(policy)
    except ValueError:
        raise ValueError(
            f"{path}.restartPolicy: expected one of "
            f"{', '.join(p.value for p in RestartPolicy)}, got {policy!r}"
        ) from None


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
            raise ValueError(f"{path}[{i}].valueFrom: not available locally ({item['name']}); use value")
        value = item.get("value", "")
        if not isinstance(value, str):
            raise ValueError(f"{path}[{i}].value: expected a string, got {value!r} (quote it in YAML)")
        if not item["name"] or "=" in item["name"]:
            # The API server refuses these too (validation.go validateEnvVarName): no process
            # environment can hold a name with '='.
            raise ValueError(
                f"{path}[{i}].name: {shown(item['name'])} is not a variable name (empty or with '=')"
            )
        if "\0" in value or "\0" in item["name"]:
            raise ValueError(
                f"{path}[{i}] ({item['name']!r}): contains a NUL character, which "
                f"no process environment can hold"
            )
        out[item["name"]] = value
    return out


def _strings(value: Any, path: str, required: bool) -> list[str]:
    if value is None and not required:
        return []
    if not isinstance(value, list) or (required and not value) or not all(isinstance(v, str) for v in value):
        why = " (there is no image here to take an entrypoint from)" if required else ""
        raise ValueError(f"{path}: expected a list of strings{why}, got {value!r}")
    for i, word in enumerate(value):
        if "\0" in word:
            raise ValueError(f"{path}[{i}]: contains a NUL character, which no argument can hold")
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
        raise ValueError(f"{key}: expected {expected!r} for kind {doc.get('kind')}, got {doc.get(key)!r}")


def _optional_int(obj: Mapping[str, Any], key: str, path: str, default: int | None = None) -> int | None:
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
