"""``hfai-runtime job`` against an in-process fake of the Kubernetes HTTP API.

No Kubernetes API server can run where these tests run, so ``fake_kube_api`` serves the few
endpoints the commands call (custom objects, pods, pod logs, events, Kueue workloads) over real
HTTP on 127.0.0.1, with responses built from the official client's own models (``V1Pod``,
``CoreV1Event``, ``V1Status``...); the commands reach it through a generated kubeconfig and the
official client, unmocked. The preemption story is a recorded sequence of cluster states: the
pods of attempt 1 are preempted and exit 143, the operator recreates them, attempt 2 resumes at
iteration 14 and succeeds.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from fake_kube_api import (
    FakeKubeAPI,
    Frame,
    LogLine,
    SilentAPI,
    condition,
    event,
    pod,
    pytorchjob,
    trainjob,
    trainjob_pod,
    workload,
)

from hfai_runtime.cli import main
from hfai_runtime.records import RecordKind, format_record

NS = "team-a"
T0 = datetime(2026, 11, 30, 5, 0, 0, tzinfo=UTC)
CHECKPOINT = "/mnt/output/demo/model_0000013.pth"


def at(seconds: float) -> str:
    """An API time (whole seconds, as events and conditions carry) ``seconds`` after T0."""
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def log(seconds: float, text: str) -> LogLine:
    """A log line as the kubelet stamps it (RFC 3339 with nanoseconds)."""
    t = T0 + timedelta(seconds=seconds)
    return LogLine(t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond:06d}417Z", text)


def rec(seconds: float, kind: RecordKind, **fields) -> LogLine:
    """A runtime record behind a detectron2 logger prefix, as a pod would print it."""
    return log(seconds, f"[11/30 05:00:00 hfai_runtime]: {format_record(kind, **fields)}")


def attempt_logs(
    rank: int, start: int, stop: int, t_start: float, t_stop: float, suspended: bool
) -> list[LogLine]:
    lines = [
        log(t_start - 5, "[11/30 05:00:00 d2.engine.defaults]: Model: GeneralizedRCNN"),
        rec(t_start, RecordKind.TRAINING_STARTED, iteration=start, rank=rank),
        rec(t_stop - 1, RecordKind.PROGRESS, iteration=stop, max_iter=30, rank=rank, loss=0.5),
    ]
    if suspended:
        lines.append(
            rec(t_stop, RecordKind.SUSPENDED, iteration=stop, exit_code=143, checkpoint=CHECKPOINT, rank=rank)
        )
    return lines


def preemption_frames() -> list[Frame]:
    """The recorded preemption: five looks at a 2-pod PyTorchJob ``demo``."""
    created = condition("Created", "True", "PyTorchJobCreated", "PyTorchJob demo is created.", at(0))
    running = condition("Running", "True", "PyTorchJobRunning", "PyTorchJob team-a/demo is running.", at(20))
    job = pytorchjob("demo", created=at(0))

    def frame(conditions, pods, logs, events) -> Frame:
        f = Frame(pods=pods, logs=logs, events=events)
        f.add({**job, "status": {"conditions": conditions}})
        return f

    def pair(uid: str, phase: str, **kw) -> list[dict]:
        return [
            pod("demo", "master", 0, f"m{uid}", phase, created=kw.pop("created"), state=kw["master"]),
            pod("demo", "worker", 0, f"w{uid}", phase, created=at(int(uid) * 66 - 65), state=kw["worker"]),
        ]

    def run(t):
        return {"running": {"started_at": at(t)}}

    def ended(t0, t1, code):
        return {
            "terminated": {
                "exit_code": code,
                "reason": "Error" if code else "Completed",
                "started_at": at(t0),
                "finished_at": at(t1),
            }
        }

    attempt1 = pair("1", "Running", created=at(1), master=run(15), worker=run(16))
    m1, w1 = attempt1
    created_pods = [
        event(NS, job, "SuccessfulCreatePod", f"Created pod: demo-{r}-0", at(1)) for r in ("master", "worker")
    ]
    started1 = [
        event(
            NS,
            m1,
            "Scheduled",
            "Successfully assigned team-a/demo-master-0 to gpu-1",
            at(2),
            component="default-scheduler",
        ),
        event(NS, m1, "Started", "Started container pytorch", at(15), component="kubelet"),
        event(NS, w1, "Started", "Started container pytorch", at(16), component="kubelet"),
    ]
    logs1 = {"m1": attempt_logs(0, 0, 10, 20, 40, False), "w1": attempt_logs(1, 0, 10, 20, 40, False)}
    frame0 = frame([created, running], attempt1, logs1, created_pods + started1)

    preempted = [
        event(
            NS,
            w1,
            "Preempted",
            "Preempted by pod 5f0e2a17 on node gpu-2",
            at(60),
            component="default-scheduler",
        ),
        event(NS, w1, "Killing", "Stopping container pytorch", at(60), component="kubelet"),
    ]
    stopped = pair("1", "Failed", created=at(1), master=ended(15, 64, 143), worker=ended(16, 64, 143))
    logs1b = {"m1": attempt_logs(0, 0, 13, 20, 63, True), "w1": attempt_logs(1, 0, 13, 20, 63, True)}
    frame1 = frame([created, running], stopped, logs1b, created_pods + started1 + preempted)

    restarting = condition(
        "Restarting",
        "True",
        "PyTorchJobRestarting",
        "job demo is restarting because Worker replica(s) failed.",
        at(65),
    )
    exited = [
        event(
            NS,
            job,
            "ExitedWithCode",
            f"Pod: team-a.demo-{r}-0 exited with code 143",
            at(65),
            last=at(66),
            count=3,
        )
        for r in ("master", "worker")
    ]
    restart_events = [
        event(
            NS,
            job,
            "PyTorchJobRestarting",
            f"job demo is restarting because {r} replica(s) failed.",
            at(65),
            event_type="Warning",
        )
        for r in ("Master", "Worker")
    ]
    recreated = [
        event(NS, job, "SuccessfulCreatePod", f"Created pod: demo-{r}-0", at(1), last=at(66), count=2)
        for r in ("master", "worker")
    ]
    waiting = {"waiting": {"reason": "ContainerCreating"}}
    attempt2 = pair("2", "Pending", created=at(66), master=waiting, worker=waiting)
    history = recreated + started1 + preempted + exited + restart_events
    frame2 = frame([created, restarting], attempt2, {}, history)

    m2, w2 = pair("2", "Running", created=at(66), master=run(80), worker=run(81))
    started2 = [
        event(NS, m2, "Started", "Started container pytorch", at(80), component="kubelet"),
        event(NS, w2, "Started", "Started container pytorch", at(81), component="kubelet"),
    ]
    logs2 = {"m2": attempt_logs(0, 14, 20, 85, 100, False), "w2": attempt_logs(1, 14, 20, 85, 100, False)}
    running2 = condition("Running", "True", "PyTorchJobRunning", "PyTorchJob team-a/demo is running.", at(82))
    frame3 = frame([created, running2], [m2, w2], logs2, history + started2)

    done = pair("2", "Succeeded", created=at(66), master=ended(80, 140, 0), worker=ended(81, 141, 0))
    logs2b = {"m2": attempt_logs(0, 14, 30, 85, 139, False), "w2": attempt_logs(1, 14, 30, 85, 139, False)}
    succeeded = condition(
        "Succeeded", "True", "PyTorchJobSucceeded", "PyTorchJob team-a/demo successfully completed.", at(141)
    )
    not_running = {**running2, "status": "False", "lastTransitionTime": at(141)}
    final_events = (
        history
        + started2
        + [event(NS, job, "PyTorchJobSucceeded", "PyTorchJob team-a/demo successfully completed.", at(141))]
    )
    frame4 = frame([created, not_running, succeeded], done, logs2b, final_events)
    return [frame0, frame1, frame2, frame3, frame4]


def job_cli(fake: FakeKubeAPI, tmp_path: Path, *args: str) -> int:
    return main(["job", *args, "--kubeconfig", str(fake.kubeconfig(tmp_path))])


def steps(events: list[dict]) -> list[tuple]:
    return [(e["replica"], e["kind"], e["value"]) for e in events]


RESUMED_ATTEMPT = [
    ("master-0", "restarting", None),
    ("worker-0", "restarting", None),
    ("master-0", "started", None),
    ("worker-0", "started", None),
    ("master-0", "trains_from", 14),
    ("worker-0", "trains_from", 14),
    ("master-0", "exited", 0),
    ("worker-0", "exited", 0),
    ("", "finished", None),
]


# -- timeline ------------------------------------------------------------------------------


def test_timeline_of_a_preempted_and_resumed_job(tmp_path, capsys):
    """What the API server still holds after the job ended: the old pods' events and the
    operator's exit codes, the new pods' statuses and records."""
    events_file = tmp_path / "events.jsonl"
    with FakeKubeAPI(preemption_frames()[-1]) as fake:
        assert job_cli(fake, tmp_path, "timeline", "demo", "--events", str(events_file)) == 0
    out = capsys.readouterr().out
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert steps(events) == [
        ("master-0", "started", None),
        ("worker-0", "started", None),
        ("worker-0", "preempted", None),
        ("worker-0", "stopping", None),
        ("master-0", "exited", 143),
        ("worker-0", "exited", 143),
        ("", "restarting", None),
        *RESUMED_ATTEMPT,
    ]
    assert all(set(e) == {"time", "replica", "kind", "detail", "value"} for e in events)
    by_step = {(e["replica"], e["kind"], e["value"]): e for e in events}
    assert by_step[("worker-0", "preempted", None)]["time"] == 60.0
    assert "suspended at a checkpoint (SIGTERM), retried" in by_step[("master-0", "exited", 143)]["detail"]
    assert by_step[("master-0", "trains_from", 14)]["detail"] == "resumed at iteration 14"
    assert by_step[("master-0", "trains_from", 14)]["time"] == 85.0
    assert (
        by_step[("worker-0", "restarting", None)]["detail"] == "pod demo-worker-0 recreated by the operator"
    )
    # The printed timeline is the same events, in run-local's layout.
    printed = [line for line in out.splitlines() if line.startswith("  ") and "s  " in line]
    assert len(printed) == len(events)
    assert "    85.00s  master-0 trains_from  resumed at iteration 14" in out  # names aligned
    assert "PyTorchJob demo: Succeeded (PyTorchJobSucceeded)" in out


def test_watched_timeline_keeps_what_deleted_pods_said(tmp_path, capsys):
    """Watching from the start reads each pod's records before the operator deletes it:
    attempt 1's stop point (iteration 13) and checkpoint appear, and the resume continues
    from the next iteration."""
    events_file = tmp_path / "events.jsonl"
    frames = preemption_frames()
    with FakeKubeAPI(frames) as fake:
        assert (
            job_cli(
                fake, tmp_path, "timeline", "demo", "--watch", "--interval", "0", "--events", str(events_file)
            )
            == 0
        )
        assert fake.index == len(frames) - 1, "the watch looked until the job ended"
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert steps(events) == [
        ("master-0", "started", None),
        ("worker-0", "started", None),
        ("master-0", "trains_from", 0),
        ("worker-0", "trains_from", 0),
        ("worker-0", "preempted", None),
        ("worker-0", "stopping", None),
        ("master-0", "stopped_at", 13),
        ("worker-0", "stopped_at", 13),
        ("master-0", "exited", 143),
        ("worker-0", "exited", 143),
        ("", "restarting", None),
        *RESUMED_ATTEMPT,
    ]
    stop = next(e for e in events if e["kind"] == "stopped_at")
    assert stop["detail"] == f"stopped at iteration 13, checkpoint {CHECKPOINT}"
    resumed = next(e for e in events if e["kind"] == "trains_from" and e["value"])
    assert resumed["value"] == stop["value"] + 1
    assert "resumed at iteration 14" in capsys.readouterr().out


# -- status --------------------------------------------------------------------------------


def test_status_after_the_preemption(tmp_path, capsys):
    with FakeKubeAPI(preemption_frames()[1]) as fake:
        assert job_cli(fake, tmp_path, "status", "demo") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "PyTorchJob demo in namespace team-a"
    assert "  Running     True   2026-11-30T05:00:20Z  PyTorchJobRunning:" in out
    assert (
        "  master-0   demo-master-0  Failed  restarts 0  last exit 143 (suspended at a "
        "checkpoint (SIGTERM), retried)  iteration: rank 0 at 13 of 30"
    ) in out
    assert "  worker-0   demo-worker-0  Failed" in out
    assert f"Last checkpoint: {CHECKPOINT} (iteration 13)" in out
    assert "Kueue" not in out  # not in a Kueue queue


def test_status_of_the_recreated_pods(tmp_path, capsys):
    """A pod recreated under ExitCode starts with an empty status: the exit code of the pod it
    replaced comes from the operator's ExitedWithCode event."""
    with FakeKubeAPI(preemption_frames()[3]) as fake:
        assert job_cli(fake, tmp_path, "status", "demo") == 0
    out = capsys.readouterr().out
    assert (
        "  master-0   demo-master-0  Running  restarts 0  last exit of the pod it replaced "
        "143 (suspended at a checkpoint (SIGTERM), retried)  iteration: rank 0 at 20 of 30"
    ) in out
    assert "Last checkpoint: none reported in the current pods' logs" in out


