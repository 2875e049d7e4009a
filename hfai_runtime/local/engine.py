"""Run a job's pods as containers of its image (``run-local --engine podman|docker``).

The local runner decides *when* a replica starts and stops (the operator's rules); this module
decides *how*, when the replica is a container rather than a local process:

* **one container per pod**, named and with the hostname of the pod on the cluster
  (``<job>-master-0``, ``<job>-worker-N``; a TrainJob's ``<job>-node-0-N``, also reachable as
  ``<job>-node-0-N.<job>``, its headless service's name), running the manifest's image (or
  ``--image``) with the container's command and args as written (``$(VAR)`` expanded by the
  kubelet's rules), so ``tini`` is PID 1 and the image's user runs training;
* **a network per job** on which every pod name resolves: each container gets a fixed address
  on the job's subnet and every pod's name in its ``/etc/hosts``, which needs no DNS plugin in
  the engine and works the same in podman and docker;
* **the environment the operator injects** (:mod:`hfai_runtime.local.operator_env`), unchanged:
  ``MASTER_ADDR`` stays the master pod's name;
* **volumes**: each ``volumeMount`` is bound to ``--mount PATH=DIR``'s folder, else to
  ``--data-dir`` joined with the mount's ``subPath``; ``/dev/shm`` is the container's own. The
  pods' ``securityContext.fsGroup: 1000`` is applied as the kubelet applies it to a volume (group
  1000, group-writable, setgid directories) when the engine runs as root; a rootless podman maps
  the caller to uid 1000 instead (``--userns=keep-id``);
* **stopping**: ``<engine> stop -t terminationGracePeriodSeconds`` (SIGTERM to PID 1, SIGKILL
  at the grace period), as the kubelet does; the runner's SIGKILL is ``<engine> kill``.

:class:`ContainerEngine` is a context manager: on exit every container and the network it made
are removed, whatever happened.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hfai_runtime.local.container import ProcessEngine, expand_refs
from hfai_runtime.local.manifest import LocalJob, Replica
from hfai_runtime.local.sandbox import (
    UNMAPPED_MOUNTS,
    grant_fs_group,
    make_folders,
    volume_folder,
    volume_root,
)

ENGINES = ("podman", "docker")
FS_GROUP = 1000  # the template's pods' securityContext.fsGroup and the images' user
LABEL = "io.hfai-runtime.run-local"  # every container and network this module makes carries it
SHM_SIZE = "1g"  # the pods' /dev/shm (an emptyDir of medium Memory)
NETWORK_TRIES = 5
FIRST_HOST = 10  # pods get addresses .10, .11, ... on the job's subnet


class EngineError(RuntimeError):
    """The container engine is missing or refused a command; the message says which."""


class ContainerProcess(subprocess.Popen):
    """A pod's container, seen through the attached ``<engine> run`` client: its stdout is the
    container's log, its exit code the container's. Signals go to the container, not to the
    client (``signal_pod``)."""

    engine: ContainerEngine
    container: str
    grace_seconds: float
    shown: list[str]  # what it runs, for the timeline: <engine> run <image> <command...>

    def signal_pod(self, sig: int) -> None:
        """SIGTERM: ``stop -t <grace>`` (returns at once; the engine kills at the grace period).
        SIGKILL: ``kill``. A container that is already gone is fine."""
        if self.poll() is not None:
            return  # exited, and removed (--rm)
        if sig == signal.SIGTERM:
            self.engine.stop(self.container, self.grace_seconds)
        else:
            self.engine.kill(self.container)


@dataclass
class ContainerEngine(ProcessEngine):
    """The containers of one run of ``job``: see the module docstring. ``args`` replaces the
    containers' args (``run-local --args``)."""

    job: LocalJob
    image: str
    data_dir: Path
    mounts: Mapping[str, Path] = field(default_factory=dict)  # container path -> local folder
    program: str = "podman"
    args: Sequence[str] | None = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    network: str = ""
    hosts: dict[str, str] = field(default_factory=dict)  # pod name (and aliases) -> address
    addresses: dict[str, str] = field(default_factory=dict)  # replica name -> address

    def __post_init__(self) -> None:
        if self.program not in ENGINES:
            raise EngineError(f"--engine: expected one of {', '.join(ENGINES)}, got {self.program!r}")
        if shutil.which(self.program) is None:
            raise EngineError(f"--engine {self.program}: {self.program} is not installed (not on PATH)")
        self.network = self.network or f"hfai-{self.job.name}-{self.run_id}"

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> ContainerEngine:
        subnet = self._create_network()
        for i, replica in enumerate(self.job.replicas):
            address = str(subnet.network_address + FIRST_HOST + i)
            self.addresses[replica.name] = address
            for name in pod_names(self.job, replica):
                self.hosts[name] = address
        for folder in self._volume_folders():
            self._grant_fs_group(folder)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Remove every container of this run and its network (idempotent)."""
        listed = self._run("ps", "--all", "--quiet", "--filter", f"label={LABEL}={self.run_id}", check=False)
        ids = listed.split()
        if ids:
            self._run("rm", "--force", *ids, check=False)
        self._run("network", "rm", self.network, check=False)

    # -- pods -------------------------------------------------------------------------------

    def start(
        self, replica: Replica, argv: Sequence[str], env: Mapping[str, str], cwd: Path, marker: str
    ) -> ContainerProcess:
        """Start ``replica``'s container (attached: the returned process streams its log). It
        runs the manifest's command in the image, with the operator's environment as the
        cluster sets it; of the local process (``argv``, ``env``) only the thread count is
        kept."""
        name = pod_names(self.job, replica)[0]
        self._run("rm", "--force", name, check=False)  # a previous attempt's, if still there
        env = {"OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"), **replica.env}
        words = [*replica.command, *(replica.args if self.args is None else self.args)]
        argv = [expand_refs(word, env) for word in words]
        words_shown = list(argv)
        options = [
            "run",
            "--rm",
            "--name",
            name,
            "--hostname",
            name,
            "--label",
            f"{LABEL}={self.run_id}",
            "--network",
            self.network,
            "--ip",
            self.addresses[replica.name],
            "--shm-size",
            SHM_SIZE,
            "--stop-timeout",
            f"{max(1, round(replica.grace_seconds))}",
        ]
        for host, address in self.hosts.items():
            options += ["--add-host", f"{host}:{address}"]
        for key, value in env.items():
            options += ["--env", f"{key}={value}"]
        for path, folder in self._replica_volumes(replica):
            options += ["--volume", f"{folder}:{path}"]
        if replica.working_dir:
            options += ["--workdir", replica.working_dir]
        if replica.command:  # a pod's command replaces the image's entrypoint
            options += ["--entrypoint", argv[0]]
            argv = argv[1:]
        options += self._user_options()
        proc = ContainerProcess(
            [self.program, *options, self.image, *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        proc.engine, proc.container, proc.grace_seconds = self, name, replica.grace_seconds
        proc.shown = [self.program, "run", self.image, *words_shown]
        return proc

    def terminate(self, proc: ContainerProcess) -> None:
        proc.signal_pod(signal.SIGTERM)

    def kill_all(self, proc: ContainerProcess, marker: str) -> None:
        proc.signal_pod(signal.SIGKILL)  # every process of the container dies with it

    def describe(self, proc: ContainerProcess, argv: Sequence[str]) -> str:
        return " ".join(proc.shown)

    def stop(self, container: str, grace_seconds: float) -> None:
        """``<engine> stop -t GRACE`` in the background (the runner's loop must not block)."""
        subprocess.Popen(
            [self.program, "stop", "--time", f"{max(0, round(grace_seconds))}", container],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def kill(self, container: str) -> None:
        self._run("kill", container, check=False)

    # -- helpers ----------------------------------------------------------------------------

    def _run(self, *args: str, check: bool = True) -> str:
        done = subprocess.run([self.program, *args], capture_output=True, text=True)
        if check and done.returncode != 0:
            raise EngineError(
                f"{self.program} {' '.join(args)}: exit {done.returncode}: {done.stderr.strip()}"
            )
        return done.stdout

    def _create_network(self) -> ipaddress.IPv4Network:
        """The job's network, on a subnet of its own (fixed addresses need one given, in docker):
        a random /24 of 10.250.0.0/16, another one if the engine says it is taken."""
        error = ""
        for _ in range(NETWORK_TRIES):
            subnet = ipaddress.ip_network(f"10.250.{secrets.randbelow(256)}.0/24")
            done = subprocess.run(
                [
                    self.program,
                    "network",
                    "create",
                    "--label",
                    f"{LABEL}={self.run_id}",
                    "--subnet",
                    str(subnet),
                    self.network,
                ],
                capture_output=True,
                text=True,
            )
            if done.returncode == 0:
                return subnet
            error = done.stderr.strip()
        raise EngineError(f"{self.program} network create {self.network}: {error}")

    def _replica_volumes(self, replica: Replica) -> list[tuple[str, Path]]:
        volumes = []
        for mount in replica.mounts:
            if mount.path in UNMAPPED_MOUNTS:
                continue
            folder = volume_folder(mount, self.data_dir, self.mounts)
            root = volume_root(mount, self.data_dir, self.mounts)
            volumes.append((mount.path, make_folders(root, folder)))
        return volumes

    def _volume_folders(self) -> set[Path]:
        return {folder for r in self.job.replicas for _, folder in self._replica_volumes(r)}

    def _rootless(self) -> bool:
        return os.geteuid() != 0

    def _user_options(self) -> list[str]:
        if self._rootless() and self.program == "podman":
            return [f"--userns=keep-id:uid={FS_GROUP},gid={FS_GROUP}"]
        return []

    def _grant_fs_group(self, folder: Path) -> None:
        """As the kubelet applies ``fsGroup`` to a volume, so the image's user can write
        checkpoints; only a root engine needs it, and only under ``--data-dir``
        (:func:`~hfai_runtime.local.sandbox.grant_fs_group` says what it leaves alone)."""
        if not self._rootless():
            grant_fs_group(self.data_dir, folder, FS_GROUP)


def pod_names(job: LocalJob, replica: Replica) -> list[str]:
    """The pod's name on the cluster, then any other name it resolves as there."""
    if job.kind == "TrainJob":  # JobSet: <job>-<replicatedJob>-<jobIndex>-<podIndex>.<subdomain>
        name = f"{job.name}-node-0-{replica.index}"
        return [name, f"{name}.{job.name}"]
    return [f"{job.name}-{replica.name}"]


def job_image(job_doc: Mapping, override: str | None) -> str:
    """``--image``, else the one image every container of the manifest names."""
    if override:
        return override
    images = sorted(set(_images(job_doc)))
    if len(images) != 1:
        raise EngineError(
            f"the manifest's containers name {len(images)} images ({', '.join(images)}); pass --image"
        )
    return images[0]


def _images(node) -> list[str]:
    if isinstance(node, Mapping):
        found = [node["image"]] if isinstance(node.get("image"), str) else []
        return found + [i for value in node.values() for i in _images(value)]
    if isinstance(node, list):
        return [i for value in node for i in _images(value)]
    return []


@contextlib.contextmanager
def engine_for(
    program: str,
    job: LocalJob,
    document: Mapping[str, Any],
    image: str | None,
    data_dir: Path,
    mounts: Mapping[str, Path],
    args: Sequence[str] | None = None,
) -> Iterator[ContainerEngine | None]:
    """``run-local --engine``'s engine, made ready and cleaned up; ``None`` for ``process``.
    ``document`` is the job's manifest document, as read once by the caller."""
    if program == "process":
        yield None
        return
    with ContainerEngine(
        job, job_image(document, image), data_dir, mounts, program=program, args=args
    ) as engine:
        yield engine
