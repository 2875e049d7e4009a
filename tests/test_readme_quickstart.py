"""The README's quick start works: its commands, read from README.md, run with bash.

"Start your own project" is a ```bash block (install, ``copier copy``, pack, build, check,
submit) and a sentence of follow-up commands (``hfai-runtime job status|logs|...``). They run
here as written, in order, in one shell, except for what cannot exist on a test machine; each
such substitution is a :class:`Substitution` below, with its reason, and fails the test when the
README no longer has the text it replaces (the test then needs the README's new wording). Then
the test checks what the commands are for: the pack is where the rendered job's ``train_net.py``
reads it (a training image is read back through detectron2), the image built is the one
``k8s/job.yaml`` runs, and the job reached the (fake) cluster as rendered.

What ``make demo`` shows (the quick start's first two commands) is tested by test_demo.py; the
local rehearsal the project's README writes out in full, by test_template_rehearsal.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
import warnings
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import numpy as np
import pytest
from _readme_run import Substitution, run_bash
from _template_hostile import bash_blocks
from _template_render import REPO, git, load_job, template_repo
from fake_kube_api import FakeKubeAPI, Frame, LogLine, pod
from packaging.requirements import Requirement
from PIL import Image

from hfai_runtime.records import RecordKind, format_record
from tools.containers import images

README = REPO / "README.md"
#: The quick start builds the project's image FROM the base image; this builds the CPU one.
BUILD_TIMEOUT_S = 1800


@dataclass(frozen=True)
class QuickStart:
    """The quick start's parts, as README.md writes them."""

    block: str  # the ```bash block
    slug: str  # the project slug its comment asks to answer: "(slug: NAME)"
    job_actions: list[str]  # `hfai-runtime job A|B|... NAME` after the block
    job_name: str
    run_local: str  # `hfai-runtime run-local ...` after the block


def quickstart(readme: str) -> QuickStart:
    """Read "Start your own project" out of the README."""
    start = readme.index("### Start your own project")
    section = readme[start : readme.index("\n## ", start)]
    [block] = bash_blocks(section)
    prose = section[section.index(block) + len(block) :]
    slug = re.search(r"answer the questions \(slug: ([a-z][-a-z0-9]*)\)", block)
    job = re.search(r"`hfai-runtime job ((?:[a-z]+\|)+[a-z]+) ([a-z][-a-z0-9]*)`", prose)
    run_local = re.search(r"`(hfai-runtime run-local [^`]+)`", prose)
    assert slug and job and run_local, "the quick start's slug, job commands or run-local moved"
    return QuickStart(block, slug[1], job[1].split("|"), job[2], run_local[1])


# -- what cannot exist here --------------------------------------------------------------


def installed_requirement(block: str) -> Substitution:
    """The ``pip install`` line checked instead of run: there is no network here, and this
    environment is what that line installs. The extras it names must be this package's
    (pyproject.toml) and each of their requirements installed, at a version it allows."""
    line = re.search(r"^pip install '([^']+)'$", block, flags=re.MULTILINE)
    assert line, "README.md's quick start has no `pip install '...'` line"
    requirement = Requirement(line[1])
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert requirement.name == project["name"], (
        f"pip installs {requirement.name}, the package is {project['name']}"
    )
    extras = project["optional-dependencies"]
    assert requirement.extras and requirement.extras <= extras.keys(), (
        f"pip installs the extras {sorted(requirement.extras)}; pyproject.toml has {sorted(extras)}"
    )
    pending, seen = list(requirement.extras), set()
    while pending:
        extra = pending.pop()
        seen.add(extra)
        for needed in map(Requirement, extras[extra]):
            if needed.name == project["name"]:
                pending += [e for e in needed.extras if e not in seen]
                continue
            try:
                version = distribution(needed.name).version
            except PackageNotFoundError:
                pytest.fail(f"[{extra}] requires {needed}, which is not installed here")
            assert needed.specifier.contains(version, prereleases=True), (
                f"[{extra}] requires {needed}, found {version}"
            )
    return Substitution(line[0], ": pip install checked by the test", "no network; this environment has it")