@pytest.mark.parametrize(
    "state, says",
    [
        (
            {"admitted_by": "gpu-cluster"},
            "Kueue: Workload demo-wl: admitted by ClusterQueue gpu-cluster (LocalQueue team-queue)",
        ),
        (
            {"pending": "couldn't assign flavors to pod set master: insufficient quota"},
            (
                "Kueue: Workload demo-wl: pending in LocalQueue team-queue (Pending: couldn't assign "
                "flavors to pod set master: insufficient quota)"
            ),
        ),
        ({"active": False}, "Kueue: Workload demo-wl: deactivated (spec.active: false)"),
    ],
)
def test_status_shows_kueue_admission(tmp_path, capsys, state, says):
    frame = Frame()
    job = frame.add(pytorchjob("demo", labels={"kueue.x-k8s.io/queue-name": "team-queue"}, suspend=True))
    frame.add(workload("demo-wl", job, **state))
    frame.add(
        workload("other-wl", pytorchjob("other", uid="other-uid", labels={"kueue.x-k8s.io/queue-name": "q"}))
    )
    with FakeKubeAPI(frame) as fake:
        assert job_cli(fake, tmp_path, "status", "demo") == 0
    out = capsys.readouterr().out
    assert says in out
    assert "PyTorchJob demo in namespace team-a (suspended)" in out
    assert "Pods: none" in out


