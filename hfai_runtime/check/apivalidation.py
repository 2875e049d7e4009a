"""The API server's own validation of the Jobs and Pods a manifest makes, for the fields in use.

A CRD's schema says nothing of what the API server checks in Go when the operator, or JobSet,
then creates the Job and its pods: those are refused at creation and the job hangs or fails
(``FailedCreate`` events). A ``batch/v1`` Job meets these rules when it is applied. Here, for
every pod template a manifest holds (a PyTorchJob's replicas, a TrainingRuntime's replicated
Jobs, a TrainJob's runtime patches, a batch Job) and every Job template:

* Pod (kubernetes ``pkg/apis/core/validation/validation.go``@v1.31.0; a repeated container or
  volume name is the schema's list-map rule, ``schema/duplicate``): container names are
  DNS-1123 labels (``validateContainers``), env names are ``IsEnvVarName``
  (apimachinery ``pkg/util/validation/validation.go``@v0.31.0; 1.32+ relaxes it to any
  printable ASCII but ``=``), volume names are DNS-1123 labels (``ValidateVolumes``), a
  mount names a volume of the pod (``validateVolumeMounts``: "Not found") at a path not mounted
  twice in one container, its ``subPath`` is relative without ``..`` (``validateLocalDescendingPath``),
  resource quantities are not negative (``ValidateResourceQuantityValue``), ``activeDeadlineSeconds``
  is 1 to 2^31-1, template labels are label keys and values (``ValidateLabels``);
* Job (``pkg/apis/batch/validation/validation.go``@v1.31.0): ``parallelism``, ``completions``,
  ``backoffLimit``, ``activeDeadlineSeconds``, ``ttlSecondsAfterFinished`` not negative; the pod's
  ``restartPolicy`` ``OnFailure`` or ``Never`` (unset in a batch Job it defaults to ``Always`` and
  is refused; JobSet's webhook defaults it to ``OnFailure`` in a runtime); with a
  ``podFailurePolicy`` only ``Never``, exit codes sorted without repeats, 0 never with ``In``,
  ``containerName`` one of the pod's containers (``validatePodFailurePolicy``).

A TrainJob's patch is a partial pod: its mounts may name the volumes of the runtime it patches
(known when the runtime is among the documents).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from hfai_runtime.check.names import (
    dns1123_label_error,
    dns1123_subdomain_error,
    env_var_name_error,
    label_key_error,
    label_value_error,
)
from hfai_runtime.check.problem import Problem, as_dict, as_list, child, dig, text
from hfai_runtime.check.quantity import parse_quantity
from hfai_runtime.check.runtimes import GROUP
from hfai_runtime.kube.quantity import QuantityError, QuantityTooLarge
from hfai_runtime.kube.quantity import parse_quantity as exact_quantity

JOB_RESTART_POLICIES = ("OnFailure", "Never")
JOB_COUNTS = (
    "parallelism",
    "completions",
    "backoffLimit",
    "activeDeadlineSeconds",
    "ttlSecondsAfterFinished",
)
MAX_INT32 = 2**31 - 1


@dataclass(frozen=True)
class PodTemplate:
    """A pod spec of the manifest, where it is, and what the rules may assume about it."""

    spec: dict
    path: str
    labels: dict  # the template's metadata.labels
    labels_path: str
    partial: bool = False  # a TrainJob runtime patch: only some fields, merged into the runtime's pod
    outside_volumes: frozenset[str] = frozenset()  # volumes the pod gets from elsewhere


@dataclass(frozen=True)
class JobTemplate:
    """A batch JobSpec of the manifest (a batch Job's ``spec``, a runtime's replicated Job)."""

    spec: dict
    path: str
    restart_policy_defaulted: bool  # JobSet defaults an unset restartPolicy to OnFailure


def check_api_validation(doc: dict, docs: list[dict]) -> list[Problem]:
    """Every rule above, for every Job and pod template of ``doc``."""
    problems = object_meta(as_dict(doc.get("metadata")))
    for job in job_templates(doc):
        problems += job_rules(job)
    for pod in pod_templates(doc, docs):
        problems += pod_rules(pod)
    return problems


def object_meta(meta: dict) -> list[Problem]:
    """``ValidateObjectMeta``: the name a DNS-1123 subdomain, the namespace a DNS-1123 label
    (labels: :mod:`.schema`)."""
    problems = []
    name, namespace = text(meta.get("name")), text(meta.get("namespace"))
    error = dns1123_subdomain_error(name) if name else None
    if error:
        problems.append(Problem("metadata.name", f"Invalid value: {error}", "apiserver/name"))
    error = dns1123_label_error(namespace) if namespace else None
    if error:
        problems.append(
            Problem("metadata.namespace", f"Invalid value: {namespace!r}: {error}", "apiserver/name")
        )
    return problems


# -- where the templates are ---------------------------------------------------------------


def job_templates(doc: dict) -> list[JobTemplate]:
    """The Job specs: a batch Job's own, or each replicated Job of a (Cluster)TrainingRuntime."""
    if (doc.get("apiVersion"), doc.get("kind")) == ("batch/v1", "Job"):
        return [JobTemplate(as_dict(doc.get("spec")), "spec", restart_policy_defaulted=False)]
    if _is_runtime(doc):
        jobs = as_list(dig(doc, "spec", "template", "spec", "replicatedJobs"))
        return [
            JobTemplate(
                as_dict(dig(job, "template", "spec")),
                f"spec.template.spec.replicatedJobs[{i}].template.spec",
                True,
            )
            for i, job in enumerate(jobs)
        ]
    return []


