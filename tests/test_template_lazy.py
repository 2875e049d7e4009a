"""The LazyConfig flavour of the template (``config_system=lazy``).

* Rendered with builtin COCO and with a custom dataset, the generated project's own tests pass
  (config loads, CPU model, pack reads, smoke train -> SIGTERM -> exit code -> resume).
* Exact resume of the lazy smoke config, run by the generated ``train_net.py`` (an instantiated
  ``build_detection_train_loader``, ``SimpleTrainer``, ``SuspendCheckpointer`` last in the
  hooks list), at 1 machine x 2 processes and 2 machines x 1 process: from a suspend and from
  a periodic checkpoint, the final weights are bit-identical to an uninterrupted run's.
* The trainer's state in a checkpoint holds AMP's grad scaler (``AMPTrainer``).
* ``copier update`` of a yacs project from the template before this flavour to now leaves the
  project as it was.
"""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import copier
import pytest
import torch
from _dist_util import start, topology_envs, wait_all, wait_for
from _template_render import ANSWER_SETS as YACS_ANSWER_SETS
from _template_render import REPO, git, render

#: The custom-dataset answers; the images and annotations are the tiny_coco fixture's.
CUSTOM = {
    "config_system": "lazy",
    "dataset": "custom",
    "dataset_name": "shapes",
    "dataset_pack": "shapes/shapes.ffr",
    "dataset_train_images": "train2017",
    "dataset_train_json": "shapes/annotations/instances_train2017.json",
    "dataset_val_images": "val2017",
    "dataset_val_json": "shapes/annotations/instances_val2017.json",
    "num_classes": 3,
    "base_model": "new_baselines/mask_rcnn_regnety_4gf_dds_FPN_100ep_LSJ.py",
    "suspend_exit_code": 200,
}
ANSWER_SETS = {"lazy-coco": {"config_system": "lazy"}, "lazy-custom": CUSTOM}

MAX_ITER, STOP_AT = 8, 2


@pytest.fixture(scope="module")
def lazy_projects(template_src, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lazy_projects")
    return {name: render(template_src, root / name, answers) for name, answers in ANSWER_SETS.items()}


def test_lazy_project_layout(lazy_projects):
    """A lazy project has the LazyConfig files only; its manifest and image run them."""
    project = lazy_projects["lazy-custom"]
    assert sorted(p.name for p in (project / "configs").iterdir()) == ["smoke_cpu.py", "train.py"]
    assert sorted(p.name for p in (project / "tests").iterdir()) == [
        "conftest.py",
        "test_config.py",
        "test_manifests.py",
        "test_smoke.py",
    ]
    assert not (project / "_lazy").exists()
    train_net = (project / "train_net.py").read_text()
    assert train_net.startswith("#!/usr/bin/env python\n") and "SimpleTrainer" in train_net
    assert (
        'get_config("new_baselines/mask_rcnn_regnety_4gf_dds_FPN_100ep_LSJ.py")'
        in (project / "configs" / "train.py").read_text()
    )
    job = (project / "k8s" / "job.yaml").read_text()
    assert '"configs/train.py", "train.output_dir=/mnt/data/output/' in job
    assert '"configs/train.py"]' in (project / "Dockerfile").read_text()


def test_lazy_base_model_must_be_an_lsj_recipe(template_src, tmp_path):
    """With lazy, base_model offers the LSJ recipes only: a yacs model-zoo file is refused."""
    with pytest.raises(ValueError, match="base_model"):
        render(
            template_src,
            tmp_path / "p",
            {"config_system": "lazy", "base_model": "COCO-Detection/retinanet_R_50_FPN_1x.yaml"},
        )


@pytest.mark.slow
@pytest.mark.parametrize("name", ANSWER_SETS)
def test_generated_lazy_project_tests_pass(lazy_projects, name):
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider"],
        cwd=lazy_projects[name],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, f"{name}:\n{result.stdout[-6000:]}\n{result.stderr[-2000:]}"
    assert "PASSED tests/test_smoke.py::test_sigterm_suspends_and_the_restart_resumes" in result.stdout


# --- exact resume --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def datasets_root(tiny_coco, tmp_path_factory) -> Path:
    """$DETECTRON2_DATASETS for the custom project: the pack and the annotations beside it."""
    source = tiny_coco
    root = tmp_path_factory.mktemp("datasets")
    (root / "shapes").mkdir()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "hfai_runtime.cli",
            "ffr",
            "pack",
            str(source),
            str(root / CUSTOM["dataset_pack"]),
        ],
        check=True,
        capture_output=True,
    )
    shutil.copytree(source / "annotations", root / "shapes" / "annotations")
    return root