def container_build(base: str | None, reason: str | None) -> list[Substitution]:
    """``docker build`` and ``docker push`` → podman, FROM the CPU base image: no Docker daemon
    and no registry here. The push becomes a check that the image to push exists; without a
    container engine both are skipped, for the reason given."""
    if base is None:
        why = f"no container engine: {reason}"
        warnings.warn(f"the quick start's docker build and push are skipped: {why}", stacklevel=2)
        return [
            Substitution("docker build", ": docker build", why),
            Substitution("docker push", ": docker push", why),
        ]
    return [
        Substitution(
            "docker build",
            f"podman build --format docker --build-arg BASE_IMAGE={base}",
            "podman instead of Docker, FROM the CPU base image built here (the answer's base "
            "image is in the team's registry)",
        ),
        Substitution("docker push", "podman image exists", "no registry here: the image to push must exist"),
    ]


def substitutions(qs: QuickStart, template: Path, data: Path) -> list[Substitution]:
    return [
        installed_requirement(qs.block),
        Substitution(
            "gh:org/d2-hfai-template",
            str(template),
            "a git copy of this checkout's template, tagged as its newest release: the real "
            "repository is not reachable and may differ from this checkout",
        ),
        Substitution(
            "copier copy ",
            f"copier copy --defaults --data project_slug={qs.slug} ",
            "the questions are answered non-interactively: the slug as the README's comment "
            "says, every other question its default",
        ),
        Substitution(
            "/data/coco",
            str(data / "coco"),
            "a small synthetic COCO in COCO's layout (train2017/, val2017/, annotations/), "
            "made by `hfai-runtime synth-coco` as the project's README does",
        ),
        Substitution("REGISTRY/", "localhost/", "the team's registry: podman's name for local images"),
    ]


def shell_env(kubeconfig: Path) -> dict[str, str]:
    """This environment's commands first on PATH (what the pip line installs), the fake
    cluster's kubeconfig, a git identity (CI machines may have none), podman's settings."""
    images.use_engine_settings()
    identity = {
        f"GIT_{who}_{what}": value
        for who in ("AUTHOR", "COMMITTER")
        for what, value in (("NAME", "test"), ("EMAIL", "test@example.com"))
    }
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    return {**os.environ, **identity, "PATH": path, "KUBECONFIG": str(kubeconfig)}


# -- checks of what the commands made -----------------------------------------------------