def pod_templates(doc: dict, docs: list[dict]) -> list[PodTemplate]:
    """Every pod template of ``doc``, with its path."""
    kind = doc.get("kind")
    if kind == "PyTorchJob":
        return [
            _pod(as_dict(dig(rspec, "template")), f"{child('spec.pytorchReplicaSpecs', rtype)}.template")
            for rtype, rspec in as_dict(dig(doc, "spec", "pytorchReplicaSpecs")).items()
        ]
    if kind == "TrainJob" and str(doc.get("apiVersion", "")).startswith(GROUP + "/"):
        return _trainjob_patches(doc, docs)
    return [_pod(as_dict(dig(job.spec, "template")), f"{job.path}.template") for job in job_templates(doc)]


def _pod(template: dict, path: str, **extra) -> PodTemplate:
    return PodTemplate(
        as_dict(template.get("spec")),
        f"{path}.spec",
        as_dict(dig(template, "metadata", "labels")),
        f"{path}.metadata.labels",
        **extra,
    )


def _trainjob_patches(job: dict, docs: list[dict]) -> list[PodTemplate]:
    volumes = _runtime_volumes(job, docs)
    pods = []
    for i, patch in enumerate(as_list(dig(job, "spec", "runtimePatches"))):
        rjobs = as_list(dig(patch, "trainingRuntimeSpec", "template", "spec", "replicatedJobs"))
        for j, rjob in enumerate(rjobs):
            path = f"spec.runtimePatches[{i}].trainingRuntimeSpec.template.spec.replicatedJobs[{j}].template.spec.template"
            known = volumes.get(text(dig(rjob, "name")))
            pods.append(
                _pod(
                    as_dict(dig(rjob, "template", "spec", "template")),
                    path,
                    partial=True,
                    outside_volumes=frozenset() if known is None else known,
                )
            )
    return pods


def _runtime_volumes(job: dict, docs: list[dict]) -> dict[str | None, frozenset[str]]:
    """The volume names of each replicated Job of the runtime ``job`` references, where known."""
    ref = as_dict(dig(job, "spec", "runtimeRef"))
    key = (ref.get("kind", "ClusterTrainingRuntime"), ref.get("name"))
    for doc in docs:
        if _is_runtime(doc) and (doc.get("kind"), dig(doc, "metadata", "name")) == key:
            return {
                text(dig(rjob, "name")): frozenset(
                    text(dig(v, "name"))
                    for v in as_list(dig(rjob, "template", "spec", "template", "spec", "volumes"))
                )
                for rjob in as_list(dig(doc, "spec", "template", "spec", "replicatedJobs"))
            }
    return {}  # the stock runtime (no volumes), or one not among the documents


def _is_runtime(doc: dict) -> bool:
    return str(doc.get("apiVersion", "")).startswith(GROUP + "/") and doc.get("kind") in (
        "TrainingRuntime",
        "ClusterTrainingRuntime",
    )


