"""The cluster side of ``hfai-runtime job``: the job on a real Kubernetes API server.

Built on the official ``kubernetes`` client (kubeconfig or in-cluster config). One module per
concern: :mod:`.api` (connecting, one-line errors), :mod:`.kinds` (PyTorchJob v1 and TrainJob
v2: where their pods, containers and ``suspend`` live), :mod:`.jobs` (find, apply, suspend),
:mod:`.kueue` (the job's Workload), :mod:`.pods` (pods, exit codes, logs), :mod:`.records`
(the runtime's structured records in pod logs) and :mod:`.timeline` (the run-local timeline,
rebuilt from what the API server keeps).

Layer: cli/local (5). Imports ``kubernetes`` lazily in :mod:`.api` only, so ``hfai-runtime``
without the ``cluster`` extra still starts.
"""
