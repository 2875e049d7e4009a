# syntax=docker/dockerfile:1
# The base image of every generated project: torch (CUDA 13.0) + detectron2 with its CUDA ops +
# hfai_runtime + tini, running as a non-root user. Build it once per team and push it:
#
#   docker build -t registry.example.com/d2-hfai-base:0.1.0 .
#   docker push registry.example.com/d2-hfai-base:0.1.0
#
# Projects build a thin layer FROM it (their Dockerfile copies only their code), so compiling
# detectron2 (docs/cuda-image.md: its time per GPU architecture) is paid once, not on every code
# change.
#
# The CUDA toolkit comes from NVIDIA's wheels on PyPI (nvcc, its compiler back end, the headers),
# pinned at the CUDA version torch was built with, not from the nvidia/cuda devel image: the same
# pip that installs torch installs it, and a check below stops the build when the two drift
# apart. The toolkit and the host compiler exist only inside the one step that compiles
# detectron2 (installed, used and removed there), so no layer keeps them and the multi-gigabyte
# virtualenv is stored once (a builder stage would store it twice: docker's layers do not share
# a COPY --from). torch's wheels bring the CUDA runtime, cuDNN, cuBLAS and NCCL; the driver comes
# from the host, through the NVIDIA container toolkit.
#
# Without PyPI/GitHub inside builds (docs/cuda-image.md), fill tools/containers/cuda-inputs/
# (its README) and build from a local Debian with Python 3.11:
#
#   podman build --build-arg BASE_IMAGE=local/debian:bookworm \
#       --build-arg DEBIAN_PYTHON="python3 python3-dev python3-venv" -t d2-hfai-base:0.1.0 .

# Python 3.11: torch 2.14.1's wheels exist for it, and it is Debian bookworm's Python (the
# offline build's base).
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE}