def test_the_jobs_own_suspend_exit_code(tmp_path, capsys):
    """A project may choose another suspend exit code (HFAI_SUSPEND_EXIT_CODE in the manifest);
    143 then is a plain SIGTERM."""
    frame = Frame()
    job = frame.add(pytorchjob("demo"))
    for spec in job["spec"]["pytorchReplicaSpecs"].values():
        spec["template"]["spec"]["containers"][0]["env"] = [
            {"name": "HFAI_SUSPEND_EXIT_CODE", "value": "200"}
        ]
    frame.events = [
        event(NS, job, "ExitedWithCode", f"Pod: team-a.demo-{r}-0 exited with code {code}", at(30))
        for r, code in (("master", 200), ("worker", 143))
    ]
    with FakeKubeAPI(frame) as fake:
        assert job_cli(fake, tmp_path, "timeline", "demo") == 0
    out = capsys.readouterr().out
    assert "master-0 exited       exit code 200: suspended at a checkpoint (SIGTERM)" in out
    assert "worker-0 exited       exit code 143: signal 15: retried" in out


# -- logs ----------------------------------------------------------------------------------


def test_logs_are_prefixed_per_replica(tmp_path, capsys):
    with FakeKubeAPI(preemption_frames()[3]) as fake:
        assert job_cli(fake, tmp_path, "logs", "demo") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "[master-0] [11/30 05:00:00 d2.engine.defaults]: Model: GeneralizedRCNN"
    assert sum(line.startswith("[master-0] ") for line in out) == 3
    assert sum(line.startswith("[worker-0] ") for line in out) == 3
    assert any('"iteration": 14' in line and line.startswith("[worker-0]") for line in out)


def restarted_master(exit_code: int) -> dict:
    """demo-master-0 (uid m1), running again since 55 s after its container exited with
    ``exit_code`` at 50 s and the kubelet restarted it in place (OnFailure)."""
    killed = {
        "terminated": {"exit_code": exit_code, "reason": "Error", "started_at": at(10), "finished_at": at(50)}
    }
    return pod(
        "demo",
        "master",
        0,
        "m1",
        "Running",
        created=at(1),
        state={"running": {"started_at": at(55)}},
        restarts=1,
        last_state=killed,
    )


