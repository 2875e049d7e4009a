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
# apart. Two stages: the builder compiles detectron2 and then drops the toolkit; the runtime
# stage copies only the virtualenv (torch's wheels bring the CUDA runtime, cuDNN, cuBLAS, NCCL;
# the driver comes from the host, through the NVIDIA container toolkit).
#
# Without PyPI/GitHub inside builds (docs/cuda-image.md), fill tools/containers/cuda-inputs/
# (its README) and build from a local Debian with Python 3.11:
#
#   podman build --build-arg BASE_IMAGE=local/debian:bookworm \
#       --build-arg DEBIAN_PYTHON="python3 python3-dev python3-venv" -t d2-hfai-base:0.1.0 .

# Python 3.11: torch 2.14.1's wheels exist for it, and it is Debian bookworm's Python (the
# offline build's base).
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS builder

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

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# g++: nvcc's host compiler. ninja: parallel compiling. curl: detectron2's source.
# hadolint ignore=SC2086
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl g++ ninja-build ${DEBIAN_PYTHON} \
    && rm -rf /var/lib/apt/lists/*

# One virtualenv holds everything Python; the runtime stage copies it whole.
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# Offline inputs (tools/containers/cuda-inputs/README.md), mounted, not copied: the wheelhouse
# holds gigabytes that no layer should keep. When it holds wheels, pip uses only them.
# torch first: the largest layer, and the one that changes least.
COPY tools/containers/cuda-requirements.txt /tmp/cuda-requirements.txt
RUN --mount=type=bind,source=tools/containers/cuda-inputs,target=/tmp/inputs \
    if [ -n "$(find /tmp/inputs/wheelhouse -name '*.whl' 2>/dev/null)" ]; then \
        export PIP_NO_INDEX=1 PIP_FIND_LINKS=/tmp/inputs/wheelhouse; \
    fi \
    && pip install "$(grep -x 'pip==.*' /tmp/cuda-requirements.txt)" \
    && pip install "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
        --requirement /tmp/cuda-requirements.txt

# The toolkit, then the drift check: torch's CUDA version, the wheels' and nvcc's must agree
# before anything is compiled. CUDA_HOME is the wheels' folder; the linker wants lib64/ and an
# unversioned libcudart.so, which the wheels do not ship.
COPY tools/containers/cuda_pins.py /tmp/cuda_pins.py
RUN --mount=type=bind,source=tools/containers/cuda-inputs,target=/tmp/inputs \
    if [ -n "$(find /tmp/inputs/wheelhouse -name '*.whl' 2>/dev/null)" ]; then \
        export PIP_NO_INDEX=1 PIP_FIND_LINKS=/tmp/inputs/wheelhouse; \
    fi \
    && pip install "nvidia-cuda-nvcc==${NVCC_VERSION}" "nvidia-nvvm==${NVVM_VERSION}" \
        "nvidia-cuda-crt==${CRT_VERSION}" "nvidia-cuda-cccl==${CCCL_VERSION}" \
    && ln -s "$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nvidia/cu13" /opt/cuda \
    && ln -s lib /opt/cuda/lib64 \
    && ln -s libcudart.so.13 /opt/cuda/lib/libcudart.so \
    && python /tmp/cuda_pins.py /opt/cuda/bin/nvcc
ENV CUDA_HOME=/opt/cuda

# detectron2 from source with its CUDA ops. FORCE_CUDA: there is no GPU at build time.
# --no-build-isolation: setup.py imports the torch installed above. setup.py installs three of
# its projects/ as detectron2.projects.*: a source trimmed to the library (without projects/)
# gets them as empty packages. Then the toolkit goes: the runtime needs none of it.
RUN --mount=type=bind,source=tools/containers/cuda-inputs,target=/tmp/inputs \
    mkdir -p /src/detectron2 \
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
    && FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST}" MAX_JOBS="${MAX_JOBS}" \
        pip install --no-build-isolation --no-deps --no-index /src/detectron2 \
    && rm -rf /src/detectron2 \
    && pip uninstall --yes nvidia-cuda-nvcc nvidia-nvvm nvidia-cuda-crt nvidia-cuda-cccl \
    && rm /opt/cuda/lib64 /opt/cuda/lib/libcudart.so \
    && python -c "import cv2, detectron2._C as C; print('detectron2', C.__file__, 'CUDA', C.get_cuda_version())"


FROM ${BASE_IMAGE} AS runtime

ARG DEBIAN_PYTHON=""
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# tini: PID 1 that forwards SIGTERM to the launcher (a shell or python as PID 1 may not).
# libglib2.0-0: OpenCV. python3 (a bare Debian only): the interpreter the virtualenv was made with.
# hadolint ignore=SC2086
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libglib2.0-0 tini ${DEBIAN_PYTHON:+python3} \
    && rm -rf /var/lib/apt/lists/*

COPY --from=builder /opt/venv /opt/venv
# NVIDIA_*: what the nvidia/cuda images set, so that the NVIDIA container toolkit mounts the
# driver's compute libraries into the container.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# hfai_runtime last, in this stage: a change to it rebuilds one small layer, not the virtualenv.
# --no-deps: the builder installed its dependencies (cuda-requirements.txt); `pip check` fails the
# build if pyproject.toml asks for one that is not there.
COPY pyproject.toml README.md /src/hfai-runtime/
COPY hfai_runtime /src/hfai-runtime/hfai_runtime
RUN pip install --no-build-isolation --no-deps --no-index /src/hfai-runtime \
    && rm -rf /src/hfai-runtime \
    && pip check \
    && python -c "import hfai_runtime.detectron2, hfai_runtime.launch"

# A fixed numeric uid, so that Kubernetes' runAsNonRoot can verify it and fsGroup 1000 lets it
# write to volumes.
RUN groupadd --gid 1000 trainer \
    && useradd --uid 1000 --gid 1000 --create-home --shell /bin/bash trainer \
    && mkdir -p /workspace \
    && chown trainer:trainer /workspace
USER 1000:1000
WORKDIR /workspace

ENTRYPOINT ["tini", "--"]
CMD ["python", "-c", "import detectron2, hfai_runtime; print('d2-hfai base image: detectron2', detectron2.__version__)"]
