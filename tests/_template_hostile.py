"""What a rendered project must be, whatever the answers: the checks of the hostile-answer suite.

:func:`render_or_refuse` renders one answer set through copier's API and returns either the
project or copier's refusal. :func:`check_project` then asserts what no answer may break:

* ``k8s/job.yaml`` is ASCII, exactly one YAML document of the intended kind, accepted by the
  CRD's schema, and every value that came from an answer equals the answer; the eval and pack
  Jobs and the CI workflow likewise;
* every Python file compiles to the same code as the default project's (string and number
  constants aside), its constants equal the answers, and ``train_net`` imports without touching
  the project folder or the environment;
* every ``bash`` block of the README parses (``bash -n``), and the words built from answers
  split back into the answers.

:func:`unsafe_reason` is the independent oracle: what an accepted answer must never contain,
written without the validators' regular expressions, so a validator that lets through a control
character or a system path fails the suite even if the render happens to survive it.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import unicodedata
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import copier
import jinja2
import pytest
import yaml
from _template_k8s import crd_schema, effective_pods, validate_crd
from _template_render import REPO, module_constants

#: The Python files of a project, each compared with the default project's.
PYTHON_FILES = ("train_net.py", "tests/conftest.py", "tests/test_config.py", "tests/test_smoke.py")
#: Folders a PVC must never be mounted over (or under): the image's system and code.
SYSTEM_DIRS = (
    "/etc",
    "/proc",
    "/sys",
    "/dev",
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/boot",
    "/root",
    "/run",
    "/workspace",
)
#: Answers that are paths relative to the datasets root or the pack.
RELATIVE_PATHS = (
    "dataset_pack",
    "dataset_train_images",
    "dataset_train_json",
    "dataset_val_images",
    "dataset_val_json",
)
CRD_FILES = {"PyTorchJob": "kubeflow.org_pytorchjobs.yaml", "TrainJob": "trainer.kubeflow.org_trainjobs.yaml"}


def plain_template(dest: Path) -> Path:
    """``copier.yml`` + ``template/`` in a folder that is not a git repository.

    Copier renders such a folder in place; a git source would be cloned for every render, and
    the hostile suite renders hundreds of answer sets.
    """
    dest.mkdir(parents=True)
    shutil.copy2(REPO / "copier.yml", dest / "copier.yml")
    shutil.copytree(
        REPO / "template", dest / "template", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    return dest


@contextlib.contextmanager
def compiled_once() -> Iterator[None]:
    """Compile each Jinja template string once for all renders of the suite.

    Copier builds a new Jinja environment for every run and compiles every template, default,
    ``when`` and validator again: two thirds of a render. The compiled code does not belong to
    an environment instance (it looks filters and globals up in the environment it runs in),
    and every environment copier makes here is configured alike, so the code is reused, keyed
    on the configuration that shapes it.
    """
    compile_ = jinja2.Environment.compile
    cache: dict[tuple, Any] = {}

    def compile_once(self, source, name=None, filename=None, raw=False, defer_init=False):
        key = (
            type(self),
            tuple(sorted(self.extensions)),
            self.finalize is None,
            self.autoescape,
            str(source),
            name,
            filename,
            raw,
            defer_init,
        )
        if key not in cache:
            cache[key] = compile_(self, source, name, filename, raw, defer_init)
        return cache[key]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jinja2.Environment, "compile", compile_once)
        yield


def render_or_refuse(src: Path, dst: Path, answers: Mapping[str, Any]) -> Path | str:
    """The rendered project, or copier's one-line refusal ("Validation error for question ...")."""
    try:
        copier.run_copy(str(src), str(dst), data=dict(answers), defaults=True, unsafe=False, quiet=True)
    except ValueError as refused:
        message = str(refused)
        assert message.startswith("Validation error for question '"), message
        assert not dst.exists() or not any(dst.iterdir()), "a refused answer left files behind"
        return message
    return dst


# ----------------------------------------------------------------------------------------------
# The oracle
# ----------------------------------------------------------------------------------------------


def _bad_character(value: str) -> str | None:
    """A character no answer may hold: controls, line/paragraph separators, invisible formatting,
    surrogates, backslashes (escapes)."""
    for char in value:
        if char == "\\" or unicodedata.category(char) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            return f"holds {char!r}"
    return None


