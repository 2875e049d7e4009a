"""Build the images the container tests and ``bench.containers`` run, with podman and no registry.

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
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CONTAINERS_CONF = HERE / "containers.conf"
DEBIAN_BASE = "local/debian:trixie"
DEBIAN_PYTHON = (HERE / "debian-python.txt").read_text().split()
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
    digest = hashlib.sha256()
    tools = checkout / "tools" / "containers"
    inputs = [
        checkout / "Dockerfile.cpu",
        checkout / "pyproject.toml",
        checkout / "README.md",
        *sorted(tools.glob("*.sh")),
        tools / "debian-python.txt",
        *sorted((checkout / "hfai_runtime").rglob("*.py")),
    ]
    for path in inputs:
        digest.update(str(path.relative_to(checkout)).encode() + b"\0" + path.read_bytes())
    return f"{name}:cpu-{digest.hexdigest()[:12]}"


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
    podman(
        "build",
        "--format",
        "docker",
        "--file",
        str(checkout / "Dockerfile.cpu"),
        "--build-arg",
        f"BASE_IMAGE={DEBIAN_BASE}",
        "--build-arg",
        f"DEBIAN_PYTHON={' '.join(DEBIAN_PYTHON)}",
        "--build-arg",
        "TORCH_PACKAGES=",
        "--tag",
        tag,
        str(checkout),
    )
    return time.monotonic() - start


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
