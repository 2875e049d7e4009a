"""Every rule ``hfai-runtime check`` applies: its id, what it refuses, and the upstream source.

The table in ``docs/check.md`` is :func:`markdown_table` of :data:`RULES`, and the tests break
one good manifest per entry (``tests/test_check_rules.py``): the three cannot drift apart. A
rule whose ``refused`` is False is this project's advice, which the cluster admits: it is a
warning (exit 0; ``--strict`` makes it an error).
"""

from __future__ import annotations

from dataclasses import dataclass

K8S = "kubernetes"
CORE = f"{K8S} pkg/apis/core/validation/validation.go@v1.31.0"
BATCH = f"{K8S} pkg/apis/batch/validation/validation.go@v1.31.0"
SCHEMA = "apiextensions-apiserver pkg/apiserver/schema (structural schema) with kubectl --validate=strict"
PYTORCH_WEBHOOK = "training-operator pkg/webhooks/pytorch/pytorchjob_webhook.go@v1.9.4"
TRAINJOB_WEBHOOK = "trainer pkg/runtime/framework/plugins/jobset/jobset.go@v2.3.0 (TrainJob webhook)"


@dataclass(frozen=True)
class Rule:
    what: str
    source: str
    refused: bool = True  # False: a warning, the cluster admits it


