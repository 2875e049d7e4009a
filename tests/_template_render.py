"""Rendering the copier template in tests: a tagged git copy of it, and the answer sets to render.

Copier reads tags and ``_commit`` from git, and the shared checkout carries other people's
uncommitted work, so tests render from a throwaway git repository holding only ``copier.yml``
and ``template/`` (what ``copier copy gh:org/d2-hfai-template`` would fetch).
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import copier
import yaml

REPO = Path(__file__).resolve().parent.parent
CHANGELOG = REPO / "CHANGELOG.md"
#: A release's heading in CHANGELOG.md: ``## vX.Y.Z — YYYY-MM-DD`` (the tag, then its date).
RELEASE_HEADING = re.compile(
    r"^## (?P<tag>v(?:0|[1-9][0-9]*)\.(?:0|[1-9][0-9]*)\.(?:0|[1-9][0-9]*)) — (?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})$"
)

#: The answer sets the tests render: the defaults and one per flavour of what users change.
ANSWER_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "trainjob": {
        "job_flavour": "trainjob",
        "num_nodes": 2,
        "gpus_per_node": 4,
        "kueue_queue": "team-b",
        "spot_node_label": "cloud.google.com/gke-spot=true",
    },
    "custom": {
        "project_name": "Kitchen Tools",
        "dataset": "custom",
        "dataset_name": "kitchen",
        "dataset_prefix": "kitchen-pack",
        "dataset_pack": "kitchen/images.ffr",
        "dataset_train_images": "images/train",
        "dataset_train_json": "kitchen/annotations/train.json",
        "dataset_val_images": "images/val",
        "dataset_val_json": "kitchen/annotations/val.json",
        "num_classes": 5,
        "base_model": "COCO-Detection/retinanet_R_50_FPN_1x.yaml",
        "suspend_exit_code": 200,
    },
    "multinode": {
        "project_slug": "big-run",
        "num_nodes": 4,
        "gpus_per_node": 8,
        "kueue_queue": "team-a",
        "namespace": "research",
        "base_model": "COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml",
        "grace_seconds": 15,
        "priority_class": "preemptible",
        "kueue_priority_class": "low",
        "spot_node_label": "karpenter.sh/capacity-type=spot",
        "cpus_per_node": 48,
        "memory_per_node": "400Gi",
    },
}


def git(cwd: Path, *args: str) -> str:
    """Run git in ``cwd`` with a fixed identity (CI machines may have none) and return stdout."""
    cmd = [
        "git",
        "-c",
        "user.name=test",
        "-c",
        "user.email=test@example.com",
        "-c",
        "init.defaultBranch=main",
        "-c",
        "commit.gpgsign=false",
        *args,
    ]
    return subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True).stdout


def commit_project(project: Path, message: str) -> None:
    """Make ``project`` a git repository with everything in it committed (what a user does after
    ``copier copy``; ``copier update`` needs a clean git tree)."""
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", message)


def changelog_headings(text: str) -> list[str]:
    """The ``## `` headings of a CHANGELOG, in order (releases, and an ``Unreleased`` one)."""
    return [line for line in text.splitlines() if line.startswith("## ")]


def newest_release() -> str:
    """The tag of the newest release CHANGELOG.md names (its first release heading): what the
    template's newest tag is, so tests render from a copy tagged as users' projects are."""
    for heading in changelog_headings(CHANGELOG.read_text()):
        if match := RELEASE_HEADING.match(heading):
            return match["tag"]
    raise ValueError(f"{CHANGELOG}: no release heading like '## v0.1.0 — 2026-11-30'")


def template_repo(dest: Path, tag: str | None = None) -> Path:
    """A git repository at ``dest`` with this checkout's ``copier.yml`` and ``template/``,
    tagged ``tag`` (default: the newest release in CHANGELOG.md)."""
    dest.mkdir(parents=True)
    shutil.copy2(REPO / "copier.yml", dest / "copier.yml")
    shutil.copytree(
        REPO / "template", dest / "template", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "template")
    git(dest, "tag", tag or newest_release())
    return dest


def render(src: Path, dst: Path, answers: Mapping[str, Any], vcs_ref: str | None = None) -> Path:
    """``copier copy --defaults`` with ``answers`` through copier's API; returns ``dst``."""
    copier.run_copy(
        str(src), str(dst), data=dict(answers), defaults=True, unsafe=False, vcs_ref=vcs_ref, quiet=True
    )
    return dst


def smoke_args(output_dir: str, max_iter: int) -> list[str]:
    """A rendered train_net.py's arguments for a short run of its smoke config (one loader worker)."""
    return [
        *("--config-file", "configs/smoke_cpu.yaml", "OUTPUT_DIR", output_dir),
        *("SOLVER.MAX_ITER", str(max_iter), "DATALOADER.NUM_WORKERS", "1"),
    ]


def load_job(project: Path) -> dict:
    """The rendered ``k8s/job.yaml`` as a dict."""
    return yaml.safe_load((project / "k8s" / "job.yaml").read_text())


def module_constants(path: Path) -> dict[str, Any]:
    """The module-level ``NAME = <literal>`` assignments of a rendered Python file, by value.

    Read with :mod:`ast` (never executed), so a test can compare what the template wrote into
    a string literal with the answer it came from.
    """
    constants = {}
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                constants[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue  # not a literal (e.g. a call)
    return constants
