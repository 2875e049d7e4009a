"""``hfai-runtime check``: each rule refuses one bad manifest, naming the field and the rule.

Good manifests are written here in full; each bad one is a good one with one mutation, so a
problem the check reports can only come from that mutation (the assertions compare the whole
list of problems). The CRDs, their CEL rules and the CEL library are the real ones.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hfai_runtime.check
from hfai_runtime.check import ManifestError, Problem, check_documents, check_file
from hfai_runtime.check.cel import UnsupportedRule, compile_rule
from hfai_runtime.check.names import domain_prefixed_path_error
from hfai_runtime.check.rules import RULES
from hfai_runtime.check.runtimes import STOCK, runtime_of
from hfai_runtime.check.schema import crd_schemas
from hfai_runtime.cli import main

POD_SECURITY = {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000}
RESOURCES = {
    "requests": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": 4},
    "limits": {"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": 4},
}
SHM = {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}}


def _pod_spec(**container) -> dict:
    """The pod fields the template writes, around one ``container`` with ``/dev/shm`` mounted."""
    return {
        "terminationGracePeriodSeconds": 120,
        "securityContext": dict(POD_SECURITY),
        "volumes": [copy.deepcopy(SHM)],
        "containers": [
            {
                **container,
                "securityContext": {"allowPrivilegeEscalation": False},
                "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
            }
        ],
    }


def _replica(replicas: int) -> dict:
    container = {
        "name": "pytorch",
        "image": "registry.example.com/d2:0.1.0",
        "command": ["tini", "--", "python", "train_net.py"],
        "resources": copy.deepcopy(RESOURCES),
    }
    return {"replicas": replicas, "restartPolicy": "ExitCode", "template": {"spec": _pod_spec(**container)}}


GOOD_PYTORCHJOB = {
    "apiVersion": "kubeflow.org/v1",
    "kind": "PyTorchJob",
    "metadata": {"name": "d2-job", "labels": {"kueue.x-k8s.io/queue-name": "team-a"}},
    "spec": {
        "nprocPerNode": "4",
        "runPolicy": {"backoffLimit": 80, "cleanPodPolicy": "Running"},
        "pytorchReplicaSpecs": {"Master": _replica(1), "Worker": _replica(3)},
    },
}

GOOD_TRAINJOB = {
    "apiVersion": "trainer.kubeflow.org/v1alpha1",
    "kind": "TrainJob",
    "metadata": {"name": "d2-job"},
    "spec": {
        "runtimeRef": {"name": "torch-distributed"},
        "trainer": {
            "image": "registry.example.com/d2:0.1.0",
            "command": ["tini", "--", "python", "train_net.py"],
            "numNodes": 2,
            "numProcPerNode": 4,
            "resourcesPerNode": copy.deepcopy(RESOURCES),
            "env": [{"name": "DETECTRON2_DATASETS", "value": "/mnt/data/datasets"}],
        },
        "runtimePatches": [
            {
                "manager": "example.com/d2-hfai-template",
                "trainingRuntimeSpec": {
                    "template": {
                        "spec": {
                            "replicatedJobs": [
                                {
                                    "name": "node",
                                    "template": {"spec": {"template": {"spec": _pod_spec(name="node")}}},
                                }
                            ]
                        }
                    }
                },
            }
        ],
    },
}

GOOD_RUNTIME = {
    "apiVersion": "trainer.kubeflow.org/v1alpha1",
    "kind": "TrainingRuntime",
    "metadata": {"name": "d2-runtime"},
    "spec": {
        "mlPolicy": {"numNodes": 1, "torch": {}},
        "template": {
            "spec": {
                "replicatedJobs": [
                    {
                        "name": "trainer-job",
                        "template": {
                            "metadata": {
                                "labels": {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}
                            },
                            "spec": {
                                "template": {
                                    "spec": {
                                        "containers": [
                                            {"name": "node", "image": "registry.example.com/d2:0.1.0"}
                                        ]
                                    }
                                }
                            },
                        },
                    }
                ]
            }
        },
    },
}

MASTER = "spec.pytorchReplicaSpecs.Master"
WORKER = "spec.pytorchReplicaSpecs.Worker"
M_POD, W_POD = f"{MASTER}.template.spec", f"{WORKER}.template.spec"
PATCH = "spec.runtimePatches[0]"
PATCH_JOB = f"{PATCH}.trainingRuntimeSpec.template.spec.replicatedJobs[0]"
PATCH_POD = f"{PATCH_JOB}.template.spec.template.spec"


def _parts(path: str) -> list[str | int]:
    """The keys of a path as problems write it: ``a.b[0].c[nvidia.com/gpu]``."""
    return [
        int(index) if index.isdigit() else index or key
        for key, index in re.findall(r"([^.\[\]]+)|\[([^\]]+)\]", path)
    ]


def _parent(doc: dict, path: str) -> tuple[dict | list, str | int]:
    *parents, last = _parts(path)
    for key in parents:
        doc = doc[key]
    return doc, last


def _set(path: str, value) -> Callable[[dict], None]:
    def mutate(doc: dict) -> None:
        parent, key = _parent(doc, path)
        parent[key] = value

    return mutate


def _delete(path: str) -> Callable[[dict], None]:
    def mutate(doc: dict) -> None:
        parent, key = _parent(doc, path)
        del parent[key]

    return mutate


def _all(*mutations: Callable[[dict], None]) -> Callable[[dict], None]:
    return lambda doc: [mutate(doc) for mutate in mutations]


def _bad_value(case_id: str, path: str, value, rule: str) -> tuple:
    """A case that sets ``path`` to ``value`` and expects ``rule`` to name ``path``."""
    return (case_id, _set(path, value), [(path, rule)])


def _bad_missing(case_id: str, path: str, rule: str) -> tuple:
    """A case that deletes ``path`` and expects ``rule`` to name it."""
    return (case_id, _delete(path), [(path, rule)])


def _problems(doc: dict, *others: dict) -> list[tuple[str, str]]:
    return [
        (p.field, p.rule)
        for p in check_documents([doc, *others])
        if p.source in ("<manifest>", "<manifest>#1")
    ]


# (id, good manifest, mutation, [(field, rule)] expected, exactly)
BAD_PYTORCHJOBS = [
    _bad_value("unknown-field", f"{W_POD}.terminationGracePeriod", 30, "schema/unknown-field"),
    _bad_value("wrong-type", f"{WORKER}.replicas", "three", "schema/type"),
    _bad_missing("no-name", "metadata.name", "schema/required"),
    _bad_value("name-not-dns1035", "metadata.name", "9-lives", "pytorchjob-webhook/name"),
    (
        "replica-key",
        lambda d: d["spec"]["pytorchReplicaSpecs"].update(
            Chief=d["spec"]["pytorchReplicaSpecs"].pop("Worker")
        ),
        [("spec.pytorchReplicaSpecs.Chief", "pytorchjob-webhook/replica-type")],
    ),
    _bad_missing("master-replicas-unstated", f"{MASTER}.replicas", "pytorchjob-webhook/master-replicas"),
    _bad_value("master-replicas-2", f"{MASTER}.replicas", 2, "pytorchjob-webhook/master-replicas"),
    _bad_value("worker-replicas-0", f"{WORKER}.replicas", 0, "pytorchjob-webhook/worker-replicas"),
    (
        "no-pytorch-container",
        _set(f"{W_POD}.containers[0].name", "main"),
        [(f"{W_POD}.containers", "pytorchjob-webhook/container-name")],
    ),
    _bad_missing("no-image", f"{M_POD}.containers[0].image", "pytorchjob-webhook/image"),
    (
        "no-containers",
        _set(f"{M_POD}.containers", []),
        [
            (f"{M_POD}.containers", "pytorchjob-webhook/containers"),
            (f"{M_POD}.containers", "pytorchjob-webhook/container-name"),
        ],
    ),
    (
        "elastic-without-worker",
        _all(_set("spec.elasticPolicy", {"maxReplicas": 4}), _delete(WORKER)),
        [("spec.pytorchReplicaSpecs.Worker", "pytorchjob-webhook/elastic")],
    ),
    (
        "elastic-nproc-twice",
        _set("spec.elasticPolicy", {"nProcPerNode": 4}),
        [("spec.elasticPolicy.nProcPerNode", "pytorchjob-webhook/elastic")],
    ),
    _bad_value("restart-policy", f"{WORKER}.restartPolicy", "Sometimes", "apiserver/restart-policy"),
    # validateLocalDescendingPath (validation.go): run-local would write outside --data-dir.
    _bad_value(
        "sub-path-absolute", f"{W_POD}.containers[0].volumeMounts[0].subPath", "/etc", "apiserver/sub-path"
    ),
    _bad_value(
        "sub-path-up", f"{M_POD}.containers[0].volumeMounts[0].subPath", "a/../../b", "apiserver/sub-path"
    ),
    _bad_value("label-value-too-long", "metadata.labels.app", "d2-" + "x" * 61, "apiserver/label"),
    _bad_value("label-key", "metadata.labels[-bad-/key]", "v", "apiserver/label"),
    _bad_value("label-not-a-string", "metadata.labels.version", 1, "schema/type"),
    _bad_value("managed-by", "spec.runPolicy.managedBy", "example.com/mine", "pytorchjob-webhook/managed-by"),
    # The template's bug (issue item 3): pod-level runAsNonRoot without runAsUser. Only Workers
    # get the root init container init-pytorch, so only the Worker is refused.
    (
        "run-as-non-root-vs-init-pytorch",
        _all(_delete(f"{M_POD}.securityContext.runAsUser"), _delete(f"{W_POD}.securityContext.runAsUser")),
        [(f"{W_POD}.securityContext.runAsNonRoot", "kubelet/run-as-non-root")],
    ),
    _bad_value(
        "run-as-user-0", f"{M_POD}.containers[0].securityContext.runAsUser", 0, "kubelet/run-as-non-root"
    ),
    _bad_missing(
        "gpu-request-without-limit",
        f"{W_POD}.containers[0].resources.limits[nvidia.com/gpu]",
        "apiserver/extended-resource-limit",
    ),
    _bad_value(
        "gpu-request-not-limit",
        f"{W_POD}.containers[0].resources.requests[nvidia.com/gpu]",
        2,
        "apiserver/extended-resource-limit",
    ),
    (
        "half-a-gpu",
        _all(
            _set(f"{W_POD}.containers[0].resources.limits[nvidia.com/gpu]", "500m"),
            _delete(f"{W_POD}.containers[0].resources.requests[nvidia.com/gpu]"),
        ),
        [(f"{W_POD}.containers[0].resources.limits[nvidia.com/gpu]", "apiserver/extended-resource-limit")],
    ),
    _bad_value(
        "cpu-request-above-limit",
        f"{M_POD}.containers[0].resources.requests.cpu",
        "32",
        "apiserver/request-above-limit",
    ),
    _bad_missing("best-effort", f"{M_POD}.containers[0].resources", "qos/requests-and-limits"),
    (
        "no-memory-limit",
        _delete(f"{W_POD}.containers[0].resources.limits.memory"),
        [(f"{W_POD}.containers[0].resources", "qos/requests-and-limits")],
    ),
    _bad_value("shm-fills-memory-limit", f"{W_POD}.volumes[0].emptyDir.sizeLimit", "64Gi", "qos/shm-memory"),
    _bad_missing("shm-unbounded", f"{W_POD}.volumes[0].emptyDir.sizeLimit", "qos/shm-memory"),
    ("unknown-version", _set("apiVersion", "kubeflow.org/v2"), [("kind", "kind/unknown")]),
]

BAD_TRAINJOBS = [
    # The template's bug (issue item 2): a manager that is not a domain-prefixed path.
    _bad_value(
        "manager-not-domain-prefixed", f"{PATCH}.manager", "d2-hfai-template", "trainjob-webhook/manager"
    ),
    _bad_value("manager-host-not-rfc1123", f"{PATCH}.manager", "Example.com/d2", "trainjob-webhook/manager"),
    _bad_value(
        "manager-path-chars", f"{PATCH}.manager", "example.com/d2 template", "trainjob-webhook/manager"
    ),
    _bad_value("patch-restart-policy", f"{PATCH_POD}.restartPolicy", "Never", "schema/unknown-field"),
    _bad_value("patch-container-image", f"{PATCH_POD}.containers[0].image", "x:1", "schema/unknown-field"),
    _bad_value(
        "patch-node-env",
        f"{PATCH_POD}.containers[0].env",
        [{"name": "A", "value": "1"}],
        "trainjob-webhook/patch-env",
    ),
    _bad_value("patch-unknown-job", f"{PATCH_JOB}.name", "launcher", "trainjob-webhook/patch-job"),
    _bad_value(
        "patch-unknown-container",
        f"{PATCH_POD}.containers[0].name",
        "sidecar",
        "trainjob-webhook/patch-container",
    ),
    (
        "reserved-env",
        lambda d: d["spec"]["trainer"]["env"].append({"name": "PET_MASTER_PORT", "value": "1234"}),
        [("spec.trainer.env", "trainjob-webhook/reserved-env")],
    ),
    (
        "duplicate-manager",
        lambda d: d["spec"]["runtimePatches"].append(copy.deepcopy(d["spec"]["runtimePatches"][0])),
        [("spec.runtimePatches[1]", "schema/duplicate")],
    ),
    # x-kubernetes-validations rules of the TrainJob CRD, evaluated by cel-python.
    _bad_value("cel-managed-by", "spec.managedBy", "example.com/controller", "crd/x-kubernetes-validations"),
    ("cel-name-rfc1035", _set("metadata.name", "9-lives"), [("", "crd/x-kubernetes-validations")]),
    (
        "cel-storage-uri",
        _set("spec.initializer", {"dataset": {"storageUri": "no-scheme"}}),
        [("spec.initializer.dataset.storageUri", "crd/x-kubernetes-validations")],
    ),
    _bad_missing(
        "gpu-request-without-limit",
        "spec.trainer.resourcesPerNode.limits[nvidia.com/gpu]",
        "apiserver/extended-resource-limit",
    ),
    _bad_missing("best-effort", "spec.trainer.resourcesPerNode", "qos/requests-and-limits"),
    _bad_value("run-as-user-0", f"{PATCH_POD}.securityContext.runAsUser", 0, "kubelet/run-as-non-root"),
    _bad_value(
        "shm-fills-memory-limit", f"{PATCH_POD}.volumes[0].emptyDir.sizeLimit", "80Gi", "qos/shm-memory"
    ),
]


def test_every_rule_has_a_bad_manifest() -> None:
    """Each rule id the checker can report is asserted by at least one case here."""
    package = Path(hfai_runtime.check.__file__).parent
    source = "\n".join(path.read_text() for path in package.glob("*.py"))
    rule_id = r'"((?:crd|kind|[a-z]+-webhook|kubelet|apiserver|qos)/[a-z-]+)"'
    rules = set(re.findall(rule_id, source))
    assert len(rules) >= 20  # the pattern still finds the ids in the source
    rules |= {f"schema/{name}" for name in ("required", "type", "unknown-field", "duplicate")}
    tested = {rule for case in BAD_PYTORCHJOBS + BAD_TRAINJOBS for _, rule in case[2]}
    tested |= {"kind/unknown", "crd/x-kubernetes-validations"}  # tests below
    tested |= set(RULES)  # each broken once in tests/test_check_rules.py
    assert rules <= tested, sorted(rules - tested)


def test_good_manifests_pass() -> None:
    assert check_documents([GOOD_PYTORCHJOB]) == []
    assert check_documents([GOOD_TRAINJOB]) == []
    single_node = copy.deepcopy(GOOD_PYTORCHJOB)
    del single_node["spec"]["pytorchReplicaSpecs"]["Worker"]
    assert check_documents([single_node]) == []


BAD_CASES = [
    pytest.param(good, mutate, expected, id=f"{good['kind']}-{case_id}")
    for good, cases in ((GOOD_PYTORCHJOB, BAD_PYTORCHJOBS), (GOOD_TRAINJOB, BAD_TRAINJOBS))
    for case_id, mutate, expected in cases
]


@pytest.mark.parametrize("good, mutate, expected", BAD_CASES)
def test_bad_manifest(good, mutate, expected) -> None:
    doc = copy.deepcopy(good)
    mutate(doc)
    assert _problems(doc) == expected


def test_trainjob_checked_against_a_runtime_beside_it() -> None:
    """A runtime in the same file is what the TrainJob's patches are checked against."""
    job = copy.deepcopy(GOOD_TRAINJOB)
    job["spec"]["runtimeRef"] = {"name": "d2-runtime", "kind": "TrainingRuntime"}
    assert _problems(job, GOOD_RUNTIME) == [(f"{PATCH_JOB}.name", "trainjob-webhook/patch-job")]
    _set(f"{PATCH_JOB}.name", "trainer-job")(job)
    assert check_documents([job, GOOD_RUNTIME]) == []


