#!/usr/bin/env bash
# Make, on the host, the Python packages a container build installs when it cannot reach PyPI
# (no network, or HTTPS that fails certificate checks inside builds): the wheels for the image's
# Python (default cp313, Debian trixie's) that its Debian packages do not provide (hfai_runtime
# itself is built from the build context). Dockerfile.cpu installs from inputs/wheelhouse/ when it is not empty.
#
#   tools/containers/make_wheelhouse.sh [PYTHON_VERSION]        (default: 3.13)
#
# Runs the host's pip (PIP=...; default: python3 -m pip) and needs PyPI. Pure-Python packages
# published only as sdists (fvcore, antlr4) are built into universal wheels here.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
pyver="${1:-3.13}"
out="$here/inputs/wheelhouse"
read -r -a pip <<< "${PIP:-python3 -m pip}"
mkdir -p "$out"

# Binary wheels for the image's interpreter (no dependencies: the list is the closure minus what
# Debian packages: torch, torchvision, numpy, Pillow, matplotlib, PyYAML, OpenCV).
"${pip[@]}" download --quiet --dest "$out" --no-deps --only-binary=:all: \
    --python-version "$pyver" --implementation cp \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
    "isal>=1.6" "tqdm>=4.60" pycocotools "iopath==0.1.9" portalocker \
    yacs termcolor tabulate cloudpickle "omegaconf>=2.1,<2.4" "hydra-core>=1.1" packaging
# tensorboard (detectron2's writers) and shapely (the LSJ recipes' polygon crop) with their
# dependencies, resolved for the image's Python.
"${pip[@]}" download --quiet --dest "$out" --only-binary=:all: \
    --python-version "$pyver" --implementation cp \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
    tensorboard "shapely>=2"
# sdist-only pure-Python packages.
"${pip[@]}" wheel --quiet --wheel-dir "$out" --no-deps \
    "fvcore==0.1.5.post20221221" "antlr4-python3-runtime==4.9.3"
ls "$out"
