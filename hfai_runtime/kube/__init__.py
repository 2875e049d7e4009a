"""Kubernetes knowledge that needs no cluster: manifests read as the API server reads them
(:mod:`.reader`), resource quantities (:mod:`.quantity`) and the job kinds (:mod:`.kinds`).

The lowest layer beside :mod:`hfai_runtime.ffrecord`: it imports nothing else of
``hfai_runtime``, so ``check``, ``local`` and ``cluster`` all build on the same reading of a file.
"""
