"""hfai_runtime: preemption-safe, multi-node Detectron2 training on Kubernetes.

Layers (each imports only those above it in this list; ``make lint`` checks it with the
import contracts in .importlinter, and docs/design.md says what each holds):

0. :mod:`hfai_runtime.atomic`, :mod:`hfai_runtime.records`, :mod:`hfai_runtime.startup` --
   atomic file writes, the structured log records, when a process reached each step of its
   start (standard library only). :mod:`hfai_runtime.kube` -- manifests read as the API server
   reads them, quantities, the job-kind table (no cluster, no torch). Then, on atomic writes,
   :mod:`hfai_runtime.checksum` (CRC-32 sidecars) and :mod:`hfai_runtime.timeline` (a job's
   timeline of events).
1. :mod:`hfai_runtime.ffrecord` -- the FFRecord format and packed folders (no torch).
2. :mod:`hfai_runtime.io` -- an iopath ``PathHandler`` for ``ffrecord://`` paths.
3. :mod:`hfai_runtime.distributed` -- environment parsing, spawning, signal relay, suspend.
4. :mod:`hfai_runtime.detectron2` -- the detectron2 glue a project's ``train_net.py`` imports:
   ``register_ffrecord_handler``, ``SuspendCheckpointer``, ``launch_from_env``.
5. :mod:`hfai_runtime.check` and :mod:`hfai_runtime.synthetic`; then :mod:`hfai_runtime.cluster`
   and :mod:`hfai_runtime.local`; then :mod:`hfai_runtime.devenv` (``hfai-runtime env``);
   then :mod:`hfai_runtime.cli` -- the developer's side (``hfai-runtime``), which imports no
   torch.

Importing this package needs neither torch nor detectron2.
"""

__version__ = "0.1.0"