# -- Job rules -------------------------------------------------------------------------------


def job_rules(job: JobTemplate) -> list[Problem]:
    """``ValidateJobSpec`` for the fields in use: counts, the pod's restart policy, podFailurePolicy."""
    problems = [
        Problem(
            child(job.path, name),
            f"Invalid value: {value}: must be greater than or equal to 0",
            "apiserver/job-count",
        )
        for name in JOB_COUNTS
        if isinstance(value := job.spec.get(name), int) and not isinstance(value, bool) and value < 0
    ]
    pod = as_dict(dig(job.spec, "template", "spec"))
    pod_path = f"{job.path}.template.spec"
    policy = pod.get("restartPolicy")
    if policy is None and job.restart_policy_defaulted:
        policy = "OnFailure"
    if policy not in JOB_RESTART_POLICIES:
        problems.append(
            Problem(
                f"{pod_path}.restartPolicy",
                f"Unsupported value: {policy or 'Always'!r}: supported values: OnFailure, Never"
                + ("" if policy else " (unset, a pod's restartPolicy defaults to Always)"),
                "apiserver/job-restart-policy",
            )
        )
    failure_policy = job.spec.get("podFailurePolicy")
    if failure_policy is not None:
        problems += _pod_failure_policy(as_dict(failure_policy), f"{job.path}.podFailurePolicy", pod, policy)
    return problems


def _pod_failure_policy(policy: dict, path: str, pod: dict, restart_policy: object) -> list[Problem]:
    problems = []
    if restart_policy != "Never":
        problems.append(
            Problem(
                path,
                f'Invalid value: restartPolicy {restart_policy!r}: only "Never" is supported when '
                "podFailurePolicy is specified",
                "apiserver/pod-failure-policy",
            )
        )
    names = {text(dig(c, "name")) for key in ("containers", "initContainers") for c in as_list(pod.get(key))}
    for i, rule in enumerate(as_list(policy.get("rules"))):
        codes = as_dict(dig(rule, "onExitCodes"))
        where = f"{path}.rules[{i}].onExitCodes"
        values = [v for v in as_list(codes.get("values")) if isinstance(v, int)]
        if values != sorted(set(values)):
            problems.append(
                Problem(
                    f"{where}.values",
                    "Invalid value: must be ordered and without repeats",
                    "apiserver/pod-failure-policy",
                )
            )
        if codes.get("operator") == "In" and 0 in values:
            problems.append(
                Problem(
                    f"{where}.values",
                    "Invalid value: 0: must not be 0 for the In operator",
                    "apiserver/pod-failure-policy",
                )
            )
        name = codes.get("containerName")
        if name is not None and name not in names:
            problems.append(
                Problem(
                    f"{where}.containerName",
                    f"Invalid value: {name!r}: must be one of the container or initContainer names in the pod template",
                    "apiserver/pod-failure-policy",
                )
            )
    return problems


# -- Pod rules -------------------------------------------------------------------------------


def pod_rules(pod: PodTemplate) -> list[Problem]:
    """The Pod rules above, on one template."""
    problems = _labels(pod.labels, pod.labels_path)
    volumes = _volumes(pod)
    problems += volumes[1]
    for key, index, container in _containers(pod.spec):
        where = f"{child(pod.path, key)}[{index}]"
        name = text(container.get("name"))
        if name is not None and not pod.partial:
            error = dns1123_label_error(name)
            if error:
                problems.append(
                    Problem(f"{where}.name", f"Invalid value: {name!r}: {error}", "apiserver/container-name")
                )
        problems += env_names(as_list(container.get("env")), f"{where}.env")
        problems += _mounts(container, where, volumes[0] | pod.outside_volumes, pod.partial)
        problems += negative_quantities(as_dict(container.get("resources")), f"{where}.resources")
    deadline = pod.spec.get("activeDeadlineSeconds")
    if isinstance(deadline, int) and not 1 <= deadline <= MAX_INT32:
        problems.append(
            Problem(
                f"{pod.path}.activeDeadlineSeconds",
                f"Invalid value: {deadline}: must be between 1 and {MAX_INT32}, inclusive",
                "apiserver/active-deadline",
            )
        )
    return problems


