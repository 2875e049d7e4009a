"""The runtime's layers are written down once and cover every module.

``make lint`` runs the import contracts in ``.importlinter`` (``lint-imports``); import-linter
checks only the modules a contract names, so a new top-level module left out of the ``layers``
list would go unchecked. These tests make that a failure, and keep the package docstring (what a
maintainer reads first) naming every module in the contract's order.
"""

from __future__ import annotations

import configparser
import pkgutil
import re

from _template_render import REPO

import hfai_runtime

CONFIG = REPO / ".importlinter"


def contract(name: str) -> configparser.SectionProxy:
    config = configparser.ConfigParser()
    config.read(CONFIG)
    return config[f"importlinter:contract:{name}"]


def listed(section: configparser.SectionProxy, key: str) -> list[str]:
    return section[key].split()


def layers() -> list[list[str]]:
    """The layers contract, lowest first, each layer its module names."""
    rows = [row.strip() for row in contract("layers")["layers"].splitlines() if row.strip()]
    return [re.split(r"\s*[:|]\s*", row) for row in reversed(rows)]


def top_level_modules() -> set[str]:
    return {m.name for m in pkgutil.iter_modules(hfai_runtime.__path__)}


def test_every_top_level_module_has_a_layer():
    named = [name for layer in layers() for name in layer]
    assert len(named) == len(set(named)), f"a module is in two layers: {named}"
    modules = top_level_modules()
    assert set(named) == modules, (
        f"{CONFIG.name}'s layers contract lists {sorted(set(named) - modules)} (no such module) "
        f"and leaves out {sorted(modules - set(named))}: give each module its layer"
    )


def test_the_package_docstring_names_every_module_lowest_layer_first():
    layer_of = {name: index for index, layer in enumerate(layers()) for name in layer}
    named = re.findall(r":mod:`hfai_runtime\.(\w+)`", hfai_runtime.__doc__)
    assert set(named) == set(layer_of), (
        f"hfai_runtime/__init__.py's docstring names {sorted(set(named))}; the layers are {sorted(layer_of)}"
    )
    order = [layer_of[name] for name in named]
    assert order == sorted(order), (
        f"hfai_runtime/__init__.py's docstring lists {named}, not lowest layer first as {CONFIG.name}"
    )


def test_torch_stays_in_the_distributed_and_detectron2_layers():
    sources = {m.removeprefix("hfai_runtime.") for m in listed(contract("no-torch"), "source_modules")}
    assert sources == top_level_modules() - {"distributed", "detectron2"}
