"""Detectron2 glue (layer 4): the public API that a generated project's train_net.py uses.

* :func:`register_ffrecord_handler` -- read datasets from FFRecord packs via ``ffrecord://``.
* :class:`SuspendCheckpointer` -- the hook that turns SIGTERM into checkpoint + exit 143.
* :class:`AtomicCheckpointer` -- ``DetectionCheckpointer`` with atomic saves and a resume that
  survives a damaged ``OUTPUT_DIR`` (``SuspendCheckpointer`` gives a trainer's own these too).
* :func:`launch_from_env` -- run ``main`` once per rank of the job the environment describes.
* :func:`plain_text_logs` -- no ANSI colour codes in detectron2's log files.

Names are resolved lazily, so importing this package does not import detectron2: HFAI's
recipe calls ``register_ffrecord_handler`` before ``import detectron2``.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "register_ffrecord_handler": "datasets",
    "SuspendCheckpointer": "checkpoint",
    "AtomicCheckpointer": "atomic_checkpointer",
    "launch_from_env": "launch",
    "plain_text_logs": "logs",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
