"""Hostile input to ``hfai-runtime run-local``: each case is refused before any pod starts, with
exit code 2 and one line naming the replica or field, or (for a pod's detached processes) cleaned
up. To add a case, add a row to CASES: a function that changes the job document (or the files
around it) and the text the refusal must contain.

Runs the real CLI in a subprocess, as a user would (the subreaper and the FIFO need a process of
their own).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

TRAINER = str(Path(__file__).parent / "scripts" / "runlocal_trainer.py")


def job(
    workers: int = 0,
    command: list[str] | None = None,
    args: list[str] | None = None,
    env: list[dict] | None = None,
) -> dict:
    container = {
        "name": "pytorch",
        "image": "registry.example/det:1",
        "command": command or ["tini", "--", "python", TRAINER],
        "args": args or ["--iters", "1"],
        "env": env or [],
    }
    pod = {"terminationGracePeriodSeconds": 2, "containers": [container]}
    specs = {"Master": {"replicas": 1, "restartPolicy": "ExitCode", "template": {"spec": pod}}}
    if workers:
        specs["Worker"] = {"replicas": workers, "restartPolicy": "ExitCode", "template": {"spec": pod}}
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": "det"},
        "spec": {"runPolicy": {"backoffLimit": 2}, "pytorchReplicaSpecs": specs},
    }


def run_local(manifest: Path, *extra: str, timeout: float = 60) -> subprocess.CompletedProcess:
    shown = [] if "--verbose" in extra else ["--quiet"]
    return subprocess.run(
        [sys.executable, "-m", "hfai_runtime.cli", "run-local", str(manifest), *shown, *extra],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write(tmp_path: Path, doc: dict) -> Path:
    manifest = tmp_path / "k8s" / "job.yaml"
    manifest.parent.mkdir(exist_ok=True)
    manifest.write_text(yaml.safe_dump(doc))
    return manifest


MASTER = "master-0: spec.pytorchReplicaSpecs.Master.template.spec.containers[name=pytorch].command"
CASES = {
    "missing program": (
        job(command=["no-such-program-xyz"]),
        [],
        f"{MASTER}: 'no-such-program-xyz' is not found on PATH",
    ),
    "missing path": (job(command=["./bin/train"]), [], f"{MASTER}: './bin/train' does not exist"),
    "not executable": (job(command=["./k8s/job.yaml"]), [], f"{MASTER}: './k8s/job.yaml' is not executable"),
    "only tini": (
        job(command=["tini", "--"], args=[""]),
        ["--args", ""],
        f"{MASTER}: the container's command is only 'tini --'",
    ),
    "missing script": (
        job(command=["python", "train_nett.py"]),
        [],
        f"{MASTER}: the script 'train_nett.py' does not exist",
    ),
    "NUL in env": (
        job(env=[{"name": "A", "value": "x\0y"}]),
        [],
        "spec.pytorchReplicaSpecs.Master.template.spec.containers[name=pytorch].env[0] "
        "('A'): contains a NUL character",
    ),
    "NUL in args": (
        job(args=["--iters", "1\0"]),
        [],
        "containers[name=pytorch].args[1]: contains a NUL character",
    ),
    "1000 workers": (
        job(workers=1000),
        [],
        "spec.pytorchReplicaSpecs.Worker.replicas: 1001 pods; run-local starts at most 64",
    ),
    # Counted before any replica is built: the largest int32 costs no more than 1000.
    "2147483647 workers": (
        job(workers=2147483647),
        [],
        "spec.pytorchReplicaSpecs.Worker.replicas: 2147483648 pods; run-local starts at most 64",
    ),
    "resume without suspend": (job(), ["--resume-after", "2"], "--resume-after: only with --suspend-at"),
    "missing dataset": (
        job(env=[{"name": "DETECTRON2_DATASETS", "value": "datasets"}]),
        [],
        "DETECTRON2_DATASETS=datasets: {project}/datasets (under --data-dir {project}) does not exist",
    ),
    # What hfai-runtime check finds (here the kubelet's runAsNonRoot rule against the operator's
    # root init container on Worker pods) is refused before anything starts, as a cluster would.
    "kubelet refuses the init container": (
        {
            **job(workers=1),
            "spec": {
                **job(workers=1)["spec"],
                "pytorchReplicaSpecs": {
                    name: {
                        **spec,
                        "template": {
                            "spec": {**spec["template"]["spec"], "securityContext": {"runAsNonRoot": True}}
                        },
                    }
                    for name, spec in job(workers=1)["spec"]["pytorchReplicaSpecs"].items()
                },
            },
        },
        [],
        "a cluster would refuse this: {manifest}: "
        "spec.pytorchReplicaSpecs.Worker.template.spec.securityContext.runAsNonRoot: ",
    ),
    "missing --require": (
        job(),
        ["--require", "datasets/coco/coco.ffr"],
        "--require datasets/coco/coco.ffr: {project}/datasets/coco/coco.ffr",
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_refused_before_any_pod_starts(tmp_path, name):
    doc, extra, expected = CASES[name]
    manifest = write(tmp_path, doc)
    done = run_local(manifest, *extra, "--events", str(tmp_path / "events.jsonl"))
    assert done.returncode == 2, done.stdout + done.stderr
    assert expected.format(project=tmp_path, manifest=manifest) in done.stderr, done.stderr
    assert all(line.startswith("run-local: ") for line in done.stderr.splitlines()), done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "events.jsonl").exists()  # nothing ran
    assert not (tmp_path / "run-local-logs").exists()


def test_a_fifo_manifest_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "job.yaml"
    os.mkfifo(fifo)
    done = run_local(fifo, timeout=30)  # a reader that waited for a writer would time out
    assert done.returncode == 2
    assert f"{fifo}: not a regular file" in done.stderr


def test_a_process_a_pod_detached_with_setsid_does_not_survive(tmp_path):
    manifest = write(tmp_path, job(args=["--detach", "--iters", "1"]))
    done = run_local(manifest, "--verbose")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    pids = [
        int(line.split("detached pid ")[1]) for line in done.stdout.splitlines() if "detached pid " in line
    ]
    assert len(pids) == 1, done.stdout[-3000:]
    # `setsid` execs sleep in a new session: out of the pod's process group, so only the pod
    # marker finds it. It must be gone (not even a zombie: the subreaper reaped it).
    deadline = time.monotonic() + 10
    while psutil.pid_exists(pids[0]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not psutil.pid_exists(pids[0]), psutil.Process(pids[0]).cmdline()


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda p: p.mkdir(), "not a regular file"),
        (lambda p: p.write_text("# " + "x" * (1 << 21)), "bytes; a manifest is at most"),
        (lambda p: p.write_bytes(b"kind: \xff\xfe"), "not UTF-8 text"),
        (lambda p: None, "No such file or directory"),
    ],
)
def test_manifests_that_are_not_small_yaml_files_are_refused(tmp_path, make, expected):
    manifest = tmp_path / "job.yaml"
    make(manifest)
    done = run_local(manifest)
    assert done.returncode == 2 and expected in done.stderr and "Traceback" not in done.stderr


# -- the sandbox: nothing outside run-local's folders changes ------------------------------


def refusals(stderr: str) -> list[str]:
    """stderr's lines but the check's policy warnings (the job here states no resources)."""
    return [line for line in stderr.splitlines() if not line.startswith("run-local: warning: ")]


def snapshot(*paths: Path) -> dict[str, tuple]:
    """Mode, owner, size and mtime of each path and what is under it (not following links)."""
    seen = {}
    for top in paths:
        for path in [top, *(top.rglob("*") if top.is_dir() and not top.is_symlink() else [])]:
            info = os.lstat(path)
            seen[str(path)] = (info.st_mode, info.st_uid, info.st_gid, info.st_size, info.st_mtime_ns)
    return seen


def with_mount(sub_path: str, path: str = "/data") -> dict:
    doc = job(args=["--iters", "1", "--ckpt-dir", path])
    pod = doc["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    pod["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": path, "subPath": sub_path}]
    pod["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": "det-data"}}]
    return doc


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside the project and data folder, with a file, as a victim."""
    victim = tmp_path / "outside"
    victim.mkdir(mode=0o755)
    (victim / "secret").write_text("keep")
    os.chmod(victim / "secret", 0o600)
    return victim