def unsafe_reason(name: str, value: Any) -> str | None:
    """Why an accepted answer is unsafe, or None. Independent of copier.yml's expressions."""
    if not isinstance(value, str):
        return None
    if reason := _bad_character(value):
        return reason
    if name in ("project_name", "description"):
        return None if value.strip() else "is blank"
    if not value.isascii() or any(c.isspace() for c in value) or any(c in value for c in "\"'`$;|&<>"):
        return "is not a plain ASCII word"
    if name in RELATIVE_PATHS or name == "mount_path":
        parts = value.split("/")
        body = parts[1:] if name == "mount_path" else parts
        if name == "mount_path" and parts[0] != "":
            return "is not absolute"
        if any(part in ("", ".", "..") for part in body):
            return "has an empty, '.' or '..' part"
        if name == "mount_path" and any(value == d or value.startswith(d + "/") for d in SYSTEM_DIRS):
            return "is a system folder"
    if name in ("shm_size", "memory_per_node") and not re.fullmatch(r"[0-9]+(Mi|Gi|Ti)", value, re.ASCII):
        return "is not ASCII digits and a binary unit"
    if name in ("image", "base_image") and (
        value.endswith(":latest") or ":" not in value.rsplit("/", 1)[-1] and "@" not in value
    ):
        return "is not pinned"
    return None


# ----------------------------------------------------------------------------------------------
# The rendered project
# ----------------------------------------------------------------------------------------------


def python_shape(path: Path) -> str:
    """The file's syntax tree with every constant blanked: the code, without the data."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant):
            node.value = None
    return ast.dump(tree)


def check_job(project: Path, answers: Mapping[str, Any], crd_dir: Path) -> None:
    """``k8s/job.yaml``: ASCII, one document of the intended kind, valid, values = answers."""
    text = (project / "k8s" / "job.yaml").read_text()
    assert text.isascii(), "every answer reaches the manifest JSON-escaped to ASCII"
    documents = [d for d in yaml.safe_load_all(text) if d is not None]
    assert len(documents) == 1, f"{len(documents)} YAML documents"
    (job,) = documents
    kind = "TrainJob" if answers["job_flavour"] == "trainjob" else "PyTorchJob"
    assert job["kind"] == kind
    validate_crd(job, crd_schema(crd_dir / CRD_FILES[kind]))

    first_line = text.splitlines()[0]
    name, _ = json.JSONDecoder().raw_decode(first_line[len("# ") :])
    assert name == answers["project_name"], "the comment names the project"
    meta = job["metadata"]
    assert (meta["name"], meta["namespace"]) == (answers["project_slug"], answers["namespace"])
    assert meta["labels"]["app.kubernetes.io/name"] == answers["project_slug"]
    queue_labels = {k: v for k, v in meta["labels"].items() if k.startswith("kueue.x-k8s.io/")}
    expected_labels = {}
    if answers["kueue_queue"]:
        expected_labels["kueue.x-k8s.io/queue-name"] = answers["kueue_queue"]
        if answers.get("kueue_priority_class"):
            expected_labels["kueue.x-k8s.io/priority-class"] = answers["kueue_priority_class"]
    assert queue_labels == expected_labels
    if kind == "TrainJob":
        assert job["spec"]["trainer"]["image"] == answers["image"]
    for pod in effective_pods(job).values():
        (container,) = pod["containers"]
        assert container["image"] == answers["image"]
        assert container["args"][-1] == f"{answers['mount_path']}/output/{answers['project_slug']}"
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["DETECTRON2_DATASETS"] == f"{answers['mount_path']}/datasets"
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts == {"dshm": "/dev/shm", "storage": answers["mount_path"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["storage"]["persistentVolumeClaim"]["claimName"] == answers["pvc_name"]
        assert volumes["dshm"]["emptyDir"]["sizeLimit"] == answers["shm_size"]
        resources = container["resources"]
        assert resources["limits"]["memory"] == resources["requests"]["memory"] == answers["memory_per_node"]
        assert pod.get("priorityClassName", "") == answers.get("priority_class", "")
        if answers["spot_node_label"]:
            key, value = answers["spot_node_label"].split("=", 1)
            assert pod["nodeSelector"] == {key: value}
            assert pod["tolerations"] == [
                {"key": key, "operator": "Equal", "value": value, "effect": "NoSchedule"}
            ]
        else:
            assert "nodeSelector" not in pod and "tolerations" not in pod


def check_python(project: Path, answers: Mapping[str, Any], baseline: Path) -> None:
    """Same code as the baseline project's; constants = answers; imports without side effects."""
    for name in PYTHON_FILES:
        assert python_shape(project / name) == python_shape(baseline / name), f"{name}: the code changed"
    train_net = module_constants(project / "train_net.py")
    conftest = module_constants(project / "tests" / "conftest.py")
    if answers["dataset"] == "custom":
        name = answers["dataset_name"]
        splits = (
            (f"{name}_train", answers["dataset_train_images"], answers["dataset_train_json"]),
            (f"{name}_val", answers["dataset_val_images"], answers["dataset_val_json"]),
        )
        assert (train_net["DATASET_PACK"], train_net["DATASET_PREFIX"]) == (
            answers["dataset_pack"],
            answers["dataset_prefix"],
        )
        assert train_net["DATASET_SPLITS"] == splits
        assert conftest["PACK"] == answers["dataset_pack"]
        assert tuple(split[:3] for split in conftest["SPLITS"]) == splits
        config = yaml.safe_load((project / "configs" / "train.yaml").read_text())
        assert config["DATASETS"]["TRAIN"] == [f"{name}_train"]
    import_without_side_effects(project / "train_net.py")