def test_logs_previous_reads_the_restarted_container(tmp_path, capsys):
    """Under OnFailure the kubelet restarts the container in place: --previous reads the run
    before; a pod without a previous run says so on stderr and the others still print."""
    master = restarted_master(137)
    worker = pod(
        "demo", "worker", 0, "w1", "Running", created=at(1), state={"running": {"started_at": at(12)}}
    )
    frame = Frame(
        pods=[master, worker],
        logs={"m1": [log(56, "second run")], "w1": [log(13, "worker line")]},
        previous_logs={"m1": [log(11, "first run"), log(49, "last words")]},
    )
    frame.add(pytorchjob("demo"))
    with FakeKubeAPI(frame) as fake:
        assert job_cli(fake, tmp_path, "logs", "demo", "--previous") == 0
        assert [r.query.get("previous") for r in fake.requests if r.path.endswith("/log")] == ["true", "true"]
    captured = capsys.readouterr()
    assert captured.out.splitlines() == ["[master-0] first run", "[master-0] last words"]
    assert captured.err.splitlines() == [
        (
            "[worker-0] read the previous log of pod demo-worker-0: the API server answered 400: "
            'previous terminated container "pytorch" in pod "demo-worker-0" not found'
        )
    ]
    with FakeKubeAPI(frame) as fake:
        assert job_cli(fake, tmp_path, "status", "demo") == 0
    assert (
        "restarts 1  last exit 137 (SIGKILL: killed at the end of the grace period, "
        "retried from the last checkpoint)"
    ) in capsys.readouterr().out


def test_logs_follow_until_the_job_ends(tmp_path, capsys):
    with FakeKubeAPI(preemption_frames()[-1]) as fake:
        assert job_cli(fake, tmp_path, "logs", "demo", "--follow") == 0
        follows = [r.query.get("follow") for r in fake.requests if r.path.endswith("/log")]
    out = capsys.readouterr().out.splitlines()
    assert follows == ["true", "true"]
    assert sorted(out) == sorted(
        [f"[master-0] {line.text}" for line in attempt_logs(0, 14, 30, 85, 139, False)]
        + [f"[worker-0] {line.text}" for line in attempt_logs(1, 14, 30, 85, 139, False)]
    )


# -- suspend / resume ----------------------------------------------------------------------


def test_suspend_and_resume_a_pytorchjob(tmp_path, capsys):
    frame = Frame()
    frame.add(pytorchjob("demo"))
    with FakeKubeAPI(frame) as fake:
        assert job_cli(fake, tmp_path, "suspend", "demo") == 0
        assert (
            fake.frame.objects[("kubeflow.org", "pytorchjobs", NS, "demo")]["spec"]["runPolicy"]["suspend"]
            is True
        )
        assert job_cli(fake, tmp_path, "resume", "demo") == 0
        patches = fake.patches("pytorchjobs")
    assert [(p.content_type, p.body) for p in patches] == [
        ("application/merge-patch+json", {"spec": {"runPolicy": {"suspend": True}}}),
        ("application/merge-patch+json", {"spec": {"runPolicy": {"suspend": False}}}),
    ]
    out = capsys.readouterr().out
    assert "PyTorchJob demo: spec.runPolicy.suspend=true" in out
    assert "PyTorchJob demo: spec.runPolicy.suspend=false" in out


def test_suspend_a_trainjob(tmp_path, capsys):
    """No PyTorchJob of that name: the TrainJob is found and its spec.suspend is set."""
    frame = Frame()
    frame.add(trainjob("run-2"))
    with FakeKubeAPI(frame) as fake:
        assert job_cli(fake, tmp_path, "suspend", "run-2") == 0
        assert [p.body for p in fake.patches("trainjobs")] == [{"spec": {"suspend": True}}]
    assert "TrainJob run-2: spec.suspend=true" in capsys.readouterr().out


def test_suspend_and_resume_under_kueue_deactivate_the_workload(tmp_path, capsys):
    """Kueue would undo suspend: true on an admitted job, so the Workload is deactivated."""
    frame = Frame()
    job = frame.add(pytorchjob("demo", labels={"kueue.x-k8s.io/queue-name": "team-queue"}))
    frame.add(
        workload("other-wl", pytorchjob("other", uid="other-uid", labels={"kueue.x-k8s.io/queue-name": "q"}))
    )
    frame.add(workload("pytorchjob-demo-3c1f9", job, admitted_by="gpu-cluster"))
    with FakeKubeAPI(frame) as fake:
        assert job_cli(fake, tmp_path, "suspend", "demo") == 0
        assert job_cli(fake, tmp_path, "resume", "demo") == 0
        assert fake.patches("pytorchjobs") == []
        patches = fake.patches("workloads")
    assert [(p.path.rsplit("/", 1)[-1], p.body) for p in patches] == [
        ("pytorchjob-demo-3c1f9", {"spec": {"active": False}}),
        ("pytorchjob-demo-3c1f9", {"spec": {"active": True}}),
    ]
    assert "Workload pytorchjob-demo-3c1f9 spec.active=false" in capsys.readouterr().out


# -- errors: one line, exit 1 --------------------------------------------------------------


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1, err
    return err[0]


