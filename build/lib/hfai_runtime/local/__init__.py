"""Run a rendered PyTorchJob or TrainJob on this machine, with the operator's semantics.

:mod:`.operator_env` is the environment the Kubeflow operators inject into each replica;
:mod:`.runner` starts the replicas as local processes and applies restart policies, backoff
limits, suspension and preemption, recording a timeline of events.
"""
