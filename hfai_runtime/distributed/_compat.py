"""Every use of a private torch name by the distributed layer, in one place.

``tests/test_compat.py`` exercises each on the real torch, so an upgrade that renames or changes
one fails there, by name, rather than as DataLoader workers dying of a job's SIGTERM.
"""

from __future__ import annotations

import os

#: The torch release these accesses were checked against.
CHECKED_AGAINST = {"torch": ("2.14.1",)}


# --- torch.utils.data._utils.signal_handling (signal_handling.py@v2.14.1) ----------------------


def dataloader_workers_leave_process_group() -> None:
    """Make DataLoader workers forked from now on start in a process group of their own.

    torch's workers install a C handler that reports SIGTERM and re-raises it, so a SIGTERM sent
    to the whole process group (``kill -- -PGID``, ``tini -g``, a terminal) would crash an
    evaluation or the training loader. In their own group only their parent signals them -- and
    it still stops them with SIGTERM when it exits (ignoring SIGTERM instead would hang that
    exit). torch has no public hook that runs in a worker before its signal handlers: the private
    ``_set_worker_signal_handlers``, which ``_worker_loop`` calls first, is wrapped. Idempotent.
    """
    from torch.utils.data._utils import signal_handling

    original = signal_handling._set_worker_signal_handlers
    if getattr(original, "leaves_process_group", False):
        return

    def set_worker_signal_handlers(*args):
        os.setpgid(0, 0)
        original(*args)

    set_worker_signal_handlers.leaves_process_group = True
    signal_handling._set_worker_signal_handlers = set_worker_signal_handlers
