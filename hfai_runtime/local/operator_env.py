"""The environment the Kubeflow operators inject into a replica's container.

Pure functions from a job manifest (a dict, as :mod:`hfai_runtime.kube.reader` returns it) to the variables a
replica sees on a cluster, so the local runner, the template's tests and the launcher's parser
(:func:`hfai_runtime.distributed.env.DistEnv.from_environ`) agree on one table. They mirror:

* **PyTorchJob v1** -- kubeflow/trainer (formerly training-operator) v1.9.4,
  ``pkg/controller.v1/pytorch/envvar.go`` ``setPodEnv`` and ``master.go``, after the defaults of
  ``pkg/apis/kubeflow.org/v1/pytorch_defaults.go`` (replicas 1, port ``pytorchjob-port`` 23456,
  ``nprocPerNode`` ``"auto"``). Every container gets ``PYTHONUNBUFFERED=1`` (``envvar.go``
  ``setPodEnv``; it was ``0`` before v1.7) and ``PET_NNODES`` (the number of pods); when a
  ``Master`` replica exists (always, for a valid job) also ``MASTER_PORT`` and ``PET_MASTER_PORT``
  (the master's ``pytorchjob-port``), ``MASTER_ADDR`` and ``PET_MASTER_ADDR`` (``<job>-master-0``,
  the master's own pod too; ``master.go`` ``MasterEnvVarGenerator``), ``WORLD_SIZE`` = pods x
  nprocPerNode (x1 when nprocPerNode is not an integer: ``auto``/``cpu``/``gpu``), ``RANK`` =
  ``PET_NODE_RANK`` = the pod index (master 0, worker i -> i + 1) and ``PET_NPROC_PER_NODE``
  (nprocPerNode as written). The operator appends these after the container's own ``env``, so
  where a name is in both, the operator's value is the one the process sees.
* **Trainer v2 TrainJob** -- kubeflow/trainer v2.3.0 torch plugin
  (``pkg/runtime/framework/plugins/torch/torch.go``) with the stock ``torch-distributed``
  runtime (``numNodes: 1``, ``torch: {}``): only ``PET_NNODES``, ``PET_NPROC_PER_NODE``,
  ``PET_NODE_RANK`` (the node's Job completion index), ``PET_MASTER_ADDR=<job>-node-0-0.<job>``
  and ``PET_MASTER_PORT=29500``.

A plain batch/v1 ``Job`` has no operator: nothing is injected (its pods see only their own
``env``).

Elastic PyTorchJobs (``spec.elasticPolicy``) get rendezvous variables instead; they are not
modelled here and are refused with a :class:`ValueError` naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from hfai_runtime.kube.kinds import PYTORCHJOB, TRAINJOB
from hfai_runtime.kube.quantity import QuantityError, parse_quantity

PYTORCHJOB_PORT_NAME = "pytorchjob-port"
PYTORCHJOB_DEFAULT_PORT = 23456
TRAINJOB_MASTER_PORT = 29500
TRAINJOB_RUNTIME_NUM_NODES = 1  # the stock torch-distributed runtime's mlPolicy.numNodes


def injected_env(job: Mapping[str, Any], replica_type: str, index: int) -> dict[str, str]:
    """The variables the operator adds to replica ``replica_type``-``index`` of ``job``.

    ``replica_type`` is ``"Master"``/``"Worker"`` for a PyTorchJob (any case, as the operator
    camel-cases the keys) and ``"node"`` for a TrainJob; ``index`` counts from 0 within the type.
    """
    kind = job.get("kind")
    if kind == "Job":  # batch/v1: the Job controller adds no variables (a NonIndexed Job)
        return {}
    if kind == PYTORCHJOB.kind:
        return _pytorchjob_env(job, replica_type, index)
    if kind == TRAINJOB.kind:
        return _trainjob_env(job, replica_type, index)
    raise ValueError(f"kind: expected PyTorchJob, TrainJob or Job, got {kind!r}")


def pytorchjob_replica_specs(job: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """``spec.pytorchReplicaSpecs``, whose keys must be exactly ``Master``/``Worker``: the
    v1.9.4 validating webhook (``pkg/webhooks/pytorch/pytorchjob_webhook.go@v1.9.4``
    ``validatePyTorchReplicaSpecs``) runs before the controller's defaulter could camel-case
    ``master``, so the API server refuses any other spelling."""
    specs = _get(job, "spec.pytorchReplicaSpecs", dict)
    for key, spec in specs.items():
        if key not in PYTORCHJOB.replica_types:
            raise ValueError(
                f"spec.pytorchReplicaSpecs.{key}: expected exactly one of "
                f"{', '.join(PYTORCHJOB.replica_types)} (the operator's webhook refuses other keys)"
            )
        if not isinstance(spec, Mapping):
            raise ValueError(f"spec.pytorchReplicaSpecs.{key}: expected a mapping")
    return dict(specs)


def replica_count(spec: Mapping[str, Any], path: str) -> int:
    """A replica spec's ``replicas`` (the operator defaults it to 1)."""
    replicas = spec.get("replicas", 1)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise ValueError(f"{path}.replicas: expected a non-negative integer, got {replicas!r}")
    return replicas


def pytorchjob_master_port(job: Mapping[str, Any]) -> int:
    """The master container's ``pytorchjob-port`` (the operator's defaulter adds 23456)."""
    master = pytorchjob_replica_specs(job).get("Master")
    containers = ((master or {}).get("template") or {}).get("spec", {}).get("containers") or []
    for i, container in enumerate(containers):
        if container.get("name") != PYTORCHJOB.container:
            continue
        for j, port in enumerate(container.get("ports") or []):
            if port.get("name") == PYTORCHJOB_PORT_NAME:
                number = port.get("containerPort")
                if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= 65535:
                    raise ValueError(
                        f"spec.pytorchReplicaSpecs.Master.template.spec.containers[{i}].ports[{j}]"
                        f".containerPort: expected a TCP port (1-65535), got {number!r}"
                    )
                return number
    return PYTORCHJOB_DEFAULT_PORT