# Debian packages of Python, for a base image without it (a bare Debian): empty for python:*.
ARG DEBIAN_PYTHON=""
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
# The CUDA toolkit wheels, at the CUDA version of torch 2.14.1's PyPI wheels (13.0; the check
# below compares them). nvvm pinned too: unpinned, pip takes a newer 13.x whose PTX the 13.0
# ptxas refuses.
ARG NVCC_VERSION=13.0.88
ARG NVVM_VERSION=13.0.88
ARG CRT_VERSION=13.0.88
ARG CCCL_VERSION=13.0.85
# The GPUs detectron2's kernels are compiled for, as machine code: sm_80 (A100; it also runs on
# A10, A40, L4, L40, RTX 30xx/40xx: same major version) and sm_90 (H100, H200), plus PTX of 9.0
# that the driver compiles for newer GPUs (Blackwell) when first used. Each architecture costs
# ~5.5 CPU-minutes of compiling. T4 (7.5) needs its own: add 7.5 here. CUDA 13 no longer
# compiles for Volta (7.0, V100).
ARG TORCH_CUDA_ARCH_LIST="8.0;9.0+PTX"
# detectron2 has had no release since v0.6 (2021), whose C++ does not build against current
# torch; its main branch (still __version__ 0.6) does. This commit is main's head as pip resolved
# it in public build logs ("Resolved https://github.com/facebookresearch/detectron2.git to
# commit e0ec4e1..."), built there with --no-build-isolation against torch 2.x. Pinned for
# reproducible images; bump deliberately.
ARG DETECTRON2_COMMIT=e0ec4e189d438848521aee7926f9900e114229f5
ARG MAX_JOBS=4
# Set by an offline build only (below).
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# tini: PID 1 that forwards SIGTERM to the launcher (a shell or python as PID 1 may not).
# libglib2.0-0: OpenCV.
# hadolint ignore=SC2086
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libglib2.0-0 tini ${DEBIAN_PYTHON} \
    && rm -rf /var/lib/apt/lists/*

# One virtualenv holds everything Python.
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# Offline inputs (tools/containers/cuda-inputs/README.md), mounted, not copied: the wheelhouse
# holds gigabytes that no layer should keep. An offline build passes PIP_NO_INDEX=1 and
# PIP_FIND_LINKS=/tmp/inputs/wheelhouse (pip reads both from the environment).
#
# First what pip resolves for torch, torchvision and cuda-requirements.txt, written down as
# /opt/venv/resolved.txt; then the ~6 GB it resolved to, installed under those constraints in
# three layers of about 2 GB, not one: a layer is held three times over on the build machine
# while it is committed, and pushes and pulls move smaller layers in parallel.
COPY tools/containers/cuda-requirements.txt /tmp/cuda-requirements.txt
RUN --mount=type=bind,source=tools/containers/cuda-inputs,target=/tmp/inputs \
    pip install "$(grep -x 'pip==.*' /tmp/cuda-requirements.txt)" \
    && pip install --dry-run --ignore-installed --quiet --report /tmp/resolved.json \
        "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" --requirement /tmp/cuda-requirements.txt \
    && python -c 'import json; r = json.load(open("/tmp/resolved.json")); print("\n".join(p["metadata"]["name"] + "==" + p["metadata"]["version"] for p in r["install"]))' \
        > /opt/venv/resolved.txt \
    && rm /tmp/resolved.json
# hadolint ignore=DL3059
RUN --mount=type=bind,source=tools/containers/cuda-inputs,target=/tmp/inputs \
    pip install --constraint /opt/venv/resolved.txt nvidia-cublas nvidia-cusparse nvidia-cusolver nvidia-cufft triton
# hadolint ignore=DL3059
RUN --mount=type=bind,source=tools/containers/cuda-inputs,target=/tmp/inputs \
    pip install --constraint /opt/venv/resolved.txt nvidia-cudnn-cu13 nvidia-nccl-cu13 nvidia-cusparselt-cu13 \
        nvidia-nvshmem-cu13 nvidia-cuda-nvrtc nvidia-cuda-cupti nvidia-curand nvidia-nvjitlink nvidia-cufile \
        nvidia-cuda-runtime nvidia-nvtx
# hadolint ignore=DL3059
RUN --mount=type=bind,source=tools/containers/cuda-inputs,target=/tmp/inputs \
    pip install --constraint /opt/venv/resolved.txt "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
        --requirement /tmp/cuda-requirements.txt

# detectron2 from source with its CUDA ops, in one step: the build tools (g++: nvcc's host
# compiler; ninja; curl: the source) and the toolkit wheels, then the drift check (torch's CUDA
# version, the wheels' and nvcc's must agree before anything is compiled), the compile, and all
# of it removed again. CUDA_HOME is the wheels' folder; the linker wants lib64/ and an
# unversioned libcudart.so, which the wheels do not ship. FORCE_CUDA: there is no GPU at build
# time. --no-build-isolation: setup.py imports the torch installed above. setup.py installs three
# of its projects/ as detectron2.projects.*: a source trimmed to the library (without projects/)
# gets them as empty packages.
COPY tools/containers/cuda_pins.py /tmp/cuda_pins.py
RUN --mount=type=bind,source=tools/containers/cuda-inputs,target=/tmp/inputs \
    apt-get update \
    && apt-get install -y --no-install-recommends curl g++ ninja-build \
    && pip install "nvidia-cuda-nvcc==${NVCC_VERSION}" "nvidia-nvvm==${NVVM_VERSION}" \
        "nvidia-cuda-crt==${CRT_VERSION}" "nvidia-cuda-cccl==${CCCL_VERSION}" \
    && cuda="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nvidia/cu13" \
    && ln -s lib "${cuda}/lib64" \
    && ln -s libcudart.so.13 "${cuda}/lib/libcudart.so" \
    && python /tmp/cuda_pins.py "${cuda}/bin/nvcc" \
    && mkdir -p /src/detectron2 \
    && if [ -f /tmp/inputs/detectron2.tar.gz ]; then \
        tar -xzf /tmp/inputs/detectron2.tar.gz -C /src/detectron2 --strip-components=1; \
    else \
        curl -fsSL "https://github.com/facebookresearch/detectron2/archive/${DETECTRON2_COMMIT}.tar.gz" \
            | tar -xz -C /src/detectron2 --strip-components=1; \
    fi \
    && for project in PointRend/point_rend DeepLab/deeplab Panoptic-DeepLab/panoptic_deeplab; do \
        mkdir -p "/src/detectron2/projects/${project}" \
        && touch -a "/src/detectron2/projects/${project}/__init__.py"; \
    done \
    && CUDA_HOME="${cuda}" FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST}" MAX_JOBS="${MAX_JOBS}" \
        pip install --no-build-isolation --no-deps --no-index /src/detectron2 \
    && pip uninstall --yes nvidia-cuda-nvcc nvidia-nvvm nvidia-cuda-crt nvidia-cuda-cccl \
    && rm -rf /src/detectron2 /tmp/cuda_pins.py "${cuda:?}/lib64" "${cuda:?}/lib/libcudart.so" \
    && apt-get purge -y --auto-remove curl g++ ninja-build \
    && rm -rf /var/lib/apt/lists/* \
    && python -c "import cv2, detectron2._C as C; print('detectron2', C.__file__, 'CUDA', C.get_cuda_version())"

# NVIDIA_*: what the nvidia/cuda images set, so that the NVIDIA container toolkit mounts the
# driver's compute libraries into the container.
ENV PYTHONUNBUFFERED=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# A fixed numeric uid, so that Kubernetes' runAsNonRoot can verify it and fsGroup 1000 lets it
# write to volumes.
RUN groupadd --gid 1000 trainer \
    && useradd --uid 1000 --gid 1000 --create-home --shell /bin/bash trainer \
    && mkdir -p /workspace \
    && chown trainer:trainer /workspace

# hfai_runtime last: a change to it rebuilds one small layer. --no-deps: its dependencies are
# installed above (cuda-requirements.txt); `pip check` fails the build if pyproject.toml asks for
# one that is not there.
COPY pyproject.toml README.md /src/hfai-runtime/
COPY hfai_runtime /src/hfai-runtime/hfai_runtime
RUN pip install --no-build-isolation --no-deps --no-index /src/hfai-runtime \
    && rm -rf /src/hfai-runtime \
    && pip check \
    && python -c "import hfai_runtime.detectron2.launch"

USER 1000:1000
WORKDIR /workspace

ENTRYPOINT ["tini", "--"]
CMD ["python", "-c", "import detectron2, hfai_runtime; print('d2-hfai base image: detectron2', detectron2.__version__)"]
