"""The ``hfai-runtime`` command: one subcommand module per concern.

Each module in :data:`SUBCOMMANDS` exposes ``add_parser(subparsers)``, which adds its parser and
sets ``func`` (called with the parsed namespace, returning the exit code). Every module is
imported to build the parser, so each keeps its heavy imports (torch, detectron2) inside the
functions that need them: ``hfai-runtime ffr ...`` never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys
from collections.abc import Sequence

SUBCOMMANDS = ("env", "synth_coco", "ffr", "run_local", "check", "job")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hfai-runtime",
        description="Preemption-safe Detectron2 training on Kubernetes: data packing, local runs.",
    )
    parser.add_argument(
        "--version", action="version", version=f"hfai-runtime {importlib.metadata.version('hfai-runtime')}"
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
