"""Run a rendered PyTorchJob or TrainJob on this machine, with the operator's semantics.

:mod:`.manifest` reads and admits the job (the webhooks' rules); :mod:`.operator_env` is the
environment the Kubeflow operators inject into each replica; :mod:`.container` turns a container
into a local process and stops everything it started; :mod:`.runner` applies restart policies,
backoff limits, deadlines, suspension and preemption, recording a :mod:`.timeline` of events;
:mod:`.display` shows the pods' live status.
"""
