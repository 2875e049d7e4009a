"""Running a README's commands as written: the substitutions a test machine needs, and bash.

Shared by the template repository's quick-start test (test_readme_quickstart.py) and the
generated projects' README tests (test_template_readme_blocks.py).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Substitution:
    """Replace ``old`` by ``new`` in the README's commands, because ``why``."""

    old: str
    new: str
    why: str

    def apply(self, commands: str) -> str:
        assert self.old in commands, (
            f"the README's commands no longer contain {self.old!r}, which this test replaces "
            f"({self.why}): update the substitution to the README's new command"
        )
        return commands.replace(self.old, self.new)


def run_bash(script: str, cwd: Path, env: dict[str, str], timeout: float) -> str:
    """Run ``script`` with bash, stopping at the first failing command (named in the error)."""
    prologue = "set -euo pipefail\ntrap 'echo \"failed: $BASH_COMMAND\" >&2' ERR\n"
    done = subprocess.run(
        ["bash", "-c", prologue + script], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, (
        f"exit {done.returncode}\n{script}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-6000:]}"
    )
    return done.stdout
