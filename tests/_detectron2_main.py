"""The test suite's second detectron2: main @ e0ec4e1, the commit the CUDA image compiles.

The environment's detectron2 is 0.6 (tools/bootstrap.sh). ``pytest --detectron2=e0ec4e1`` runs
the tests marked ``detectron2`` against main instead: a pure-Python wheel built from the vendored
source tarball by hfai_runtime/devenv/detectron2_wheel/build.py and installed alone (its dependencies are the
environment's) into a folder of the bootstrap's cache, keyed by everything that decides its
contents, then put first on ``sys.path`` and ``PYTHONPATH``, so the processes that tests launch
(launchers, run-local pods, generated projects' tests) import it too.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WHEEL_TOOLS = REPO / "hfai_runtime" / "devenv" / "detectron2_wheel"
COMMIT = "e0ec4e1"
#: The installed distribution's version: main still says 0.6; the build adds the commit.
VERSION = f"0.6+{COMMIT}"
VERSIONS = {"0.6": "0.6", COMMIT: VERSION}


def _tarball() -> Path:
    """The vendored source the container images compile, found as they find it (imported only
    for the second pass: the ``tools`` folder is importable under ``python -m pytest``)."""
    from tools.containers.images import DETECTRON2_TARBALL

    return DETECTRON2_TARBALL


def unavailable() -> str | None:
    """Why the second detectron2 cannot be built here (None: it can)."""
    from tools.containers.images import detectron2_source_absent

    return detectron2_source_absent()


def _cache() -> Path:
    """The bootstrap's cache folder (tools/bootstrap.sh)."""
    if os.environ.get("D2_HFAI_CACHE"):
        return Path(os.environ["D2_HFAI_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "d2-hfai-template"


def _key() -> str:
    digest = hashlib.sha256(sys.version.encode())
    for path in [*sorted(WHEEL_TOOLS.glob("*.py")), _tarball()]:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def installed() -> Path:
    """The folder holding detectron2 main, built on first use (under a lock: pytest runs may race)."""
    cache = _cache()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"detectron2-{COMMIT}-{_key()}"
    with open(cache / f"detectron2-{COMMIT}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.is_dir():
            _build(target)
    return target


def _build(target: Path) -> None:
    with tempfile.TemporaryDirectory() as wheels:
        args = ["--out", wheels, "--source", str(_tarball()), "--install", str(target)]
        result = subprocess.run(
            [sys.executable, str(WHEEL_TOOLS / "build.py"), *args], capture_output=True, text=True
        )
    if result.returncode != 0:
        raise RuntimeError(
            f"building detectron2 {COMMIT} into {target} failed (exit {result.returncode}):\n"
            f"{result.stdout[-2000:]}{result.stderr[-3000:]}"
        )


def activate(folder: Path) -> None:
    """Import detectron2 from ``folder``, here and in every process started from now on."""
    if "detectron2" in sys.modules:
        raise RuntimeError(f"detectron2 was imported before its {COMMIT} build could replace it")
    sys.path.insert(0, str(folder))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))
