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
* **processes** -- :class:`LocalEngine` starts the command as a process in its own session and
  stops it the way the kubelet stops a container: SIGTERM to the main process (PID 1 in the
  container), and when the container ends, SIGKILL to everything it started -- its process
  group, and any process that left the group (``setsid``), found by a marker variable in its
  environment. :func:`subreaper` makes such orphans children of run-local, not of init.
  A container engine (podman, docker) would implement the same :class:`ProcessEngine`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from hfai_runtime.local.manifest import Replica
from hfai_runtime.local.sandbox import UNMAPPED_MOUNTS, volume_folder

POD_MARKER = "HFAI_RUN_LOCAL_POD"  # in every pod's env: finds the processes it started
MASTER_ADDR_VARS = ("MASTER_ADDR", "PET_MASTER_ADDR")
MASTER_PORT_VARS = ("MASTER_PORT", "PET_MASTER_PORT")
_PYTHON = re.compile(r"python(3(\.\d+)?)?")
_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def local_command(command: Sequence[str], python: str) -> list[str]:
    """The container's command + args as a local argv (tini dropped, interpreters mapped)."""
    argv = list(command)
    if argv and os.path.basename(argv[0]) == "tini":
        argv = argv[argv.index("--") + 1 :] if "--" in argv else argv[1:]
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
        self.mapping = dict(
            sorted(
                ((p.rstrip("/") or "/", Path(d)) for p, d in mapping.items()), key=lambda item: -len(item[0])
            )
        )
        alternatives = "|".join(re.escape(p) for p in self.mapping)
        self._pattern = re.compile(rf"(^|[=:,])({alternatives})(?=/|$|[:,])") if self.mapping else None

    def rewrite(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(lambda m: m.group(1) + str(self.mapping[m.group(2)]), text)

    @classmethod
    def for_replica(
        cls, replica: Replica, project_dir: Path, data_dir: Path, overrides: Mapping[str, Path]
    ) -> PathMap:
        mapping: dict[str, Path] = {}
        if replica.working_dir:
            mapping[replica.working_dir] = project_dir
        for mount in replica.mounts:
            if mount.path not in UNMAPPED_MOUNTS:
                mapping[mount.path] = volume_folder(mount, data_dir, overrides)
        return cls(mapping)


#: Where a process sits in a job: a pod gets these from the operator only, never from the
#: machine that submitted it (a torchrun or test environment around run-local must not leak in).
JOB_PLACEMENT_VARS = frozenset(
    {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT"}
)
JOB_PLACEMENT_PREFIXES = ("PET_", "TORCHELASTIC_")


def process_env(
    replica: Replica, base: Mapping[str, str], master_port: int, paths: PathMap, threads: int
) -> dict[str, str]:
    """The local process's environment (see the module docstring for the order and mapping);
    ``threads`` is the replica's share of the CPUs, the default ``OMP_NUM_THREADS``. ``base``'s
    job-placement variables (:data:`JOB_PLACEMENT_VARS`, ``PET_*``, ``TORCHELASTIC_*``) are left
    out: only the operator's reach the pod."""
    base = {
        name: value
        for name, value in base.items()
        if name not in JOB_PLACEMENT_VARS and not name.startswith(JOB_PLACEMENT_PREFIXES)
    }
    own = {name: paths.rewrite(value) for name, value in replica.env.items()}
    for name in MASTER_ADDR_VARS:
        if name in own:
            own[name] = "127.0.0.1"
    for name in MASTER_PORT_VARS:
        if name in own:
            own[name] = str(master_port)
    return {"OMP_NUM_THREADS": str(threads), **base, **own, "CUDA_VISIBLE_DEVICES": ""}


def process_argv(
    replica: Replica, env: Mapping[str, str], paths: PathMap, python: str, args: Sequence[str] | None = None
) -> list[str]:
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


def command_problem(argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> str | None:
    """Why ``argv`` cannot start here (a missing or non-executable program, a missing script),
    or ``None``. Checked before any pod starts, so a typo does not fail the job half-way."""
    program = argv[0]
    if os.sep in program:
        path = cwd / program
        if not path.is_file():
            return f"{program!r} does not exist (relative paths start in {cwd})"
        if not os.access(path, os.X_OK):
            return f"{program!r} is not executable"
    elif shutil.which(program, path=env.get("PATH", os.defpath)) is None:
        return f"{program!r} is not found on PATH"
    if (
        len(argv) > 1
        and _PYTHON.fullmatch(os.path.basename(program).split("-")[0])
        and argv[1].endswith(".py")
        and not (cwd / argv[1]).is_file()
    ):
        return f"the script {argv[1]!r} does not exist in {cwd}"
    return None


@contextlib.contextmanager
def subreaper() -> Iterator[bool]:
    """While inside, this process adopts its orphaned descendants (Linux
    ``PR_SET_CHILD_SUBREAPER``), so a process that detached from its pod (``setsid``, a double
    fork) stays findable and is reaped here; the previous setting is restored on the way out.
    Yields whether it took effect (not on other systems)."""
    libc = ctypes.CDLL(None, use_errno=True)
    previous = ctypes.c_int(0)
    try:
        enabled = (
            libc.prctl(37, ctypes.byref(previous), 0, 0, 0) == 0  # PR_GET_CHILD_SUBREAPER
            and libc.prctl(36, 1, 0, 0, 0) == 0
        )  # PR_SET_CHILD_SUBREAPER
    except AttributeError:
        enabled = False
    try:
        yield enabled
    finally:
        if enabled:
            libc.prctl(36, previous.value, 0, 0, 0)


class ProcessEngine:
    """Starts a pod's container and stops it; the runner's only way to touch processes."""

    def start(
        self, replica: Replica, argv: Sequence[str], env: Mapping[str, str], cwd: Path, marker: str
    ) -> subprocess.Popen:
        """Start ``replica``'s container, whose command as a local process is ``argv`` in ``cwd``
        with ``env``; its output (stdout and stderr) is ``proc.stdout``."""
        raise NotImplementedError

    def describe(self, proc: subprocess.Popen, argv: Sequence[str]) -> str:
        """What a started container runs, for the timeline."""
        return " ".join([os.path.basename(argv[0]), *argv[1:]])

    def terminate(self, proc: subprocess.Popen) -> None:
        """SIGTERM to the container's main process, as the kubelet sends to PID 1."""
        raise NotImplementedError

    def kill_all(self, proc: subprocess.Popen, marker: str) -> None:
        """SIGKILL every process the container started (a container dies with its PID 1)."""
        raise NotImplementedError


class LocalEngine(ProcessEngine):
    """The container's command as a local process, in its own session (see the module doc)."""

    def start(
        self, replica: Replica, argv: Sequence[str], env: Mapping[str, str], cwd: Path, marker: str
    ) -> subprocess.Popen:
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            env={**env, POD_MARKER: marker},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def terminate(self, proc: subprocess.Popen) -> None:
        _send(os.kill, proc.pid, signal.SIGTERM)

    def kill_all(self, proc: subprocess.Popen, marker: str) -> None:
        _send(os.killpg, proc.pid, signal.SIGKILL)  # the pod leads its own group
        for pid in marked_processes(marker):
            _send(os.kill, pid, signal.SIGKILL)
            if pid != proc.pid:  # the main process is the Popen's to reap
                _reap_if_child(pid)


def marked_processes(marker: str) -> list[int]:
    """The processes (of this user) whose environment holds ``POD_MARKER=marker``."""
    entry = f"{POD_MARKER}={marker}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if entry in f.read().split(b"\0"):
                    found.append(int(name))
        except OSError:  # gone, or another user's
            continue
    return found


def _reap_if_child(pid: int) -> None:
    """Collect a killed orphan that was re-parented to us (a subreaper), so no zombie stays."""
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _send(kill: Callable[[int, int], None], pid: int, sig: int) -> None:
    try:
        kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # gone already
