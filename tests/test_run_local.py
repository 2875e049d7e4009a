"""``hfai-runtime run-local``: real local processes under the operator's rules.

The container command is ``tini -- python tests/scripts/runlocal_trainer.py ...``, a few-line stand-in
for train_net.py (checkpoint file, SIGTERM flag, exit 143), so each run takes about a second;
the real detectron2 story is in test_run_local_story.py.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

from hfai_runtime.cli import main as cli_main
from hfai_runtime.local.manifest import load_job, parse_job
from hfai_runtime.local.runner import At, RunObserver, RunOptions, run_job
from hfai_runtime.records import RecordKind
from hfai_runtime.timeline import read_events

TRAINER = str(Path(__file__).parent / "scripts" / "runlocal_trainer.py")


def container(args: list[str], name: str = "pytorch") -> dict:
    return {
        "name": name,
        "image": "registry.example/det:1",
        "command": ["tini", "--", "python", TRAINER],
        "args": args,
        "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "dshm", "mountPath": "/dev/shm"}],
    }


def pytorchjob(
    args: list[str],
    workers: int = 0,
    policy: str = "ExitCode",
    backoff: int | None = 5,
    grace: int = 5,
    worker_args: list[str] | None = None,
    clean: str | None = None,
) -> dict:
    pod = {
        "terminationGracePeriodSeconds": grace,
        "containers": [container(args)],
        "volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": "det-data"}},
            {"name": "dshm", "emptyDir": {"medium": "Memory"}},
        ],
    }
    specs = {"Master": {"replicas": 1, "restartPolicy": policy, "template": {"spec": pod}}}
    if workers:
        worker_pod = copy.deepcopy(pod)
        if worker_args is not None:
            worker_pod["containers"][0]["args"] = worker_args
        specs["Worker"] = {"replicas": workers, "restartPolicy": policy, "template": {"spec": worker_pod}}
    run_policy = {} if backoff is None else {"backoffLimit": backoff}
    if clean is not None:
        run_policy["cleanPodPolicy"] = clean
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": "det"},
        "spec": {"runPolicy": run_policy, "pytorchReplicaSpecs": specs},
    }


class TickClock(RunObserver):
    """The job's clock for these tests: still until a pod reports that training started (a
    process's start-up takes what the machine gives it), then one 0.05 s tick per turn of the
    runner's loop. Deadlines, grace periods and suspension then fall on the same turns of the
    job's schedule however loaded the machine is (no wall-clock windows)."""

    TICK = 0.05

    def __init__(self) -> None:
        self.turns = 0
        self.running = False

    def __call__(self) -> float:
        if self.running:
            self.turns += 1
        return self.turns * self.TICK

    def on_record(self, replica: str, record) -> None:
        self.running = self.running or record.kind == RecordKind.TRAINING_STARTED


def run(doc: dict, tmp_path: Path, **options):
    lines: list[str] = []
    result = run_job(parse_job(doc), RunOptions(project_dir=tmp_path, **options), lines.append)
    return result, lines


def run_ticking(doc: dict, tmp_path: Path, **options):
    """:func:`run` on a :class:`TickClock`."""
    clock = TickClock()
    result = run_job(parse_job(doc), RunOptions(project_dir=tmp_path, clock=clock, **options), observer=clock)
    return result


def kinds(result, replica: str) -> list[str]:
    return [e.kind for e in result.events if e.replica == replica]


def test_exit_143_restarts_the_replica_and_the_job_succeeds(tmp_path):
    result, _ = run(pytorchjob(["--exit-once", "143", "--ckpt-dir", "/data"]), tmp_path)
    assert kinds(result, "master-0") == [
        "started",
        "exited",
        "restarting",
        "started",
        "trains_from",
        "exited",
    ]
    assert [e.value for e in result.of_kind("exited")] == [143, 0]
    assert (result.condition, result.reason) == ("Succeeded", "PyTorchJobSucceeded")
    assert result.message == "PyTorchJob det is successfully completed."
    assert (tmp_path / "attempted-0").exists()  # /data mapped to the project folder


