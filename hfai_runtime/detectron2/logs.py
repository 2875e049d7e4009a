"""The runtime's own logger: what each pod's log says about suspends and resumes."""

from __future__ import annotations

import logging
import sys

#: The logger this package's messages go through; see :func:`log_to_stdout`.
RUNTIME_LOGGER = "hfai_runtime"


def log_to_stdout(rank: int) -> None:
    """Print the runtime's INFO messages on this rank's stdout, unless its logger has handlers.

    Each pod's log must say why the pod exited ("Suspending at iteration N ..."; the local
    runner and people read it there), on every rank: detectron2's ``default_setup`` sets up
    only its own loggers, and on rank 0 only. So ``hfai_runtime`` gets a logger of its own, as
    ``detectron2`` has: detectron2's format plus the rank, not propagated (printed once).
    """
    runtime = logging.getLogger(RUNTIME_LOGGER)
    if runtime.handlers:
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        logging.Formatter(
            f"[%(asctime)s] [rank{rank}] %(name)s %(levelname)s: %(message)s", datefmt="%m/%d %H:%M:%S"
        )
    )
    runtime.addHandler(handler)
    runtime.setLevel(logging.INFO)
    runtime.propagate = False
