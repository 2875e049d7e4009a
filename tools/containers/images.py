"""Build the images the container tests and ``bench.containers`` run, with podman and no registry.

The CUDA base image (the top-level ``Dockerfile``, what users ``docker build``) is built FROM a
locally made Debian bookworm (Python 3.11, torch's wheels' Python) with every wheel from a
wheelhouse made on the host (``cuda_wheelhouse``: torch, its NVIDIA libraries and the CUDA
toolkit wheels) and the same vendored detectron2 source, mounted from ``cuda-inputs/``.

The CPU base image (``Dockerfile.cpu``) is built FROM a locally made Debian trixie
(``make_base_image.sh``), taking torch & co. from Debian's packages and the rest from a wheelhouse
made on the host (``make_wheelhouse.sh``), and detectron2's source from the vendored tarball of
the commit the images pin: builds need no network but Debian's archive. The engine settings are
``containers.conf`` (through ``CONTAINERS_CONF``), for machines with hybrid cgroups.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CONTAINERS_CONF = HERE / "containers.conf"
DEBIAN_BASE = "local/debian:trixie"
DEBIAN_PYTHON = (HERE / "debian-python.txt").read_text().split()
#: The CUDA image's offline base: Debian's Python is 3.11 there, the Python torch's wheels are for.
CUDA_DEBIAN_BASE = ("local/debian:bookworm", "bookworm")
CUDA_DEBIAN_PYTHON = "python3 python3-dev python3-venv"
#: What the CUDA image build compiles with: 2 processes share this machine's CPUs with the rest.
CUDA_MAX_JOBS = 2
CACHE = Path(
    os.environ.get("D2_HFAI_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "d2-hfai-template"
)
#: NVIDIA's cuobjdump, to read which GPU architectures a fatbinary holds. 13.2.51 is the oldest
#: release of the wheel (there is none for 13.0); it reads fatbinaries of older toolkits.
CUOBJDUMP_WHEEL = "nvidia-cuda-cuobjdump==13.2.51"
# The vendored source of the detectron2 commit the images pin: the "shared" folder beside the checkout, or
# the folder D2_HFAI_SHARED names (a checkout elsewhere, e.g. a git worktree).
SHARED = Path(os.environ.get("D2_HFAI_SHARED") or REPO.parent / "shared")
DETECTRON2_TARBALL = SHARED / "vendor" / "detectron2-e0ec4e1.tar.gz"
PACKAGES = "podman buildah mmdebstrap runc uidmap"


def unavailable() -> str | None:
    """Why real containers cannot run here (None: they can)."""
    if shutil.which("podman") is None or shutil.which("mmdebstrap") is None:
        return f"podman/mmdebstrap not installed (Debian: apt-get install {PACKAGES})"
    if os.geteuid() != 0:
        return "the container tests run as root (rootful podman)"
    return None


def detectron2_source_absent() -> str | None:
    """Why the vendored detectron2 source is not here (None: it is), naming where it was looked
    for and the variable that moves it."""
    if DETECTRON2_TARBALL.is_file():
        return None
    return (
        f"the detectron2 source the images compile is absent: {DETECTRON2_TARBALL} (the folder "
        "D2_HFAI_SHARED names, by default the 'shared' folder beside the checkout, holds "
        f"vendor/{DETECTRON2_TARBALL.name})"
    )


def base_unavailable() -> str | None:
    """Why the CPU base image cannot be built here (None: it can)."""
    return unavailable() or detectron2_source_absent()


def cuda_unavailable() -> str | None:
    """Why the CUDA base image cannot be built here (None: it can)."""
    if sys.version_info[:2] != (3, 11):
        return f"the CUDA image's wheelhouse is downloaded for CPython 3.11 by the host's pip; this is {sys.version.split()[0]}"
    return base_unavailable()


def cuda_archs(arch_list: str) -> tuple[set[str], set[str]]:
    """The machine-code and the PTX architectures a ``TORCH_CUDA_ARCH_LIST`` asks for:
    ``"8.0;9.0+PTX"`` -> ``({"sm_80", "sm_90"}, {"sm_90"})`` (cuobjdump's names for both)."""
    sass, ptx = set(), set()
    for entry in arch_list.replace(";", " ").split():
        version, _, suffix = entry.partition("+")
        name = "sm_" + version.replace(".", "")
        sass.add(name)
        if suffix.upper() == "PTX":
            ptx.add(name)
    return sass, ptx


def use_engine_settings() -> None:
    """Point podman (this process and its children) at ``containers.conf``."""
    os.environ["CONTAINERS_CONF"] = str(CONTAINERS_CONF)


def podman(*args: str, capture: bool = True) -> str:
    """Run podman; raise with its stderr when it fails."""
    done = subprocess.run(["podman", *args], capture_output=capture, text=True)
    if done.returncode != 0:
        tail = (done.stderr or "")[-4000:] + (done.stdout or "")[-4000:]
        raise RuntimeError(f"podman {' '.join(args[:3])} ...: exit {done.returncode}\n{tail}")
    return done.stdout or ""


def image_exists(tag: str) -> bool:
    return subprocess.run(["podman", "image", "exists", tag]).returncode == 0


def clean_checkout(dest: Path, repo: Path = REPO) -> Path:
    """What a clone of ``repo`` would hold (its tracked and not-ignored files), copied to
    ``dest``."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for name in filter(None, files.split("\0")):
        source = repo / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def base_tag(checkout: Path, name: str = "localhost/d2-hfai-base") -> str:
    """``name:cpu-<hash of what the CPU base image is built from>``: an image with this tag was
    built from the same inputs, so a later session may reuse it instead of building again."""
    tools = checkout / "tools" / "containers"
    return _tag(
        checkout, f"{name}:cpu", "Dockerfile.cpu", [*sorted(tools.glob("*.sh")), tools / "debian-python.txt"]
    )


def _tag(checkout: Path, prefix: str, dockerfile: str, tools: list[Path]) -> str:
    """``prefix-<hash>`` of a Dockerfile, the files hfai_runtime is installed from and ``tools``."""
    inputs = [
        checkout / dockerfile,
        checkout / "pyproject.toml",
        checkout / "README.md",
        *tools,
        *sorted((checkout / "hfai_runtime").rglob("*.py")),
    ]
    return f"{prefix}-{_digest(checkout, inputs)}"


def _digest(checkout: Path, inputs: list[Path]) -> str:
    """12 hex digits of the inputs' names (relative to ``checkout``) and contents."""
    digest = hashlib.sha256()
    for path in inputs:
        digest.update(str(path.relative_to(checkout)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def build_base_image(checkout: Path, tag: str) -> float:
    """The CPU base image from ``checkout`` (offline inputs filled first), unless ``tag`` exists;
    returns the seconds it took."""
    start = time.monotonic()
    if image_exists(tag):
        return 0.0
    subprocess.run(
        [checkout / "tools/containers/make_base_image.sh", DEBIAN_BASE], check=True, capture_output=True
    )
    subprocess.run(
        [checkout / "tools/containers/make_wheelhouse.sh", "3.13"],
        check=True,
        capture_output=True,
        env={**os.environ, "PIP": f"{sys.executable} -m pip"},
    )
    shutil.copy2(DETECTRON2_TARBALL, checkout / "tools/containers/inputs/detectron2.tar.gz")
    build_image(
        checkout,
        "Dockerfile.cpu",
        tag,
        {"BASE_IMAGE": DEBIAN_BASE, "DEBIAN_PYTHON": " ".join(DEBIAN_PYTHON), "TORCH_PACKAGES": ""},
    )
    return time.monotonic() - start


def build_image(checkout: Path, dockerfile: str, tag: str, build_args: dict[str, str]) -> None:
    """``podman build`` of ``checkout``'s ``dockerfile`` as ``tag`` (docker format: HEALTHCHECK,
    SHELL and the like are kept)."""
    flags = [flag for name, value in build_args.items() for flag in ("--build-arg", f"{name}={value}")]
    podman(
        "build",
        "--format",
        "docker",
        "--file",
        str(checkout / dockerfile),
        *flags,
        "--tag",
        tag,
        str(checkout),
    )


def cpu_base_image(workdir: Path) -> tuple[str, float]:
    """This checkout's CPU base image: built from a clean copy of it made in ``workdir``, unless
    an image of the same inputs exists. Returns its tag and the seconds the build took."""
    use_engine_settings()
    checkout = clean_checkout(workdir)
    tag = base_tag(checkout)
    return tag, build_base_image(checkout, tag)


def build_project_image(project: Path, base: str, tag: str) -> float:
    """A rendered project's image FROM ``base``; returns seconds."""
    start = time.monotonic()
    podman("build", "--format", "docker", "--build-arg", f"BASE_IMAGE={base}", "--tag", tag, str(project))
    return time.monotonic() - start


def dockerfile_args(dockerfile: Path) -> dict[str, str]:
    """The ``ARG NAME=default`` defaults a Dockerfile declares (quotes removed; first one wins)."""
    args: dict[str, str] = {}
    for line in dockerfile.read_text().splitlines():
        name, eq, value = line.removeprefix("ARG ").partition("=")
        if line.startswith("ARG ") and eq:
            args.setdefault(name.strip(), value.strip().strip('"'))
    return args


def cuda_pip_specs(checkout: Path = REPO) -> list[str]:
    """What the CUDA image pip-installs: the Dockerfile's pinned torch and toolkit wheels and
    ``cuda-requirements.txt``, as pip requirement strings."""
    pins = dockerfile_args(checkout / "Dockerfile")
    wheels = {
        "torch": "TORCH_VERSION",
        "torchvision": "TORCHVISION_VERSION",
        "nvidia-cuda-nvcc": "NVCC_VERSION",
        "nvidia-nvvm": "NVVM_VERSION",
        "nvidia-cuda-crt": "CRT_VERSION",
        "nvidia-cuda-cccl": "CCCL_VERSION",
    }
    lines = (checkout / "tools/containers/cuda-requirements.txt").read_text().splitlines()
    return [f"{name}=={pins[arg]}" for name, arg in wheels.items()] + [
        line.strip() for line in lines if line.strip() and not line.startswith("#")
    ]


def cuda_wheelhouse(checkout: Path = REPO) -> Path:
    """Every wheel the CUDA image installs (~3 GB), downloaded once into the cache with the host's
    pip (whose Python must be the image's: 3.11) and kept under a name keyed by what it holds."""
    specs = cuda_pip_specs(checkout)
    if sys.version_info[:2] != (3, 11):
        raise RuntimeError(
            f"the CUDA wheelhouse is for CPython 3.11 (torch's wheels, Debian bookworm); this is {sys.version.split()[0]}"
        )
    key = hashlib.sha256("\n".join(specs).encode()).hexdigest()[:12]
    dest = CACHE / f"cuda-wheelhouse-{key}"
    if dest.is_dir():
        return dest
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "download", "--quiet", "--dest", str(partial), *specs], check=True)
    # sdist-only pure-Python packages (fvcore, antlr4): built into wheels, as no index is there.
    for sdist in sorted(partial.glob("*.tar.gz")):
        subprocess.run(
            [*pip, "wheel", "--quiet", "--no-deps", "--wheel-dir", str(partial), str(sdist)], check=True
        )
        sdist.unlink()
    partial.rename(dest)
    return dest


def cuobjdump(workdir: Path = CACHE) -> Path:
    """NVIDIA's ``cuobjdump`` (from its PyPI wheel, unpacked once into ``workdir``)."""
    exe = workdir / "cuobjdump" / "nvidia" / "cu13" / "bin" / "cuobjdump"
    if exe.is_file():
        return exe
    download = workdir / "cuobjdump-wheel"
    pip = [sys.executable, "-m", "pip"]
    subprocess.run(
        [*pip, "download", "--quiet", "--no-deps", "--dest", str(download), CUOBJDUMP_WHEEL], check=True
    )
    with zipfile.ZipFile(next(download.glob("*.whl"))) as wheel:
        wheel.extractall(workdir / "cuobjdump")
    exe.chmod(0o755)
    return exe


def cuda_base_tag(checkout: Path, name: str = "localhost/d2-hfai-base") -> str:
    """``name:cuda-<hash of what the CUDA base image is built from>`` (see :func:`base_tag`)."""
    tools = checkout / "tools" / "containers"
    return _tag(
        checkout, f"{name}:cuda", "Dockerfile", [tools / "cuda-requirements.txt", tools / "cuda_pins.py"]
    )


def build_cuda_base_image(checkout: Path, tag: str) -> float:
    """The CUDA base image from ``checkout``'s own Dockerfile, offline: its inputs folder filled
    (hard links to the cached wheelhouse), unless ``tag`` exists; returns the seconds it took."""
    start = time.monotonic()
    if image_exists(tag):
        return 0.0
    base, suite = CUDA_DEBIAN_BASE
    subprocess.run(
        [checkout / "tools/containers/make_base_image.sh", base, suite], check=True, capture_output=True
    )
    inputs = checkout / "tools/containers/cuda-inputs"
    shutil.copytree(cuda_wheelhouse(checkout), inputs / "wheelhouse", copy_function=_link_or_copy)
    shutil.copy2(DETECTRON2_TARBALL, inputs / "detectron2.tar.gz")
    offline = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "/tmp/inputs/wheelhouse"}  # the mount's wheelhouse
    build_image(
        checkout,
        "Dockerfile",
        tag,
        {"BASE_IMAGE": base, "DEBIAN_PYTHON": CUDA_DEBIAN_PYTHON, "MAX_JOBS": str(CUDA_MAX_JOBS), **offline},
    )
    return time.monotonic() - start


def cuda_base_image(workdir: Path) -> tuple[str, float]:
    """This checkout's CUDA base image (see :func:`cpu_base_image`)."""
    use_engine_settings()
    checkout = clean_checkout(workdir)
    tag = cuda_base_tag(checkout)
    return tag, build_cuda_base_image(checkout, tag)


def _link_or_copy(source: str, dest: str) -> None:
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)


if __name__ == "__main__":
    # python -m tools.containers.images cuda-wheelhouse: fill cuda-inputs/ for an offline build.
    if sys.argv[1:] != ["cuda-wheelhouse"]:
        sys.exit("usage: python -m tools.containers.images cuda-wheelhouse")
    target = HERE / "cuda-inputs" / "wheelhouse"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(cuda_wheelhouse(), target, copy_function=_link_or_copy)
    print(f"{target}: {len(list(target.glob('*.whl')))} wheels")