def test_no_kubeconfig(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert main(["job", "status", "demo"]) == 1
    assert one_error_line(capsys).startswith("hfai-runtime job status: no kubeconfig:")
    assert main(["job", "suspend", "demo", "--kubeconfig", str(tmp_path / "nope")]) == 1
    assert one_error_line(capsys) == (
        f"hfai-runtime job suspend: no kubeconfig: --kubeconfig {tmp_path / 'nope'} does not exist"
    )


def test_submit_of_a_file_that_is_not_yaml(tmp_path, capsys):
    manifest = tmp_path / "job.yaml"
    manifest.write_text("a: [\n")
    assert main(["job", "submit", str(manifest)]) == 2  # as hfai-runtime check: unreadable input
    line = one_error_line(capsys)
    assert line.startswith(f"hfai-runtime job submit: {manifest}: line 2: not YAML"), line


def test_kubeconfig_from_the_environment_and_its_namespace(tmp_path, monkeypatch, capsys):
    frame = Frame()
    frame.add(pytorchjob("demo", namespace="research"))
    with FakeKubeAPI(frame) as fake:
        monkeypatch.setenv("KUBECONFIG", str(fake.kubeconfig(tmp_path, namespace="research")))
        assert main(["job", "status", "demo"]) == 0
    assert "PyTorchJob demo in namespace research" in capsys.readouterr().out


def test_context_and_namespace_options(tmp_path, capsys):
    frame = Frame()
    frame.add(pytorchjob("demo"))
    with FakeKubeAPI(frame) as fake:
        config = str(fake.kubeconfig(tmp_path))
        assert main(["job", "status", "demo", "--kubeconfig", config, "--context", "fake"]) == 0
        assert "in namespace team-a" in capsys.readouterr().out
        assert main(["job", "status", "demo", "--kubeconfig", config, "--context", "nosuch"]) == 1
        assert one_error_line(capsys) == (
            f"hfai-runtime job status: kubeconfig {config}: "
            f"Invalid kube-config file. Expected object with name "
            f"nosuch in {config}/contexts list"
        )
        assert main(["job", "status", "demo", "--kubeconfig", config, "-n", "research"]) == 1
        assert one_error_line(capsys).endswith("of that name in namespace research")


@pytest.mark.parametrize("command", [["status"], ["logs"], ["timeline"], ["suspend"], ["resume"]])
def test_forbidden(tmp_path, capsys, command):
    frame = Frame()
    frame.add(pytorchjob("demo"))
    with FakeKubeAPI(frame) as fake:
        fake.forbidden = True
        assert job_cli(fake, tmp_path, *command, "demo") == 1
    line = one_error_line(capsys)
    assert line.startswith(
        f"hfai-runtime job {command[0]}: get PyTorchJob demo: forbidden "
        f'(403): pytorchjobs.kubeflow.org is forbidden: User "tester"'
    )


def test_crd_not_installed(tmp_path, capsys):
    with FakeKubeAPI(Frame(), installed=()) as fake:
        assert job_cli(fake, tmp_path, "status", "demo") == 1
        assert "not served by this cluster (404)" in one_error_line(capsys)
        assert job_cli(fake, tmp_path, "timeline", "demo", "--kind", "TrainJob") == 1
        assert one_error_line(capsys).startswith(
            "hfai-runtime job timeline: trainjobs.trainer.kubeflow.org/v1alpha1: not served"
        )


def test_kueue_not_installed(tmp_path, capsys):
    frame = Frame()
    frame.add(pytorchjob("demo", labels={"kueue.x-k8s.io/queue-name": "team-queue"}))
    with FakeKubeAPI(frame, installed=(("kubeflow.org", "v1", "pytorchjobs"),)) as fake:
        assert job_cli(fake, tmp_path, "suspend", "demo") == 1
    assert one_error_line(capsys).startswith(
        "hfai-runtime job suspend: list Kueue Workloads: the resource is not served by this "
        "cluster (404 404 page not found)"
    )


def test_a_queue_labelled_job_kueue_does_not_manage_is_suspended_itself(tmp_path, capsys):
    """Kueue v0.19.2's default configuration leaves PyTorchJobs out: no Workload ever appears.
    After a bounded wait, one line says so and how to enable it, and the job's own suspend
    field is set (Kueue, not managing it, will not set it back)."""
    frame = Frame()
    frame.add(pytorchjob("demo", labels={"kueue.x-k8s.io/queue-name": "team-queue"}))
    with FakeKubeAPI(frame) as fake:
        assert job_cli(fake, tmp_path, "suspend", "demo", "--workload-wait", "0") == 0
        assert [p.body for p in fake.patches("pytorchjobs")] == [{"spec": {"runPolicy": {"suspend": True}}}]
    (line,) = capsys.readouterr().out.splitlines()
    assert "no Kueue Workload appeared in 0 s" in line
    assert '"kubeflow.org/pytorchjob" commented out of integrations.frameworks' in line
    assert "kueue-manager-config" in line and line.endswith("every pod (SIGTERM, then the grace period)")


def test_the_workload_wait_is_bounded_by_an_injected_clock():
    """wait_for_workload looks once a second until its deadline, on the clock it is given."""
    from hfai_runtime.cluster import kueue

    class Clock:
        now = 0.0

        def __call__(self) -> float:
            return self.now

        def sleep(self, seconds: float) -> None:
            self.now += seconds

    clock = Clock()
    looks = []

    class NoWorkloads:
        namespace = "team-a"

        def call(self, what, method, *args):
            looks.append(clock())
            return {"items": []}

        def custom(self):
            return type("Api", (), {"list_namespaced_custom_object": None})()

    job = pytorchjob("demo", labels={"kueue.x-k8s.io/queue-name": "q"})
    assert kueue.wait_for_workload(NoWorkloads(), job, 2.5, clock, clock.sleep) is None
    assert looks == [0.0, 1.0, 2.0, 2.5]


def test_job_not_found(tmp_path, capsys):
    frame = Frame()
    frame.add(pytorchjob("demo"))
    with FakeKubeAPI(frame) as fake:
        assert job_cli(fake, tmp_path, "logs", "nosuch") == 1
        assert one_error_line(capsys) == (
            "hfai-runtime job logs: job nosuch not found: no "
            "PyTorchJob or TrainJob of that name in namespace "
            "team-a"
        )
        # Only one operator installed: the other kind is not looked for, and no error says so.
    with FakeKubeAPI(frame, installed=(("kubeflow.org", "v1", "pytorchjobs"),)) as fake:
        assert job_cli(fake, tmp_path, "resume", "nosuch") == 1
        assert one_error_line(capsys).endswith("no PyTorchJob of that name in namespace team-a")


def test_unreachable_api_server(tmp_path, capsys):
    with FakeKubeAPI(Frame()) as fake:
        config = fake.kubeconfig(tmp_path)
    assert main(["job", "status", "demo", "--kubeconfig", str(config)]) == 1
    assert "cannot reach the API server at http://127.0.0.1:" in one_error_line(capsys)


# -- submit --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def admission_check():
    """Submit runs ``hfai-runtime check`` first; it lands with the check issue."""
    check = pytest.importorskip("hfai_runtime.check")
    if not hasattr(check, "check_file"):
        pytest.skip("hfai_runtime.check.check_file is not in this checkout yet")


@pytest.fixture(scope="module")
def rendered_job(admission_check, tmp_path_factory) -> Path:
    """The template's own k8s/job.yaml (default answers), rendered by copier."""
    from _template_render import render, template_repo

    root = tmp_path_factory.mktemp("submit")
    return render(template_repo(root / "src"), root / "project", {}) / "k8s" / "job.yaml"


def test_submit_applies_the_rendered_job(tmp_path, capsys, rendered_job):
    manifest = yaml.safe_load(rendered_job.read_text())
    with FakeKubeAPI(Frame()) as fake:
        assert job_cli(fake, tmp_path, "submit", str(rendered_job)) == 0
        [request] = fake.patches("pytorchjobs")
    namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    assert request.path == f"/apis/kubeflow.org/v1/namespaces/{namespace}/pytorchjobs/{name}"
    assert request.content_type == "application/apply-patch+yaml"
    assert request.query["fieldManager"] == "hfai-runtime"
    assert request.body == manifest
    out = capsys.readouterr().out
    assert out.startswith(f"PyTorchJob {name} applied in namespace {namespace}")
    assert f"hfai-runtime job logs {name} -n {namespace}" in out


def test_submit_sends_exactly_what_check_read(tmp_path, capsys, rendered_job):
    """A timestamp-looking env value stays the string the API server reads (PyYAML's safe_load
    made it a datetime and the client re-serialised it); check judged that same body."""
    from hfai_runtime.kube.reader import read_manifest

    text = rendered_job.read_text()
    container = "- name: pytorch  # the name the Training Operator requires\n"
    indent = text.split(container)[0].rsplit("\n", 1)[1] + "  "
    manifest = tmp_path / "job.yaml"
    manifest.write_text(
        text.replace(container, f"{container}{indent}workingDir: 2001-12-14 21:59:43.10\n", 1)
    )
    with FakeKubeAPI(Frame()) as fake:
        assert job_cli(fake, tmp_path, "submit", str(manifest)) == 0, capsys.readouterr().err
        [request] = fake.patches("pytorchjobs")
    [checked] = read_manifest(manifest).documents
    assert request.body == checked
    pod = request.body["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    assert pod["containers"][0]["workingDir"] == "2001-12-14 21:59:43.10"


def test_submit_refuses_what_check_refuses(tmp_path, capsys, rendered_job):
    manifest = yaml.safe_load(rendered_job.read_text())
    manifest["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["name"] = (
        "main"  # the Training Operator's webhook requires "pytorch"
    )
    bad = tmp_path / "job.yaml"
    bad.write_text(yaml.safe_dump(manifest))
    with FakeKubeAPI(Frame()) as fake:
        assert job_cli(fake, tmp_path, "submit", str(bad)) == 1
        assert fake.requests == [], "nothing reaches the cluster"
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith(f"hfai-runtime job submit: {bad}: ")
    assert err[-1].endswith("found by hfai-runtime check; nothing was submitted")
    assert any(line.startswith("check: ") and "pytorch" in line for line in err[:-1])


# -- TrainJob ------------------------------------------------------------------------------


def test_trainjob_status_logs_and_timeline(tmp_path, capsys):
    """A TrainJob's pods are a JobSet's: replicas are named by completion index (node-0,
    node-1), the container is ``node``, and ``Complete`` is success. node-1 was restarted in
    place after SIGKILL (OnFailure); a deleted pod's events are placed by its name."""
    complete = condition("Complete", "True", "AllJobsCompleted", "jobset completed successfully", at(200))
    frame = Frame()
    frame.add(trainjob("run-2", conditions=[complete]))
    ended = {
        "terminated": {"exit_code": 0, "reason": "Completed", "started_at": at(20), "finished_at": at(199)}
    }
    killed = {
        "terminated": {"exit_code": 137, "reason": "Error", "started_at": at(20), "finished_at": at(90)}
    }
    node0 = trainjob_pod("run-2", 0, "x7k2p", "n0", "Succeeded", created=at(5), state=ended)
    node1 = trainjob_pod(
        "run-2",
        1,
        "q9w4z",
        "n1",
        "Succeeded",
        created=at(5),
        restarts=1,
        last_state=killed,
        state={"terminated": {**ended["terminated"], "started_at": at(95)}},
    )
    gone = {**node1, "metadata": {**node1["metadata"], "name": "run-2-node-0-1-aaaaa", "uid": "old"}}
    frame.pods = [node0, node1]
    frame.logs = {
        "n0": [rec(30, RecordKind.TRAINING_STARTED, iteration=0, rank=0)],
        "n1": [rec(100, RecordKind.TRAINING_STARTED, iteration=40, rank=1)],
    }
    frame.events = [event(NS, gone, "Started", "Started container node", at(3), component="kubelet")]
    with FakeKubeAPI(frame) as fake:
        assert job_cli(fake, tmp_path, "status", "run-2") == 0
        out = capsys.readouterr().out
        assert "TrainJob run-2 in namespace team-a" in out
        assert "  node-0     run-2-node-0-0-x7k2p  Succeeded  restarts 0  last exit 0" in out
        assert "  node-1     run-2-node-0-1-q9w4z  Succeeded  restarts 1  last exit 0" in out
        assert job_cli(fake, tmp_path, "logs", "run-2") == 0
        assert capsys.readouterr().out.splitlines()[1].startswith("[node-1] [11/30")
        assert all(r.query.get("container") == "node" for r in fake.requests if r.path.endswith("/log"))
        assert job_cli(fake, tmp_path, "timeline", "run-2", "--events", str(tmp_path / "e.jsonl")) == 0
    events = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert steps(events) == [
        ("node-1", "started", None),  # the deleted pod, from its event
        ("node-0", "started", None),
        ("node-1", "started", None),
        ("node-0", "trains_from", 0),
        ("node-1", "exited", 137),
        ("node-1", "started", None),
        ("node-1", "trains_from", 40),
        ("node-0", "exited", 0),
        ("node-1", "exited", 0),
        ("", "finished", None),
    ]
    assert "AllJobsCompleted" in events[-1]["detail"]


def test_without_the_kubernetes_client(tmp_path, monkeypatch, capsys):
    """``hfai-runtime`` installs without the ``cluster`` extra; ``job`` then says what to
    install."""
    monkeypatch.setitem(sys.modules, "kubernetes", None)  # its import fails
    assert main(["job", "status", "demo", "--kubeconfig", str(tmp_path / "k")]) == 1
    assert one_error_line(capsys) == (
        "hfai-runtime job status: the kubernetes client is not installed: pip install 'hfai-runtime[cluster]'"
    )


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--interval", "-1"], "--interval: expected a finite number of seconds, 0 or more; got -1.0"),
        (["--interval", "nan"], "--interval: expected a finite number of seconds, 0 or more; got nan"),
        (["--interval", "inf"], "--interval: expected a finite number of seconds, 0 or more; got inf"),
        (
            ["--events", "{tmp}/missing/e.jsonl"],
            "--events {tmp}/missing/e.jsonl: its folder {tmp}/missing does not exist",
        ),
        (["--events", "{tmp}"], "--events {tmp}: is a folder; expected a file name"),
    ],
)
def test_timeline_flags_are_one_line_and_exit_2_before_any_request(tmp_path, capsys, flags, expected):
    with FakeKubeAPI(Frame()) as fake:
        code = job_cli(
            fake, tmp_path, "timeline", "demo", "--watch", *[f.format(tmp=tmp_path) for f in flags]
        )
        assert fake.requests == []
    assert code == 2
    assert one_error_line(capsys) == f"hfai-runtime job timeline: {expected.format(tmp=tmp_path)}"


