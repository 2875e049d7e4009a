"""Build a pure-Python detectron2 0.6 wheel from the PyPI sdist ``pb1-detectron2==0.6``.

FAIR does not publish detectron2 on PyPI. The sdist ``pb1-detectron2==0.6`` carries the v0.6
Python code and model-zoo configs but no C++ sources, so it cannot be installed as is. This
script downloads it (or takes a local copy), refuses it unless its sha256 is the one reviewed
here and it still lacks C++ sources, swaps in ``setup.py`` and the ``_C`` stand-in that sit
beside this file, and builds the wheel into ``--out``. Usage::

    python tools/detectron2_wheel/build.py --out DIR [--sdist FILE]
"""

from __future__ import annotations

import argparse
import hashlib
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
HERE = Path(__file__).resolve().parent


def fetch_sdist(dest: Path) -> Path:
    target = dest / "pb1-detectron2-0.6.tar.gz"
    print(f"downloading {SDIST_URL}", flush=True)
    with urllib.request.urlopen(SDIST_URL, timeout=120) as response, open(target, "wb") as f:
        shutil.copyfileobj(response, f)
    return target


def check_sdist(sdist: Path) -> None:
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        sys.exit(
            f"error: {sdist} has sha256 {digest}, expected {SDIST_SHA256}. The PyPI sdist "
            "pb1-detectron2==0.6 changed; review it before updating SDIST_SHA256 in "
            f"{Path(__file__).name}."
        )


def unpack(sdist: Path, dest: Path) -> Path:
    with tarfile.open(sdist) as tar:
        tar.extractall(dest, filter="data")
    src = dest / "pb1-detectron2-0.6"
    compiled = [p for p in src.rglob("*") if p.suffix in {".cpp", ".cu", ".cuh", ".h"}]
    if compiled:
        sys.exit(
            f"error: the sdist now ships C++ sources ({compiled[0].relative_to(src)}, ...); "
            "the pure-Python stand-in would shadow them. Build detectron2 from source instead."
        )
    return src


def build(out: Path, sdist: Path | None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        sdist = sdist or fetch_sdist(tmp_path)
        check_sdist(sdist)
        src = unpack(sdist, tmp_path)
        shutil.copy(HERE / "setup.py", src / "setup.py")
        shutil.copy(HERE / "_C.py", src / "detectron2" / "_C.py")
        (src / "setup.cfg").unlink(missing_ok=True)
        shutil.rmtree(src / "pb1_detectron2.egg-info", ignore_errors=True)
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
        )
    wheels = sorted(out.glob("detectron2-0.6-*.whl"))
    if not wheels:
        sys.exit(f"error: pip wheel produced no detectron2 wheel in {out}")
    return wheels[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the wheel")
    parser.add_argument("--sdist", type=Path, help="a local pb1-detectron2-0.6.tar.gz")
    args = parser.parse_args()
    print(build(args.out, args.sdist))


if __name__ == "__main__":
    main()
