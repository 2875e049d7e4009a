"""hfai_runtime: preemption-safe, multi-node Detectron2 training on Kubernetes.

Layers (each imports only those above it in this list):

0. :mod:`hfai_runtime.kube` -- manifests read as the API server reads them, quantities, the
   job-kind table (no cluster, no torch).
1. :mod:`hfai_runtime.ffrecord` -- the FFRecord format and packed folders (no torch).
2. :mod:`hfai_runtime.io` -- an iopath ``PathHandler`` for ``ffrecord://`` paths.
3. :mod:`hfai_runtime.distributed` -- environment parsing, spawning, signal relay, suspend.
4. :mod:`hfai_runtime.detectron2` -- detectron2 glue, launch_from_env included
   (:mod:`hfai_runtime.launch` re-exports it).
5. :mod:`hfai_runtime.cli` and :mod:`hfai_runtime.local` -- user-facing commands.

Importing this package needs neither torch nor detectron2.
"""

__version__ = "0.1.0"