@pytest.mark.parametrize(
    "sub_path, expected",
    [
        ("{outside}", "subPath: Invalid value: '{outside}': must be a relative path"),
        ("../outside", "subPath: Invalid value: '../outside': must not contain '..'"),
        ("ok/../../outside", "must not contain '..'"),
        (
            "link/ckpt",
            "volumeMounts[mountPath=/data].subPath: {data}/link is a symlink to {outside}, outside {data}",
        ),
    ],
)
def test_a_sub_path_never_leads_out_of_the_data_folder(tmp_path, outside, sub_path, expected):
    project = tmp_path / "project"
    data = project / "data"
    data.mkdir(parents=True)
    (data / "link").symlink_to(outside)
    manifest = write(project, with_mount(sub_path.format(outside=outside)))
    before = snapshot(outside)
    done = run_local(manifest, "--data-dir", str(data), "--events", str(tmp_path / "events.jsonl"))
    assert done.returncode == 2, done.stdout + done.stderr
    lines = refusals(done.stderr)
    assert len(lines) == 1 and expected.format(outside=outside, data=data) in lines[0], done.stderr
    assert snapshot(outside) == before
    assert not (tmp_path / "events.jsonl").exists() and not (project / "run-local-logs").exists()


def test_a_symlink_inside_the_data_folder_is_followed(tmp_path):
    project = tmp_path / "project"
    data = project / "data"
    (data / "real").mkdir(parents=True)
    (data / "link").symlink_to(data / "real")
    manifest = write(project, with_mount("link"))
    done = run_local(manifest, "--data-dir", str(data), "--project-dir", str(project))
    assert done.returncode == 0, done.stdout + done.stderr