def test_stock_runtime_is_the_shipped_one() -> None:
    """What the check assumes of ``torch-distributed`` is what Trainer v2.3.0 installs (the Helm
    template's ``{{ }}`` lines only add labels), and that runtime passes the check itself."""
    text = (
        Path(hfai_runtime.check.__file__).parent / "crds" / "torch-distributed-runtime.helm-template.txt"
    ).read_text()
    runtime = yaml.safe_load("\n".join(line for line in text.splitlines() if "{{" not in line))
    assert runtime_of(runtime["spec"]) == STOCK[("ClusterTrainingRuntime", "torch-distributed")]
    assert check_documents([runtime]) == []


def test_runtime_cel_rule_with_filter_macro() -> None:
    """The (Cluster)TrainingRuntime CRD's one-policy rule: a list, ``has``, ``filter``, ``size``."""
    runtime = copy.deepcopy(GOOD_RUNTIME)
    runtime["spec"]["mlPolicy"]["mpi"] = {}
    assert _problems(runtime) == [("spec.mlPolicy", "crd/x-kubernetes-validations")]


def test_cel_rules_wait_for_a_valid_object() -> None:
    """Like the API server, a type error stops the CEL rules (here the managedBy rule)."""
    doc = copy.deepcopy(GOOD_TRAINJOB)
    doc["spec"]["managedBy"] = "example.com/controller"
    doc["spec"]["trainer"]["numNodes"] = "two"
    assert _problems(doc) == [("spec.trainer.numNodes", "schema/type")]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_mangled_manifest_gives_problems_not_exceptions(data) -> None:
    """Rules read documents whose schema is wrong: one value anywhere replaced by any JSON value
    yields a list of problems (possibly empty), never an exception."""
    doc = copy.deepcopy(data.draw(st.sampled_from([GOOD_PYTORCHJOB, GOOD_TRAINJOB, GOOD_RUNTIME])))
    paths = list(_paths(doc))
    parent, key = data.draw(st.sampled_from(paths))
    parent[key] = data.draw(JSON)
    for problem in check_documents([doc]):
        assert isinstance(problem, Problem) and "\n" not in str(problem)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _paths(value):
    """Every ``(container, key)`` of a document, to replace the value there."""
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        yield value, key
        if isinstance(item, (dict, list)):
            yield from _paths(item)


