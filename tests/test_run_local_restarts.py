"""run-local counts restarts where the cluster does (docs/cluster-behaviour.md).

* TrainJob on the template's own TrainingRuntime (rendered by copier, its maxRestarts set to 3):
  a preemption of one node restarts the whole gang (JobSet failurePolicy); 3 preemptions are
  survived, the 4th ends the job with JobSet's ``ReachedMaxRestarts``.
* PyTorchJob under ``restartPolicy: ExitCode``: the operator recreates every pod that exits >= 128
  forever; the runtime's own count stops it (``HFAI_MAX_PREEMPTIONS``, the crash-loop guard).

The pods run tests/scripts/runlocal_trainer.py, the stand-in for train_net.py, with the
runtime's own RestartGuard (``--restart-guard``). Preemptions come from an observer, once every
node of the current attempt trains, so that where they fall does not depend on the machine's load.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from hfai_runtime.distributed.restarts import End, Limits, RestartGuard
from hfai_runtime.local.manifest import parse_job
from hfai_runtime.local.runner import LocalRunner, RunObserver, RunOptions
from hfai_runtime.records import RecordKind

TRAINER = str(Path(__file__).parent / "scripts" / "runlocal_trainer.py")
pytestmark = pytest.mark.slow  # several attempts of several processes each


class PreemptWhenAllTrain(RunObserver):
    """Preempts ``replica``'s node each time every node of the job reports that training (re)
    started, ``times`` times in all."""

    def __init__(self, replica: str, nodes: int, times: int):
        self.replica, self.nodes, self.times = replica, nodes, times
        self.training: set[str] = set()
        self.done = 0
        self.runner: LocalRunner | None = None

    def on_record(self, replica: str, record) -> None:
        if record.kind != RecordKind.TRAINING_STARTED or self.done >= self.times:
            return
        self.training.add(replica)
        if len(self.training) == self.nodes:
            self.training.clear()
            self.done += 1
            self.runner.preempt(self.replica)


def run_preempted(job, tmp_path: Path, replica: str, nodes: int, times: int):
    observer = PreemptWhenAllTrain(replica, nodes, times)
    runner = LocalRunner(job, RunOptions(project_dir=tmp_path), observer)
    observer.runner = runner
    return runner.run()


@pytest.fixture(scope="module")
def runtime(projects) -> dict:
    """The template's TrainingRuntime, as rendered, allowing 3 gang restarts."""
    (doc,) = yaml.safe_load_all((projects["trainjob"] / "k8s" / "runtime.yaml").read_text())
    doc = copy.deepcopy(doc)
    doc["spec"]["template"]["spec"]["failurePolicy"]["maxRestarts"] = 3
    return doc


def trainjob(runtime: dict, nodes: int, args: list[str]) -> dict:
    pod = {
        "terminationGracePeriodSeconds": 10,
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "det-data"}}],
        "containers": [{"name": "node", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
    }
    patch = {"replicatedJobs": [{"name": "node", "template": {"spec": {"template": {"spec": pod}}}}]}
    return {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": "det"},
        "spec": {
            "runtimeRef": {
                "apiGroup": "trainer.kubeflow.org",
                "kind": "TrainingRuntime",
                "name": runtime["metadata"]["name"],
            },
            "runtimePatches": [
                {"manager": "example.com/det", "trainingRuntimeSpec": {"template": {"spec": patch}}}
            ],
            "trainer": {
                "numNodes": nodes,
                "command": ["python", TRAINER],
                "args": args,
                "env": [{"name": "HFAI_MAX_PREEMPTIONS", "value": "3"}],
            },
        },
    }


# 8 s of training in all: no node finishes before the slowest one of its attempt starts (when
# the preemption comes), even when a process starts seconds after the others on a loaded machine.
GANG_ARGS = ["--iters", "400", "--step", "0.02", "--ckpt-dir", "/data", "--gang", "--restart-guard"]


def test_a_4_node_trainjob_preempted_3_times_restarts_its_gang_and_succeeds(runtime, tmp_path):
    job = parse_job(trainjob(runtime, 4, GANG_ARGS), runtime=runtime)
    result = run_preempted(job, tmp_path, "node-1", nodes=4, times=3)
    assert (result.condition, result.reason) == ("Complete", "AllJobsCompleted"), result.events
    gang_restarts = [e for e in result.of_kind("restarting") if e.replica == ""]
    assert [e.detail.split("(restart ")[1] for e in gang_restarts] == [
        f"{n} of at most 3)" for n in (1, 2, 3)
    ]
    # The preempted pod itself is replaced without counting (podFailurePolicy: DisruptionTarget).
    assert all("DisruptionTarget" in e.detail for e in result.of_kind("restarting", "node-1"))
    assert len(result.of_kind("started", "node-0")) == 4  # the first start, then one per gang restart
    # The runtime counted the same: 3 starts that suspended, then one that completed.
    starts = RestartGuard(tmp_path, Limits(None)).read()
    assert [s.end for s in starts] == [End.SUSPENDED] * 3 + [End.COMPLETED]
    assert all(a.start_iter < b.start_iter for a, b in zip(starts, starts[1:], strict=False))  # it resumed


def test_the_4th_preemption_of_a_trainjob_allowing_3_ends_it(runtime, tmp_path):
    job = parse_job(trainjob(runtime, 4, GANG_ARGS), runtime=runtime)
    result = run_preempted(job, tmp_path, "node-1", nodes=4, times=4)
    assert (result.condition, result.reason) == ("Failed", "ReachedMaxRestarts"), result.events
    assert (
        result.message
        == "jobset failed due to reaching max number of restarts (first failed job: det-node-0)"
    )
    assert "restarted 3 time(s), failurePolicy.maxRestarts 3" in result.cause
    assert len(result.of_kind("started", "node-0")) == 4


def test_a_trainjob_exit_1_fails_at_once_through_its_pod_failure_policy(runtime, tmp_path):
    job = parse_job(trainjob(runtime, 2, ["--exit", "1"]), runtime=runtime)
    result = LocalRunner(job, RunOptions(project_dir=tmp_path)).run()
    assert (result.condition, result.reason) == ("Failed", "FailJobSetFailurePolicyAction")
    assert result.message == "applying FailJobSet failure policy action (first failed job: det-node-0)"
    assert not [e for e in result.of_kind("restarting") if e.replica == ""]


def pytorchjob(args: list[str], **env: str) -> dict:
    container = {
        "name": "pytorch",
        "image": "registry.example/det:1",
        "command": ["tini", "--", "python", TRAINER],
        "args": args,
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    pod = {
        "terminationGracePeriodSeconds": 10,
        "containers": [container],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "det-data"}}],
    }
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": "det"},
        "spec": {
            "runPolicy": {"backoffLimit": 20},
            "pytorchReplicaSpecs": {
                "Master": {"replicas": 1, "restartPolicy": "ExitCode", "template": {"spec": pod}}
            },
        },
    }


