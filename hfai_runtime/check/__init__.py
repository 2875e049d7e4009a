"""``hfai-runtime check``: what a cluster would refuse in a manifest, found before applying it.

A schema check alone passes manifests that a cluster refuses later: the operators' admission
webhooks refuse more than their CRDs, and pods that the operator creates can be refused by the
API server's Pod validation or by the kubelet. Each document is checked, in the order a cluster
applies the rules:

1. the CRD's structural schema, unknown fields refused, and ObjectMeta (:mod:`.schema`; rules
   ``schema/<keyword>``, ``schema/unknown-field``, ``schema/duplicate``, ``apiserver/label``);
   a wrong type, missing field or bad enum value stops here, as it stops the API server;
2. the CRD's ``x-kubernetes-validations`` CEL rules (:mod:`.cel`;
   ``crd/x-kubernetes-validations``);
3. the operator's validating webhook (:mod:`.webhooks`; ``pytorchjob-webhook/*``,
   ``trainjob-webhook/*``);
4. the Pod rules for the pods the operator will create, with the containers it adds
   (:mod:`.kubelet`; ``apiserver/*`` for Pod validation, ``kubelet/run-as-non-root``), and this
   project's policy that they are not BestEffort (``qos/*``).

A rule the check cannot decide from the manifest alone is left to the cluster: the image's
user (``runAsNonRoot`` with no ``runAsUser`` on your own containers), a runtime that is not in
the input and not the stock ``torch-distributed``, quotas and admission policies of the cluster.

Kinds: PyTorchJob (``kubeflow.org/v1``, training-operator v1.9.4), TrainJob,
TrainingRuntime and ClusterTrainingRuntime (``trainer.kubeflow.org/v1alpha1``, Trainer v2.3.0)
are checked; a ``batch/v1`` Job against the batch JobSpec schema (:func:`.schema.batch_job_schema`)
and the Job and Pod rules; every kind gets the API server's Job and Pod validation for the
Jobs and pods it makes (:mod:`.apivalidation`; ``apiserver/*``); core kinds that a job may come with (:data:`UNCHECKED_KINDS`: ConfigMap, Secret,
Service, PersistentVolumeClaim, ServiceAccount) pass unchecked; any other kind is reported, since
nothing here can say whether the cluster accepts it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from hfai_runtime.check.apivalidation import check_api_validation
from hfai_runtime.check.cel import check_rules
from hfai_runtime.check.kubelet import check_pods
from hfai_runtime.check.problem import Problem
from hfai_runtime.check.schema import blocks_rules, check_schema, schema_for
from hfai_runtime.check.trainingruntime_webhook import check_trainingruntime
from hfai_runtime.check.webhooks import check_pytorchjob, check_trainjob
from hfai_runtime.kube.reader import Manifest, ManifestError, read_manifest

__all__ = ["ManifestError", "Problem", "check_documents", "check_file", "check_manifest"]

#: Core ``v1`` kinds that may travel with a job and that this check does not validate.
UNCHECKED_KINDS = frozenset({"ConfigMap", "Secret", "Service", "PersistentVolumeClaim", "ServiceAccount"})


def check_file(path: str | os.PathLike) -> list[Problem]:
    """The problems of every document in the YAML file ``path``; ``[]`` when a cluster accepts it.

    Raises :class:`ManifestError` (one line naming the file) when it cannot be read or parsed
    (:func:`hfai_runtime.kube.reader.read_manifest` says what it refuses).
    """
    return check_manifest(read_manifest(path))


def check_manifest(manifest: Manifest, context: Sequence[dict] = ()) -> list[Problem]:
    """The problems of a manifest already read: what ``run-local`` and ``job submit`` judge
    before they run or send the very same documents. ``context``: documents of other manifests
    given with it (a TrainJob's TrainingRuntime in k8s/runtime.yaml), not checked here."""
    return check_documents(list(manifest.documents), source=manifest.source, context=context)


def check_documents(
    docs: list[dict], source: str = "<manifest>", context: Sequence[dict] = ()
) -> list[Problem]:
    """The problems of parsed manifest documents (``source`` names them in each problem).

    Documents are checked together, and with ``context``, because a TrainJob may reference a
    runtime defined beside it.
    """
    known = [*docs, *context]
    problems = []
    for i, doc in enumerate(docs):
        where = f"{source}#{i + 1}" if len(docs) > 1 else source
        problems += [dataclasses.replace(p, source=where) for p in _check(doc, known)]
    return problems


def _check(doc: dict, docs: list[dict]) -> list[Problem]:
    if not isinstance(doc, dict):
        return [Problem("", f"a {type(doc).__name__}, not a Kubernetes object", "kind/unknown")]
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if api_version == "v1" and isinstance(kind, str) and kind in UNCHECKED_KINDS:
        return []
    schema = schema_for(str(api_version), str(kind))
    if schema is None:
        return [
            Problem(
                "kind",
                f"{kind!r} (apiVersion {api_version!r}) is not a kind hfai-runtime "
                "check knows: PyTorchJob kubeflow.org/v1, TrainJob, TrainingRuntime, "
                "ClusterTrainingRuntime trainer.kubeflow.org/v1alpha1, batch/v1 Job, or "
                "core v1 "
                f"{', '.join(sorted(UNCHECKED_KINDS))}",
                "kind/unknown",
            )
        ]
    problems = check_schema(doc, schema)
    if blocks_rules(problems):
        # The API server stops here; what follows would only echo these (a missing or mistyped
        # field seen again by the webhook and the Pod rules).
        return problems
    problems += check_rules(doc, schema)
    if kind == "PyTorchJob":
        problems += check_pytorchjob(doc)
    elif kind == "TrainJob":
        problems += check_trainjob(doc, docs)
    elif kind in ("TrainingRuntime", "ClusterTrainingRuntime"):
        problems += check_trainingruntime(doc)
    return problems + check_api_validation(doc, docs) + check_pods(doc, docs)
