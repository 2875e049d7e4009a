"""The generated projects' own tests pass, run as a user runs them: `python -m pytest` inside.

They train a tiny real detectron2 model on CPU from a synthetic dataset packed to .ffr; the smoke
test also suspends it with SIGTERM (exit code = the answer) and resumes it. The smoke test runs
for the answer sets that change what it exercises (model and dataset wiring, exit code):
``defaults`` (Mask R-CNN, builtin COCO names) and ``custom`` (RetinaNet, custom dataset, exit 200).
The others change only the manifests (checked in test_template.py) and run the fast tests.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from _template_render import ANSWER_SETS

SMOKE = ("defaults", "custom")


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    # The smoke tests also run against detectron2 main (make test's second pass).
    [pytest.param(name, marks=pytest.mark.detectron2 if name in SMOKE else ()) for name in ANSWER_SETS],
)
def test_generated_project_tests_pass(projects, name):
    select = [] if name in SMOKE else ["-m", "not smoke"]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", *select],
        cwd=projects[name],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, f"{name}:\n{result.stdout[-6000:]}\n{result.stderr[-2000:]}"
    if name in SMOKE:
        assert "PASSED tests/test_smoke.py::test_sigterm_suspends_and_the_restart_resumes" in result.stdout