def test_a_pytorchjob_oom_killed_from_one_checkpoint_fails_at_its_4th_start_naming_oom(tmp_path):
    args = ["--iters", "20", "--step", "0.02", "--ckpt-dir", "/data", "--restart-guard", "--oom-at", "3"]
    result = LocalRunner(parse_job(pytorchjob(args)), RunOptions(project_dir=tmp_path)).run()
    assert [e.value for e in result.of_kind("exited")] == [137, 137, 137, 1]
    assert (result.condition, result.reason) == ("Failed", "PyTorchJobFailed")
    assert result.message == 'job "det" is failing because "Master" replica(s) failed.'
    assert "crash loop: the last 3 starts all resumed from iteration 0" in result.cause
    assert "OOMKilled" in result.cause


def test_a_pytorchjob_stops_on_the_start_after_max_preemptions_plus_one(tmp_path):
    args = ["--iters", "400", "--step", "0.02", "--ckpt-dir", "/data", "--restart-guard"]
    job = parse_job(pytorchjob(args, HFAI_MAX_PREEMPTIONS="2"))
    result = run_preempted(job, tmp_path, "master-0", nodes=1, times=3)
    assert [e.value for e in result.of_kind("exited")] == [143, 143, 143, 1]
    assert (result.condition, result.reason) == ("Failed", "PyTorchJobFailed")
    assert "restarted 3 times (preempted or killed), more than max_preemptions 2" in result.cause


@pytest.mark.detectron2
def test_a_real_training_gang_restarts_after_a_node_preemption_and_resumes(runtime, tiny_coco, tmp_path):
    """tools/tiny_train.py (detectron2, launch_from_env, SuspendCheckpointer) as a 2-node TrainJob
    on the template's runtime: node-1 is preempted, both ranks agree and exit 143, the JobSet
    restarts the gang once, and the restarted ranks resume from the suspend checkpoint; the
    runtime's own ledger in OUTPUT_DIR says the same."""
    repo = Path(__file__).resolve().parent.parent
    args = ["--data", str(tiny_coco), "--out", "/data/out", "--max-iter", "12"]
    doc = trainjob(runtime, 2, [])
    doc["spec"]["trainer"].update(command=["python", "tools/tiny_train.py"], args=args)
    doc["spec"]["trainer"]["env"].append({"name": "OMP_NUM_THREADS", "value": "1"})
    job = parse_job(doc, runtime=runtime)
    observer = PreemptWhenAllTrain("node-1", nodes=2, times=1)
    runner = LocalRunner(job, RunOptions(project_dir=repo, data_dir=tmp_path), observer)
    observer.runner = runner
    result = runner.run()
    assert (result.condition, result.reason) == ("Complete", "AllJobsCompleted"), result.cause
    assert len([e for e in result.of_kind("restarting") if e.replica == ""]) == 1
    resumed = [e.value for e in result.of_kind("trains_from", "node-0")]
    assert resumed[0] == 0 and resumed[-1] > 0, resumed
    starts = RestartGuard(tmp_path / "out", Limits(None)).read()
    assert [s.end for s in starts] == [End.SUSPENDED, End.COMPLETED]
    assert starts[1].start_iter == starts[0].end_iter + 1 == resumed[-1]


def test_on_the_stock_runtime_a_4_node_trainjob_fails_at_its_2nd_preemption(runtime, tmp_path):
    """What the project's runtime replaces: torch-distributed's pods restart in place
    (OnFailure, jobset_webhook.go@v0.12.0) and every rank's 143 counts against the Job's default
    backoffLimit 6, and without a failurePolicy the failed Job fails the JobSet (FailedJobs):
    4 restarts at the 1st preemption, the 6th at the 2nd."""
    doc = trainjob(runtime, 4, GANG_ARGS)
    doc["spec"]["runtimeRef"] = {"name": "torch-distributed"}
    result = run_preempted(parse_job(doc), tmp_path, "node-1", nodes=4, times=2)
    assert (result.condition, result.reason) == ("Failed", "FailedJobs"), result.events
    assert "6 counted failure(s), backoffLimit 6" in result.cause
    assert len([e for e in result.of_kind("exited") if e.value == 143]) >= 6
