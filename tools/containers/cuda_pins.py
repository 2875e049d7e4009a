"""Stop the CUDA image's build when torch and the CUDA toolkit wheels disagree on the CUDA version.

The top-level Dockerfile compiles detectron2 with nvcc from NVIDIA's PyPI wheels
(``nvidia-cuda-nvcc``, ``-nvvm``, ``-crt``, ``-cccl``), pinned beside ``torch``. Those pins can
drift apart (a torch bump built against another CUDA, or an unpinned ``nvidia-nvvm`` resolving to
a newer 13.x whose PTX the 13.0 ``ptxas`` refuses). A mismatch then shows up minutes into the
compile as an obscure error, or not at all (kernels built for another runtime). This check runs
before anything is compiled:

    python cuda_pins.py /opt/cuda/bin/nvcc

It compares ``torch.version.cuda`` (e.g. ``13.0``) with the major.minor of each toolkit wheel's
version and of the release nvcc reports, prints one line per disagreement and exits 2.
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata

#: The toolkit wheels the Dockerfile installs to compile with, and torch's CUDA runtime wheel.
TOOLKIT_WHEELS = (
    "nvidia-cuda-nvcc",
    "nvidia-nvvm",
    "nvidia-cuda-crt",
    "nvidia-cuda-cccl",
    "nvidia-cuda-runtime",
)


def major_minor(version: str) -> str:
    """``13.0.88`` -> ``13.0``."""
    return ".".join(version.split(".")[:2])


def nvcc_release(nvcc_version_output: str) -> str | None:
    """The ``release X.Y`` in ``nvcc --version``'s output (None: not found)."""
    found = re.search(r"release (\d+\.\d+)", nvcc_version_output)
    return found.group(1) if found else None


def disagreements(torch_cuda: str | None, wheels: dict[str, str], nvcc: str | None) -> list[str]:
    """What disagrees with torch's CUDA version, one sentence each (empty: all agree).

    ``wheels`` maps installed toolkit wheels to their versions; ``nvcc`` is nvcc's release.
    """
    if torch_cuda is None:
        return [
            "torch.version.cuda is None: this torch is a CPU build; the CUDA image needs torch's CUDA wheels"
        ]
    found = [
        f"{name}=={version} is CUDA {major_minor(version)}, torch.version.cuda is {torch_cuda}"
        for name, version in sorted(wheels.items())
        if major_minor(version) != torch_cuda
    ]
    if nvcc != torch_cuda:
        found.append(f"nvcc --version reports release {nvcc}, torch.version.cuda is {torch_cuda}")
    return found


def installed_wheels() -> dict[str, str]:
    versions = {}
    for name in TOOLKIT_WHEELS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: cuda_pins.py NVCC", file=sys.stderr)
        return 2
    import torch

    done = subprocess.run([argv[0], "--version"], capture_output=True, text=True)
    problems = disagreements(torch.version.cuda, installed_wheels(), nvcc_release(done.stdout))
    for problem in problems:
        print(f"cuda_pins: {problem}: pin the CUDA toolkit wheels at torch's CUDA version", file=sys.stderr)
    if problems:
        return 2
    print(
        f"cuda_pins: torch {torch.__version__}, nvcc and {', '.join(installed_wheels())} agree on CUDA {torch.version.cuda}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