def read_first_training_image(project: Path, env: dict[str, str]) -> tuple[str, np.ndarray]:
    """The first image of the config's training set, as the project's ``train_net.py`` reads
    it: its datasets registered with ``DETECTRON2_DATASETS`` unset (train_net.py's default,
    ``datasets`` in the working directory), then detectron2's catalog and image reader."""
    code = (
        "import json\n"
        "import train_net\n"  # python -c imports from the working directory, the project
        "from detectron2 import model_zoo\n"
        "from detectron2.config import get_cfg\n"
        "from detectron2.data import DatasetCatalog\n"
        "from detectron2.data.detection_utils import read_image\n"
        "cfg = get_cfg()\n"  # train_net.setup's merges, without its output folder and logging
        "cfg.merge_from_file(model_zoo.get_config_file(train_net.MODEL_ZOO_CONFIG))\n"
        "cfg.merge_from_file('configs/train.yaml')\n"
        "train_net.register_datasets()\n"
        "record = DatasetCatalog.get(cfg.DATASETS.TRAIN[0])[0]\n"
        "print(json.dumps([record['file_name'], read_image(record['file_name'], 'RGB').tolist()]))\n"
    )
    env = {k: v for k, v in env.items() if k != "DETECTRON2_DATASETS"}
    done = subprocess.run([sys.executable, "-c", code], cwd=project, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    name, pixels = json.loads(done.stdout.splitlines()[-1])
    return name, np.asarray(pixels, dtype=np.uint8)


def assert_datasets_are_on_the_pvc(job: dict) -> None:
    """The job reads DETECTRON2_DATASETS = <the PVC's mount path>/datasets: the quick start's
    local ``datasets/`` folder is what goes to the PVC's root."""
    pod = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    [container] = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    [pvc] = [v["name"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
    [mount] = [m["mountPath"] for m in container["volumeMounts"] if m["name"] == pvc]
    assert env["DETECTRON2_DATASETS"] == f"{mount}/datasets"


def operator_starts_the_pod(fake: FakeKubeAPI, job: dict) -> str:
    """What the Training Operator does after the submit, in the fake cluster: the master pod
    of the (one-node) job runs and logs that training started. Returns that log line."""
    assert list(job["spec"]["pytorchReplicaSpecs"]) == ["Master"], "the default answers: one node"
    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    created = "2026-11-30T05:00:00Z"
    master = pod(
        name,
        "master",
        0,
        "m1",
        "Running",
        namespace=namespace,
        created=created,
        state={"running": {"started_at": created}},
    )
    line = f"[11/30 05:00:01 hfai_runtime]: {format_record(RecordKind.TRAINING_STARTED, iteration=0, rank=0)}"
    fake.frame.pods.append(master)
    fake.frame.logs["m1"] = [LogLine("2026-11-30T05:00:01.000000000Z", line)]
    return line


def built_image(project: Path) -> str:
    """The image step 3 builds: ``REGISTRY/<slug>:<short commit>``, with the registry here."""
    return f"localhost/{project.name}:{git(project, 'rev-parse', '--short', 'HEAD').strip()}"


@pytest.mark.slow
@pytest.mark.timeout(BUILD_TIMEOUT_S)  # builds the CPU base image when no session has yet
def test_readme_quick_start_runs(tmp_path):
    qs = quickstart(README.read_text())
    assert qs.job_name == qs.slug, "the follow-up commands name the job the quick start made"
    reason = images.base_unavailable()
    base = None if reason else images.cpu_base_image(tmp_path / "checkout")[0]
    template = template_repo(tmp_path / "template")
    data, work = tmp_path / "data", tmp_path / "work"
    project = work / qs.slug
    work.mkdir()
    try:
        with FakeKubeAPI(Frame()) as fake:
            env = shell_env(fake.kubeconfig(tmp_path, namespace="default"))
            run_bash(f"hfai-runtime synth-coco {data / 'coco'} --coco-categories", tmp_path, env, 120)
            script = qs.block
            for substitution in substitutions(qs, template, data) + container_build(base, reason):
                script = substitution.apply(script)
            run_bash(script, work, env, 600)

            # The image built is the one k8s/job.yaml runs, and the job reached the cluster as rendered.
            job = load_job(project)
            for replica in job["spec"]["pytorchReplicaSpecs"].values():
                assert replica["template"]["spec"]["containers"][0]["image"] == built_image(project)
            [applied] = fake.patches("pytorchjobs")
            assert applied.body == job and job["metadata"]["name"] == qs.slug

            started = operator_starts_the_pod(fake, job)
            follow_up = "\n".join(f"hfai-runtime job {action} {qs.job_name}" for action in qs.job_actions)
            out = run_bash(follow_up, project, env, 120)
            assert f"[master-0] {started}" in out, "job logs shows the pod's log"
            suspends = [p.body["spec"]["runPolicy"]["suspend"] for p in fake.patches("pytorchjobs")[1:]]
            assert suspends == [True, False], "job suspend, then job resume"
    finally:
        if base is not None and (project / ".git").is_dir():
            images.podman("rmi", "--ignore", built_image(project))

    # The pack is where train_net.py reads it: the builtin coco_2017_train's annotations are
    # read from beside the pack, and its first image, not on disk, comes back intact from it.
    assert_datasets_are_on_the_pvc(job)
    name, pixels = read_first_training_image(project, env)
    assert name.startswith("datasets/coco/train2017/") and not (project / name).exists()
    source = data / "coco" / "train2017" / name.rsplit("/", 1)[1]
    assert np.array_equal(pixels, np.asarray(Image.open(source).convert("RGB")))
    # run-local: the project's README gives the command, with its CPU-sized arguments.
    assert qs.run_local in (project / "README.md").read_text()
