"""The runtime's own logger: what each pod's log says about suspends and resumes."""

from __future__ import annotations

import logging
import re
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


#: ANSI escape sequences (CSI: colours, cursor moves) as terminals read them.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
#: The logger whose records carry colour: detectron2's ``default_setup`` logs the config file and
#: the full config through it, highlighted with pygments when pygments is installed (rich, in
#: ``hfai-runtime[local]``, installs it).
DETECTRON2_LOGGER = "detectron2"


class PlainText(logging.Filter):
    """Strips ANSI escape sequences from a record's message and string arguments, so that log
    files (``log.txt``, a pod's log) hold text a user can read and grep."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = _ANSI.sub("", record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_ANSI.sub("", a) if isinstance(a, str) else a for a in record.args)
        return True


def plain_text_logs() -> None:
    """Keep ANSI colour codes out of detectron2's logs: call it before ``default_setup``.

    A filter on the ``detectron2`` logger itself, where ``default_setup`` logs the highlighted
    config (a logger's filters see the records logged on it, before any handler). Idempotent.
    """
    logger = logging.getLogger(DETECTRON2_LOGGER)
    if not any(isinstance(f, PlainText) for f in logger.filters):
        logger.addFilter(PlainText())