def test_unquoted_dates_stay_strings(tmp_path) -> None:
    """kubectl sends YAML as JSON, so an unquoted date in a label is the string it reads as."""
    path = tmp_path / "job.yaml"
    text = yaml.safe_dump(GOOD_PYTORCHJOB, sort_keys=False)
    path.write_text(text.replace("queue-name: team-a", "queue-name: team-a\n    since: 2026-01-01"))
    assert check_file(path) == []


def test_unchecked_and_unknown_kinds() -> None:
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}}
    problems = check_documents([config, GOOD_PYTORCHJOB, deployment, ["a list"]], source="job.yaml")
    assert [(p.source, p.field, p.rule) for p in problems] == [
        ("job.yaml#3", "kind", "kind/unknown"),
        ("job.yaml#4", "", "kind/unknown"),
    ]


def test_a_batch_job_gets_the_pod_rules() -> None:
    """A core ``batch/v1`` Job (the project's eval and pack jobs) has no CRD here, but its pod
    meets the Pod rules: a memory-backed volume as large as the memory limit is refused."""
    container = {
        "name": "pack",
        "image": "img:1",
        "resources": {"requests": {"cpu": "1", "memory": "4Gi"}, "limits": {"cpu": "1", "memory": "4Gi"}},
    }
    pod = {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}}],
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "pack"},
        "spec": {"template": {"spec": pod}},
    }
    problems = check_documents([job], source="pack-job.yaml")
    assert [(p.field, p.rule) for p in problems] == [
        ("spec.template.spec.volumes[0].emptyDir.sizeLimit", "qos/shm-memory")
    ]
    pod["volumes"] = []
    assert check_documents([job]) == []


