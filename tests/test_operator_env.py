"""The env the Kubeflow operators inject, checked against the operator sources' rules.

The expected values are written out by hand from kubeflow/trainer v1.9.4 ``envvar.go``/
``master.go`` (PyTorchJob) and the v2.3.0 torch plugin (TrainJob), not computed.
"""

from __future__ import annotations

import copy

import pytest

from hfai_runtime.local.operator_env import injected_env


def pytorchjob(workers: int = 1, nproc=None, port: int | None = None) -> dict:
    container = {"name": "pytorch", "image": "img", "command": ["python", "train.py"]}
    if port is not None:
        container["ports"] = [{"name": "pytorchjob-port", "containerPort": port}]
    template = {"spec": {"containers": [container]}}
    job = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": "det"},
        "spec": {
            "pytorchReplicaSpecs": {
                "Master": {"replicas": 1, "restartPolicy": "ExitCode", "template": template},
                "Worker": {
                    "replicas": workers,
                    "restartPolicy": "ExitCode",
                    "template": copy.deepcopy(template),
                },
            }
        },
    }
    if nproc is not None:
        job["spec"]["nprocPerNode"] = nproc
    return job


def test_pytorchjob_master_with_integer_nproc():
    env = injected_env(pytorchjob(workers=2, nproc="4", port=30000), "Master", 0)
    assert env == {
        "PYTHONUNBUFFERED": "1",  # envvar.go@v1.9.4 setPodEnv ("0" before v1.7)
        "MASTER_PORT": "30000",
        "PET_MASTER_PORT": "30000",  # master.go@v1.9.4 MasterEnvVarGenerator
        "MASTER_ADDR": "det-master-0",
        "PET_MASTER_ADDR": "det-master-0",
        "WORLD_SIZE": "12",
        "RANK": "0",
        "PET_NPROC_PER_NODE": "4",
        "PET_NODE_RANK": "0",
        "PET_NNODES": "3",
    }


def test_pytorchjob_worker_rank_is_index_plus_one_and_auto_counts_one():
    env = injected_env(pytorchjob(workers=2), "Worker", 1)
    assert env["MASTER_ADDR"] == "det-master-0"
    assert env["MASTER_PORT"] == "23456"  # the defaulter's port when none is named
    assert env["RANK"] == env["PET_NODE_RANK"] == "2"
    assert env["WORLD_SIZE"] == "3"  # auto: pods x 1
    assert env["PET_NPROC_PER_NODE"] == "auto"
    assert env["PET_NNODES"] == "3"


def test_pytorchjob_yaml_int_nproc_and_lowercase_keys_refused():
    job = pytorchjob(workers=1, nproc=2)
    env = injected_env(job, "Worker", 0)
    assert (env["RANK"], env["WORLD_SIZE"], env["PET_NPROC_PER_NODE"]) == ("1", "4", "2")
    specs = job["spec"]["pytorchReplicaSpecs"]
    # The validating webhook runs before the controller's defaulter would camel-case the keys.
    specs["master"] = specs.pop("Master")
    with pytest.raises(ValueError, match=r"spec\.pytorchReplicaSpecs\.master: expected exactly"):
        injected_env(job, "Worker", 0)


def test_pytorchjob_elastic_and_unknown_types_are_refused():
    job = pytorchjob()
    job["spec"]["elasticPolicy"] = {"minReplicas": 1}
    with pytest.raises(ValueError, match=r"spec\.elasticPolicy"):
        injected_env(job, "Master", 0)
    with pytest.raises(ValueError, match=r"spec\.pytorchReplicaSpecs\.Chief"):
        injected_env(pytorchjob(), "Chief", 0)


@pytest.mark.parametrize("port", [None, "23456", 0, 70000])
def test_pytorchjob_bad_master_port_names_the_field(port):
    job = pytorchjob(port=1)
    job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["ports"] = [
        {"name": "pytorchjob-port"} if port is None else {"name": "pytorchjob-port", "containerPort": port}
    ]
    with pytest.raises(
        ValueError, match=r"Master\.template\.spec\.containers\[0\]\.ports\[0\]\.containerPort"
    ):
        injected_env(job, "Worker", 0)


def trainjob(**trainer) -> dict:
    return {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": "det"},
        "spec": {"runtimeRef": {"name": "torch-distributed"}, "trainer": trainer},
    }


def test_trainjob_gets_only_pet_variables():
    env = injected_env(trainjob(numNodes=2, numProcPerNode=4), "node", 1)
    assert env == {
        "PET_NNODES": "2",
        "PET_NPROC_PER_NODE": "4",
        "PET_NODE_RANK": "1",
        "PET_MASTER_ADDR": "det-node-0-0.det",
        "PET_MASTER_PORT": "29500",
    }


@pytest.mark.parametrize(
    "resources, expected",
    [
        (None, "1"),  # no resources: getNumCPUPerNode 0 -> max(1, 0)
        ({"limits": {"nvidia.com/gpu": 2, "cpu": 8}}, "auto"),
        ({"requests": {"nvidia.com/gpu": 1}}, "auto"),
        ({"limits": {"nvidia.com/gpu": 0, "cpu": 2}}, "2"),  # zero GPUs: the CPU count
        ({"limits": {"cpu": "2500m"}}, "3"),
        ({"requests": {"cpu": 3}}, "3"),
        ({"requests": {"cpu": 2}, "limits": {"cpu": 8}}, "2"),  # the request before the limit
        ({"requests": {"cpu": 0}, "limits": {"cpu": 4}}, "4"),  # a zero request: the limit
        ({"limits": {"memory": "4Gi"}}, "1"),
    ],
)
def test_trainjob_auto_nproc_follows_cpu_resources(resources, expected):
    trainer = {} if resources is None else {"resourcesPerNode": resources}
    env = injected_env(trainjob(**trainer), "node", 0)
    assert env["PET_NPROC_PER_NODE"] == expected
    assert env["PET_NNODES"] == "1"  # the stock torch-distributed runtime's numNodes


def test_trainjob_num_proc_per_node_is_an_integer_in_v2_3():
    with pytest.raises(ValueError, match=r"spec\.trainer\.numProcPerNode: expected a positive"):
        injected_env(trainjob(numProcPerNode="auto"), "node", 0)


def test_other_kinds_and_missing_names_are_refused():
    with pytest.raises(ValueError, match="kind: expected PyTorchJob, TrainJob or Job, got 'Deployment'"):
        injected_env({"kind": "Deployment"}, "Master", 0)
    # A plain batch/v1 Job has no operator: its pod sees only its own env.
    assert injected_env({"kind": "Job", "metadata": {"name": "x"}}, "job", 0) == {}
    job = trainjob()
    del job["metadata"]["name"]
    with pytest.raises(ValueError, match=r"metadata\.name"):
        injected_env(job, "node", 0)
