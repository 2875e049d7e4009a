"""How a replica's container becomes a local process: command, environment, paths.

There is no image here, so:

* **command** -- a leading ``tini --`` (or ``/usr/bin/tini --``, with any tini flags) is dropped,
  since the runner itself plays PID 1; ``python``/``python3``/``pythonX.Y`` (bare or with a
  path) become this interpreter, ``torchrun`` becomes ``<python> -m torch.distributed.run``.
  Kubernetes' ``$(VAR)`` references in command and args are expanded from the container's
  environment (``$$`` escapes, unknown names stay as written), as the kubelet does.
* **environment** -- this process's environment, then the container's ``env``, then what the
  operator injects; the master's address becomes ``127.0.0.1`` and its port a free local port;
  ``CUDA_VISIBLE_DEVICES`` is emptied (the local run is CPU and gloo). The replicas share this
  machine's CPUs, which on a cluster each pod has to itself, so unless ``OMP_NUM_THREADS`` is set
  they get an equal share each (as torchrun does for the processes of one node).
* **paths** -- each ``volumeMount`` path maps to a local folder: the one given with
  ``--mount PATH=DIR``, otherwise the data folder (``--data-dir``, default: the project), joined
  with the mount's ``subPath``. ``/dev/shm`` is left alone. The container's ``workingDir`` maps to
  the project folder. Every env value and argument that *is* a mapped path, starts with one
  followed by ``/``, or has one right after ``=``, ``:`` or ``,`` (``--out=/data/x``,
  ``PATH``-style lists) is rewritten; paths elsewhere inside a string are not.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Mapping, Sequence

from hfai_runtime.local.manifest import Replica

MASTER_ADDR_VARS = ("MASTER_ADDR", "PET_MASTER_ADDR")
MASTER_PORT_VARS = ("MASTER_PORT", "PET_MASTER_PORT")
UNMAPPED_MOUNTS = ("/dev/shm",)
_PYTHON = re.compile(r"python(3(\.\d+)?)?")
_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def local_command(command: Sequence[str], python: str) -> list[str]:
    """The container's command + args as a local argv (tini dropped, interpreters mapped)."""
    argv = list(command)
    if argv and os.path.basename(argv[0]) == "tini":
        argv = argv[argv.index("--") + 1:] if "--" in argv else argv[1:]
    if not argv:
        raise ValueError("the container's command is only 'tini --': nothing to run")
    program = os.path.basename(argv[0])
    if _PYTHON.fullmatch(program):
        return [python, *argv[1:]]
    if program == "torchrun":
        return [python, "-m", "torch.distributed.run", *argv[1:]]
    return argv


def expand_refs(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: known names replaced, ``$$`` -> ``$``, others kept."""
    def sub(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))
    return _VAR_REF.sub(sub, text)


class PathMap:
    """Container paths -> local folders, applied to env values and arguments."""

    def __init__(self, mapping: Mapping[str, Path]):
        # Longest first, so /data/out wins over /data.
        self.mapping = dict(sorted(((p.rstrip("/") or "/", Path(d)) for p, d in mapping.items()),
                                   key=lambda item: -len(item[0])))
        alternatives = "|".join(re.escape(p) for p in self.mapping)
        self._pattern = (re.compile(rf"(^|[=:,])({alternatives})(?=/|$|[:,])")
                         if self.mapping else None)

    def rewrite(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(lambda m: m.group(1) + str(self.mapping[m.group(2)]), text)

    @classmethod
    def for_replica(cls, replica: Replica, project_dir: Path, data_dir: Path,
                    overrides: Mapping[str, Path]) -> "PathMap":
        mapping: dict[str, Path] = {}
        if replica.working_dir:
            mapping[replica.working_dir] = project_dir
        for mount in replica.mounts:
            if mount.path in UNMAPPED_MOUNTS:
                continue
            base = overrides.get(mount.path.rstrip("/"), data_dir)
            mapping[mount.path] = base / mount.sub_path if mount.sub_path else base
        return cls(mapping)


def process_env(replica: Replica, base: Mapping[str, str], master_port: int, paths: PathMap,
                threads: int) -> dict[str, str]:
    """The local process's environment (see the module docstring for the order and mapping);
    ``threads`` is the replica's share of the CPUs, the default ``OMP_NUM_THREADS``."""
    own = {name: paths.rewrite(value) for name, value in replica.env.items()}
    for name in MASTER_ADDR_VARS:
        if name in own:
            own[name] = "127.0.0.1"
    for name in MASTER_PORT_VARS:
        if name in own:
            own[name] = str(master_port)
    return {"OMP_NUM_THREADS": str(threads), **base, **own, "CUDA_VISIBLE_DEVICES": ""}


def process_argv(replica: Replica, env: Mapping[str, str], paths: PathMap, python: str,
                 args: Sequence[str] | None = None) -> list[str]:
    """The local argv: command + args (``args`` replaces the container's, as a pod spec's args
    replace an image's CMD), paths mapped, then ``$(VAR)`` expanded with ``env`` (whose values
    are already mapped: mapping after expanding could map a local path twice), then tini/python."""
    words = [*replica.command, *(replica.args if args is None else args)]
    argv = [expand_refs(paths.rewrite(word), env) for word in words]
    return local_command(argv, python)


def free_port() -> int:
    """A TCP port free on loopback right now (the master binds it moments later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