@pytest.mark.slow
def test_exit_1_fails_the_job_and_stops_the_others(tmp_path):
    doc = pytorchjob(["--iters", "400"], workers=1, worker_args=["--exit", "1"], clean="Running")
    result, _ = run(doc, tmp_path)
    # As kubectl describe shows it (pod.go@v1.9.4 ReconcilePods, non-retryable exit code).
    assert (result.condition, result.reason) == ("Failed", "PyTorchJobFailed")
    assert result.message == 'job "det" is failing because "Worker" replica(s) failed.'
    assert "worker-0 exited with code 1 under restartPolicy ExitCode" in result.cause
    assert not result.of_kind("restarting")
    master_exit = result.of_kind("exited", "master-0")
    assert "stopping" in kinds(result, "master-0") and master_exit[0].value == 143
    assert result.events[-1].time < 4  # deleted at once (Running), not after its grace period


@pytest.mark.slow
def test_on_success_clean_pod_policy_running_deletes_the_other_pods_at_once(tmp_path):
    # The master finishes at once; the worker would train for 20 s.
    for clean, deleted_within in (("Running", (0, 2.5)), (None, (5, 9))):
        doc = pytorchjob(["--iters", "1"], workers=1, worker_args=["--iters", "400"], clean=clean)
        result, _ = run(doc, tmp_path)
        assert result.succeeded
        master_done = result.of_kind("exited", "master-0")[0].time
        worker_exit = result.of_kind("exited", "worker-0")[0]
        assert worker_exit.value == 143  # SIGTERM'd, not finished
        low, high = deleted_within  # None: the pod is left running; deleted after 5 s grace
        assert low <= worker_exit.time - master_done < high, (clean, result.events)


def test_backoff_limit_counts_in_place_restarts(tmp_path):
    # OnFailure: the kubelet restarts the container; the operator fails the job once the pods'
    # restartCount sum reaches backoffLimit (PastBackoffLimit: result >= limit).
    result, _ = run(pytorchjob(["--exit", "1"], policy="OnFailure", backoff=3), tmp_path)
    assert len(result.of_kind("started")) == 3
    assert len(result.of_kind("restarting")) == 2
    assert (result.condition, result.reason) == ("Failed", "PyTorchJobFailed")
    assert result.message == "Job det has failed because it has reached the specified backoff limit"
    assert "3 container restart(s) reached the job's backoff limit (3)" in result.cause


def test_exit_code_recreations_do_not_count_but_backoff_limit_0_fails_the_first_failed_pod(tmp_path):
    # ExitCode: the operator recreates the pod (restartCount 0), so backoffLimit 1 allows it ...
    args = ["--exit-once", "143", "--ckpt-dir", "/data"]
    result, _ = run(pytorchjob(args, backoff=1), tmp_path)
    assert "not counted in backoffLimit" in result.of_kind("restarting")[0].detail
    assert result.succeeded
    # ... but with backoffLimit 0, ReconcileJobs' exceedsBackoffLimit (a new failed pod and
    # retries + 1 > 0) fails the job on the first failed pod, retryable exit code or not.
    (tmp_path / "attempted-0").unlink()
    result, _ = run(pytorchjob(args, backoff=0), tmp_path)
    assert (result.condition, result.reason) == ("Failed", "PyTorchJobFailed")
    assert "reached the specified backoff limit" in result.message
    assert not result.of_kind("restarting") and len(result.of_kind("started")) == 1


def test_the_active_deadline_fails_the_job_and_restarts_on_resume(tmp_path):
    # Deadline 3 s of the job's clock: suspended 0.3 s after training starts, resumed 2.5 s
    # later; without the reset the job would fail at 3 s (while suspended); with it, the resumed
    # pods get a fresh 3 s, to the tick.
    doc = pytorchjob(["--iters", "400", "--step", "0.1"])
    doc["spec"]["runPolicy"]["activeDeadlineSeconds"] = 3
    result = run_ticking(doc, tmp_path, suspend_at=At(0.3, after_training=True), resume_after=2.5)
    assert (result.condition, result.reason) == ("Failed", "PyTorchJobFailed")
    assert result.message == ("Job det has failed because it was active longer than specified deadline")
    suspended = result.of_kind("suspended")[0].time
    resumed = result.of_kind("resumed")[0].time
    finished = result.of_kind("finished")[0].time
    assert suspended == pytest.approx(0.3, abs=TickClock.TICK), result.events
    assert resumed >= suspended + 2.5 and finished - resumed == pytest.approx(3, abs=TickClock.TICK)


