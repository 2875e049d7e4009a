"""Distributed plumbing (layer 3): no detectron2 here.

* :mod:`.env` -- :class:`~.env.DistEnv`, the job's shape parsed from the cluster's environment.
* :mod:`.spawn` -- start one worker per local rank, relay SIGTERM to them, report exit codes.
* :mod:`.suspend` -- the SIGTERM flag, the per-step agreement between ranks, the exit code.
"""
