"""Every command block of a generated README runs as written in a test, or says it is cluster-only.

A block whose first line is ``# cluster-only: WHY`` needs what a test machine cannot have (a
cluster, the team's registry); every other block is one of :data:`RUN_BY`'s, each run as written
by the test named there, for both job flavours and both config systems. The fast test classifies
every block of every layout's README, so a new block fails it until it is run or marked. What the
tests replace in a block (a container engine for Docker) is a :class:`Substitution` with its
reason.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _readme_run import Substitution, run_bash
from _template_render import commit_project, render

from tools.containers import images

CLUSTER_ONLY = "# cluster-only: "

#: The layouts whose READMEs are checked: both job flavours, both config systems.
LAYOUTS = {
    "yacs-pytorchjob": {},
    "yacs-trainjob": {"job_flavour": "trainjob", "num_nodes": 2, "gpus_per_node": 4},
    "lazy-pytorchjob": {"config_system": "lazy", "num_nodes": 2, "gpus_per_node": 4},
    "lazy-trainjob": {"config_system": "lazy", "job_flavour": "trainjob"},
}

#: The blocks that run here, by a line only that block has, and the test that runs it as written.
RUN_BY = {
    "hfai-runtime ffr pack coco/ datasets/coco/coco.ffr": "test_local_blocks_run_as_written",
    "python -m pytest": "test_local_blocks_run_as_written",
    "copier update --defaults --data grace_seconds=180": "test_local_blocks_run_as_written",
    "hfai-runtime synth-coco local-pvc/raw/coco": "test_template_rehearsal.py::test_readme_rehearsal_runs_as_written",
    "--engine docker": "test_container_rehearsal_runs_as_written",
    "make rehearse": "test_template_setup.py::test_a_bare_render_sets_itself_up_with_make_env_and_make_rehearse",
}


def fenced_blocks(readme: str) -> list[str]:
    """The README's ```bash and ```console blocks."""
    return re.findall(r"^```(?:bash|console)\n(.*?)^```", readme, flags=re.MULTILINE | re.DOTALL)


def runner_of(block: str) -> str | None:
    """The test that runs ``block`` (None: it is cluster-only); fails for a block neither run
    nor marked."""
    if block.startswith(CLUSTER_ONLY):
        return None
    runners = {test for line, test in RUN_BY.items() if line in block}
    assert len(runners) == 1, (
        f"a README block that no test runs and that is not marked cluster-only:\n{block}"
    )
    return runners.pop()


def local_block(readme: str, line: str) -> str:
    """The block that ``line`` (a :data:`RUN_BY` key) identifies."""
    (block,) = [b for b in fenced_blocks(readme) if line in b and not b.startswith(CLUSTER_ONLY)]
    return block


@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_every_block_is_run_or_cluster_only(template_src, tmp_path, layout):
    project = render(template_src, tmp_path / "p", layout)
    blocks = fenced_blocks((project / "README.md").read_text())
    runners = [runner_of(block) for block in blocks]
    assert set(runners) == set(RUN_BY.values()) | {None}, "each local block is in every README"
    assert sum(r is None for r in runners) >= 5, "the cluster's commands are marked"


def shell_env() -> dict[str, str]:
    """This environment's commands first on PATH, as the README's reader has them after setup."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.slow
@pytest.mark.detectron2
@pytest.mark.timeout(1800)  # the project's own smoke test trains, suspends and resumes
@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_local_blocks_run_as_written(template_src, tmp_path, layout):
    """In a project just rendered and committed: the Configuration section's `copier update`,
    step 2's pack of a (synthetic) coco/ folder, step 3's tests and admission check."""
    project = render(template_src, tmp_path / "project", layout)
    readme = (project / "README.md").read_text()
    env = shell_env()
    commit_project(project, "generated")

    update = local_block(readme, "copier update --defaults --data grace_seconds=180")
    run_bash(update, project, {**env, **git_identity()}, 300)  # the block commits: an identity
    assert "terminationGracePeriodSeconds: 180" in (project / "k8s" / "job.yaml").read_text()
    # The user's raw dataset, where step 2 expects it: a small synthetic COCO.
    subprocess.run(
        [sys.executable, "-m", "hfai_runtime.cli", "synth-coco", "coco", "--coco-categories"],
        cwd=project,
        check=True,
        capture_output=True,
    )
    run_bash(local_block(readme, "hfai-runtime ffr pack coco/ datasets/coco/coco.ffr"), project, env, 300)
    assert (project / "datasets" / "coco" / "coco.ffr").is_file()
    assert (project / "datasets" / "coco" / "annotations" / "instances_train2017.json").is_file()
    out = run_bash(local_block(readme, "python -m pytest"), project, env, 1500)
    assert "passed" in out and "failed" not in out, out[-3000:]


def git_identity() -> dict[str, str]:
    """A git identity (CI machines may have none)."""
    return {
        f"GIT_{who}_{what}": value
        for who in ("AUTHOR", "COMMITTER")
        for what, value in (("NAME", "test"), ("EMAIL", "test@example.com"))
    }


@pytest.mark.slow
@pytest.mark.timeout(3600)  # builds the CPU base image when no session has yet
@pytest.mark.parametrize("layout", [LAYOUTS["yacs-trainjob"]], ids=["yacs-trainjob"])
def test_container_rehearsal_runs_as_written(template_src, tmp_path, layout):
    """The README's rehearsal in containers, with podman for Docker and the CPU base image built
    from this checkout for the template's `docker build -f Dockerfile.cpu`."""
    reason = images.base_unavailable()
    if reason:
        pytest.skip(f"needs podman and the CPU base image's inputs: {reason}")
    base = images.cpu_base_image(tmp_path / "checkout")[0]
    project = render(template_src, tmp_path / "project", layout)
    readme = (project / "README.md").read_text()
    block = local_block(readme, "--engine docker")
    substitutions = [
        Substitution(
            "docker build -f Dockerfile.cpu -t d2-hfai-base:cpu PATH/TO/d2-hfai-template",
            f"podman tag {base} d2-hfai-base:cpu",
            "the CPU base image is built from this checkout by tools/containers/images.py",
        ),
        Substitution("docker build ", "podman build --format docker ", "podman instead of Docker"),
        Substitution("--engine docker", "--engine podman", "podman instead of Docker"),
    ]
    for substitution in substitutions:
        block = substitution.apply(block)
    # The data the rehearsal reads: the first rehearsal block's synthetic COCO, packed.
    env = shell_env()
    images.use_engine_settings()
    prepare = local_block(readme, "hfai-runtime synth-coco local-pvc/raw/coco")
    run_bash(prepare.split("hfai-runtime run-local")[0], project, env, 300)
    slug = yaml.safe_load((project / ".copier-answers.yml").read_text())["project_slug"]
    try:
        out = run_bash(block, project, env, 3000)
    finally:
        images.podman("rmi", "--ignore", f"{slug}:cpu", "d2-hfai-base:cpu")
    # A TrainJob ends as its JobSet does (run-local's PyTorchJobs say Succeeded instead).
    assert "Complete (AllJobsCompleted)" in out, out[-3000:]
    assert re.search(r"node-1 +exited +exit code 143", out), out[-3000:]
