"""``hfai-runtime check MANIFEST...``: what a cluster would refuse, before ``kubectl apply``.

::

    hfai-runtime check k8s/job.yaml
    k8s/job.yaml: spec.runtimePatches[0].manager: Invalid value: 'd2': must be a domain-prefixed ...

Exit status: 0 when the cluster accepts every manifest; 1 with one line per problem on stdout
(the file, the field path, what is wrong); 2 when a file cannot be read or is not YAML (one line
on stderr). This project's own advice (``qos/*``: state requests and limits, keep /dev/shm below
the memory limit), which a cluster admits, is printed as ``warning: ...`` and leaves the status
0, unless ``--strict``. Every rule and its upstream source: docs/check.md.
"""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "check",
        help="check Kubernetes manifests against the CRDs, webhooks and kubelet rules",
        description="What a cluster would refuse in PyTorchJob/TrainJob manifests: the CRD "
        "schema and CEL rules, the operator's webhook, the Pod and kubelet rules. "
        "Exit 0 when clean; 1 with one line per problem (file: field: message); "
        "2 when a file cannot be read or is not YAML. The project's advice (QoS, /dev/shm) is a "
        "warning unless --strict.",
    )
    parser.add_argument("manifests", nargs="+", metavar="MANIFEST", help="YAML file(s)")
    parser.add_argument(
        "--strict", action="store_true", help="treat the project's advice (warnings) as errors: exit 1"
    )
    parser.set_defaults(func=_run)


#: What ``check`` judges a document of each kind by, said on success (docs/check.md has each
#: rule and its upstream source).
CHECKED_BY = {
    "PyTorchJob": "its CRD's schema and CEL rules, the training operator's webhook, the Pod and kubelet rules",
    "TrainJob": "its CRD's schema and CEL rules, the Trainer webhook, its runtime's Pod and kubelet rules",
    "TrainingRuntime": "its CRD's schema and CEL rules, the Trainer webhook, the Pod and kubelet rules",
    "ClusterTrainingRuntime": "its CRD's schema and CEL rules, the Trainer webhook, the Pod and kubelet rules",
    "Job": "the API server's Job and Pod validation, the kubelet's rules",
}


def _run(args: argparse.Namespace) -> int:
    from hfai_runtime.check import ManifestError, check_manifest
    from hfai_runtime.kube.reader import read_manifest

    status = 0
    manifests = []
    for path in args.manifests:
        try:
            manifests.append((path, read_manifest(path)))
        except ManifestError as error:
            print(f"hfai-runtime check: {error}", file=sys.stderr)
            status = 2
    for path, manifest in manifests:
        # The other files' documents are context: a TrainJob is judged with its runtime.
        context = [doc for _, m in manifests if m is not manifest for doc in m.documents]
        problems = check_manifest(manifest, context)
        for problem in problems:
            print(problem if problem.cluster_refuses else f"warning: {problem}")
        if any(p.cluster_refuses or args.strict for p in problems):
            status = max(status, 1)
        elif not any(p.cluster_refuses for p in problems):
            print("\n".join(_accepted(path, manifest.documents)))
    return status


def _accepted(path: str, documents) -> list[str]:
    """One line per document a cluster accepts: ``FILE[#N]: ok: KIND NAME (what was checked)``,
    numbered as the problems are when a file holds several."""
    lines = []
    for i, doc in enumerate(documents):
        kind = doc.get("kind") if isinstance(doc, dict) else None
        name = (doc.get("metadata") or {}).get("name", "") if isinstance(doc, dict) else ""
        checked = CHECKED_BY.get(str(kind), "not checked: a core v1 object that travels with the job")
        where = f"{path}#{i + 1}" if len(documents) > 1 else path
        lines.append(f"{where}: ok: {kind} {name} ({checked})")
    return lines
