"""What stops the pods an operator creates from a job that the API server accepted.

The job is admitted, then the operator creates pods, and the Pod rules apply: the API server's
Pod validation (a pod it refuses is never created) and the kubelet (a container it refuses never
starts). This module builds the pods an operator would create (:func:`pods_of`, including the
containers the operator adds itself) and applies those rules, plus this project's policy that
pods are not BestEffort (issue: "manifests that a cluster admin accepts").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from hfai_runtime.check.problem import Problem, as_dict, as_list, child, dig
from hfai_runtime.check.quantity import parse_quantity as _quantity
from hfai_runtime.check.runtimes import referenced_runtime
from hfai_runtime.kube.kinds import TRAINJOB

QOS_RESOURCES = ("cpu", "memory")
#: The pods' three (core/v1 types.go) and the operator's own (common_types.go@v1.9.4).
REPLICA_RESTART_POLICIES = ("Always", "OnFailure", "Never", "ExitCode")


@dataclass(frozen=True)
class Container:
    """A container of a pod; ``path`` is where the manifest writes it, ``""`` when injected."""

    spec: dict
    path: str
    resources_path: str  # a TrainJob's node container takes its resources from elsewhere
    image_user: int | None = None  # the uid the image runs as, where known (injected images)
    injected_by: str = ""

    @property
    def resources(self) -> dict:
        return as_dict(self.spec.get("resources"))


#: training-operator pkg/controller.v1/pytorch/initcontainer.go@v1.9.4 adds a container
#: ``init-pytorch`` to every Worker pod of a job that has a Master: image ``alpine:3.10``
#: (pkg/config/config.go@v1.9.4 ``PyTorchInitContainerImageDefault``), no securityContext. The
#: image has no USER, so it runs as uid 0.
INIT_PYTORCH = Container(
    {"name": "init-pytorch"},
    "",
    "",
    image_user=0,
    injected_by=("the training operator (image alpine:3.10, no securityContext)"),
)


@dataclass(frozen=True)
class Pod:
    """A pod an operator will create: its ``spec`` (as written at ``path``) and containers."""

    spec: dict
    path: str
    containers: list[Container] = field(default_factory=list)
    init_containers: list[Container] = field(default_factory=list)


def check_pods(doc: dict, docs: list[dict]) -> list[Problem]:
    """Every Pod rule below, on every pod the job ``doc`` makes."""
    problems = replica_restart_policies(doc) if doc.get("kind") == "PyTorchJob" else []
    for pod in pods_of(doc, docs):
        problems += run_as_non_root(pod)
        for container in pod.containers + pod.init_containers:
            if not container.injected_by:
                problems += resource_limits(container)
        problems += qos(pod)
        problems += memory_backed_volumes(pod)
    return problems


def pods_of(doc: dict, docs: list[dict]) -> list[Pod]:
    """The pod templates of a PyTorchJob, TrainJob or batch Job, with what an operator adds."""
    if doc.get("kind") == "PyTorchJob":
        return _pytorchjob_pods(doc)
    if doc.get("kind") == "TrainJob":
        return _trainjob_pods(doc, docs)
    if doc.get("kind") == "Job":
        spec = as_dict(dig(doc, "spec", "template", "spec"))
        path = "spec.template.spec"
        return [
            Pod(spec, path, _containers(spec, path, "containers"), _containers(spec, path, "initContainers"))
        ]
    return []


def _containers(pod: dict, path: str, key: str) -> list[Container]:
    where = child(path, key)
    return [
        Container(as_dict(c), f"{where}[{i}]", f"{where}[{i}].resources")
        for i, c in enumerate(as_list(pod.get(key)))
    ]


def _pytorchjob_pods(job: dict) -> list[Pod]:
    specs = as_dict(dig(job, "spec", "pytorchReplicaSpecs"))
    pods = []
    for rtype, rspec in specs.items():
        path = f"{child('spec.pytorchReplicaSpecs', rtype)}.template.spec"
        spec = as_dict(dig(rspec, "template", "spec"))
        init = _containers(spec, path, "initContainers")
        # setInitContainer (initcontainer.go@v1.9.4): Workers of a job with a Master.
        if rtype == "Worker" and "Master" in specs:
            init.append(INIT_PYTORCH)
        pods.append(Pod(spec, path, _containers(spec, path, "containers"), init))
    return pods


def _trainjob_pods(job: dict, docs: list[dict]) -> list[Pod]:
    """The trainer pod: the runtime's node container with ``spec.trainer.resourcesPerNode``.

    Trainer merges ``resourcesPerNode`` over the resources of the trainer job's ``node`` container
    (pkg/runtime/core/trainingruntime.go@v2.3.0; the stock runtime states none, and a runtime's
    own resources are not taken into account here) and applies a runtime patch's pod fields to
    the pod; each patch of the trainer job is checked with those resources.
    """
    runtime = referenced_runtime(job, docs)
    trainer_job = runtime.trainer_job if runtime else TRAINJOB.replica_types[0]
    resources = dig(job, "spec", "trainer", "resourcesPerNode")
    resources_path = "spec.trainer.resourcesPerNode"
    node = Container({"name": TRAINJOB.container, "resources": resources}, "", resources_path)
    pods = []
    for i, patch in enumerate(as_list(dig(job, "spec", "runtimePatches"))):
        jobs = as_list(dig(patch, "trainingRuntimeSpec", "template", "spec", "replicatedJobs"))
        for j, rjob in enumerate(jobs):
            if dig(rjob, "name") != trainer_job:
                continue
            path = (
                f"spec.runtimePatches[{i}].trainingRuntimeSpec.template.spec"
                f".replicatedJobs[{j}].template.spec.template.spec"
            )
            spec = as_dict(dig(rjob, "template", "spec", "template", "spec"))
            patched = [
                Container({**c.spec, "resources": resources}, c.path, resources_path)
                for c in _containers(spec, path, "containers")
                if c.spec.get("name") == TRAINJOB.container
            ]
            pods.append(Pod(spec, path, patched or [node]))
    return pods or [Pod({}, "", [node])]


def replica_restart_policies(job: dict) -> list[Problem]:
    """A PyTorchJob replica's ``restartPolicy`` becomes its pods' (``ExitCode`` becomes
    ``Never``: pkg/core/pod.go@v1.9.4 ``SetRestartPolicy``), and the API server's Pod
    validation accepts only Always, OnFailure and Never there; the CRD leaves the field free."""
    problems = []
    for rtype, rspec in as_dict(dig(job, "spec", "pytorchReplicaSpecs")).items():
        policy = dig(rspec, "restartPolicy")
        if policy is not None and policy not in REPLICA_RESTART_POLICIES:
            problems.append(
                Problem(
                    f"{child('spec.pytorchReplicaSpecs', rtype)}.restartPolicy",
                    f"Unsupported value: {policy!r}: supported values: {', '.join(REPLICA_RESTART_POLICIES)}",
                    "apiserver/restart-policy",
                )
            )
    return problems


def run_as_non_root(pod: Pod) -> list[Problem]:
    """The kubelet's ``verifyRunAsNonRoot`` for each container, with its effective context.

    kubernetes ``pkg/kubelet/kuberuntime/security_context_others.go``@ccde63b9
    (``verifyRunAsNonRoot``) and ``pkg/securitycontext/util.go``
    (``DetermineEffectiveSecurityContext``: container fields
    override pod fields): ``runAsNonRoot: true`` with ``runAsUser: 0`` is refused; without a
    ``runAsUser`` the image's user decides, and an image that runs as root is refused
    ("container has runAsNonRoot and image will run as root").
    """
    problems = []
    pod_sc = as_dict(pod.spec.get("securityContext"))
    for container in pod.init_containers + pod.containers:
        sc = as_dict(container.spec.get("securityContext"))
        non_root, non_root_at = _effective(sc, pod_sc, "runAsNonRoot", container, pod)
        if non_root is not True:
            continue
        user, user_at = _effective(sc, pod_sc, "runAsUser", container, pod)
        name = container.spec.get("name")
        if user == 0:
            problems.append(
                Problem(
                    user_at,
                    f"container {name}'s runAsUser 0 breaks runAsNonRoot (the kubelet refuses to start it)",
                    "kubelet/run-as-non-root",
                )
            )
        elif user is None and container.image_user == 0:
            problems.append(
                Problem(
                    non_root_at,
                    f"{container.injected_by} adds container {name}, which runs as root: "
                    'with runAsNonRoot and no non-root runAsUser the kubelet refuses it ("container '
                    'has runAsNonRoot and image will run as root"); set a non-root runAsUser/'
                    "runAsGroup at pod level, or set runAsNonRoot on your own containers only",
                    "kubelet/run-as-non-root",
                )
            )
    return problems


def _effective(sc: dict, pod_sc: dict, key: str, container: Container, pod: Pod) -> tuple[object, str]:
    """A security-context field as the container sees it, and the path where it is set."""
    if key in sc:
        return sc[key], f"{container.path}.securityContext.{key}"
    return pod_sc.get(key), child(child(pod.path, "securityContext"), key)


def resource_limits(container: Container) -> list[Problem]:
    """The API server's requests-vs-limits rules for one container.

    kubernetes ``pkg/apis/core/validation/validation.go``@a7264f95
    (``ValidateResourceRequirements``, ``ValidateResourceQuantityValue``): a request may not
    exceed its limit; an extended resource (``nvidia.com/gpu``: a name with a domain outside
    ``kubernetes.io``) is a whole number and cannot be overcommitted, so it needs a limit, and a
    request, if stated, equal to it. The pod is never created otherwise.
    """
    requests = as_dict(container.resources.get("requests"))
    limits = as_dict(container.resources.get("limits"))
    problems = [
        Problem(
            child(child(container.resources_path, kind), name),
            f"Invalid value: {value}: must be an integer",
            "apiserver/extended-resource-limit",
        )
        for kind, quantities in (("limits", limits), ("requests", requests))
        for name, value in quantities.items()
        if _is_extended(name) and (_quantity(value) or 0) % 1 != 0
    ]
    for name, request in requests.items():
        where = child(child(container.resources_path, "requests"), name)
        if name not in limits:
            if _is_extended(name):
                problems.append(
                    Problem(
                        child(child(container.resources_path, "limits"), name),
                        "Required value: Limit must be set for non overcommitable "
                        f"resources (requests[{name}] alone is refused)",
                        "apiserver/extended-resource-limit",
                    )
                )
            continue
        difference = _compare(request, limits[name])
        if difference is None:
            continue
        if difference != 0 and _is_extended(name):
            problems.append(
                Problem(
                    where,
                    f"Invalid value: {request}: must be equal to {name} limit",
                    "apiserver/extended-resource-limit",
                )
            )
        elif difference > 0:
            problems.append(
                Problem(
                    where,
                    f"Invalid value: {request}: must be less than or equal to {name} limit",
                    "apiserver/request-above-limit",
                )
            )
    return problems


def qos(pod: Pod) -> list[Problem]:
    """This project's policy: every container states cpu and memory requests and limits.

    A pod with none is BestEffort, evicted first under node pressure (kubernetes
    ``pkg/apis/core/helper/qos/qos.go`` ``GetPodQOS``); an admin's LimitRange or quota may refuse
    it outright. Requests equal to limits make it Guaranteed.
    """
    problems = []
    for container in pod.containers:
        missing = [
            f"{kind}.{name}"
            for kind in ("requests", "limits")
            for name in QOS_RESOURCES
            if name not in as_dict(container.resources.get(kind))
        ]
        if missing:
            problems.append(
                Problem(
                    container.resources_path,
                    f"container "
                    f"{container.spec.get('name')} lacks {', '.join(missing)}: "
                    "state cpu and memory requests and limits, so the pod is not "
                    "BestEffort (evicted first)",
                    "qos/requests-and-limits",
                )
            )
    return problems


def memory_backed_volumes(pod: Pod) -> list[Problem]:
    """A ``medium: Memory`` emptyDir (``/dev/shm``) is tmpfs, charged to the pod's memory limit.

    Its pages count against the pod's memory cgroup, and without ``sizeLimit`` the tmpfs may grow
    to the pod's whole memory limit (kubernetes ``pkg/volume/emptydir/empty_dir.go``
    ``calculateEmptyDirMemorySize``): the processes are OOM-killed when shm and their own memory
    together pass it. So a sizeLimit is stated, below the sum of the containers' memory limits.
    """
    limit = sum(
        (_quantity(as_dict(c.resources.get("limits")).get("memory")) or 0 for c in pod.containers),
        Fraction(0),
    )
    problems = []
    for i, volume in enumerate(as_list(pod.spec.get("volumes"))):
        empty_dir = as_dict(as_dict(volume).get("emptyDir"))
        if empty_dir.get("medium") != "Memory":
            continue
        where = f"{child(pod.path, 'volumes')}[{i}].emptyDir.sizeLimit"
        size = _quantity(empty_dir.get("sizeLimit"))
        if size is None:
            problems.append(
                Problem(
                    where,
                    "Required value: a memory-backed emptyDir counts "
                    "against the memory limit; state a sizeLimit below it",
                    "qos/shm-memory",
                )
            )
        elif limit and size >= limit:
            problems.append(
                Problem(
                    where,
                    f"Invalid value: {empty_dir['sizeLimit']}: a memory-"
                    "backed emptyDir counts against the memory limit, and this "
                    "leaves nothing of the containers' memory limits "
                    f"({_format_bytes(limit)}) for the processes",
                    "qos/shm-memory",
                )
            )
    return problems


def _is_extended(name: str) -> bool:
    """``helper.IsExtendedResourceName``-like: a domain-prefixed name outside kubernetes.io."""
    name = str(name)
    return "/" in name and "kubernetes.io/" not in name and not name.startswith("requests.")


def _compare(a: object, b: object) -> int | None:
    qa, qb = _quantity(a), _quantity(b)
    if qa is None or qb is None:
        return None
    return (qa > qb) - (qa < qb)


def _format_bytes(value: Fraction) -> str:
    return f"{float(value) / 2**30:.3g}Gi"
