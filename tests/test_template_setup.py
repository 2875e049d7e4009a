"""A generated project sets itself up on a fresh machine with the two commands its README gives.

From a bare render (no environment of the template repository's): ``make env`` builds the
project's ``.venv`` (hfai-runtime[local], then ``hfai-runtime env``: the pinned torch, the
detectron2 0.6 wheel, pytest) and ``make rehearse`` runs the README's rehearsal in it. Before
that, a virtualenv with nothing but ``hfai-runtime[local]`` runs the rehearsal's data and
admission commands (synth-coco, ffr pack, check): the extra has all they need.

What cannot be here: the Makefile's placeholder address of the template repository (no
network, and the repository is this checkout), so ``HFAI_RUNTIME`` names a clean copy of this
checkout; and the PyPI download of the detectron2 sdist, so the cache folder (D2_HFAI_CACHE)
is the machine's, where the template repository's own bootstrap built the wheel with the same
builder (``hfai-runtime env`` would otherwise download and build it once).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest
from _readme_run import run_bash
from _template_render import render

from hfai_runtime.devenv import cache_dir, detectron2_requirements, wheel_dir
from hfai_runtime.synthetic import COCO_THING_CATEGORIES
from tools.containers import images


def base_python() -> str:
    """The interpreter this environment was made from: a fresh machine's Python."""
    return getattr(sys, "_base_executable", sys.executable)


def fresh_env(home: Path) -> dict[str, str]:
    """A shell without this environment's commands on PATH (a fresh machine has none of them)."""
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin)
    drop = {"VIRTUAL_ENV", "PYTHONPATH"}
    return {**{k: v for k, v in os.environ.items() if k not in drop}, "PATH": path, "HOME": str(home)}


def test_the_local_extra_has_what_synth_coco_and_run_local_import():
    """Pillow (synth-coco's images) is in [local]; the COCO categories need no detectron2."""
    import importlib.metadata

    local = [r for r in importlib.metadata.requires("hfai-runtime") or [] if 'extra == "local"' in r]
    names = {re.split(r"[<>=!~ ;\[]", r, maxsplit=1)[0].lower() for r in local}
    assert {"pyyaml", "jsonschema", "cel-python", "rich", "pillow", "packaging"} <= names, names
    assert any(r.startswith("detectron2") for r in detectron2_requirements())


@pytest.mark.detectron2
def test_written_out_coco_categories_are_detectron2s():
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

    assert list(COCO_THING_CATEGORIES) == [(c["id"], c["name"]) for c in COCO_CATEGORIES if c["isthing"]]


@pytest.mark.slow
@pytest.mark.timeout(3600)  # two virtualenvs, one with torch (~6 GB), and the rehearsal
def test_a_bare_render_sets_itself_up_with_make_env_and_make_rehearse(template_src, tmp_path):
    wheels = wheel_dir(cache_dir())
    if not list(wheels.glob("detectron2-0.6-*.whl")):
        pytest.skip(f"needs the detectron2 wheel the bootstrap builds in {wheels} (no PyPI download here)")
    checkout = images.clean_checkout(tmp_path / "checkout")
    project = render(template_src, tmp_path / "project", {})
    env = fresh_env(tmp_path / "home")
    try:
        # [local] alone: the rehearsal's data and admission commands, no torch, no detectron2.
        local = tmp_path / "local-only"
        run_bash(f"{base_python()} -m venv {local}", tmp_path, env, 300)
        run_bash(f"{local}/bin/python -m pip install -q '{checkout}[local]'", tmp_path, env, 900)
        data = run_bash(
            f"{local}/bin/hfai-runtime synth-coco {tmp_path}/coco --coco-categories\n"
            f"{local}/bin/hfai-runtime ffr pack {tmp_path}/coco {tmp_path}/coco.ffr\n"
            f"{local}/bin/hfai-runtime check k8s/job.yaml\n",
            project,
            env,
            300,
        )
        assert (tmp_path / "coco.ffr").is_file() and "ok: PyTorchJob" in data
        shutil.rmtree(local)

        # The README's two commands.
        readme = (project / "README.md").read_text()
        assert "make env " in readme and "make rehearse " in readme
        make_vars = f"PYTHON={base_python()} HFAI_RUNTIME='{checkout}[local]'"
        run_bash(f"make env {make_vars}", project, {**env, "D2_HFAI_CACHE": str(cache_dir())}, 1800)
        run_bash(f"make rehearse {make_vars}", project, env, 1800)
    finally:
        shutil.rmtree(project / ".venv", ignore_errors=True)  # ~6 GB
    output = project / "local-pvc" / "output" / "local"
    assert (output / "model_final.pth").is_file(), "the rehearsal's resumed run finished"
    starts = re.findall(r"Starting training from iteration (\d+)", (output / "log.txt").read_text())
    assert len(starts) == 2 and starts[1] != "0", starts
