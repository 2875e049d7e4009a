"""``hfai-runtime check`` rule by rule, from the table of docs/check.md (hfai_runtime.check.rules).

The good manifests are the template's own, rendered by copier (a 4-node PyTorchJob, the TrainJob
with its TrainingRuntime, the eval Job); each case breaks one of them in one place and expects
exactly its rule (a few breaks trip a second rule too, as on a cluster: listed with the case).
Every rule of the table has a case, and the table in docs/check.md is the table in the code.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from hfai_runtime.check import check_documents
from hfai_runtime.check.rules import RULES, markdown_table
from hfai_runtime.cli import main

DOCS = Path(__file__).resolve().parent.parent / "docs" / "check.md"


def _load(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


@pytest.fixture(scope="module")
def good(projects) -> dict[str, list[dict]]:
    """Rendered manifests: name -> the documents checked together."""
    trainjob = projects["trainjob"] / "k8s"
    return {
        "pytorchjob": _load(projects["multinode"] / "k8s" / "job.yaml"),
        "trainjob": _load(trainjob / "runtime.yaml") + _load(trainjob / "job.yaml"),
        "runtime": _load(trainjob / "runtime.yaml"),
        "job": _load(projects["multinode"] / "k8s" / "eval-job.yaml"),
    }


# Where the mutations reach into each manifest.
def _master(docs):
    return docs[0]["spec"]["pytorchReplicaSpecs"]["Master"]


def _pj_pod(docs, role="Master"):
    return docs[0]["spec"]["pytorchReplicaSpecs"][role]["template"]["spec"]


def _rt_job(docs):
    return docs[0]["spec"]["template"]["spec"]["replicatedJobs"][0]


def _rt_pod(docs):
    return _rt_job(docs)["template"]["spec"]["template"]["spec"]


def _tj(docs):
    return docs[-1]


def _patch(docs):
    return _tj(docs)["spec"]["runtimePatches"][0]


def _patch_pod(docs):
    return _patch(docs)["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"][
        "template"
    ]["spec"]


def _job_pod(docs):
    return docs[0]["spec"]["template"]["spec"]


def _job_container(docs):
    return _job_pod(docs)["containers"][0]


def _set(getter: Callable, key: str, value) -> Callable:
    def mutate(docs):
        getter(docs)[key] = value

    return mutate


def _del(getter: Callable, key: str) -> Callable:
    return lambda docs: getter(docs).pop(key)


def _do(*mutations: Callable) -> Callable:
    def mutate(docs):
        for mutation in mutations:
            mutation(docs)

    return mutate


def _rename_volume(docs):
    pod = _pj_pod(docs)
    pod["volumes"][1]["name"] = "Storage"
    pod["containers"][0]["volumeMounts"][1]["name"] = "Storage"


# rule -> (good manifest, mutation, other rules the same break trips)
CASES: dict[str, tuple[str, Callable, set[str]]] = {
    "kind/unknown": ("job", lambda d: d[0].update(kind="CronJob"), set()),
    "schema/type": ("job", lambda d: d[0]["spec"].update(backoffLimit="zero"), set()),
    "schema/required": ("job", lambda d: d[0]["metadata"].pop("name"), set()),
    "schema/enum": (
        "runtime",
        lambda d: d[0]["spec"]["template"]["spec"]["failurePolicy"]["rules"][0].update(action="Explode"),
        set(),
    ),
    "schema/pattern": ("job", lambda d: _job_container(d)["resources"]["limits"].update(memory="4GB"), set()),
    "schema/unknown-field": ("job", _set(_job_pod, "terminationGracePeriod", 30), set()),
    "schema/duplicate": (
        "pytorchjob",
        lambda d: _pj_pod(d)["volumes"].append(copy.deepcopy(_pj_pod(d)["volumes"][1])),
        set(),
    ),
    "crd/x-kubernetes-validations": ("trainjob", lambda d: _tj(d)["metadata"].update(name="a" * 70), set()),
    "apiserver/name": ("job", lambda d: d[0]["metadata"].update(namespace="Team_A"), set()),
    "apiserver/label": (
        "job",
        lambda d: d[0]["spec"]["template"]["metadata"]["labels"].update(app="bad value!"),
        set(),
    ),
    "apiserver/container-name": ("job", _set(_job_container, "name", "Eval_1"), set()),
    "apiserver/env-name": (
        "pytorchjob",
        lambda d: _pj_pod(d)["containers"][0]["env"].append({"name": "A=B", "value": "1"}),
        set(),
    ),
    "apiserver/volume-name": ("pytorchjob", _rename_volume, set()),
    "apiserver/volume-mount": (
        "job",
        lambda d: _job_container(d)["volumeMounts"][1].update(name="nope"),
        set(),
    ),
    "apiserver/sub-path": (
        "job",
        lambda d: _job_container(d)["volumeMounts"][1].update(subPath="../other-team"),
        set(),
    ),
    "apiserver/quantity": (
        "job",
        lambda d: _job_container(d)["resources"]["requests"].update(cpu="-1"),
        set(),
    ),
    "range/quantity": (
        "job",
        lambda d: _job_container(d)["resources"]["limits"].update(memory="1e999999999"),
        set(),
    ),
    "apiserver/request-above-limit": (
        "job",
        lambda d: _job_container(d)["resources"]["requests"].update(cpu="512"),
        set(),
    ),
    "apiserver/extended-resource-limit": (
        "job",
        lambda d: _job_container(d)["resources"]["requests"].update({"nvidia.com/gpu": 1}),
        set(),
    ),
    "apiserver/active-deadline": ("job", _set(_job_pod, "activeDeadlineSeconds", 0), set()),
    "apiserver/restart-policy": ("pytorchjob", lambda d: _master(d).update(restartPolicy="Sometimes"), set()),
    "apiserver/job-restart-policy": (
        "job",
        _do(_set(_job_pod, "restartPolicy", "Always"), lambda d: d[0]["spec"].pop("podFailurePolicy")),
        set(),
    ),
    "apiserver/job-count": ("job", lambda d: d[0]["spec"].update(backoffLimit=-1), set()),
    "apiserver/pod-failure-policy": (
        "runtime",
        lambda d: _rt_job(d)["template"]["spec"]["podFailurePolicy"]["rules"][1]["onExitCodes"].update(
            values=[143, 137]
        ),
        set(),
    ),
    "kubelet/run-as-non-root": (
        "pytorchjob",
        lambda d: _pj_pod(d, "Worker")["securityContext"].pop("runAsUser"),
        set(),
    ),
    "pytorchjob-webhook/name": ("pytorchjob", lambda d: d[0]["metadata"].update(name="9-lives"), set()),
    "pytorchjob-webhook/managed-by": (
        "pytorchjob",
        lambda d: d[0]["spec"]["runPolicy"].update(managedBy="example.com/mine"),
        set(),
    ),
    "pytorchjob-webhook/elastic": (
        "pytorchjob",
        lambda d: d[0]["spec"].update(elasticPolicy={"nProcPerNode": 2}),
        set(),
    ),
    "pytorchjob-webhook/replica-type": (
        "pytorchjob",
        lambda d: d[0]["spec"]["pytorchReplicaSpecs"].update(
            Chief=d[0]["spec"]["pytorchReplicaSpecs"].pop("Worker")
        ),
        set(),
    ),
    "pytorchjob-webhook/containers": (
        "pytorchjob",
        _set(_pj_pod, "containers", []),
        {"pytorchjob-webhook/container-name"},
    ),
    "pytorchjob-webhook/image": ("pytorchjob", lambda d: _pj_pod(d)["containers"][0].pop("image"), set()),
    "pytorchjob-webhook/container-name": (
        "pytorchjob",
        lambda d: _pj_pod(d)["containers"][0].update(name="trainer"),
        set(),
    ),
    "pytorchjob-webhook/master-replicas": ("pytorchjob", lambda d: _master(d).update(replicas=2), set()),
    "pytorchjob-webhook/worker-replicas": (
        "pytorchjob",
        lambda d: d[0]["spec"]["pytorchReplicaSpecs"]["Worker"].update(replicas=0),
        set(),
    ),
    "trainjob-webhook/manager": ("trainjob", lambda d: _patch(d).update(manager="d2"), set()),
    "trainjob-webhook/patch-job": (
        "trainjob",
        lambda d: _patch(d)["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0].update(
            name="launcher"
        ),
        set(),
    ),
    "trainjob-webhook/patch-container": (
        "trainjob",
        lambda d: _patch_pod(d)["containers"][0].update(name="sidecar"),
        set(),
    ),
    "trainjob-webhook/patch-env": (
        "trainjob",
        lambda d: _patch_pod(d)["containers"][0].update(env=[{"name": "X", "value": "1"}]),
        set(),
    ),
    "trainjob-webhook/reserved-env": (
        "trainjob",
        lambda d: _tj(d)["spec"]["trainer"]["env"].append({"name": "PET_NNODES", "value": "2"}),
        set(),
    ),
    "trainingruntime-webhook/replicas": ("runtime", lambda d: _rt_job(d).update(replicas=2), set()),
    "trainingruntime-webhook/ancestor-container": (
        "runtime",
        lambda d: _rt_pod(d)["containers"][0].update(name="trainer"),
        {"apiserver/pod-failure-policy"},
    ),
    "qos/requests-and-limits": ("job", lambda d: _job_container(d).pop("resources"), set()),
    "qos/shm-memory": ("job", lambda d: _job_pod(d)["volumes"][0]["emptyDir"].update(sizeLimit="1Ei"), set()),
}


def test_every_rule_of_the_table_has_a_case():
    assert set(CASES) == set(RULES)


def test_docs_check_md_holds_the_rule_table():
    assert markdown_table() in DOCS.read_text(), (
        "regenerate docs/check.md's table: hfai_runtime.check.rules.markdown_table()"
    )


@pytest.mark.parametrize("name", ["pytorchjob", "trainjob", "runtime", "job"])
def test_the_good_manifests_are_clean(good, name):
    assert check_documents(good[name]) == []


@pytest.mark.parametrize("rule", list(RULES))
def test_one_broken_field_is_refused_by_its_rule(good, rule):
    base, mutate, also = CASES[rule]
    docs = copy.deepcopy(good[base])
    mutate(docs)
    problems = check_documents(docs)
    assert {p.rule for p in problems} == {rule} | also, "\n".join(map(str, problems))
    assert all(p.cluster_refuses == RULES[p.rule].refused for p in problems)


def test_quantities_up_to_exbibytes_are_accepted(good):
    docs = copy.deepcopy(good["job"])
    resources = _job_container(docs)["resources"]
    resources["requests"]["memory"] = resources["limits"]["memory"] = "1Ei"
    assert check_documents(docs) == []


def test_advice_is_a_warning_unless_strict(good, tmp_path, capsys):
    docs = copy.deepcopy(good["job"])
    _job_container(docs).pop("resources")
    path = tmp_path / "eval-job.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("warning: ") and "qos/" not in out and "BestEffort" in out
    assert main(["check", "--strict", str(path)]) == 1


def test_a_trainjob_is_judged_with_the_runtime_given_beside_it(good, tmp_path, capsys):
    """``check k8s/runtime.yaml k8s/job.yaml``: the TrainJob's patches are checked against the
    project's runtime (its replicated Jobs and containers), as the Trainer webhook does; alone,
    the runtime is unknown and those rules are left to the cluster."""
    runtime, trainjob = copy.deepcopy(good["trainjob"])
    _patch_pod([trainjob])["containers"][0]["name"] = "sidecar"
    (tmp_path / "runtime.yaml").write_text(yaml.safe_dump(runtime))
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(trainjob))
    assert main(["check", str(tmp_path / "job.yaml")]) == 0
    capsys.readouterr()
    assert main(["check", str(tmp_path / "runtime.yaml"), str(tmp_path / "job.yaml")]) == 1
    assert "must not have container that doesn't exist in the runtime job node" in capsys.readouterr().out
