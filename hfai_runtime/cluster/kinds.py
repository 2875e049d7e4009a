"""The job kinds as ``hfai-runtime job`` drives them: the table is :mod:`hfai_runtime.kube.kinds`,
shared with ``check`` and ``run-local``; this module names it for the cluster commands."""

from hfai_runtime.kube.kinds import KINDS, PYTORCHJOB, TRAINJOB, JobKind, kind_named, kind_of

__all__ = ["KINDS", "PYTORCHJOB", "TRAINJOB", "JobKind", "kind_named", "kind_of"]
