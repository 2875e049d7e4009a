"""Distributed plumbing (layer 3): torch only, no detectron2.

* :mod:`.env` -- :class:`~.env.DistEnv`, the job's shape parsed from the cluster's environment.
* :mod:`.rendezvous` -- join the process group, failing in bounded time without a master.
* :mod:`.spawn` -- start one worker per local rank, relay SIGTERM to them, report exit codes.
* :mod:`.suspend` -- the SIGTERM flag, the per-step agreement between ranks, the exit code.
"""