def import_file(path: Path) -> None:
    """Import a rendered module under a fresh name, writing no bytecode next to it."""
    spec = importlib.util.spec_from_file_location(f"_rendered_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    dont_write_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = dont_write_bytecode


def import_without_side_effects(path: Path) -> None:
    """Import a rendered module; the project folder, the environment and ``sys.path`` stay as
    they were (injected code would have to change something to matter). Import the modules it
    needs once before (:func:`import_file`): detectron2's first import sets process state."""

    def state():
        return sorted(str(p) for p in path.parent.rglob("*")), dict(os.environ), list(sys.path)

    before = state()
    import_file(path)
    after = state()
    for what, old, new in zip(("files", "environment", "sys.path"), before, after, strict=True):
        assert old == new, f"importing {path} changed the {what}"


def bash_blocks(readme: str) -> list[str]:
    """The README's ```bash blocks."""
    return re.findall(r"^```bash\n(.*?)^```", readme, flags=re.MULTILINE | re.DOTALL)


def shell_commands(readme: str) -> list[list[str]]:
    """Every command line of the README's bash blocks, continuation lines joined, split as the
    shell splits words (comments dropped)."""
    commands = []
    for block in bash_blocks(readme):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


def check_readme(project: Path, answers: Mapping[str, Any]) -> None:
    """The README's shell blocks parse, and the words made from answers are the answers."""
    readme = (project / "README.md").read_text()
    for block in bash_blocks(readme):
        result = subprocess.run(["bash", "-n"], input=block, capture_output=True, text=True)
        assert result.returncode == 0, f"README bash block does not parse: {result.stderr}\n{block}"
    commands = shell_commands(readme)
    (run_local,) = [c for c in commands if c[:2] == ["hfai-runtime", "run-local"]]
    args = shlex.split(run_local[run_local.index("--args") + 1])
    assert args[-2:] == ["OUTPUT_DIR", f"{answers['mount_path']}/output/local"]
    (build,) = [c for c in commands if c[:2] == ["docker", "build"]]
    repository = answers["image"].split("@")[0]
    if ":" in repository.rsplit("/", 1)[-1]:
        repository = repository.rsplit(":", 1)[0]
    assert build[3] == f"{repository}:$TAG", "the build tags the answer's repository"
    if answers["dataset"] == "custom":
        (pack,) = [c for c in commands if c[:3] == ["hfai-runtime", "ffr", "pack"] and c[3] == "SRC/"]
        assert pack[4] == f"datasets/{answers['dataset_pack']}"


def check_batch_jobs(project: Path, answers: Mapping[str, Any]) -> None:
    """``k8s/eval-job.yaml`` and ``k8s/pack-job.yaml``: ASCII, one Job each, the answers' image."""
    for name in ("eval-job", "pack-job"):
        text = (project / "k8s" / f"{name}.yaml").read_text()
        assert text.isascii(), f"{name}: every answer reaches the manifest JSON-escaped to ASCII"
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
        assert len(documents) == 1 and documents[0]["kind"] == "Job", f"{name}: not one Job"
        pod = documents[0]["spec"]["template"]["spec"]
        assert {c["image"] for c in pod["containers"] + pod.get("initContainers", [])} == {answers["image"]}
        (storage,) = [v for v in pod["volumes"] if v["name"] == "storage"]
        assert storage["persistentVolumeClaim"]["claimName"] == answers["pvc_name"]
    workflow = yaml.safe_load((project / ".github" / "workflows" / "ci.yml").read_text())
    assert workflow["jobs"]["test"]["container"]["image"] == answers["base_image"]


def check_project(project: Path, answers: Mapping[str, Any], baseline: Path, crd_dir: Path) -> None:
    """Every property of a rendered project (see the module docstring)."""
    recorded = yaml.safe_load((project / ".copier-answers.yml").read_text())
    full = {**recorded, **{k: v for k, v in answers.items() if k in recorded}}
    for key, value in answers.items():
        if key in recorded:
            assert recorded[key] == value, f"answer {key} recorded as {recorded[key]!r}"
    check_job(project, full, crd_dir)
    check_batch_jobs(project, full)
    check_python(project, full, baseline)
    check_readme(project, full)