def test_every_crd_rule_compiles_without_kubernetes_extensions() -> None:
    """Every shipped ``x-kubernetes-validations`` rule compiles in the CEL environment; one
    calling a Kubernetes extension function (here the lists library's ``isSorted``) is refused."""
    rules = {
        rule["rule"]
        for schema in crd_schemas().values()
        for node in _schema_nodes(schema)
        for rule in node.get("x-kubernetes-validations", ())
    }
    assert len(rules) >= 8
    transitions = {rule for rule in rules if compile_rule(rule)[1]}
    assert transitions == {"self == oldSelf"}
    with pytest.raises(UnsupportedRule, match="isSorted"):
        compile_rule("self.items.isSorted()")


def _schema_nodes(schema: dict):
    """Every node of a schema, whether a manifest uses it or not."""
    yield schema
    for sub in (
        *schema.get("properties", {}).values(),
        schema.get("items"),
        schema.get("additionalProperties"),
    ):
        if isinstance(sub, dict):
            yield from _schema_nodes(sub)


# apimachinery pkg/util/validation/validation_test.go@v0.36.2 TestIsDomainPrefixedPath's values.
GOOD_PATHS = [
    "a/b",
    "a/b/c/d",
    "a.com/foo",
    "a.b.c.d/foo",
    "k8s.io/foo/bar",
    "k8s.io/FOO/BAR",
    "dev.k8s.io/more/path",
    "this.is.a.really.long.fqdn/even/longer/path/just/because",
    "bbc.co.uk/path/goes/here",
    "10.0.0.1/foo",
    "hyphens-are-good.k8s.io/and-in-paths-too",
    "a" * 240 + ".k8s.io/a",
    "k8s.io/" + "a" * 240,
]
BAD_PATHS = [
    ".",
    "...",
    "/b",
    "com",
    ".com",
    "a.b.c.d/foo?a=b",
    "a.b.c.d/foo#a",
    "Dev.k8s.io",
    ".foo.example.com",
    "*.example.com",
    "example.com/foo{}[]@^`",
    "underscores_are_bad.k8s.io",
    "underscores_are_bad.k8s.io/foo",
    "foo@bar.example.com",
    "foo@bar.example.com/foo",
    "a" * 247 + ".k8s.io",
    "d2-hfai-template",
    "",
]


