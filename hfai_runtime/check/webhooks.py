"""The operators' validating admission webhooks: what they refuse that the CRD schema allows.

* PyTorchJob: training-operator ``pkg/webhooks/pytorch/pytorchjob_webhook.go``@v1.9.4 and
  ``pkg/common/util/webhooks.go``@v1.9.4.
* TrainJob: Trainer ``pkg/webhooks/trainjob_webhook.go``@v2.3.0, which runs the runtime plugins'
  ``Validate``: ``pkg/runtime/framework/plugins/jobset/jobset.go``@v2.3.0 (runtime patches) and
  ``pkg/runtime/framework/plugins/torch/torch.go``@v2.3.0 (reserved envs).

Which fields a TrainJob's pod patch may set at all is the CRD schema's business (its
``runtimePatches`` pod spec defines only affinity, containers (name, env, securityContext,
volumeMounts), imagePullSecrets, initContainers, nodeSelector, schedulingGates, securityContext,
serviceAccountName, terminationGracePeriodSeconds, tolerations, volumes): anything else, such as
``restartPolicy``, is an unknown field there (``schema/unknown-field``).
"""

from __future__ import annotations

from hfai_runtime.check.names import dns1035_label_error, domain_prefixed_path_error
from hfai_runtime.check.problem import Problem, as_dict, as_list, child, dig, text
from hfai_runtime.check.runtimes import Runtime, referenced_runtime
from hfai_runtime.kube.kinds import PYTORCHJOB, TRAINJOB

REPLICA_TYPES = PYTORCHJOB.replica_types
PYTORCH_CONTAINER = PYTORCHJOB.container
# common_types.go@v1.9.4: KubeflowJobsController, MultiKueueController (webhooks.go's set).
MANAGED_BY = ("kubeflow.org/training-operator", "kueue.x-k8s.io/multikueue")
# constants.go@v2.3.0: DatasetInitializer, ModelInitializer, Node (no env patches for these),
# TorchRunReservedEnvNames.
NO_ENV_CONTAINERS = ("dataset-initializer", "model-initializer", TRAINJOB.container)
TORCH_RESERVED_ENVS = frozenset(
    {"PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT"}
)


def check_pytorchjob(job: dict) -> list[Problem]:
    """``validatePyTorchJob`` on create (pytorchjob_webhook.go@v1.9.4)."""
    problems = []
    name = dig(job, "metadata", "name")
    error = dns1035_label_error(name) if isinstance(name, str) else None
    if error:
        problems.append(
            Problem("metadata.name", f"Invalid value: {name!r}: {error}", "pytorchjob-webhook/name")
        )
    spec = as_dict(job.get("spec"))
    managed_by = dig(spec, "runPolicy", "managedBy")
    if managed_by is not None and managed_by not in MANAGED_BY:
        problems.append(
            Problem(
                "spec.runPolicy.managedBy",
                f"Unsupported value: {managed_by!r}: supported values: {', '.join(MANAGED_BY)}",
                "pytorchjob-webhook/managed-by",
            )
        )
    replica_specs = as_dict(spec.get("pytorchReplicaSpecs"))
    return problems + _elastic_policy(spec) + _replica_specs(replica_specs)


def _elastic_policy(spec: dict) -> list[Problem]:
    """``validateSpec``: an elastic policy needs a Worker, and one nproc setting, not two."""
    if "elasticPolicy" not in spec:
        return []
    problems = []
    if "Worker" not in as_dict(spec.get("pytorchReplicaSpecs")):
        problems.append(
            Problem(
                "spec.pytorchReplicaSpecs.Worker",
                "Required value: must be configured if elastic policy is used",
                "pytorchjob-webhook/elastic",
            )
        )
    if "nProcPerNode" in as_dict(spec["elasticPolicy"]) and "nprocPerNode" in spec:
        problems.append(
            Problem(
                "spec.elasticPolicy.nProcPerNode",
                "Forbidden: must not be used with spec.nprocPerNode",
                "pytorchjob-webhook/elastic",
            )
        )
    return problems


def _replica_specs(specs: dict) -> list[Problem]:
    """``validatePyTorchReplicaSpecs``: keys, containers, images, ``pytorch``, replica counts.

    (Its "must be required" for a missing map is the CRD schema's ``required`` already.)
    """
    path = "spec.pytorchReplicaSpecs"
    problems = []
    for rtype, rspec in specs.items():
        role = child(path, rtype)
        if rtype not in REPLICA_TYPES:
            problems.append(
                Problem(
                    role,
                    f"Unsupported value: {rtype!r}: supported values: Master, Worker",
                    "pytorchjob-webhook/replica-type",
                )
            )
        rspec = as_dict(rspec)
        problems += _replica_containers(
            as_dict(dig(rspec, "template", "spec")), f"{role}.template.spec.containers"
        )
        replicas = rspec.get("replicas")
        if rtype == "Master" and replicas != 1:
            problems.append(
                Problem(
                    f"{role}.replicas",
                    "Forbidden: must be 1 (and stated: the webhook does not default it)",
                    "pytorchjob-webhook/master-replicas",
                )
            )
        elif rtype != "Master" and isinstance(replicas, int) and replicas < 1:
            problems.append(
                Problem(
                    f"{role}.replicas", "Forbidden: must be at least 1", "pytorchjob-webhook/worker-replicas"
                )
            )
    return problems


