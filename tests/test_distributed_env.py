"""DistEnv.from_environ: each cluster's environment, as each operator sets it."""

from __future__ import annotations

import pytest

from hfai_runtime.distributed.env import DistEnv


def test_nothing_set_is_one_local_machine():
    env = DistEnv.from_environ({})
    assert (env.source, env.num_machines, env.machine_rank) == ("local", 1, 0)
    assert env.procs_per_machine is None and env.master_port is None
    assert not env.already_spawned


def test_hfai_world_size_counts_machines():
    env = DistEnv.from_environ(
        {"WORLD_SIZE": "4", "RANK": "3", "MASTER_ADDR": "node0", "MASTER_PORT": "2222"}
    )
    assert (env.source, env.num_machines, env.machine_rank) == ("hfai", 4, 3)
    assert (env.master_addr, env.master_port, env.procs_per_machine) == ("node0", 2222, None)


@pytest.mark.parametrize("nproc, procs", [("4", 4), ("auto", None), ("gpu", None)])
def test_pytorchjob_v1_worker(nproc, procs):
    # What the v1 operator injects into worker-1 of a job with 1 master + 2 workers.
    world = 3 * (procs or 1)
    env = DistEnv.from_environ(
        {
            "MASTER_ADDR": "job-master-0",
            "MASTER_PORT": "23456",
            "WORLD_SIZE": str(world),
            "RANK": "2",
            "PET_NNODES": "3",
            "PET_NODE_RANK": "2",
            "PET_NPROC_PER_NODE": nproc,
            "PYTHONUNBUFFERED": "1",
        }
    )
    assert (env.source, env.num_machines, env.machine_rank, env.procs_per_machine) == (
        "pytorchjob",
        3,
        2,
        procs,
    )
    assert (env.master_addr, env.master_port) == ("job-master-0", 23456)


def test_trainjob_v2_has_only_pet_variables():
    env = DistEnv.from_environ(
        {
            "PET_NNODES": "2",
            "PET_NODE_RANK": "1",
            "PET_NPROC_PER_NODE": "8",
            "PET_MASTER_ADDR": "train-node-0-0.train",
            "PET_MASTER_PORT": "29500",
        }
    )
    assert (env.source, env.num_machines, env.machine_rank, env.procs_per_machine) == ("trainjob", 2, 1, 8)
    assert (env.master_addr, env.master_port) == ("train-node-0-0.train", 29500)


def test_torchrun_child_is_already_spawned():
    # torchrun's children also inherit the pod's PET_* variables; LOCAL_RANK wins.
    env = DistEnv.from_environ(
        {
            "RANK": "5",
            "LOCAL_RANK": "1",
            "WORLD_SIZE": "8",
            "LOCAL_WORLD_SIZE": "4",
            "GROUP_RANK": "1",
            "MASTER_ADDR": "10.0.0.1",
            "MASTER_PORT": "29500",
            "TORCHELASTIC_RUN_ID": "none",
            "PET_NNODES": "2",
            "PET_NODE_RANK": "1",
            "PET_NPROC_PER_NODE": "4",
        }
    )
    assert env.already_spawned and (env.rank, env.local_rank) == (5, 1)
    assert (env.source, env.num_machines, env.machine_rank, env.procs_per_machine) == ("torchrun", 2, 1, 4)


def test_single_machine_needs_no_master():
    env = DistEnv.from_environ({"PET_NNODES": "1", "PET_NODE_RANK": "0", "PET_NPROC_PER_NODE": "2"})
    assert (env.master_addr, env.master_port, env.procs_per_machine) == ("127.0.0.1", None, 2)


@pytest.mark.parametrize(
    "environ, variable",
    [
        ({"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "m", "MASTER_PORT": "1"}, "RANK"),
        ({"WORLD_SIZE": "two", "RANK": "0"}, "WORLD_SIZE"),
        ({"WORLD_SIZE": "2", "RANK": "x", "MASTER_ADDR": "m", "MASTER_PORT": "1"}, "RANK"),
        ({"WORLD_SIZE": "2", "RANK": "1", "MASTER_PORT": "1"}, "MASTER_ADDR"),
        ({"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "m"}, "MASTER_PORT"),
        ({"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "m", "MASTER_PORT": "70000"}, "MASTER_PORT"),
        ({"WORLD_SIZE": "0"}, "WORLD_SIZE"),
        ({"WORLD_SIZE": "2", "MASTER_ADDR": "m", "MASTER_PORT": "1"}, "RANK"),
        (
            {"PET_NNODES": "2", "PET_NODE_RANK": "2", "PET_MASTER_ADDR": "m", "PET_MASTER_PORT": "1"},
            "PET_NODE_RANK",
        ),
        ({"PET_NNODES": "2", "PET_NODE_RANK": "0", "PET_MASTER_PORT": "1"}, "PET_MASTER_ADDR"),
        ({"PET_NNODES": "1:4", "PET_NODE_RANK": "0"}, "PET_NNODES"),
        ({"PET_NNODES": "1", "PET_NODE_RANK": "0", "PET_NPROC_PER_NODE": "cpu"}, "PET_NPROC_PER_NODE"),
        ({"PET_NNODES": "1", "PET_NODE_RANK": "0", "PET_NPROC_PER_NODE": "0"}, "PET_NPROC_PER_NODE"),
        ({"PET_NNODES": "2", "PET_NODE_RANK": "0", "WORLD_SIZE": "2", "MASTER_PORT": "23456"}, "MASTER_ADDR"),
        ({"LOCAL_RANK": "0", "WORLD_SIZE": "2"}, "RANK"),
        ({"LOCAL_RANK": "0", "RANK": "0", "WORLD_SIZE": "3", "LOCAL_WORLD_SIZE": "2"}, "LOCAL_WORLD_SIZE"),
        ({"LOCAL_RANK": "2", "RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}, "LOCAL_RANK"),
        ({"LOCAL_RANK": "0", "RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}, "MASTER_ADDR"),
    ],
)
def test_bad_environment_names_the_variable(environ, variable):
    with pytest.raises(ValueError, match=rf"\b{variable}\b"):
        DistEnv.from_environ(environ)
