"""Releases are git tags, and CHANGELOG.md names them.

Copier takes a template's version from its newest git tag: a tagged template records
``_commit: vX.Y.Z`` in every project it renders and ``copier update`` moves projects between
tags, while an untagged one gives versions such as ``0.0.0.post122.dev0``. CHANGELOG.md says what
each tag changed; its top section says how a release is cut (heading, versions, tag).
"""

from __future__ import annotations

import datetime
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from _template_render import (
    CHANGELOG,
    RELEASE_HEADING,
    REPO,
    changelog_headings,
    newest_release,
    template_repo,
)
from packaging.version import Version

import hfai_runtime


def releases() -> list[tuple[str, datetime.date]]:
    """CHANGELOG.md's releases, newest first as written: (tag, date)."""
    found = []
    for heading in changelog_headings(CHANGELOG.read_text()):
        if heading == "## Unreleased" and not found:
            continue  # changes waiting for the next release, only above every release
        match = RELEASE_HEADING.match(heading)
        assert match, f"{CHANGELOG}: {heading!r} is not '## vX.Y.Z — YYYY-MM-DD' (or '## Unreleased' on top)"
        found.append((match["tag"], datetime.date.fromisoformat(match["date"])))
    return found


def test_changelog_versions_are_valid_and_newest_first():
    found = releases()
    assert found, f"{CHANGELOG} names no release"
    versions = [Version(tag) for tag, _ in found]
    assert versions == sorted(versions, reverse=True) and len(set(versions)) == len(versions), (
        f"{CHANGELOG}: releases must be newest first, each once: {[tag for tag, _ in found]}"
    )
    dates = [date for _, date in found]
    assert dates == sorted(dates, reverse=True), f"{CHANGELOG}: release dates must not increase downwards"
    assert found[0][0] == newest_release()


def test_versions_in_the_code_are_the_newest_release():
    """Step 2 of cutting a release: the package, its module and the base image copier.yml
    defaults to carry the release's version."""
    version = newest_release().removeprefix("v")
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["version"] == version, "pyproject.toml: project.version"
    assert hfai_runtime.__version__ == version, "hfai_runtime/__init__.py: __version__"
    base_image = yaml.safe_load((REPO / "copier.yml").read_text())["base_image"]["default"]
    assert base_image.rsplit(":", 1)[1] == version, f"copier.yml: base_image default {base_image!r}"


def repository_tags() -> set[str] | None:
    """The tags of the git repository holding this checkout; None when it is not one."""
    done = subprocess.run(["git", "tag", "--list"], cwd=REPO, capture_output=True, text=True)
    return set(done.stdout.split()) if done.returncode == 0 else None


def test_each_changelog_release_is_a_tag():
    tags = repository_tags()
    if tags is None:
        pytest.skip(f"{REPO} is not a git repository (e.g. an unpacked archive): no tags to compare")
    if not tags:
        pytest.skip(f"{REPO} has no tags (a shallow or tagless clone, or before the first release is tagged)")
    missing = [tag for tag, _ in releases() if tag not in tags]
    assert not missing, (
        f"{CHANGELOG} names releases that are not tags of this repository: {missing} "
        "(cut a release by tagging the commit that names it: git tag -a vX.Y.Z)"
    )


def test_copier_records_the_release_tag(tmp_path):
    """A project rendered from the template tagged as CHANGELOG.md's newest release records
    that tag as its version, which ``copier update`` later compares (the copier command line,
    as users run it)."""
    tag = newest_release()
    src = template_repo(tmp_path / "template", tag=tag)
    copier = Path(sys.executable).with_name("copier")
    done = subprocess.run(
        [copier, "copy", "--defaults", str(src), str(tmp_path / "project")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert f"Copying from template version {tag.removeprefix('v')}\n" in done.stderr
    answers = yaml.safe_load((tmp_path / "project" / ".copier-answers.yml").read_text())
    assert answers["_commit"] == tag