def test_domain_prefixed_path_as_apimachinery() -> None:
    assert [p for p in GOOD_PATHS if domain_prefixed_path_error(p)] == []
    assert [p for p in BAD_PATHS if not domain_prefixed_path_error(p)] == []


def test_problem_str_names_source_and_field() -> None:
    problem = Problem("spec.x", "Required value", "schema/required", "k8s/job.yaml")
    assert str(problem) == "k8s/job.yaml: spec.x: Required value"


# --- files and the command line ---------------------------------------------------------------


def _write(tmp_path, name: str, *docs: dict) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return str(path)


def test_cli_exit_0_for_clean_manifests(tmp_path, capsys) -> None:
    good = _write(tmp_path, "good.yaml", GOOD_PYTORCHJOB)
    good2 = _write(
        tmp_path,
        "good2.yaml",
        GOOD_TRAINJOB,
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}},
    )
    assert main(["check", good, good2]) == 0
    names = [d["metadata"]["name"] for d in (GOOD_PYTORCHJOB, GOOD_TRAINJOB)]
    assert capsys.readouterr().out.splitlines() == [
        f"{good}: ok: PyTorchJob {names[0]} (its CRD's schema and CEL rules, the training "
        "operator's webhook, the Pod and kubelet rules)",
        f"{good2}#1: ok: TrainJob {names[1]} (its CRD's schema and CEL rules, the Trainer webhook, "
        "its runtime's Pod and kubelet rules)",
        f"{good2}#2: ok: Service s (not checked: a core v1 object that travels with the job)",
    ], "success says what was checked"


