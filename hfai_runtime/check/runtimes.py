"""What a TrainJob's runtime holds: its replicated jobs, their containers, its ML policy.

The TrainJob webhook checks a TrainJob's ``runtimePatches`` against the runtime it references.
The runtime lives in the cluster; here it is known when it is one of the documents being checked
(a TrainingRuntime or ClusterTrainingRuntime) or the stock ``torch-distributed`` runtime that
Trainer installs. Otherwise the rules that need it are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

from hfai_runtime.check.problem import as_dict, as_list, dig, text
from hfai_runtime.kube.kinds import TRAINJOB

GROUP = TRAINJOB.group
#: pkg/constants/constants.go@v2.3.0: ``LabelTrainJobAncestor``, ``AncestorTrainer``.
ANCESTOR_LABEL = "trainer.kubeflow.org/trainjob-ancestor-step"
ANCESTOR_TRAINER = "trainer"


@dataclass(frozen=True)
class Runtime:
    """A training runtime as the TrainJob rules see it."""

    jobs: dict[str, frozenset[str]]  # replicated job name -> its container and initContainer names
    trainer_job: str | None  # the replicated job that runs the trainer (ancestor label)
    torch: bool  # mlPolicy.torch is set (torchrun's reserved PET_* envs)


#: The stock runtime, charts/kubeflow-trainer/files/runtimes/torch-distributed.yaml@v2.3.0
#: (shipped as crds/torch-distributed-runtime.helm-template.txt): one replicated job ``node``
#: with the trainer ancestor label and one container ``node``; ``mlPolicy.torch``.
STOCK = {
    ("ClusterTrainingRuntime", "torch-distributed"): Runtime(
        jobs={TRAINJOB.replica_types[0]: frozenset({TRAINJOB.container})},
        trainer_job=TRAINJOB.replica_types[0],
        torch=True,
    )
}


def runtime_of(spec: dict) -> Runtime:
    """The :class:`Runtime` view of a (Cluster)TrainingRuntime's ``spec``."""
    jobs, trainer_job = {}, None
    for job in as_list(dig(spec, "template", "spec", "replicatedJobs")):
        pod = dig(job, "template", "spec", "template", "spec")
        names = {
            text(dig(c, "name")) for key in ("containers", "initContainers") for c in as_list(dig(pod, key))
        }
        jobs[text(dig(job, "name"))] = frozenset(names)
        if dig(job, "template", "metadata", "labels", ANCESTOR_LABEL) == ANCESTOR_TRAINER:
            trainer_job = dig(job, "name")
    return Runtime(jobs=jobs, trainer_job=trainer_job, torch="torch" in as_dict(spec.get("mlPolicy")))


def referenced_runtime(trainjob: dict, docs: list[dict]) -> Runtime | None:
    """The runtime ``trainjob.spec.runtimeRef`` names, if it is among ``docs`` or stock."""
    ref = as_dict(dig(trainjob, "spec", "runtimeRef"))
    # runtimeRef defaults: apiGroup trainer.kubeflow.org, kind ClusterTrainingRuntime
    # (pkg/apis/trainer/v1alpha1/trainjob_types.go@v2.3.0, +kubebuilder:default markers).
    if ref.get("apiGroup", GROUP) != GROUP:
        return None
    key = (text(ref.get("kind", "ClusterTrainingRuntime")), text(ref.get("name")))
    for doc in docs:
        in_group = str(doc.get("apiVersion", "")).startswith(GROUP + "/")
        if in_group and (doc.get("kind"), dig(doc, "metadata", "name")) == key:
            return runtime_of(as_dict(doc.get("spec")))
    return STOCK.get(key)