@pytest.fixture(scope="module")
def rendered_trainjob(admission_check, tmp_path_factory) -> Path:
    """The template's trainjob flavour, rendered by copier: k8s/runtime.yaml and k8s/job.yaml."""
    from _template_render import ANSWER_SETS, render, template_repo

    root = tmp_path_factory.mktemp("submit-trainjob")
    return render(template_repo(root / "src"), root / "project", ANSWER_SETS["trainjob"]) / "k8s"


def test_submit_applies_the_trainjob_runtime_first(tmp_path, capsys, rendered_trainjob):
    """k8s/runtime.yaml, then k8s/job.yaml: the TrainingRuntime is applied before the TrainJob
    that references it. The TrainJob is queue-labelled (team-b) and Kueue manages TrainJobs:
    the Workload it made is reported."""
    with FakeKubeAPI(Frame()) as fake:
        runtime, job = rendered_trainjob / "runtime.yaml", rendered_trainjob / "job.yaml"
        code = job_cli(fake, tmp_path, "submit", str(runtime), str(job), "--workload-wait", "0")
        assert code == 0, capsys.readouterr().err
        applied = [r.path.split("/")[-2] for r in fake.requests if r.method == "PATCH"]
    assert applied == ["trainingruntimes", "trainjobs"]
    out = capsys.readouterr().out
    assert out.startswith("TrainingRuntime detectron2-on-kubernetes applied in namespace default")
    assert "Kueue's default configuration manages TrainJobs" in out  # none made by this fake


