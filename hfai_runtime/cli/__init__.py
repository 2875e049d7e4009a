"""The ``hfai-runtime`` command: one subcommand module per concern.

Each module in :data:`SUBCOMMANDS` exposes ``add_parser(subparsers)``, which adds its parser and
sets ``func`` (called with the parsed namespace, returning the exit code). Modules are imported
only when the command runs, so ``hfai-runtime ffr ...`` never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

SUBCOMMANDS = ("synth_coco", "ffr", "run_local")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hfai-runtime",
        description="Preemption-safe Detectron2 training on Kubernetes: data packing, local runs.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
