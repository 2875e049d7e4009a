"""``hfai-runtime run-local`` on the generated project's batch/v1 Jobs (eval, pack).

The Jobs are the real rendered ``k8s/eval-job.yaml`` and ``k8s/pack-job.yaml`` of the default
answers; where a test needs a pod that exits a given code, the container's command becomes
``python tests/scripts/runlocal_trainer.py`` (the stand-in the other run-local tests use: a
second per run) while the Job's own backoffLimit and podFailurePolicy stay as rendered. The pack
Job runs as rendered, on a synthetic COCO tree. Every pod is a real process started through the
CLI; the Job controller's rules are kubernetes ``pkg/controller/job/job_controller.go@v1.31.0``
and ``pod_failure_policy.go@v1.31.0`` (see ``hfai_runtime/local/job_controller.py``).
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import pytest
import yaml
from _template_render import render

from hfai_runtime.cli import main as cli_main
from hfai_runtime.ffrecord import PackedFolder
from hfai_runtime.local.job_controller import JobPolicy, PodFailure, job_policy
from hfai_runtime.local.manifest import parse_job
from hfai_runtime.timeline import EventKind, read_events

TRAINER = str(Path(__file__).parent / "scripts" / "runlocal_trainer.py")


@pytest.fixture(scope="module")
def project(template_src, tmp_path_factory) -> Path:
    """The default answers rendered with real copier."""
    return render(template_src, tmp_path_factory.mktemp("batch") / "proj", {})


def rendered(project: Path, name: str) -> dict:
    (doc,) = yaml.safe_load_all((project / "k8s" / f"{name}.yaml").read_text())
    return doc


def with_stub(job: dict, args: list[str], **spec) -> dict:
    """``job`` with its container running the stand-in trainer (init containers dropped) and
    ``spec`` fields set."""
    job = copy.deepcopy(job)
    pod = job["spec"]["template"]["spec"]
    pod.pop("initContainers", None)
    pod["containers"][0].update(command=["tini", "--", "python", TRAINER], args=args)
    job["spec"].update(spec)
    return job


def run(tmp_path: Path, job: dict, *flags: str) -> tuple[int, list]:
    """``run-local`` on ``job`` (written under tmp_path/k8s), data in tmp_path/data."""
    manifest = tmp_path / "k8s" / "job.yaml"
    manifest.parent.mkdir(exist_ok=True)
    manifest.write_text(yaml.safe_dump(job))
    data = tmp_path / "data"
    (data / "datasets").mkdir(parents=True, exist_ok=True)  # DETECTRON2_DATASETS must exist
    events = tmp_path / "events.jsonl"
    code = cli_main(
        ["run-local", str(manifest), "--quiet", "--data-dir", str(data), "--events", str(events), *flags]
    )
    return code, read_events(events)


def finished(events: list) -> str:
    (event,) = [e for e in events if e.kind == EventKind.FINISHED]
    return event.detail


def started(events: list) -> int:
    return len([e for e in events if e.kind == EventKind.STARTED])


def test_a_job_that_exits_0_completes_without_operator_env(project, tmp_path):
    job = with_stub(rendered(project, "eval-job"), ["--iters", "1", "--print-env", "MASTER_ADDR,RANK"])
    code, events = run(tmp_path, job)
    assert code == 0
    assert finished(events).startswith("Complete (CompletionsReached)")
    log = (tmp_path / "run-local-logs" / "job-0-attempt1.log").read_text()
    # No operator: nothing like a PyTorchJob's MASTER_ADDR / RANK reaches a plain Job's pod.
    assert "env MASTER_ADDR=<unset>" in log and "env RANK=<unset>" in log


@pytest.mark.parametrize(
    ("manifest", "exit_code", "spec", "pods", "condition"),
    [
        # The eval Job's backoffLimit 0: its first failed pod fails it.
        ("eval-job", 1, {}, 1, "Failed (BackoffLimitExceeded)"),
        # A plain failing pod (no rule matches): backoffLimit new pods, then the Job fails.
        ("eval-job", 1, {"backoffLimit": 2}, 3, "Failed (BackoffLimitExceeded)"),
        # The pack Job's rule 1, FailJob on exit codes NotIn [137, 143], beats its backoffLimit 2.
        ("pack-job", 1, {}, 1, "Failed (PodFailurePolicy): Container verify for pod"),
        # 143 is NotIn's exception: counted, a new pod each time, failing at > backoffLimit (2).
        ("pack-job", 143, {}, 3, "Failed (BackoffLimitExceeded)"),
    ],
)
def test_failed_pods_follow_backoff_limit_and_pod_failure_policy(
    project, tmp_path, manifest, exit_code, spec, pods, condition
):
    job = with_stub(rendered(project, manifest), ["--exit", str(exit_code)], **spec)
    code, events = run(tmp_path, job)
    assert code == 1 and started(events) == pods
    assert finished(events).startswith(condition), finished(events)
    restarts = [e.detail for e in events if e.kind == EventKind.RESTARTING]
    assert len(restarts) == pods - 1 and all("the Job creates a new pod" in d for d in restarts)
    if "PodFailurePolicy" in condition:  # pod_failure_policy.go@v1.31.0's message
        assert f"failed with exit code {exit_code} matching FailJob rule at index 1" in finished(events)


def test_a_preempted_pod_is_replaced_uncounted_and_the_job_completes(project, tmp_path):
    """DisruptionTarget -> Ignore: the eval Job (backoffLimit 0) survives the eviction."""
    # 60 steps of 0.05 s, resumed from a checkpoint on the PVC: the second pod finishes them.
    job = with_stub(rendered(project, "eval-job"), ["--iters", "60", "--ckpt-dir", "/mnt/data"])
    code, events = run(tmp_path, job, "--preempt", "job-0@train+0.2")
    assert code == 0 and started(events) == 2
    (restart,) = [e.detail for e in events if e.kind == EventKind.RESTARTING]
    assert "DisruptionTarget" in restart and "nothing is counted" in restart
    assert finished(events).startswith("Complete")


def test_active_deadline_fails_the_job(project, tmp_path):
    job = with_stub(rendered(project, "eval-job"), ["--iters", "100000"], activeDeadlineSeconds=1)
    code, events = run(tmp_path, job)
    assert code == 1 and finished(events).startswith("Failed (DeadlineExceeded)")


def test_the_rendered_pack_job_packs_a_synthetic_dataset(project, tmp_path, monkeypatch):
    """The real pack Job: init containers mkdir, copy the annotations, pack; then verify. Its
    commands name the image's ``hfai-runtime``: here the one beside this interpreter, on PATH."""
    data = tmp_path / "data"
    assert (
        cli_main(["synth-coco", str(data / "raw" / "coco"), "--train", "3", "--val", "2", "--size", "32"])
        == 0
    )
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    code, events = run(tmp_path, rendered(project, "pack-job"))
    assert code == 0, [e.detail for e in events]
    steps = [
        e.detail.split(",")[0] for e in events if e.kind in (EventKind.STARTED, EventKind.NEXT_CONTAINER)
    ]
    assert steps == [
        "attempt 1",
        "container copy-1",
        "container pack",
        "container verify",
    ], steps
    coco = data / "datasets" / "coco"
    assert (coco / "annotations" / "instances_val2017.json").is_file()
    with PackedFolder(str(coco / "coco.ffr")) as pack:
        assert pack.num_files() == 5 + 2  # the images and both annotation files
        assert pack.is_dir("train2017") and pack.is_file("annotations/instances_train2017.json")


