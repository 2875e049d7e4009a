"""The cluster side of ``hfai-runtime job``: the job on a real Kubernetes API server.

Built on the official ``kubernetes`` client (kubeconfig or in-cluster config). One module per
concern: :mod:`.api` (connecting, one-line errors), :mod:`.kinds` (PyTorchJob v1 and TrainJob
v2: where their pods, containers and ``suspend`` live), :mod:`.jobs` (find, apply, suspend),
:mod:`.kueue` (the job's Workload), :mod:`.pods` (pods and exit codes), :mod:`.logs` (pod
logs and the runtime's structured records in them) and :mod:`.timeline` (the run-local
timeline, rebuilt from what the API server keeps).

Layer: cli/local (5); no torch. ``kubernetes`` is imported only inside functions, so
``hfai-runtime`` without the ``cluster`` extra still starts.
"""