def _planted_log(project: Path, outside: Path) -> str:
    logs = project / "run-local-logs"
    logs.mkdir(parents=True)
    (logs / "master-0-attempt1.log").symlink_to(outside / "secret")
    return f"--logs-dir {logs}: master-0-attempt1.log is not a regular file; a pod log is never written through it"


def _logs_folder_out(project: Path, outside: Path) -> str:
    project.mkdir()
    (project / "run-local-logs").symlink_to(outside)  # the default --logs-dir
    return f"--logs-dir: {project}/run-local-logs is a symlink to {outside}, outside {project}"


@pytest.mark.parametrize("plant", [_planted_log, _logs_folder_out], ids=["log-name", "logs-folder"])
def test_pod_logs_are_never_written_through_a_planted_link(tmp_path, outside, plant):
    project = tmp_path / "project"
    expected = plant(project, outside)
    manifest = write(project, job())
    before = snapshot(outside)
    done = run_local(manifest)
    assert done.returncode == 2
    assert refusals(done.stderr) == [f"run-local: {expected}"]
    assert snapshot(outside) == before and (outside / "secret").read_text() == "keep"


def test_the_fs_group_grant_changes_only_what_is_inside_the_data_folder(tmp_path, outside):
    """What ``run-local --engine podman`` does as root before the pods start (the kubelet's
    fsGroup), called directly: podman is not needed to prove which files it touches."""
    from hfai_runtime.local.sandbox import grant_fs_group

    if os.geteuid() != 0:
        pytest.skip("needs root: the grant changes group ownership (only a root engine does it)")
    data = tmp_path / "data"
    volume = data / "volume"
    (volume / "sub").mkdir(parents=True)
    (volume / "sub" / "mine").write_text("x")
    os.chmod(volume / "sub" / "mine", 0o600)
    (volume / "link-out").symlink_to(outside)
    (volume / "file-link-out").symlink_to(outside / "secret")
    os.link(outside / "secret", volume / "hardlink")  # another name of a file outside
    os.mkfifo(volume / "fifo")
    before = snapshot(outside)

    grant_fs_group(data, volume, 1000)
    grant_fs_group(data, outside, 1000)  # not under the data folder: left alone
    grant_fs_group(data, volume / "link-out", 1000)  # resolves outside: left alone

    assert snapshot(outside) == before
    for path, mode in [(volume, 0o2070), (volume / "sub", 0o2070), (volume / "sub" / "mine", 0o060)]:
        info = os.lstat(path)
        assert info.st_gid == 1000 and info.st_mode & mode == mode, (path, oct(info.st_mode))
    assert os.lstat(volume / "fifo").st_gid != 1000