def _train(
    project: Path,
    data: Path,
    out: Path,
    log: Path,
    topology: str,
    *,
    stop_after: int | None = None,
    checkpoint_period: int = 1000,
) -> list[int]:
    """Run the project's train_net.py with the smoke config; with ``stop_after``, SIGTERM the
    last launcher once ``stop_after`` steps are in metrics.json. Returns the exit codes."""
    args = [
        str(project / "train_net.py"),
        "--config-file",
        str(project / "configs" / "smoke_cpu.py"),
        f"train.output_dir={out}",
        f"train.max_iter={MAX_ITER}",
        f"train.checkpointer.period={checkpoint_period}",
        "dataloader.train.num_workers=0",
    ]
    envs = topology_envs(topology, DETECTRON2_DATASETS=str(data), HFAI_SUSPEND_EXIT_CODE="200")
    procs = [start(args, env, log.with_suffix(f".{i}.log")) for i, env in enumerate(envs)]
    if stop_after is not None:
        wait_for(
            lambda: len(_iterations(out)) >= stop_after or any(p.poll() is not None for p in procs),
            timeout=600,
            what=f"{stop_after} steps",
        )
        procs[-1].send_signal(signal.SIGTERM)  # one machine's launcher: every rank must stop
    return wait_all(procs, timeout=600)


def _iterations(out: Path) -> list[int]:
    """The training steps in rank 0's metrics.json (complete lines with a loss; the final
    evaluation's line has none)."""
    path = out / "metrics.json"
    lines = path.read_text().split("\n")[:-1] if path.exists() else []
    return [entry["iteration"] for entry in map(json.loads, lines) if "total_loss" in entry]


def _logs(log: Path) -> str:
    return "\n".join(
        p.read_text(errors="replace")[-4000:] for p in sorted(log.parent.glob(log.name + ".*.log"))
    )


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


@pytest.fixture(scope="module")
def uninterrupted(lazy_projects, datasets_root, tmp_path_factory) -> Path:
    """The uninterrupted run (1x2), with a periodic checkpoint after iteration STOP_AT."""
    out = tmp_path_factory.mktemp("lazy_uninterrupted")
    log = out / "run"
    codes = _train(
        lazy_projects["lazy-custom"], datasets_root, out, log, "1x2", checkpoint_period=STOP_AT + 1
    )
    assert codes == [0], _logs(log)
    assert _iterations(out) == list(range(MAX_ITER))
    return out


def _check_resumed_exactly(project: Path, data: Path, out: Path, topology: str, reference: Path) -> None:
    """Resume the run in ``out`` from its last checkpoint: every iteration runs once, and the
    final weights are the uninterrupted run's, bit for bit (and differ from the checkpoint's)."""
    resumed_from = _weights(out / (out / "last_checkpoint").read_text())
    log = out.parent / "resume"
    codes = _train(project, data, out, log, topology)
    assert codes == [0] * len(codes), _logs(log)
    assert _iterations(out) == list(range(MAX_ITER))
    resumed, expected = _weights(out / "model_final.pth"), _weights(reference / "model_final.pth")
    assert resumed.keys() == expected.keys()
    different = [k for k in resumed if not torch.equal(resumed[k], expected[k])]
    assert different == [], f"{len(different)} tensors differ, e.g. {different[:3]}"
    assert any(
        not torch.equal(resumed[k], resumed_from[k]) for k in resumed if resumed[k].is_floating_point()
    )


@pytest.mark.slow
# 1x2 also runs against detectron2 main (make test's second pass).
@pytest.mark.parametrize("topology", [pytest.param("1x2", marks=pytest.mark.detectron2), "2x1"])
def test_lazy_suspend_resumes_bit_identically(
    topology, lazy_projects, datasets_root, uninterrupted, tmp_path
):
    project, out = lazy_projects["lazy-custom"], tmp_path / "out"
    log = tmp_path / "first"
    # Three steps first (see the generated tests/test_smoke.py: detectron2 0.6's metrics printer).
    codes = _train(project, datasets_root, out, log, topology, stop_after=3)
    assert set(codes) == {200}, _logs(log)
    suspended_at = _iterations(out)[-1]
    assert (out / "last_checkpoint").read_text() == f"model_{suspended_at:07d}.pth"
    assert suspended_at < MAX_ITER - 1, "the run ended before the suspend: nothing to resume"
    _check_resumed_exactly(project, datasets_root, out, topology, uninterrupted)


@pytest.mark.slow
@pytest.mark.parametrize("topology", ["1x2", "2x1"])
def test_lazy_periodic_checkpoint_resumes_bit_identically(
    topology, lazy_projects, datasets_root, uninterrupted, tmp_path
):
    """A job killed before it could write a suspend checkpoint restarts from the last periodic one."""
    out = tmp_path / "out"
    out.mkdir()
    periodic = f"model_{STOP_AT:07d}.pth"
    shutil.copy2(uninterrupted / periodic, out / periodic)
    (out / "last_checkpoint").write_text(periodic)
    metrics = (uninterrupted / "metrics.json").read_text().split("\n")[: STOP_AT + 1]
    (out / "metrics.json").write_text("\n".join(metrics) + "\n")
    _check_resumed_exactly(lazy_projects["lazy-custom"], datasets_root, out, topology, uninterrupted)


