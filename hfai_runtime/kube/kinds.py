"""The two job kinds, the one table of what each is called and where it keeps things.

``check``, ``run-local`` (:mod:`hfai_runtime.local`) and ``hfai-runtime job`` (:mod:`hfai_runtime.cluster`) all
read API versions, plurals, container and replica names from here.

* **PyTorchJob** (kubeflow.org/v1, Training Operator v1.9.4): pods are labelled
  ``training.kubeflow.org/job-name``, ``replica-type`` (lower case: ``master``, ``worker``) and
  ``replica-index`` (pkg/controller.v1/pytorch/pytorchjob_controller.go@v1.9.4); the container
  is ``pytorch``; ``spec.runPolicy.suspend`` suspends.
* **TrainJob** (trainer.kubeflow.org/v1alpha1, Trainer v2.3.0): a JobSet of the same name runs
  the pods, labelled ``jobset.sigs.k8s.io/jobset-name`` and ``replicatedjob-name``
  (api/jobset/v1alpha2/jobset_types.go@v0.12.0) with the Indexed Job's completion index in the
  ``batch.kubernetes.io/job-completion-index`` annotation; the stock runtime's container is
  ``node``; ``spec.suspend`` suspends.

Replica names are run-local's: ``master-0``, ``worker-1``, ``node-0``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"


@dataclass(frozen=True)
class JobKind:
    """One job kind's API coordinates and the fields the commands read or set."""

    kind: str
    group: str
    version: str
    plural: str
    container: str  # the training container, whose log and exit code matter
    replica_types: tuple[str, ...]  # the replica (spec key / replicated job) names, in rank order
    suspend_path: tuple[str, ...]  # where ``suspend: true`` goes in the object
    job_label: str  # the pod label whose value is the job's name
    type_label: str  # the pod label naming the replica type
    index_key: str  # the pod label (or annotation) holding the replica's index
    success_condition: str  # the condition type that means the job succeeded
    # The pod names the job's controller gives, as a regex over the rest of the name after
    # ``<job>-``, with groups ``type`` and ``index``.
    pod_name_rest: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    def describe(self, name: str) -> str:
        return f"{self.kind} {name}"

    def pod_selector(self, name: str) -> str:
        return f"{self.job_label}={name}"

    def replica_name(self, pod: Mapping[str, Any]) -> str:
        """``master-0`` / ``worker-1`` / ``node-0`` for one of the job's pods."""
        meta = pod.get("metadata") or {}
        labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
        rtype = labels.get(self.type_label)
        index = labels.get(self.index_key, annotations.get(self.index_key))
        if rtype is None or index is None:
            return meta.get("name", "?")
        return f"{rtype}-{index}"

    def replica_of_pod_name(self, job: str, pod: str) -> str | None:
        """The replica a pod of this name belongs to (for pods already deleted), or ``None``
        when the name is not one of the job's."""
        if not pod.startswith(f"{job}-"):
            return None
        match = re.fullmatch(self.pod_name_rest, pod[len(job) + 1 :])
        return f"{match['type']}-{match['index']}" if match else None

    def suspended(self, job: Mapping[str, Any]) -> bool:
        value: Any = job
        for key in self.suspend_path:
            value = (value or {}).get(key)
        return bool(value)

    def suspend_patch(self, suspend: bool) -> dict:
        """The merge patch that sets the job's ``suspend`` field."""
        patch: dict = {self.suspend_path[-1]: suspend}
        for key in reversed(self.suspend_path[:-1]):
            patch = {key: patch}
        return patch


PYTORCHJOB = JobKind(
    kind="PyTorchJob",
    group="kubeflow.org",
    version="v1",
    plural="pytorchjobs",
    container="pytorch",  # pytorch_types.go@v1.9.4 PyTorchJobDefaultContainerName
    replica_types=("Master", "Worker"),  # PyTorchJobReplicaTypeMaster/Worker
    suspend_path=("spec", "runPolicy", "suspend"),
    job_label="training.kubeflow.org/job-name",
    type_label="training.kubeflow.org/replica-type",
    index_key="training.kubeflow.org/replica-index",
    success_condition="Succeeded",
    pod_name_rest=r"(?P<type>master|worker)-(?P<index>\d+)",  # <job>-worker-0
)
TRAINJOB = JobKind(
    kind="TrainJob",
    group="trainer.kubeflow.org",
    version="v1alpha1",
    plural="trainjobs",
    container="node",  # constants.go@v2.3.0 Node: the stock runtime's container
    replica_types=("node",),  # the stock torch-distributed runtime's one replicated job
    suspend_path=("spec", "suspend"),
    job_label="jobset.sigs.k8s.io/jobset-name",
    type_label="jobset.sigs.k8s.io/replicatedjob-name",
    index_key=COMPLETION_INDEX,
    success_condition="Complete",
    # An Indexed Job's pods: <jobset>-<replicatedJob>-<jobIndex>-<completionIndex>-<random 5>
    pod_name_rest=r"(?P<type>[a-z0-9-]+?)-\d+-(?P<index>\d+)-[a-z0-9]{5}",
)
KINDS = (PYTORCHJOB, TRAINJOB)


def kind_named(name: str) -> JobKind:
    """The kind called ``name`` (``PyTorchJob``, ``pytorchjob``, ``trainjobs``...)."""
    wanted = name.lower()
    for kind in KINDS:
        if wanted in (kind.kind.lower(), kind.plural):
            return kind
    raise ValueError(f"unknown job kind {name!r}: expected one of {', '.join(k.kind for k in KINDS)}")


def kind_of(manifest: Mapping[str, Any]) -> JobKind | None:
    """The kind of a manifest, matched on ``apiVersion`` and ``kind``; ``None`` if neither."""
    for kind in KINDS:
        if manifest.get("apiVersion") == kind.api_version and manifest.get("kind") == kind.kind:
            return kind
    return None