@pytest.mark.parametrize(
    "extra, expected",
    [
        (
            ["--suspend-at", "1", "--resume-after", "nan"],
            "--resume-after: expected a finite number of seconds",
        ),
        (
            ["--suspend-at", "1", "--resume-after", "inf"],
            "--resume-after: expected a finite number of seconds",
        ),
        (
            ["--suspend-at", "1", "--resume-after", "-1"],
            "--resume-after: expected a finite number of seconds",
        ),
        (["--events", "{tmp}/missing/events.jsonl"], "--events {tmp}/missing/events.jsonl: its folder"),
        (["--events", "{tmp}"], "--events {tmp}: is a folder"),
        (["--logs-dir", "{tmp}/k8s/job.yaml"], "--logs-dir {tmp}/k8s/job.yaml: not a folder"),
    ],
)
def test_cli_edges_are_one_line_before_the_job_runs(tmp_path, extra, expected):
    manifest = write(tmp_path, job())
    done = run_local(manifest, *[e.format(tmp=tmp_path) for e in extra])
    assert done.returncode == 2, done.stdout + done.stderr
    lines = refusals(done.stderr)
    assert len(lines) == 1 and lines[0].startswith("run-local: "), done.stderr
    assert expected.format(tmp=tmp_path) in lines[0], done.stderr
    assert not (tmp_path / "run-local-logs").exists()  # nothing ran


@pytest.mark.parametrize("name", ["A=B", ""])
def test_an_env_name_no_process_can_hold_is_one_line(tmp_path, name):
    manifest = write(tmp_path, job(env=[{"name": name, "value": "1"}]))
    done = run_local(manifest)
    assert done.returncode == 2
    assert refusals(done.stderr) == [
        f"run-local: {manifest}: spec.pytorchReplicaSpecs.Master.template.spec.containers[name=pytorch]"
        f".env[0].name: {name!r} is not a variable name (empty or with '=')"
    ]


def test_the_container_engine_makes_volume_folders_only_inside_the_data_folder(tmp_path, outside):
    """``--engine podman`` creates each volume's folder before the pods start (no podman is run
    here: only the folders it would mount are made)."""
    from hfai_runtime.local.engine import ContainerEngine, EngineError
    from hfai_runtime.local.manifest import parse_job
    from hfai_runtime.local.sandbox import SandboxError

    data = tmp_path / "data"
    data.mkdir()
    (data / "link").symlink_to(outside)
    (data / "file").write_text("x")
    before = snapshot(outside)
    for sub_path, refused in [
        ("ok/ckpt", None),
        ("link/ckpt", "is a symlink to"),
        ("file/ckpt", "is not a folder inside"),
    ]:
        try:
            engine = ContainerEngine(parse_job(with_mount(sub_path)), "img:1", data, program="podman")
        except EngineError as exc:
            pytest.skip(f"needs podman on PATH: {exc}")
        if refused is None:
            assert engine._volume_folders() == {data / "ok" / "ckpt"}
        else:
            with pytest.raises(SandboxError, match=refused):
                engine._volume_folders()
    assert snapshot(outside) == before and not (outside / "ckpt").exists()


def test_a_missing_data_folder_is_made_before_its_volumes_are_granted(tmp_path):
    """``--data-dir`` naming a folder that does not exist yet (as a first rehearsal does): a
    volume without ``subPath`` maps to the data folder itself, which is made, not crashed on."""
    from hfai_runtime.local.sandbox import grant_fs_group, make_folders

    data = tmp_path / "not-yet" / "pvc"
    folder = make_folders(data, data)
    assert folder == data and data.is_dir()
    if os.geteuid() == 0:  # the grant (a root engine's) then finds the folder it changes
        grant_fs_group(data, folder, 1000)
        assert os.lstat(data).st_gid == 1000
