"""Trainer's TrainingRuntime / ClusterTrainingRuntime validating webhook.

``pkg/webhooks/trainingruntime_webhook.go``@v2.3.0 ``validateReplicatedJobs`` (the
ClusterTrainingRuntime webhook calls the same function): a replicated Job labelled as a TrainJob
ancestor step (``trainer.kubeflow.org/trainjob-ancestor-step``: ``trainer``,
``model-initializer``, ``dataset-initializer``) has ``replicas: 1`` (the CRD defaults it to 1)
and a container named for its step: ``node`` for the trainer.
"""

from __future__ import annotations

from hfai_runtime.check.problem import Problem, as_list, dig
from hfai_runtime.check.runtimes import ANCESTOR_LABEL

#: trainingruntime_webhook.go@v2.3.0 ``expectedContainerNames``.
ANCESTOR_CONTAINERS = {
    "trainer": "node",
    "model-initializer": "model-initializer",
    "dataset-initializer": "dataset-initializer",
}


def check_trainingruntime(runtime: dict) -> list[Problem]:
    """``validateReplicatedJobs`` on create."""
    problems = []
    path = "spec.template.spec.replicatedJobs"
    for i, job in enumerate(as_list(dig(runtime, "spec", "template", "spec", "replicatedJobs"))):
        step = dig(job, "template", "metadata", "labels", ANCESTOR_LABEL)
        if step not in ANCESTOR_CONTAINERS:
            continue
        replicas = dig(job, "replicas")
        if replicas not in (None, 1):
            problems.append(
                Problem(
                    f"{path}[{i}].replicas",
                    f"Invalid value: {replicas}: always must be 1",
                    "trainingruntime-webhook/replicas",
                )
            )
        names = [
            dig(c, "name") for c in as_list(dig(job, "template", "spec", "template", "spec", "containers"))
        ]
        if ANCESTOR_CONTAINERS[step] not in names:
            problems.append(
                Problem(
                    f"{path}[{i}].template.spec.template.spec.containers",
                    f"Invalid value: must contain the required container for the ancestor: {step} "
                    f"(a container named {ANCESTOR_CONTAINERS[step]!r})",
                    "trainingruntime-webhook/ancestor-container",
                )
            )
    return problems