def _replica_containers(pod: dict, path: str) -> list[Problem]:
    """Each replica's pod has containers, each with an image, one of them named ``pytorch``."""
    containers = [as_dict(c) for c in as_list(pod.get("containers"))]
    problems = [
        Problem(f"{path}[{i}].image", "Required value: must be required", "pytorchjob-webhook/image")
        for i, container in enumerate(containers)
        if not container.get("image")
    ]
    if not containers:
        problems.append(Problem(path, "Required value: must be specified", "pytorchjob-webhook/containers"))
    if not any(c.get("name") == PYTORCH_CONTAINER for c in containers):
        problems.append(
            Problem(
                path,
                f"Required value: must have at least one container with name {PYTORCH_CONTAINER}",
                "pytorchjob-webhook/container-name",
            )
        )
    return problems


def check_trainjob(job: dict, docs: list[dict]) -> list[Problem]:
    """The TrainJob webhook's create-time rules (jobset.go and torch.go ``Validate``@v2.3.0)."""
    spec = as_dict(job.get("spec"))
    runtime = referenced_runtime(job, docs)
    problems = []
    for i, patch in enumerate(as_list(spec.get("runtimePatches"))):
        patch = as_dict(patch)
        path = f"spec.runtimePatches[{i}]"
        error = domain_prefixed_path_error(str(patch.get("manager") or ""))
        if error:
            problems.append(
                Problem(
                    f"{path}.manager",
                    f"Invalid value: {patch.get('manager')!r}: {error}",
                    "trainjob-webhook/manager",
                )
            )
        problems += _patched_jobs(
            as_dict(patch.get("trainingRuntimeSpec")), f"{path}.trainingRuntimeSpec", runtime
        )
    if runtime is not None and runtime.torch:
        problems += _reserved_envs(as_dict(spec.get("trainer")))
    return problems


def _patched_jobs(runtime_spec: dict, path: str, runtime: Runtime | None) -> list[Problem]:
    """Patches may touch only the runtime's jobs and containers, and set no env on ``node``."""
    problems = []
    jobs_path = f"{path}.template.spec.replicatedJobs"
    for j, job in enumerate(as_list(dig(runtime_spec, "template", "spec", "replicatedJobs"))):
        job = as_dict(job)
        job_path = f"{jobs_path}[{j}]"
        known = None if runtime is None else runtime.jobs.get(text(job.get("name")))
        if runtime is not None and known is None:
            problems.append(
                Problem(
                    f"{job_path}.name",
                    f"Invalid value: {job.get('name')!r}: must "
                    "not have replicated job that doesn't exist in the runtime job "
                    f"template (it has: {', '.join(sorted(runtime.jobs))})",
                    "trainjob-webhook/patch-job",
                )
            )
        pod = as_dict(dig(job, "template", "spec", "template", "spec"))
        for key in ("initContainers", "containers"):
            for k, container in enumerate(as_list(pod.get(key))):
                container = as_dict(container)
                where = f"{job_path}.template.spec.template.spec.{key}[{k}]"
                if known is not None and text(container.get("name")) not in known:
                    problems.append(
                        Problem(
                            f"{where}.name",
                            f"Invalid value: "
                            f"{container.get('name')!r}: must not have {key[:-1]} "
                            f"that doesn't exist in the runtime job {job['name']}",
                            "trainjob-webhook/patch-container",
                        )
                    )
                elif (
                    key == "containers"
                    and container.get("env")
                    and container.get("name") in NO_ENV_CONTAINERS
                ):
                    problems.append(
                        Problem(
                            f"{where}.env",
                            "Invalid value: must not have envs "
                            f"for the {', '.join(NO_ENV_CONTAINERS)} containers "
                            "(set spec.trainer.env instead)",
                            "trainjob-webhook/patch-env",
                        )
                    )
    return problems


def _reserved_envs(trainer: dict) -> list[Problem]:
    """torchrun's ``PET_*`` variables belong to the torch plugin (torch.go ``Validate``)."""
    names = sorted({text(dig(e, "name")) for e in as_list(trainer.get("env"))} & TORCH_RESERVED_ENVS)
    if not names:
        return []
    return [
        Problem(
            "spec.trainer.env",
            f"Invalid value: must not have reserved envs, invalid envs configured: {names}",
            "trainjob-webhook/reserved-env",
        )
    ]