def _pytorchjob_env(job: Mapping[str, Any], replica_type: str, index: int) -> dict[str, str]:
    spec = _get(job, "spec", dict)
    if spec.get("elasticPolicy") is not None:
        raise ValueError("spec.elasticPolicy: elastic PyTorchJobs are not supported")
    specs = pytorchjob_replica_specs(job)
    rtype = next((t for t in specs if t.lower() == replica_type.lower()), None)
    if rtype is None:
        raise ValueError(f"spec.pytorchReplicaSpecs.{replica_type}: no such replica type in the job")
    pods = sum(replica_count(s, f"spec.pytorchReplicaSpecs.{t}") for t, s in specs.items())
    nproc = str(spec.get("nprocPerNode", "auto"))

    env = {"PYTHONUNBUFFERED": "1"}
    if "Master" in specs:
        rank = index + 1 if rtype == "Worker" else index
        name = _get(job, "metadata.name", str)
        port = pytorchjob_master_port(job)
        env.update(
            MASTER_PORT=str(port),
            PET_MASTER_PORT=str(port),
            MASTER_ADDR=f"{name}-master-0",
            PET_MASTER_ADDR=f"{name}-master-0",
            WORLD_SIZE=str(pods * (int(nproc) if nproc.isdigit() else 1)),
            RANK=str(rank),
            PET_NPROC_PER_NODE=nproc,
            PET_NODE_RANK=str(rank),
        )
    env["PET_NNODES"] = str(pods)
    return env


def _trainjob_env(job: Mapping[str, Any], replica_type: str, index: int) -> dict[str, str]:
    node = TRAINJOB.replica_types[0]
    if replica_type != node:
        raise ValueError(f"replica type {replica_type!r}: a TrainJob's torch nodes are 'node'")
    name = _get(job, "metadata.name", str)
    trainer = _get(job, "spec", dict).get("trainer") or {}
    nodes = trainer.get("numNodes", TRAINJOB_RUNTIME_NUM_NODES)
    return {
        "PET_NNODES": str(nodes),
        "PET_NPROC_PER_NODE": trainjob_nproc_per_node(trainer),
        "PET_NODE_RANK": str(index),
        "PET_MASTER_ADDR": f"{name}-{node}-0-0.{name}",
        "PET_MASTER_PORT": str(TRAINJOB_MASTER_PORT),
    }


def trainjob_nproc_per_node(trainer: Mapping[str, Any]) -> str:
    """``PET_NPROC_PER_NODE`` for a TrainJob's ``spec.trainer`` on the stock runtime.

    As ``pkg/runtime/framework/plugins/torch/torch.go@v2.3.0`` ``EnforceMLPolicy``: an explicit
    ``numProcPerNode`` (an integer in v2.3.0's API) wins; otherwise ``auto``, which stays
    ``auto`` when ``resourcesPerNode`` asks for a GPU (``runtime.go`` ``GetNumGPUPerNode``:
    requests, then limits) and else becomes the CPU count per node, at least 1
    (``getNumCPUPerNode``: the CPU *request*, the limit only when no request is set; no
    resources at all -> 1; the stock runtime's pod template sets none).
    """
    explicit = trainer.get("numProcPerNode")
    if explicit is not None:
        if not isinstance(explicit, int) or isinstance(explicit, bool) or explicit < 1:
            raise ValueError(
                f"spec.trainer.numProcPerNode: expected a positive integer (v2.3.0 "
                f"has no string form; leave it unset for auto), got {explicit!r}"
            )
        return str(explicit)
    resources = trainer.get("resourcesPerNode") or {}
    if not isinstance(resources, Mapping):
        raise ValueError(f"spec.trainer.resourcesPerNode: expected a mapping, got {resources!r}")
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    if _gpu_count(requests, "requests") or _gpu_count(limits, "limits"):
        return "auto"
    path = "spec.trainer.resourcesPerNode"
    if requests.get("cpu") is not None and _cpu_quantity(requests["cpu"], f"{path}.requests.cpu"):
        return str(_cpu_quantity(requests["cpu"], f"{path}.requests.cpu"))
    if limits.get("cpu") is not None:
        return str(max(1, _cpu_quantity(limits["cpu"], f"{path}.limits.cpu")))
    return "1"


def _gpu_count(quantities: Mapping[str, Any], section: str) -> int:
    """The first resource whose name contains ``gpu`` (``numGPU``), as a count."""
    for name, value in quantities.items():
        if "gpu" in str(name).lower():
            return _cpu_quantity(value, f"spec.trainer.resourcesPerNode.{section}.{name}")
    return 0


def _cpu_quantity(value: Any, path: str) -> int:
    """A Kubernetes quantity (``2``, ``"1.5"``, ``"500m"``) rounded up, as ``Quantity.Value``."""
    try:
        return math.ceil(parse_quantity(value))
    except QuantityError as error:
        raise ValueError(f"{path}: expected a CPU quantity like 2 or 500m: {error}") from None


def _get(obj: Mapping[str, Any], path: str, expected: type) -> Any:
    """The value at dotted ``path``, or a ValueError naming the path and the expected type."""
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    if not isinstance(node, expected) or (expected is str and not node):
        what = {dict: "a mapping", str: "a non-empty string"}.get(expected, expected.__name__)
        raise ValueError(f"{path}: expected {what}, got {node!r}")
    return node