def test_cli_exit_1_one_line_per_problem(tmp_path, capsys) -> None:
    doc = copy.deepcopy(GOOD_PYTORCHJOB)
    _delete(f"{M_POD}.securityContext.runAsUser")(doc)
    _delete(f"{W_POD}.securityContext.runAsUser")(doc)
    _set(f"{MASTER}.replicas", 2)(doc)
    path = _write(tmp_path, "job.yaml", doc)
    assert main(["check", path]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[:2] for line in lines] == [
        [path, f"{MASTER}.replicas"],
        [path, f"{W_POD}.securityContext.runAsNonRoot"],
    ]
    assert "image will run as root" in lines[1]


@pytest.mark.parametrize(
    "content, reason",
    [
        (None, "cannot read"),
        (b"spec: [unclosed\n", "line 2: not YAML"),
        (b"\xff\xfe\x00binary", "not UTF-8 text (byte 0)"),
        (b"- a list\n- not an object\n", "document 1 is a list"),
        (b"---\n", "no Kubernetes objects"),
    ],
    ids=["missing", "not-yaml", "binary", "list", "empty"],
)
def test_cli_exit_2_for_unreadable_input(tmp_path, capsys, content, reason) -> None:
    path = tmp_path / "job.yaml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ManifestError, match=re.escape(reason)):
        check_file(path)
    good = _write(tmp_path, "good.yaml", GOOD_PYTORCHJOB)
    assert main(["check", str(path), good]) == 2
    out, err = capsys.readouterr()
    assert out.count("\n") == 1 and out.startswith(f"{good}: ok: PyTorchJob "), (
        "the good file is still judged"
    )
    assert err.count("\n") == 1 and err.startswith(f"hfai-runtime check: {path}: ")


def test_names_are_matched_whole():
    """Go's regexp ``$`` does not match before a trailing newline; Python's does. Names, label
    values and domain-prefixed paths are matched whole, so a trailing newline is refused."""
    from hfai_runtime.check.names import (
        dns1035_label_error,
        dns1123_subdomain_error,
        domain_prefixed_path_error,
        label_value_error,
    )

    for check, good in [
        (dns1035_label_error, "det"),
        (dns1123_subdomain_error, "example.com"),
        (domain_prefixed_path_error, "example.com/det"),
        (label_value_error, "team-a"),
    ]:
        assert check(good) is None
        assert check(good + "\n") is not None, check.__name__