def test_submit_reports_the_workload_kueue_made(tmp_path, capsys, rendered_trainjob):
    """Kueue manages TrainJobs by default: the TrainJob (already known to the fake, so it keeps its
    uid) has a Workload, admitted; submit says so. The runtime is already in the namespace."""
    frame = Frame()
    job = frame.add(
        trainjob("detectron2-on-kubernetes", "default", labels={"kueue.x-k8s.io/queue-name": "team-b"})
    )
    frame.add(workload("trainjob-d2-1a2b3", job, admitted_by="gpu-cluster"))
    runtime = yaml.safe_load((rendered_trainjob / "runtime.yaml").read_text())
    frame.add(runtime)
    with FakeKubeAPI(frame) as fake:
        assert job_cli(fake, tmp_path, "submit", str(rendered_trainjob / "job.yaml")) == 0
        assert [r.path.split("/")[-2] for r in fake.requests if r.method == "PATCH"] == ["trainjobs"]
    assert (
        "Kueue:      Workload trainjob-d2-1a2b3: admitted by ClusterQueue gpu-cluster"
        in capsys.readouterr().out
    )


def test_submit_refuses_a_trainjob_whose_runtime_is_nowhere(tmp_path, capsys, rendered_trainjob):
    with FakeKubeAPI(Frame()) as fake:
        assert job_cli(fake, tmp_path, "submit", str(rendered_trainjob / "job.yaml")) == 1
        assert not [r for r in fake.requests if r.method == "PATCH"]
    line = one_error_line(capsys)
    assert "spec.runtimeRef names TrainingRuntime detectron2-on-kubernetes, which is neither" in line
    assert "hfai-runtime job submit k8s/runtime.yaml" in line


def test_submit_of_a_queue_labelled_pytorchjob_says_kueue_ignores_it(tmp_path, capsys, rendered_job):
    """Kueue v0.19.2 by default does not manage PyTorchJobs: no Workload appears, and submit says
    so (and how to enable it) after its bounded wait, instead of leaving the user to wonder."""
    manifest = yaml.safe_load(rendered_job.read_text())
    manifest["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] = "team-a"
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(manifest))
    with FakeKubeAPI(Frame()) as fake:
        assert job_cli(fake, tmp_path, "submit", str(path), "--workload-wait", "0") == 0
    out = capsys.readouterr().out
    assert "no Kueue Workload appeared in 0 s" in out
    assert '"kubeflow.org/pytorchjob" commented out of integrations.frameworks' in out


