"""Build a pure-Python detectron2 wheel: 0.6 from the PyPI sdist, or main @ e0ec4e1 from its source.

FAIR does not publish detectron2 on PyPI. The sdist ``pb1-detectron2==0.6`` carries the v0.6
Python code and model-zoo configs but no C++ sources, so it cannot be installed as is. This
script downloads it (or takes a local copy), refuses it unless its sha256 is the one reviewed
here and it still lacks C++ sources, swaps in ``setup.py`` and the ``_C`` stand-in that sit
beside this file, and builds the wheel into ``--out``.

``--source`` builds the same kind of wheel from a source tarball of detectron2 main at the
commit the CUDA image compiles (``MAIN_COMMIT``; its sha256 reviewed here too): the C++ sources
(``detectron2/layers/csrc``) are dropped for the stand-in, the model-zoo configs (the
checkout's top-level ``configs/``) move into ``detectron2/model_zoo/configs`` as upstream's
setup.py links them, and the version gets the commit as a local label (``0.6+e0ec4e1``: main
still says 0.6), so the two wheels cannot be confused. ``--install DIR`` then installs the
wheel alone (``pip install --no-deps --target``) into ``DIR``, which appears complete or not at
all: the test suite's second pass puts such a folder first on ``PYTHONPATH``. Usage::

    python hfai_runtime/devenv/detectron2_wheel/build.py --out DIR [--sdist FILE]
    python hfai_runtime/devenv/detectron2_wheel/build.py --out DIR --source detectron2-e0ec4e1.tar.gz [--install DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

SDIST_URL = (
    "https://files.pythonhosted.org/packages/60/26/"
    "48f5bbb7ee492696a21da23303daeecdfe3942c498a70d34108acf63b2bd/pb1-detectron2-0.6.tar.gz"
)
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
#: The detectron2 main commit the CUDA image builds (Dockerfile), and its source tarball's sha256
#: (a ``git archive --prefix=detectron2-e0ec4e1/`` of facebookresearch/detectron2).
MAIN_COMMIT = "e0ec4e1"
MAIN_SHA256 = "1109022704a73bd65f3aca38fd2075ca2cea2b29b69e4d92ad00a2a97f41849b"
HERE = Path(__file__).resolve().parent
COMPILED_SUFFIXES = {".cpp", ".cu", ".cuh", ".h"}


def fetch_sdist(dest: Path) -> Path:
    target = dest / "pb1-detectron2-0.6.tar.gz"
    print(f"downloading {SDIST_URL}", flush=True)
    with urllib.request.urlopen(SDIST_URL, timeout=120) as response, open(target, "wb") as f:
        shutil.copyfileobj(response, f)
    return target


def check_sha256(archive: Path, expected: str, what: str) -> None:
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    if digest != expected:
        sys.exit(
            f"error: {archive} has sha256 {digest}, expected {expected}. It is not the reviewed "
            f"{what}; review it before updating the sha256 in {Path(__file__).name}."
        )


def refuse_compiled(tree: Path) -> None:
    """Exit if ``tree`` holds C++/CUDA sources: the pure-Python stand-in would shadow them."""
    compiled = sorted(p for p in tree.rglob("*") if p.suffix in COMPILED_SUFFIXES)
    if compiled:
        sys.exit(
            f"error: {tree.name} ships C++ sources ({compiled[0].relative_to(tree)}, ...); the "
            "pure-Python stand-in would shadow them. Build detectron2 from source instead."
        )


def unpack(archive: Path, dest: Path, top: str) -> Path:
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    src = dest / top
    if not (src / "detectron2" / "__init__.py").is_file():
        sys.exit(f"error: {archive} has no {top}/detectron2/__init__.py")
    return src


def prepare_sdist(sdist: Path, dest: Path) -> Path:
    """The 0.6 sdist's tree, refused if it gained C++ sources the stand-in would shadow."""
    check_sha256(sdist, SDIST_SHA256, "PyPI sdist pb1-detectron2==0.6")
    src = unpack(sdist, dest, "pb1-detectron2-0.6")
    refuse_compiled(src)
    shutil.rmtree(src / "pb1_detectron2.egg-info", ignore_errors=True)
    return src


def prepare_source(tarball: Path, dest: Path) -> Path:
    """The main checkout's tree laid out like the sdist: no C++ sources, the model-zoo configs
    inside the package (upstream's setup.py, get_model_zoo_configs, links them there)."""
    check_sha256(tarball, MAIN_SHA256, f"detectron2 source at {MAIN_COMMIT}")
    src = unpack(tarball, dest, f"detectron2-{MAIN_COMMIT}")
    shutil.rmtree(src / "detectron2" / "layers" / "csrc")
    refuse_compiled(src / "detectron2")  # tools/deploy's C++ example is not packaged
    (src / "configs").rename(src / "detectron2" / "model_zoo" / "configs")
    return src


def upstream_version(src: Path) -> str:
    """``__version__`` of the tree's ``detectron2/__init__.py`` (read, never imported)."""
    text = (src / "detectron2" / "__init__.py").read_text()
    match = re.search(r"^__version__ = [\"']([^\"']+)[\"']$", text, re.MULTILINE)
    if match is None:
        sys.exit(f"error: {src}/detectron2/__init__.py has no __version__ line")
    return match.group(1)


def build(out: Path, sdist: Path | None = None, source: Path | None = None) -> Path:
    """The wheel, built into ``out``: from ``source`` (a main tarball) if given, else the sdist."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        if source is not None:
            src = prepare_source(source, tmp_path)
            version = f"{upstream_version(src)}+{MAIN_COMMIT}"
        else:
            src = prepare_sdist(sdist or fetch_sdist(tmp_path), tmp_path)
            version = upstream_version(src)
        shutil.copy(HERE / "setup.py", src / "setup.py")
        shutil.copy(HERE / "_C.py", src / "detectron2" / "_C.py")
        (src / "setup.cfg").unlink(missing_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                "-w",
                str(out),
                str(src),
            ],
            check=True,
            env={**os.environ, "D2_WHEEL_VERSION": version},
        )
    wheels = sorted(out.glob(f"detectron2-{version}-*.whl"))
    if not wheels:
        sys.exit(f"error: pip wheel produced no detectron2 {version} wheel in {out}")
    return wheels[-1]


def install(wheel: Path, target: Path) -> None:
    """``wheel`` alone (its dependencies are the environment's) in ``target``, which is made
    beside and renamed into place, so an interrupted install leaves no half-made ``target``."""
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(partial), str(wheel)],
        check=True,
    )
    partial.rename(target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the wheel")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--sdist", type=Path, help="a local pb1-detectron2-0.6.tar.gz")
    what.add_argument("--source", type=Path, help=f"detectron2-{MAIN_COMMIT}.tar.gz, a main source tarball")
    parser.add_argument("--install", type=Path, help="install the wheel alone into this new folder")
    args = parser.parse_args()
    wheel = build(args.out, args.sdist, args.source)
    if args.install is not None:
        install(wheel, args.install)
    print(wheel)


if __name__ == "__main__":
    main()
