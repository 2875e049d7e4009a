"""The runtime's layers are written down once and cover every module.

``make lint`` runs the import contract in pyproject.toml (``lint-imports``); import-linter checks
only the modules a contract names, so a new top-level module left out of the ``layers`` list
would go unchecked. These tests make that a failure, and keep the package docstring (what a
maintainer reads first) naming the same modules in the same order.
"""

from __future__ import annotations

import pkgutil
import re
import tomllib

from _template_render import REPO

import hfai_runtime


def contract(kind: str) -> dict:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    [found] = [c for c in config["contracts"] if c["type"] == kind]
    return found


def layer_names() -> list[list[str]]:
    """The layers contract, lowest first, each layer its module names."""
    return [re.split(r"\s*[:|]\s*", layer) for layer in reversed(contract("layers")["layers"])]


def test_every_top_level_module_has_a_layer():
    modules = {m.name for m in pkgutil.iter_modules(hfai_runtime.__path__)}
    listed = [name for layer in layer_names() for name in layer]
    assert len(listed) == len(set(listed)), f"a module is in two layers: {listed}"
    assert set(listed) == modules, (
        f"pyproject.toml's layers contract lists {sorted(set(listed) - modules)} (no such module) "
        f"and leaves out {sorted(modules - set(listed))}: give each module its layer"
    )


def test_the_package_docstring_lists_the_layers_in_the_contracts_order():
    named = re.findall(r":mod:`hfai_runtime\.(\w+)`", hfai_runtime.__doc__)
    assert named == [name for layer in layer_names() for name in sorted(layer)], (
        "hfai_runtime/__init__.py's docstring and pyproject.toml's layers contract disagree"
    )


def test_torch_stays_in_the_distributed_and_detectron2_layers():
    sources = {m.removeprefix("hfai_runtime.") for m in contract("forbidden")["source_modules"]}
    modules = {m.name for m in pkgutil.iter_modules(hfai_runtime.__path__)}
    assert sources == modules - {"distributed", "detectron2"}