def test_submit_prints_advice_as_a_warning_and_submits(tmp_path, capsys, rendered_job):
    manifest = yaml.safe_load(rendered_job.read_text())
    del manifest["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["resources"]
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(manifest))
    with FakeKubeAPI(Frame()) as fake:
        assert job_cli(fake, tmp_path, "submit", str(path)) == 0
        assert len(fake.patches("pytorchjobs")) == 1
    assert "check: warning: " in capsys.readouterr().err


# -- bounded reads and timeouts (issue: hfai-runtime job never hangs) ----------------------


def test_status_reads_bounded_log_tails_and_only_the_jobs_exit_events(tmp_path, capsys):
    from hfai_runtime.cluster.status import TAIL_BYTES, TAIL_LINES

    frame = preemption_frames()[3]
    # Another job's exit in the namespace: the selector keeps it out of the answer.
    frame.events.append(
        event(
            NS, pytorchjob("other"), "ExitedWithCode", "Pod: team-a.demo-master-0 exited with code 1", at(70)
        )
    )
    with FakeKubeAPI(frame) as fake:
        assert job_cli(fake, tmp_path, "status", "demo") == 0
        logs = [r.query for r in fake.requests if r.path.endswith("/log")]
        events = [r.query for r in fake.requests if r.path.endswith("/events")]
    assert logs and all(
        (q.get("tailLines"), q.get("limitBytes")) == (str(TAIL_LINES), str(TAIL_BYTES)) for q in logs
    ), logs
    assert events == [
        {"fieldSelector": "involvedObject.kind=PyTorchJob,involvedObject.name=demo,reason=ExitedWithCode"}
    ]
    assert "last exit of the pod it replaced 143" in capsys.readouterr().out  # not the other job's 1


def test_status_finds_the_checkpoint_in_the_previous_containers_log(tmp_path, capsys):
    """After an in-place restart (OnFailure) the suspend record is in the previous container's
    log: status reads its tail too."""
    frame = Frame(
        pods=[restarted_master(143)],
        logs={"m1": attempt_logs(0, 14, 20, 56, 80, False)},
        previous_logs={"m1": attempt_logs(0, 0, 13, 11, 49, True)},
    )
    frame.add(pytorchjob("demo"))
    with FakeKubeAPI(frame) as fake:
        assert job_cli(fake, tmp_path, "status", "demo") == 0
        previous = [r.query.get("previous") for r in fake.requests if r.path.endswith("/log")]
    out = capsys.readouterr().out
    assert previous == ["true", "false"]
    assert "iteration: rank 0 at 20 of 30" in out
    assert f"Last checkpoint: {CHECKPOINT} (iteration 13)" in out


@pytest.mark.parametrize("headers", [False, True], ids=["no-answer", "no-body"])
@pytest.mark.parametrize(
    "command",
    [
        ["status", "demo"],
        ["logs", "demo"],
        ["logs", "demo", "-f"],
        ["timeline", "demo", "--watch"],
        ["suspend", "demo"],
    ],
)
def test_a_server_that_never_answers_is_one_line_after_the_timeout(tmp_path, capsys, headers, command):
    # The server accepts the connection and reads the request; a client without a read timeout
    # would wait forever (the test would then end at pytest's timeout, failing).
    with SilentAPI(headers=headers) as silent:
        code = main(
            ["job", *command, "--kubeconfig", str(silent.kubeconfig(tmp_path)), "--request-timeout", "0.5"]
        )
        assert silent.accepted >= 1
    assert code == 1
    line = one_error_line(capsys)
    assert line.startswith(f"hfai-runtime job {command[0]}: ") and "did not answer within 0.5 s" in line, line


def test_submit_to_a_server_that_never_answers(tmp_path, capsys, rendered_job):
    with SilentAPI() as silent:
        code = main(
            [
                "job",
                "submit",
                str(rendered_job),
                "--kubeconfig",
                str(silent.kubeconfig(tmp_path)),
                "--request-timeout",
                "0.5",
            ]
        )
    assert code == 1
    assert "did not answer within 0.5 s (--request-timeout)" in one_error_line(capsys)


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_request_timeout_must_be_a_finite_positive_number(tmp_path, capsys, value):
    with FakeKubeAPI(Frame()) as fake:
        code = job_cli(fake, tmp_path, "status", "demo", "--request-timeout", value)
        assert fake.requests == []
    assert code == 2
    assert one_error_line(capsys).startswith(
        "hfai-runtime job status: --request-timeout: expected a finite number"
    )


def test_follow_stops_waiting_for_a_stream_that_stays_open_after_the_job_ended(tmp_path):
    """A followed stream has no short read timeout (a log may be quiet for long); once the job
    has ended, follow_job gives the streams a bounded drain and names the one it left open."""
    from hfai_runtime.cluster.api import connect
    from hfai_runtime.cluster.follow import follow_job
    from hfai_runtime.cluster.pods import list_pods
    from hfai_runtime.kube.kinds import PYTORCHJOB

    final = preemption_frames()[4]
    lines: list[str] = []
    with FakeKubeAPI(final) as fake:
        fake.open_follows = True
        cluster = connect(str(fake.kubeconfig(tmp_path)))
        job = cluster.custom().get_namespaced_custom_object(
            "kubeflow.org", "v1", "team-a", "pytorchjobs", "demo"
        )
        pods = list_pods(cluster, PYTORCHJOB, "demo")
        followed, errors = follow_job(
            cluster, PYTORCHJOB, job, pods, lines.append, poll_seconds=0.05, drain_seconds=2.0
        )
    assert followed == 2
    assert sorted(errors) == [
        f"the log of pod demo-{r}-0 was still open 2 s after the job ended; stopped following it"
        for r in ("master", "worker")
    ]
    assert any(line.startswith("[master-0] ") for line in lines)  # what the streams sent was printed
