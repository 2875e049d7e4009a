"""Shared fixtures and the ``--detectron2`` option. Test data lives in the repository
(``tests/data``), with its provenance."""

from __future__ import annotations

from pathlib import Path

import _detectron2_main
import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
#: The Kubernetes CRDs ship inside the package (``hfai-runtime check`` validates against them).
CRDS = REPO / "hfai_runtime" / "check" / "crds"
_UNAVAILABLE = pytest.StashKey[str]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--detectron2",
        choices=tuple(_detectron2_main.VERSIONS),
        default="0.6",
        help="the detectron2 to test against: the environment's 0.6, or main @ e0ec4e1 (what the "
        "CUDA image compiles) built from its vendored source; run with -m detectron2",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Swap in detectron2 main before any test module imports detectron2."""
    if config.getoption("detectron2") == "0.6":
        return
    reason = _detectron2_main.unavailable()
    if reason is not None:
        config.stash[_UNAVAILABLE] = reason
        return
    try:
        _detectron2_main.activate(_detectron2_main.installed())
    except RuntimeError as error:
        raise pytest.UsageError(str(error)) from None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = config.stash.get(_UNAVAILABLE, None)
    if reason is not None:
        for item in items:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def detectron2_version(request) -> str:
    """The version of the detectron2 under test: ``0.6`` or ``0.6+e0ec4e1``."""
    return _detectron2_main.VERSIONS[request.config.getoption("detectron2")]


@pytest.fixture(scope="session")
def template_src(tmp_path_factory) -> Path:
    """The template as a git repository tagged with the CHANGELOG's newest release."""
    from _template_render import template_repo

    return template_repo(tmp_path_factory.mktemp("template") / "repo")


@pytest.fixture(scope="session")
def projects(template_src, tmp_path_factory) -> dict[str, Path]:
    """Every answer set of ``_template_render.ANSWER_SETS`` rendered once: name -> folder."""
    from _template_render import ANSWER_SETS, render

    root = tmp_path_factory.mktemp("projects")
    return {name: render(template_src, root / name, answers) for name, answers in ANSWER_SETS.items()}


@pytest.fixture(scope="session")
def tiny_coco(tmp_path_factory) -> Path:
    """The synthetic COCO tree ``tools/tiny_train.py`` trains on (12 train, 4 val, 64 px, half of
    the training images landscape). Shared by the session: no test writes into it."""
    from hfai_runtime.synthetic import make_coco_tree

    root = tmp_path_factory.mktemp("tiny_coco")
    return make_coco_tree(root, num_train=12, num_val=4, image_size=64, seed=3, landscape_every_other=True)


@pytest.fixture(scope="session")
def golden_ffrecord() -> Path:
    """Files written by the official HFAiLab ffrecord library (see its README for provenance)."""
    return DATA / "ffrecord"


@pytest.fixture(scope="session")
def crd_dir() -> Path:
    """The PyTorchJob v1 and Trainer v2 CRDs (see SOURCES.md beside them)."""
    return CRDS