RULES: dict[str, Rule] = {
    "kind/unknown": Rule(
        "a kind the check does not know",
        "hfai-runtime (PyTorchJob, TrainJob, (Cluster)TrainingRuntime, batch/v1 Job)",
    ),
    "schema/type": Rule("a field of the wrong type", SCHEMA),
    "schema/required": Rule("a required field missing (metadata.name included)", SCHEMA),
    "schema/enum": Rule("a value outside the field's enum", SCHEMA),
    "schema/pattern": Rule("a value not matching the field's pattern (quantities: 1Ei yes, 4GB no)", SCHEMA),
    "schema/unknown-field": Rule(
        "a field the schema does not define (batch/v1 Job: the batch JobSpec)", SCHEMA
    ),
    "schema/duplicate": Rule("a repeated key in a list-map (env, containers, volumes)", SCHEMA),
    "crd/x-kubernetes-validations": Rule(
        "a CRD's CEL rule is false",
        "apiextensions-apiserver CEL validation (the CRDs' x-kubernetes-validations)",
    ),
    "apiserver/name": Rule(
        "metadata.name not a DNS-1123 subdomain, namespace not a DNS-1123 label",
        "apimachinery pkg/api/validation/objectmeta.go@v0.31.0",
    ),
    "apiserver/label": Rule(
        "a label key or value in the wrong format (objects and pod templates)",
        "apimachinery pkg/apis/meta/v1/validation/validation.go@v0.31.0 ValidateLabels",
    ),
    "apiserver/container-name": Rule(
        "a container name not a DNS-1123 label, or repeated", f"{CORE} validateContainers"
    ),
    "apiserver/env-name": Rule(
        "an env name with characters other than letters, digits, _ - . ('=' included)",
        "apimachinery pkg/util/validation/validation.go@v0.31.0 IsEnvVarName",
    ),
    "apiserver/volume-name": Rule(
        "a volume name not a DNS-1123 label, or repeated", f"{CORE} ValidateVolumes"
    ),
    "apiserver/volume-mount": Rule(
        "a mount of an undefined volume, or a mountPath mounted twice", f"{CORE} validateVolumeMounts"
    ),
    "apiserver/sub-path": Rule(
        "a subPath that is absolute or contains '..'", f"{CORE} validateLocalDescendingPath"
    ),
    "apiserver/quantity": Rule(
        "a negative resource request or limit", f"{CORE} ValidateResourceQuantityValue"
    ),
    "range/quantity": Rule(
        "a request or limit above 10^30 (1e999999999: no node has it, the pod is never scheduled)",
        "hfai-runtime kube/quantity.py (the API server stores it)",
    ),
    "apiserver/request-above-limit": Rule(
        "a request above its limit", f"{CORE} ValidateResourceRequirements"
    ),
    "apiserver/extended-resource-limit": Rule(
        "a GPU (extended resource) without a whole limit equal to its request",
        f"{CORE} ValidateResourceRequirements",
    ),
    "apiserver/active-deadline": Rule(
        "a pod activeDeadlineSeconds outside 1..2^31-1", f"{CORE} ValidatePodSpec"
    ),
    "apiserver/restart-policy": Rule(
        "a PyTorchJob replica restartPolicy other than Always, OnFailure, Never, ExitCode",
        "training-operator pkg/core/pod.go@v1.9.4 SetRestartPolicy, then the Pod's",
    ),
    "apiserver/job-restart-policy": Rule(
        "a Job's pod restartPolicy other than OnFailure or Never (unset in a batch Job: Always)",
        f"{BATCH} validateJobSpec",
    ),
    "apiserver/job-count": Rule(
        "a negative parallelism, completions, backoffLimit, activeDeadlineSeconds or ttlSecondsAfterFinished",
        f"{BATCH} validateJobSpec",
    ),
    "apiserver/pod-failure-policy": Rule(
        "podFailurePolicy without restartPolicy Never, unsorted exit codes, an unknown containerName",
        f"{BATCH} validatePodFailurePolicy",
    ),
    "kubelet/run-as-non-root": Rule(
        "runAsNonRoot with root (runAsUser 0, or the operator's root init container)",
        "kubernetes pkg/kubelet/kuberuntime/security_context_others.go verifyRunAsNonRoot",
    ),
    "pytorchjob-webhook/name": Rule("a PyTorchJob name not a DNS-1035 label", PYTORCH_WEBHOOK),
    "pytorchjob-webhook/managed-by": Rule("an unsupported runPolicy.managedBy", PYTORCH_WEBHOOK),
    "pytorchjob-webhook/elastic": Rule(
        "an elasticPolicy without Worker, or with two nproc settings", PYTORCH_WEBHOOK
    ),
    "pytorchjob-webhook/replica-type": Rule("a replica type other than Master and Worker", PYTORCH_WEBHOOK),
    "pytorchjob-webhook/containers": Rule("a replica without containers", PYTORCH_WEBHOOK),
    "pytorchjob-webhook/image": Rule("a container without an image", PYTORCH_WEBHOOK),
    "pytorchjob-webhook/container-name": Rule("no container named pytorch", PYTORCH_WEBHOOK),
    "pytorchjob-webhook/master-replicas": Rule("Master replicas not stated as 1", PYTORCH_WEBHOOK),
    "pytorchjob-webhook/worker-replicas": Rule("Worker replicas below 1", PYTORCH_WEBHOOK),
    "trainjob-webhook/manager": Rule(
        "a runtime patch manager that is not a domain-prefixed path", TRAINJOB_WEBHOOK
    ),
    "trainjob-webhook/patch-job": Rule(
        "a patch of a replicated Job the runtime does not have", TRAINJOB_WEBHOOK
    ),
    "trainjob-webhook/patch-container": Rule(
        "a patch of a container the runtime's Job does not have", TRAINJOB_WEBHOOK
    ),
    "trainjob-webhook/patch-env": Rule("env patched into the node container", TRAINJOB_WEBHOOK),
    "trainjob-webhook/reserved-env": Rule(
        "torchrun's PET_* variables in spec.trainer.env",
        "trainer pkg/runtime/framework/plugins/torch/torch.go@v2.3.0",
    ),
    "trainingruntime-webhook/replicas": Rule(
        "an ancestor replicated Job with replicas other than 1",
        "trainer pkg/webhooks/trainingruntime_webhook.go@v2.3.0",
    ),
    "trainingruntime-webhook/ancestor-container": Rule(
        "a trainer replicated Job without a node container",
        "trainer pkg/webhooks/trainingruntime_webhook.go@v2.3.0",
    ),
    "qos/requests-and-limits": Rule(
        "a container without cpu and memory requests and limits (BestEffort: evicted first)",
        "this project's advice; kubernetes pkg/apis/core/helper/qos/qos.go",
        refused=False,
    ),
    "qos/shm-memory": Rule(
        "a memory-backed /dev/shm without a sizeLimit below the memory limit",
        "this project's advice; kubernetes pkg/volume/emptydir/empty_dir.go",
        refused=False,
    ),
}


def refused(rule: str) -> bool:
    """Whether the cluster refuses what ``rule`` reports (an unlisted ``schema/*`` keyword is)."""
    entry = RULES.get(rule)
    return entry.refused if entry is not None else True


def markdown_table() -> str:
    """The rule table of ``docs/check.md``."""
    rows = ["| rule | refuses | upstream source | severity |", "|---|---|---|---|"]
    for rule, entry in RULES.items():
        severity = "error" if entry.refused else "warning"
        rows.append(f"| `{rule}` | {entry.what} | {entry.source} | {severity} |")
    return "\n".join(rows)