def _containers(spec: dict) -> Iterator[tuple[str, int, dict]]:
    for key in ("initContainers", "containers"):
        for i, container in enumerate(as_list(spec.get(key))):
            yield key, i, as_dict(container)


def env_names(env: list, path: str) -> list[Problem]:
    """``validateEnv``: each name is an environment variable name (1.31: ``IsEnvVarName``)."""
    problems = []
    for i, var in enumerate(env):
        name = text(dig(var, "name"))
        error = None if name is None else env_var_name_error(name)
        if error:
            problems.append(
                Problem(f"{path}[{i}].name", f"Invalid value: {name!r}: {error}", "apiserver/env-name")
            )
    return problems


def _volumes(pod: PodTemplate) -> tuple[frozenset[str], list[Problem]]:
    names: list[str] = []
    problems = []
    for i, volume in enumerate(as_list(pod.spec.get("volumes"))):
        name = text(dig(volume, "name"))
        if name is None:
            continue
        where = f"{child(pod.path, 'volumes')}[{i}].name"
        error = dns1123_label_error(name)
        if error:
            problems.append(Problem(where, f"Invalid value: {name!r}: {error}", "apiserver/volume-name"))
        names.append(name)
    return frozenset(names), problems


def _mounts(container: dict, path: str, volumes: frozenset[str], partial: bool) -> list[Problem]:
    problems = []
    paths: set[str] = set()
    for i, mount in enumerate(as_list(container.get("volumeMounts"))):
        mount = as_dict(mount)
        where = f"{path}.volumeMounts[{i}]"
        name, mount_path, sub_path = (
            text(mount.get("name")),
            text(mount.get("mountPath")),
            text(mount.get("subPath")),
        )
        if name is not None and name not in volumes and not (partial and not volumes):
            problems.append(
                Problem(
                    f"{where}.name",
                    f"Not found: {name!r} (no volume of the pod has this name)",
                    "apiserver/volume-mount",
                )
            )
        if mount_path is not None and mount_path in paths:
            problems.append(
                Problem(
                    f"{where}.mountPath",
                    f"Invalid value: {mount_path!r}: must be unique",
                    "apiserver/volume-mount",
                )
            )
        paths.add(mount_path or "")
        if sub_path:
            error = local_descending_path_error(sub_path)
            if error:
                problems.append(
                    Problem(f"{where}.subPath", f"Invalid value: {sub_path!r}: {error}", "apiserver/sub-path")
                )
    return problems


def local_descending_path_error(path: str) -> str | None:
    """``validateLocalDescendingPath``: relative, and no ``..`` element."""
    if path.startswith("/"):
        return "must be a relative path"
    if ".." in path.replace("\\", "/").split("/"):
        return "must not contain '..'"
    return None


def negative_quantities(resources: dict, path: str) -> list[Problem]:
    """``ValidateResourceQuantityValue``: requests and limits are not negative. And, this
    project's rule, not beyond any resource (``range/quantity``): the API server stores
    ``1e999999999``, but no node has it, so the pod would never be scheduled."""
    problems = []
    for kind in ("requests", "limits"):
        for name, value in as_dict(resources.get(kind)).items():
            if (too_large := _too_large(value)) is not None:
                problems.append(
                    Problem(child(child(path, kind), name), f"Invalid value: {too_large}", "range/quantity")
                )
                continue
            quantity = parse_quantity(value)
            if quantity is not None and quantity < 0:
                problems.append(
                    Problem(
                        child(child(path, kind), name),
                        f"Invalid value: {value!r}: must be greater than or equal to 0",
                        "apiserver/quantity",
                    )
                )
    return problems


def _too_large(value: object) -> str | None:
    try:
        exact_quantity(value)
    except QuantityTooLarge as error:
        return str(error)
    except QuantityError:
        pass  # malformed: the schema's pattern reports it
    return None


def _labels(labels: dict, path: str) -> list[Problem]:
    """``ValidateLabels`` on a template's labels (an object's own: :mod:`.schema`)."""
    problems = []
    for key, value in labels.items():
        error = label_key_error(str(key)) or (
            label_value_error(value) if isinstance(value, str) else "must be a string"
        )
        if error:
            problems.append(
                Problem(child(path, key), f"Invalid value: {key!r}: {value!r}: {error}", "apiserver/label")
            )
    return problems