# --- AMP ---------------------------------------------------------------------------------------


@pytest.mark.detectron2
def test_amp_grad_scaler_is_saved_and_restored(lazy_projects, datasets_root, tmp_path, monkeypatch):
    """With ``train.amp.enabled`` the generated build_trainer makes an ``AMPTrainer``; its
    checkpointer saves the trainer's state, grad scaler included, and resume_or_load restores it.

    torch.cuda.amp's GradScaler disables itself without CUDA (its state is then empty), so an
    enabled CPU GradScaler stands in for it: the path from trainer to checkpoint is the same.
    """
    # Imported here: the module's other tests run projects in processes of their own, and only
    # those marked detectron2 import it in this one (make test's second pass).
    from detectron2.config import LazyConfig
    from detectron2.engine import AMPTrainer

    monkeypatch.setenv("DETECTRON2_DATASETS", str(datasets_root))
    project = lazy_projects["lazy-custom"]
    spec = importlib.util.spec_from_file_location("lazy_custom_train_net", project / "train_net.py")
    train_net = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_net)
    train_net.register_datasets()
    cfg = LazyConfig.apply_overrides(
        LazyConfig.load(str(project / "configs" / "smoke_cpu.py")),
        [f"train.output_dir={tmp_path}", "train.amp.enabled=True", "dataloader.train.num_workers=0"],
    )

    trainer, checkpointer = train_net.build_trainer(cfg)
    assert isinstance(trainer, AMPTrainer)
    trainer.grad_scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=7)
    trainer.iter = 3
    checkpointer.save("model_0000003", iteration=3)
    saved = torch.load(tmp_path / "model_0000003.pth", map_location="cpu", weights_only=True)["trainer"]
    assert saved["grad_scaler"]["scale"] == 1024.0 and saved["grad_scaler"]["growth_interval"] == 7

    restarted, restarted_checkpointer = train_net.build_trainer(cfg)
    restarted.grad_scaler = torch.amp.GradScaler("cpu")
    restarted_checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=True)
    assert restarted.iter == 3
    assert restarted.grad_scaler.state_dict() == trainer.grad_scaler.state_dict()


# --- copier update of a yacs project -------------------------------------------------------------


def _feature_base() -> str:
    """The commit just before config_system was added to copier.yml (on the first-parent line)."""
    if not (REPO / ".git").exists():
        pytest.skip("needs the template's git history (a git checkout)")
    commits = git(
        REPO, "log", "--first-parent", "--reverse", "--format=%H", "-S", "config_system:", "--", "copier.yml"
    ).split()
    assert commits, "no commit adds config_system to copier.yml"
    return git(REPO, "rev-parse", f"{commits[0]}^").strip()


def _files(project: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(project)): p.read_bytes()
        for p in sorted(project.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(project).parts
    }


@pytest.fixture(scope="module")
def template_history(tmp_path_factory) -> Path:
    """The template as a git repository: v0.1.0 before config_system, v0.2.0 = this checkout."""
    repo = tmp_path_factory.mktemp("template_history") / "repo"
    repo.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", _feature_base(), "copier.yml", "template"],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(repo, filter="data")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "before config_system")
    git(repo, "tag", "v0.1.0")
    shutil.rmtree(repo / "template")
    shutil.copy2(REPO / "copier.yml", repo / "copier.yml")
    shutil.copytree(
        REPO / "template", repo / "template", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "config_system")
    git(repo, "tag", "v0.2.0")
    return repo


@pytest.mark.parametrize("name", ["defaults", "custom"])
def test_copier_update_keeps_a_yacs_project_as_it_was(template_history, name, tmp_path):
    project = render(template_history, tmp_path / "project", YACS_ANSWER_SETS[name], vcs_ref="v0.1.0")
    before = _files(project)
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "project")

    copier.run_update(str(project), vcs_ref="v0.2.0", defaults=True, overwrite=True, unsafe=False, quiet=True)

    after = _files(project)
    answers = ".copier-answers.yml"
    # The yacs project stays a yacs project: its files, none of the lazy flavour's; their
    # contents, and files the template added since for every project (the Makefile), may differ
    # only by the template's other changes (checked below: the result is what a new yacs project gets).
    assert set(before) <= set(after)
    assert not any(name.endswith(".py") and name.startswith("configs/") for name in after)
    assert all(b"LazyConfig" not in after[name] for name in after if name != "README.md")
    new_answers = after[answers].decode()
    assert "_commit: v0.2.0" in new_answers and "config_system: yacs" in new_answers
    # And exactly what a new yacs project gets from v0.2.0.
    fresh = _files(render(template_history, tmp_path / "fresh", YACS_ANSWER_SETS[name], vcs_ref="v0.2.0"))
    assert after == fresh
