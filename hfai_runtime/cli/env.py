"""``hfai-runtime env``: install the CPU environment a project trains and rehearses in."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "env",
        help="install torch, a pure-Python detectron2 0.6 and pytest into this Python's environment",
        description="Install what a project's tests and `run-local` rehearsal need on a CPU machine "
        "into the environment of the Python that runs this command (a project's `make env` "
        "runs it in .venv): the pinned torch, a detectron2 0.6 wheel built from the PyPI sdist "
        "(once; kept in $D2_HFAI_CACHE or ~/.cache/d2-hfai-template) and pytest.",
    )
    parser.add_argument(
        "--sdist", type=Path, help="a local pb1-detectron2-0.6.tar.gz instead of downloading it"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hfai_runtime.devenv import install

    def say(step: str) -> None:
        print(f"hfai-runtime env: {step}", flush=True)

    try:
        install(say, args.sdist)
    except subprocess.CalledProcessError as exc:
        print(
            f"hfai-runtime env: failed: {' '.join(map(str, exc.cmd))} (exit {exc.returncode})",
            file=sys.stderr,
        )
        return 1
    import_check = [
        sys.executable,
        "-c",
        "import detectron2, torch; print(detectron2.__version__, torch.__version__)",
    ]
    versions = subprocess.run(import_check, check=True, capture_output=True, text=True).stdout.split()
    say(f"ready: detectron2 {versions[0]}, torch {versions[1]} in {sys.prefix}")
    return 0
