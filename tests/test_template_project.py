"""The generated projects' own tests pass, run as a user runs them: `python -m pytest` inside.

They train a tiny real detectron2 model on CPU from a synthetic dataset packed to .ffr; the smoke
test also suspends it with SIGTERM (exit code = the answer) and resumes it. The smoke test runs
for the answer sets that change what it exercises (model and dataset wiring, exit code):
``defaults`` (Mask R-CNN, builtin COCO names) and ``custom`` (RetinaNet, custom dataset, exit 200).
The others change only the manifests (checked in test_template.py) and run the fast tests.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from _template_render import ANSWER_SETS, projects, template_src  # noqa: F401 (fixtures)

SMOKE = ("defaults", "custom")
#: See its docstring: lets detectron2's default_setup run on this machine's pure-Python build.
CPU_DETECTRON2_SHIM = Path(__file__).resolve().parent / "_template_cpu_detectron2"
#: The runtime API the generated train_net.py imports.
RUNTIME_MODULES = ("hfai_runtime.detectron2.checkpoint", "hfai_runtime.detectron2.datasets",
                   "hfai_runtime.launch", "hfai_runtime.cli.ffr")


def missing_runtime() -> list[str]:
    return [name for name in RUNTIME_MODULES if importlib.util.find_spec(name) is None]


@pytest.mark.slow
@pytest.mark.parametrize("name", ANSWER_SETS)
def test_generated_project_tests_pass(projects, name):
    if missing_runtime():
        pytest.skip(f"needs the runtime modules the project imports: {', '.join(missing_runtime())}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(CPU_DETECTRON2_SHIM), os.environ.get("PYTHONPATH")) if p)}
    select = [] if name in SMOKE else ["-m", "not smoke"]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", *select],
        cwd=projects[name], env=env, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, f"{name}:\n{result.stdout[-6000:]}\n{result.stderr[-2000:]}"
    if name in SMOKE:
        assert "PASSED tests/test_smoke.py::test_sigterm_suspends_and_the_restart_resumes" in result.stdout