@pytest.mark.slow
@pytest.mark.detectron2
@pytest.mark.timeout(1800)  # 32 s on a 2-core machine at load ~3.5; many minutes busier
def test_pack_then_train_then_the_real_eval_job(project, tmp_path, monkeypatch):
    """The project's own Jobs in a row, its real train_net.py: the pack Job packs a synthetic
    COCO, the PyTorchJob trains 2 iterations, the eval Job (its args replaced by the CPU smoke
    config, as docs/run-local.md says) evaluates the checkpoint."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(project)
    data = tmp_path / "pvc"
    assert cli_main(["synth-coco", str(data / "raw" / "coco"), "--coco-categories"]) == 0
    flags = ["--quiet", "--data-dir", str(data), "--logs-dir", str(tmp_path / "logs")]
    assert cli_main(["run-local", "k8s/pack-job.yaml", *flags]) == 0
    smoke = "--config-file configs/smoke_cpu.yaml"
    train = f"{smoke} SOLVER.IMS_PER_BATCH 2 SOLVER.MAX_ITER 2 OUTPUT_DIR /mnt/data/output/local"
    assert cli_main(["run-local", "k8s/job.yaml", *flags, "--args", train]) == 0
    evaluate = f"{smoke} --eval-only MODEL.WEIGHTS /mnt/data/output/local/model_final.pth OUTPUT_DIR /mnt/data/output/eval"
    assert cli_main(["run-local", "k8s/eval-job.yaml", *flags, "--args", evaluate]) == 0
    assert "copypaste: Task: bbox" in (data / "output" / "eval" / "log.txt").read_text()


@pytest.mark.parametrize(
    ("field", "value"),
    [("parallelism", 2), ("completions", 3), ("completionMode", "Indexed")],
)
def test_jobs_of_more_than_one_pod_are_refused_naming_the_field(project, field, value):
    job = rendered(project, "eval-job")
    job["spec"][field] = value
    with pytest.raises(ValueError, match=rf"^spec\.{field}: run-local runs"):
        parse_job(job)


def test_pod_failure_rules_in_order_first_match_decides():
    """pod_failure_policy.go@v1.31.0: In / NotIn on exit codes, containerName, exit 0 never matched."""
    spec = {
        "backoffLimit": 1,
        "podFailurePolicy": {
            "rules": [
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                {
                    "action": "Count",
                    "onExitCodes": {"containerName": "pack", "operator": "In", "values": [2]},
                },
                {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [2, 3]}},
                {"action": "Ignore", "onExitCodes": {"operator": "NotIn", "values": [5]}},
            ]
        },
    }
    policy = job_policy(spec, {"restartPolicy": "Never"}, "spec")
    assert isinstance(policy, JobPolicy) and policy.backoff_limit == 1
    assert policy.pod_failure("verify", 143, disrupted=True) == (PodFailure.IGNORE, 0)
    assert policy.pod_failure("pack", 2, disrupted=False) == (PodFailure.COUNT, 1)
    assert policy.pod_failure("verify", 2, disrupted=False) == (PodFailure.FAIL_JOB, 2)
    assert policy.pod_failure("verify", 4, disrupted=False) == (PodFailure.IGNORE, 3)
    assert policy.pod_failure("verify", 5, disrupted=False) == (PodFailure.COUNT, None)
    with pytest.raises(ValueError, match=r"spec\.podFailurePolicy\.rules\[0\]\.action: run-local models"):
        job_policy({"podFailurePolicy": {"rules": [{"action": "FailIndex"}]}}, {}, "spec")
