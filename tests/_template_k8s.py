"""Checks of rendered Kubernetes manifests against the schemas a cluster would apply.

* :func:`crd_schema` / :func:`validate_crd`: a custom resource against its CRD's
  ``openAPIV3Schema`` (jsonschema), plus what the API server does beyond jsonschema with
  ``kubectl apply --validate=strict``: refuse fields the schema does not know (otherwise they are
  silently pruned) -- a typo such as ``terminationGracePeriod`` would pass plain jsonschema.
* :func:`effective_pods`: the pod(s) the operator will create from a job, for Kubernetes' own
  Pod schema (kubernetes-validate).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

#: The Kubernetes version whose Pod schema the pods are checked against (kubernetes-validate's newest).
KUBERNETES_VERSION = kubernetes_validate.latest_version()


@functools.cache
def crd_schema(crd_file: Path) -> dict:
    """The served version's ``openAPIV3Schema`` of a CRD file (read once: they are large; callers
    must not modify it)."""
    crd = yaml.load(crd_file.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (version,) = [v for v in crd["spec"]["versions"] if v.get("served") and v.get("storage")]
    return version["schema"]["openAPIV3Schema"]


def validate_crd(resource: dict, schema: dict) -> None:
    """Raise ``jsonschema.ValidationError`` or ``AssertionError`` (unknown field) for a bad resource."""
    jsonschema.Draft7Validator(schema).validate(resource)
    unknown = list(_unknown_fields(resource, schema, ""))
    assert not unknown, f"fields the CRD does not define (the API server would drop them): {unknown}"


def _unknown_fields(value: Any, schema: dict, path: str) -> Iterator[str]:
    """Paths in ``value`` that a structural ``schema`` does not define (the API server prunes them)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        additional = schema.get("additionalProperties")
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if key in properties:
                yield from _unknown_fields(item, properties[key], where)
            elif isinstance(additional, dict):
                yield from _unknown_fields(item, additional, where)
            elif "properties" in schema:
                yield where
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            yield from _unknown_fields(item, schema["items"], f"{path}[{i}]")


def validate_pod(pod_spec: dict, name: str) -> None:
    """Validate a pod spec as a Pod against Kubernetes' own schema (strict: no unknown fields)."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": pod_spec}
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)


def effective_pods(job: dict) -> dict[str, dict]:
    """Replica name -> the pod spec the operator creates for it (before its own injections).

    A PyTorchJob carries complete pod templates. A TrainJob's pod comes from its runtime (the
    stock ``torch-distributed``: one container ``node``) with the TrainJob's ``spec.trainer``
    and ``runtimePatches`` applied, as the Trainer controller does.
    """
    if job["kind"] == "PyTorchJob":
        return {rtype: spec["template"]["spec"] for rtype, spec in job["spec"]["pytorchReplicaSpecs"].items()}
    trainer = job["spec"]["trainer"]
    container = {
        "name": "node",
        "image": trainer["image"],
        "command": trainer["command"],
        "args": trainer["args"],
        "env": trainer.get("env", []),
        "resources": trainer["resourcesPerNode"],
    }
    pod: dict[str, Any] = {"containers": [container]}
    for patch in job["spec"].get("runtimePatches", []):
        for rjob in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]:
            assert rjob["name"] == "node", (
                f"the torch-distributed runtime has no replicated job {rjob['name']!r}"
            )
            pod_patch = copy.deepcopy(rjob["template"]["spec"]["template"]["spec"])
            for container_patch in pod_patch.pop("containers", []):
                assert container_patch["name"] == "node", "torch-distributed's container is 'node'"
                container.update({k: v for k, v in container_patch.items() if k != "name"})
            pod.update(pod_patch)
    return {"node": pod}
