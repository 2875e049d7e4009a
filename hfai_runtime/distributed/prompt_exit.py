"""Exit a suspended process promptly: its ``atexit`` handlers run, Python's finalization does not.

Why: once the suspend checkpoint is written, every second before the pod is gone is a second
the node is held and the job is not running elsewhere. Measured (bench/preemption.py), a rank of
a detectron2 job spends seconds *after* its ``atexit`` handlers -- tearing down every module and
object of torch and detectron2 -- and its launcher more: 8-20 s under load. Nothing a user
registered runs there; the interpreter frees memory the kernel is about to take back anyway.

:func:`exit_after_atexit` does what Python's own exit does first -- join non-daemon threads,
run the ``atexit`` handlers (users' ones, logging's flush, multiprocessing's, which stops
daemonic children such as DataLoader workers) -- then flushes stdio and ends the process with
``os._exit``. What is skipped: finalization (objects' ``__del__`` at interpreter teardown, which
Python does not promise to run anyway) and ``finally`` blocks in frames above the caller.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
from typing import NoReturn


def exit_after_atexit(code: int) -> NoReturn:
    """End this process with ``code`` as soon as its non-daemon threads and ``atexit`` handlers
    are done (see the module docstring for what is skipped)."""
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    # CPython runs the handlers with _run_exitfuncs at exit; it is the one way to run them
    # early (exceptions in a handler are printed, and the next handlers still run).
    atexit._run_exitfuncs()
    logging.shutdown()  # idempotent; registered with atexit only once logging was imported
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or a broken pipe: nothing left to save
            pass
    os._exit(code)