def test_a_replica_ignoring_sigterm_is_killed_after_the_grace_period(tmp_path):
    doc = pytorchjob(["--ignore-sigterm", "--iters", "400"], policy="Never", grace=1)
    result = run_ticking(doc, tmp_path, preempt=[("master-0", At(0.5, after_training=True))])
    preempted, killed = result.of_kind("preempted")[0], result.of_kind("killed")[0]
    assert "killed after grace period" in killed.detail
    assert killed.time - preempted.time == pytest.approx(1, abs=TickClock.TICK)
    assert result.of_kind("exited")[0].value == 137
    assert (result.condition, result.reason) == ("Failed", "PyTorchJobFailed")
    assert result.message == "PyTorchJob det is failed because 1 Master replica(s) failed."


@pytest.mark.slow
def test_suspend_and_resume_end_in_a_resumed_completed_run(tmp_path):
    # The suspension is timed from the first pod's training start; the other pod's start may lag
    # behind it on a loaded machine, so it comes 2 s later and either pod may have finished only
    # step 0 by then.
    args = ["--iters", "60", "--step", "0.1", "--ckpt-dir", "/data/ckpt"]
    (tmp_path / "ckpt").mkdir()
    result, _ = run(
        pytorchjob(args, workers=1), tmp_path, suspend_at=At(2.0, after_training=True), resume_after=0.5
    )
    assert len(result.of_kind("suspended")) == len(result.of_kind("resumed")) == 1
    suspended, resumed = result.of_kind("suspended")[0], result.of_kind("resumed")[0]
    assert resumed.time >= suspended.time + 0.5
    for name in ("master-0", "worker-0"):
        stopped = result.of_kind("stopped_at", name)
        starts = [e.value for e in result.of_kind("trains_from", name)]
        assert len(stopped) == 1 and 0 <= stopped[0].value < 59
        assert starts == [0, stopped[0].value + 1]  # resumed right after the saved iteration
        assert [e.value for e in result.of_kind("exited", name)] == [143, 0]
    assert not result.of_kind("restarting")  # a suspension is not a restart
    assert result.succeeded


@pytest.mark.slow
def test_logs_are_prefixed_and_the_operator_env_points_at_loopback(tmp_path, monkeypatch):
    names = (
        "MASTER_ADDR,MASTER_PORT,RANK,WORLD_SIZE,PET_NNODES,CUDA_VISIBLE_DEVICES,OUT,"
        "OMP_NUM_THREADS,PET_MASTER_ADDR,PET_MASTER_PORT,PYTHONUNBUFFERED"
    )
    doc = pytorchjob(["--print-env", names, "--iters", "1"], workers=1)
    doc["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "OUT", "value": "/data/output"}
    ]
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    result, lines = run(doc, tmp_path, data_dir=tmp_path / "pvc")
    assert result.succeeded
    assert "[master-0] env MASTER_ADDR=127.0.0.1" in lines
    assert "[worker-0] env PET_MASTER_ADDR=127.0.0.1" in lines
    assert "[worker-0] env PYTHONUNBUFFERED=1" in lines
    assert "[worker-0] env RANK=1" in lines and "[master-0] env RANK=0" in lines
    assert "[worker-0] env WORLD_SIZE=2" in lines and "[worker-0] env PET_NNODES=2" in lines
    assert "[master-0] env CUDA_VISIBLE_DEVICES=" in lines
    assert f"[master-0] env OUT={tmp_path / 'pvc' / 'output'}" in lines
    share = max(1, len(os.sched_getaffinity(0)) // 2)  # two replicas share this machine's CPUs
    assert f"[worker-0] env OMP_NUM_THREADS={share}" in lines
    ports = {line.split("=")[1] for line in lines if "MASTER_PORT=" in line}
    assert len(ports) == 1 and ports != {"23456"}  # one free port, shared by both replicas


@pytest.mark.slow
def test_a_trainjob_runs_every_node_with_pet_variables(tmp_path, monkeypatch):
    # A job-placement variable around run-local (a torchrun shell, an earlier in-process launch)
    # must not reach the pods: only the operator's do.
    monkeypatch.setenv("RANK", "7")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "outer")
    doc = {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": "det"},
        "spec": {
            "runtimeRef": {"name": "torch-distributed"},
            "trainer": {
                "numNodes": 2,
                "command": ["python", TRAINER],
                "args": ["--print-env", "PET_NODE_RANK,PET_MASTER_ADDR,RANK", "--iters", "1"],
            },
        },
    }
    result, lines = run(doc, tmp_path)
    # The TrainJob's condition is its JobSet's (jobset.go@v2.3.0 copies Completed -> Complete).
    assert (result.condition, result.reason) == ("Complete", "AllJobsCompleted")
    assert result.message == "jobset completed successfully"
    assert "[node-1] env PET_NODE_RANK=1" in lines
    assert "[node-0] env PET_MASTER_ADDR=127.0.0.1" in lines
    assert "[node-0] env RANK=<unset>" in lines  # Trainer v2 injects only PET_*


