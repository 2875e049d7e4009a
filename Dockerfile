# syntax=docker/dockerfile:1
# The base image of every generated project: CUDA + torch + detectron2 with its CUDA ops +
# hfai_runtime + tini, running as a non-root user. Build it once per team and push it:
#
#   docker build -t registry.example.com/d2-hfai-base:0.1.0 .
#   docker push registry.example.com/d2-hfai-base:0.1.0
#
# Projects build a thin layer FROM it (their Dockerfile copies only their code), so the
# ~20 minutes of compiling detectron2 are paid once, not on every code change.
#
# Two stages: the builder has the CUDA toolkit (nvcc, headers) to compile detectron2; the
# runtime stage starts again from the much smaller CUDA "base" image (the CUDA runtime only;
# cuDNN, cuBLAS and NCCL come with the torch wheels) and copies in just the virtualenv.

# torch 2.14.1's default wheels are built against CUDA 13.0; nvcc must match its major version.
ARG CUDA_VERSION=13.0.1
ARG UBUNTU_VERSION=24.04

FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu${UBUNTU_VERSION} AS builder

# The GPUs detectron2's kernels are compiled for: T4 (7.5), A100 (8.0), A10/RTX 30xx (8.6),
# L4/L40/RTX 40xx (8.9), H100/H200 (9.0), plus PTX for newer GPUs to JIT. CUDA 13 no longer
# compiles for Volta (7.0, V100): for V100s build with CUDA_VERSION=12.6.3, TORCH_INDEX=cu126 and
# add 7.0 here.
ARG TORCH_CUDA_ARCH_LIST="7.5;8.0;8.6;8.9;9.0+PTX"
ARG TORCH_INDEX=cu130
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
# detectron2 has had no release since v0.6 (2021), whose C++ does not build against current
# torch; its main branch (still __version__ 0.6) does. This commit is main's head as pip resolved
# it in public build logs ("Resolved https://github.com/facebookresearch/detectron2.git to
# commit e0ec4e1..."), built there with --no-build-isolation against torch 2.x. Pinned for
# reproducible images; bump deliberately.
ARG DETECTRON2_COMMIT=e0ec4e189d438848521aee7926f9900e114229f5
ARG MAX_JOBS=8

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates curl ninja-build python3 python3-dev python3-venv \
    && rm -rf /var/lib/apt/lists/*

# One virtualenv holds everything Python; the runtime stage copies it whole.
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# setuptools<82: detectron2 imports pkg_resources, removed in setuptools 82.
RUN pip install pip==25.2 setuptools==80.9.0 wheel==0.45.1 \
    && pip install --index-url "https://download.pytorch.org/whl/${TORCH_INDEX}" \
        "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"

# detectron2 from source, with its CUDA ops. FORCE_CUDA: there is no GPU at build time.
# --no-build-isolation: setup.py imports the torch installed above.
WORKDIR /src/detectron2
RUN curl -fsSL "https://github.com/facebookresearch/detectron2/archive/${DETECTRON2_COMMIT}.tar.gz" \
        | tar -xz --strip-components=1 \
    && FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST}" MAX_JOBS="${MAX_JOBS}" \
        pip install --no-build-isolation . \
    && python -c "import detectron2, detectron2._C; print('detectron2', detectron2.__version__)"

# hfai_runtime with detectron2's pins (iopath, fvcore, Pillow<10, setuptools<82), without its
# [local] extra (run-local and synthetic datasets are for developers' machines). It is
# installed from this source tree, which pins its own dependencies in pyproject.toml. OpenCV is
# not among detectron2's requirements, yet its transforms, visualizer and Cityscapes loader
# import cv2 (the CPU environment's wheel lists it for the same reason): the headless build.
WORKDIR /src/hfai-runtime
COPY pyproject.toml README.md ./
COPY hfai_runtime ./hfai_runtime
# hadolint ignore=DL3013
RUN pip install ".[detectron2]" opencv-python-headless \
    && python -c "import cv2, hfai_runtime.detectron2.launch"


FROM nvidia/cuda:${CUDA_VERSION}-base-ubuntu${UBUNTU_VERSION} AS runtime

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# tini: PID 1 that forwards SIGTERM to the launcher (a shell or python as PID 1 may not).
# libglib2.0-0: OpenCV. python3: the interpreter the virtualenv was made with.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates libglib2.0-0 python3 tini \
    && rm -rf /var/lib/apt/lists/*

COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed numeric uid, so that Kubernetes' runAsNonRoot can verify it and fsGroup 1000 lets it
# write to volumes. Ubuntu 24.04 images already have a user 1000 ("ubuntu"): remove it first.
RUN (userdel --remove ubuntu 2>/dev/null || true) \
    && groupadd --gid 1000 trainer \
    && useradd --uid 1000 --gid 1000 --create-home --shell /bin/bash trainer \
    && mkdir -p /workspace \
    && chown trainer:trainer /workspace
USER 1000:1000
WORKDIR /workspace

ENTRYPOINT ["tini", "--"]
CMD ["python", "-c", "import detectron2, hfai_runtime; print('d2-hfai base image: detectron2', detectron2.__version__)"]
