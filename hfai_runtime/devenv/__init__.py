"""The CPU environment a project trains, tests and rehearses in: torch, detectron2 0.6, pytest.

``hfai-runtime env`` installs it into the running interpreter's environment: a generated
project's ``make env`` runs it in the project's ``.venv``, and the template repository's
``tools/bootstrap.sh`` in its own, so both get the same torch and the same detectron2. FAIR
publishes no detectron2 on PyPI: the wheel is built once from the PyPI sdist by
``detectron2_wheel/build.py`` (beside this file; its docstring says how and why) and kept in
the cache folder, keyed by that builder's source, so later environments reuse it offline.
The CUDA image builds real detectron2 instead (the template's Dockerfile).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

#: The torch release the suite and the CUDA image are tested with (a CUDA build that also runs
#: on CPU). Pinned: detectron2's pure-Python wheel and the CUDA image's compiled ops are tested
#: against exactly these.
TORCH_PINS = ("torch==2.14.1", "torchvision==0.29.1")
#: The test runner the generated project's tests need (its pytest.ini).
TEST_TOOLS = ("pytest>=8",)
WHEEL_TOOLS = Path(__file__).resolve().parent / "detectron2_wheel"


def cache_dir() -> Path:
    """Where built wheels are kept: ``$D2_HFAI_CACHE``, else ``$XDG_CACHE_HOME/d2-hfai-template``
    (``~/.cache`` by default); the template repository's bootstrap uses the same folder."""
    if os.environ.get("D2_HFAI_CACHE"):
        return Path(os.environ["D2_HFAI_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "d2-hfai-template"


def wheel_dir(cache: Path) -> Path:
    """``cache/detectron2-wheel-<key>``: the key hashes the builder's sources (in name order,
    as ``cat detectron2_wheel/*.py`` reads them), so a changed builder builds a new wheel."""
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(WHEEL_TOOLS.glob("*.py"))))
    return cache / f"detectron2-wheel-{digest.hexdigest()[:16]}"


def detectron2_requirements() -> list[str]:
    """The ``[detectron2]`` extra of this package: detectron2 and the pins it needs (read from the
    installed metadata, so pyproject.toml stays the one place they are written)."""
    from packaging.requirements import Requirement

    chosen = map(Requirement, importlib.metadata.requires("hfai-runtime") or [])
    return [
        f"{r.name}{r.specifier}"
        for r in chosen
        if r.marker is not None and r.marker.evaluate({"extra": "detectron2"})
    ]


def install(say: Callable[[str], None], sdist: Path | None = None) -> Path:
    """Install torch, the detectron2 wheel (built first unless cached) with its pins, and pytest
    into this interpreter's environment; returns the wheel folder. Raises CalledProcessError
    when pip or the build fails (their output is on the terminal)."""
    pip = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    say(f"torch: {', '.join(TORCH_PINS)} (a CUDA build, ~5 GB)")
    subprocess.run([*pip, *TORCH_PINS], check=True)
    wheels = wheel_dir(cache_dir())
    if list(wheels.glob("detectron2-0.6-*.whl")):
        say(f"detectron2 0.6: reusing the wheel in {wheels}")
    else:
        say(f"detectron2 0.6: building a pure-Python wheel from the PyPI sdist into {wheels}")
        build = [sys.executable, str(WHEEL_TOOLS / "build.py"), "--out", str(wheels)]
        subprocess.run([*build, *(["--sdist", str(sdist)] if sdist else [])], check=True)
    requirements = detectron2_requirements()
    say(f"detectron2 and its pins, {', '.join(TEST_TOOLS)}")
    subprocess.run([*pip, "--find-links", str(wheels), *requirements, *TEST_TOOLS], check=True)
    return wheels