@pytest.mark.parametrize(
    "mutate, field",
    [
        (
            lambda d: d.update(kind="Deployment"),
            "kind: expected PyTorchJob, TrainJob or Job, got 'Deployment'",
        ),
        (lambda d: d.update(apiVersion="kubeflow.org/v2"), "apiVersion: expected 'kubeflow.org/v1'"),
        (
            lambda d: d["spec"]["pytorchReplicaSpecs"].pop("Master"),
            "spec.pytorchReplicaSpecs.Master: required",
        ),
        (
            lambda d: d["spec"]["pytorchReplicaSpecs"].update(
                master=d["spec"]["pytorchReplicaSpecs"].pop("Master")
            ),
            "spec.pytorchReplicaSpecs.master: expected exactly one of Master, Worker",
        ),
        (
            lambda d: d["spec"]["runPolicy"].update(cleanPodPolicy="Some"),
            "spec.runPolicy.cleanPodPolicy: expected All, Running or None",
        ),
        (
            lambda d: d["spec"]["pytorchReplicaSpecs"]["Master"].update(restartPolicy="Sometimes"),
            "spec.pytorchReplicaSpecs.Master.restartPolicy: expected one of",
        ),
        (
            lambda d: _master_container(d).update(name="main"),
            "spec.pytorchReplicaSpecs.Master.template.spec.containers: expected a container named 'pytorch'",
        ),
        (
            lambda d: _master_container(d).pop("command"),
            "spec.pytorchReplicaSpecs.Master.template.spec.containers[name=pytorch].command: expected a list",
        ),
        (lambda d: d["spec"]["runPolicy"].update(backoffLimit="3"), "spec.runPolicy.backoffLimit"),
        (
            lambda d: d["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"].update(
                terminationGracePeriodSeconds=-1
            ),
            "spec.pytorchReplicaSpecs.Master.template.spec.terminationGracePeriodSeconds: expected a "
            "non-negative integer, got -1",
        ),
        (lambda d: d["metadata"].pop("name"), "metadata.name"),
    ],
)
def test_bad_manifests_are_refused_naming_the_field(mutate, field):
    doc = pytorchjob([])
    mutate(doc)
    with pytest.raises(ValueError) as info:
        parse_job(doc)
    assert field in str(info.value)


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d["spec"]["pytorchReplicaSpecs"]["Master"].update(replicas=2), "Master.replicas"),
        (lambda d: d["spec"]["pytorchReplicaSpecs"]["Master"].pop("replicas"), "Master.replicas"),
        (
            lambda d: d["spec"]["pytorchReplicaSpecs"].update(
                Worker=dict(d["spec"]["pytorchReplicaSpecs"]["Master"], replicas=0)
            ),
            "spec.pytorchReplicaSpecs.Worker.replicas",
        ),
        (lambda d: _master_container(d).pop("image"), "Master.template.spec.containers[0].image"),
        (lambda d: d["metadata"].update(name="Det_1"), "metadata.name"),
    ],
)
def test_webhook_rules_are_checks_that_run_local_applies_before_any_pod(tmp_path, capsys, mutate, field):
    # local/manifest.py parses; the webhook's rules live in check/webhooks.py only, and run-local
    # applies them (exit 2, naming the field) before it starts anything.
    doc = pytorchjob([])
    mutate(doc)
    manifest = tmp_path / "job.yaml"
    manifest.write_text(yaml.safe_dump(doc))
    assert cli_main(["run-local", str(manifest), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"run-local: a cluster would refuse this: {manifest}: " in err and field in err, err


def _master_container(doc: dict) -> dict:
    return doc["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]


def test_cli_refuses_with_the_file_and_field_and_exit_code_2(tmp_path, capsys):
    manifest = tmp_path / "k8s" / "job.yaml"
    manifest.parent.mkdir()
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}}
    manifest.write_text(yaml.safe_dump(pod))
    assert cli_main(["run-local", str(manifest)]) == 2
    assert f"{manifest}: kind: expected PyTorchJob, TrainJob or Job, got 'Pod'" in capsys.readouterr().err


def test_cli_runs_the_manifest_writes_events_and_exits_0_only_on_success(tmp_path, capsys):
    manifest = tmp_path / "k8s" / "job.yaml"
    manifest.parent.mkdir()
    manifest.write_text(yaml.safe_dump(pytorchjob(["--exit-once", "143", "--ckpt-dir", "/data"])))
    events = tmp_path / "events.jsonl"
    assert cli_main(["run-local", str(manifest), "--events", str(events)]) == 0
    out = capsys.readouterr().out
    assert "PyTorchJob det: Succeeded (PyTorchJobSucceeded)" in out
    assert '"kind": "restarting"' in events.read_text()
    assert load_job(manifest).replicas[0].grace_seconds == 5

    manifest.write_text(yaml.safe_dump(pytorchjob(["--exit", "2"])))
    assert cli_main(["run-local", str(manifest)]) == 1
    assert "Failed (PyTorchJobFailed)" in capsys.readouterr().out
    # --args replaces the container's args (mount paths in them are still mapped).
    assert (
        cli_main(
            ["run-local", str(manifest), "--args", "--exit 0 --ckpt-dir '/data/a b'", "--events", str(events)]
        )
        == 0
    )
    assert f"--ckpt-dir {tmp_path / 'a b'}" in read_events(events)[0].detail
    assert (
        cli_main(
            [
                "run-local",
                str(manifest),
                "--args",
                "--exit 0 --ckpt-dir /data/x",
                "--mount",
                f"/data={tmp_path / 'm'}",
                "--events",
                str(events),
            ]
        )
        == 0
    )
    assert f"--ckpt-dir {tmp_path / 'm' / 'x'}" in read_events(events)[0].detail


def test_container_command_paths_and_references_map_onto_this_machine(tmp_path):
    from hfai_runtime.local.container import PathMap, expand_refs, local_command
    from hfai_runtime.local.manifest import Mount, Replica

    assert local_command(["/usr/bin/tini", "-g", "--", "python3", "t.py"], "/py") == ["/py", "t.py"]
    assert local_command(["torchrun", "t.py"], "/py") == ["/py", "-m", "torch.distributed.run", "t.py"]
    assert local_command(["bash", "-c", "x"], "/py") == ["bash", "-c", "x"]
    with pytest.raises(ValueError, match="only 'tini --'"):
        local_command(["tini", "--"], "/py")
    env = {"PET_NNODES": "2"}
    assert (
        expand_refs("--nnodes=$(PET_NNODES) $(UNSET) $$(PET_NNODES)", env)
        == "--nnodes=2 $(UNSET) $(PET_NNODES)"
    )

    replica = Replica(
        "master-0",
        "Master",
        0,
        (),
        (),
        {},
        "ExitCode",
        30.0,
        working_dir="/workspace",
        mounts=(Mount("/data", "storage"), Mount("/data/ckpt", "c", "run1"), Mount("/dev/shm", "dshm")),
    )
    project = tmp_path / "workspace" / "proj"  # a local path that starts like a container path
    paths = PathMap.for_replica(replica, project, tmp_path / "pvc", {"/data/ckpt": tmp_path / "ck"})
    assert paths.rewrite("/data/ckpt/model.pth") == str(tmp_path / "ck" / "run1" / "model.pth")
    assert paths.rewrite("--out=/data/x") == f"--out={tmp_path / 'pvc' / 'x'}"
    assert paths.rewrite("/dataset") == "/dataset" and paths.rewrite("/dev/shm/x") == "/dev/shm/x"
    assert paths.rewrite("/workspace/configs/a.yaml") == f"{project}/configs/a.yaml"
    assert paths.rewrite("see /data here") == "see /data here"  # only whole values or after = : ,


def test_cli_checks_preempt_targets_and_times(tmp_path, capsys):
    manifest = tmp_path / "k8s" / "job.yaml"
    manifest.parent.mkdir()
    manifest.write_text(yaml.safe_dump(pytorchjob([])))
    assert cli_main(["run-local", str(manifest), "--preempt", "worker-3@train+2"]) == 2
    assert "--preempt worker-3: no such replica (the job has master-0)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["run-local", str(manifest), "--preempt", "master-0@soon"])
    assert "expected SECONDS or train+SECONDS, got 'soon'" in capsys.readouterr().err
    assert At.parse("train+2.5") == At(2.5, after_training=True) and str(At.parse("7")) == "7"


@pytest.mark.slow
def test_a_signalled_runner_leaves_no_replica_behind(tmp_path):
    import re
    import subprocess
    import sys

    import psutil

    manifest = tmp_path / "k8s" / "job.yaml"
    manifest.parent.mkdir()
    manifest.write_text(yaml.safe_dump(pytorchjob(["--iters", "400"], workers=1)))
    runner = subprocess.Popen(
        [sys.executable, "-m", "hfai_runtime.cli", "run-local", str(manifest), "--verbose"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    pids = []
    for line in runner.stdout:
        if '"kind": "progress"' in line:  # both replicas started; one is training
            break
        pids += [int(p) for p in re.findall(r"started -- attempt 1, pid (\d+)", line)]
    runner.terminate()
    assert runner.wait(timeout=30) == 130
    assert len(pids) == 2
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def _trainjob(
    pod_spec: dict, runtime: str = "torch-distributed", manager: str = "example.com/d2-hfai-template"
) -> dict:
    patch = {
        "manager": manager,
        "trainingRuntimeSpec": {
            "template": {
                "spec": {
                    "replicatedJobs": [
                        {"name": "node", "template": {"spec": {"template": {"spec": pod_spec}}}}
                    ]
                }
            }
        },
    }
    return {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": "det"},
        "spec": {
            "runtimeRef": {"name": runtime},
            "runtimePatches": [patch],
            "trainer": {"command": ["python", "t.py"], "numNodes": 3},
        },
    }


def test_trainjob_runtime_patches_give_grace_and_mounts():
    pod = {
        "terminationGracePeriodSeconds": 15,
        "containers": [{"name": "node", "volumeMounts": [{"name": "s", "mountPath": "/data"}]}],
    }
    job = parse_job(_trainjob(pod))
    assert [r.name for r in job.replicas] == ["node-0", "node-1", "node-2"]
    node = job.replicas[2]
    # The JobSet webhook's default (jobset_webhook.go@v0.12.0): a patch cannot change it.
    assert (node.grace_seconds, node.restart_policy, node.mounts[0].path) == (15, "OnFailure", "/data")
    assert job.backoff_limit == 6  # batch/v1 Job's default
    unset = parse_job(_trainjob({"terminationGracePeriodSeconds": None})).replicas[0]
    assert unset.grace_seconds == 30  # null is unset: Kubernetes' default
    with pytest.raises(
        ValueError, match="spec.runtimeRef: ClusterTrainingRuntime 'mpi-distributed' is not among"
    ):
        parse_job(_trainjob(pod, runtime="mpi-distributed"))


@pytest.mark.parametrize(
    "pod, manager, field",
    [
        ({}, "d2-hfai-template", r"spec.runtimePatches[0].manager"),
        ({}, "Example.com/x", r"spec.runtimePatches[0].manager"),
        ({}, "example.com/", r"spec.runtimePatches[0].manager"),
        ({"restartPolicy": "Never"}, None, "template.spec.template.spec.restartPolicy"),
        ({"containers": [{"name": "node", "env": [{"name": "A", "value": "1"}]}]}, None, "containers[0].env"),
        ({"containers": [{"name": "node", "command": ["x"]}]}, None, "containers[0].command"),
        ({"containers": [{"name": "sidecar"}]}, None, "containers[0].name"),
    ],
)
def test_trainjob_webhook_rules_refuse_bad_runtime_patches(tmp_path, capsys, pod, manager, field):
    # trainjob_types.go@v2.3.0 PodSpecPatch/ContainerPatch; plugins/jobset/jobset.go Validate:
    # judged by check (schema and webhook), which run-local applies before any pod starts.
    doc = _trainjob(pod) if manager is None else _trainjob(pod, manager=manager)
    manifest = tmp_path / "job.yaml"
    manifest.write_text(yaml.safe_dump(doc))
    assert cli_main(["run-local", str(manifest), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "a cluster would refuse this" in err and field in err, err


@pytest.mark.parametrize(
    "declared, cap, per_pod, world",
    [("8", 2, "2", "4"), ("8", 1, "1", "2"), ("1", 2, "1", "2"), (None, 2, "2", "4"), ("gpu", 1, "1", "2")],
)
def test_cpu_procs_per_pod_caps_the_operator_env_consistently(declared, cap, per_pod, world):
    # 2 pods; nprocPerNode as declared; the env is the operator's, computed from the capped value.
    doc = pytorchjob([], workers=1)
    if declared is not None:
        doc["spec"]["nprocPerNode"] = declared
    job = parse_job(doc, procs_per_node_cap=cap)
    for replica in job.replicas:
        assert replica.env["PET_NPROC_PER_NODE"] == per_pod
        assert replica.env["WORLD_SIZE"] == world
    assert job.declared_procs_per_node == (declared or "auto")


def test_trainjob_num_proc_per_node_is_capped_too():
    doc = _trainjob({})
    doc["spec"]["trainer"]["numProcPerNode"] = 8
    job = parse_job(doc, procs_per_node_cap=2)
    assert [r.env["PET_NPROC_PER_NODE"] for r in job.replicas] == ["2"] * 3
    assert job.declared_procs_per_node == "8"


def test_cli_says_how_many_processes_each_pod_starts(tmp_path, capsys):
    manifest = tmp_path / "k8s" / "job.yaml"
    manifest.parent.mkdir()
    doc = pytorchjob(["--iters", "1", "--print-env", "PET_NPROC_PER_NODE,WORLD_SIZE"])
    doc["spec"]["nprocPerNode"] = "8"
    manifest.write_text(yaml.safe_dump(doc))
    assert cli_main(["run-local", str(manifest), "--cpu-procs-per-pod", "2"]) == 0
    out = capsys.readouterr().out
    assert (
        "run-local: 1 pod(s) x 2 training process(es) on CPU (WORLD_SIZE 2; "
        "spec.nprocPerNode is 8 on the cluster, capped here by --cpu-procs-per-pod 2)"
    ) in out
    log = (tmp_path / "run-local-logs" / "master-0-attempt1.log").read_text()
    assert "env PET_NPROC_PER_NODE=2" in log and "env WORLD_SIZE=2" in log
    assert "master-0 attempt 1: trained from iteration 0, exit code 0" in out


def test_the_summary_tells_each_attempt_in_words(tmp_path):
    from hfai_runtime.timeline import summarize

    args = ["--iters", "30", "--step", "0.1", "--ckpt-dir", "/data/ckpt"]
    (tmp_path / "ckpt").mkdir()
    result, _ = run(pytorchjob(args), tmp_path, preempt=[("master-0", At(0.5, True))])
    stopped = result.of_kind("stopped_at", "master-0")[0].value
    assert summarize(result.events) == [
        f"master-0 attempt 1: preempted, trained from iteration 0, stopped after iteration "
        f"{stopped}, exit code 143",
        f"master-0 attempt 2: resumed at iteration {stopped + 1}, exit code 0",
    ]


def test_version_and_help_examples(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as info:
        cli_main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"hfai-runtime {version('hfai-runtime')}\n"
    with pytest.raises(SystemExit):
        cli_main(["run-local", "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "--suspend-at train+5 --resume-after 2" in out


def test_a_queue_labelled_job_kueue_does_not_manage(tmp_path):
    """Kueue v0.19.2's default configuration does not manage PyTorchJobs: the queue label is
    ignored (the job runs unqueued), and a suspended manifest is never admitted."""
    doc = pytorchjob(["--iters", "1"])
    doc["metadata"]["labels"] = {"kueue.x-k8s.io/queue-name": "team-a"}
    result, _ = run(doc, tmp_path, kueue_manages_kind=False)
    assert result.succeeded
    assert "is ignored: Kueue does not manage PyTorchJobs" in result.events[0].detail
    doc["spec"]["runPolicy"]["suspend"] = True
    result, _ = run(doc, tmp_path, kueue_manages_kind=False)
    assert (result.condition, result.reason) == ("Failed", "Suspended")
    assert not result.of_kind("started")
    managed, _ = run(doc, tmp_path)  # Kueue manages it: it admits the suspended job
    assert managed.succeeded and "Kueue admits the Workload (LocalQueue team-a)" in managed.events[0].detail
