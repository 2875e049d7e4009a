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


def _run(args: argparse.Namespace) -> int:
    from hfai_runtime.check import ManifestError, check_file

    status = 0
    for path in args.manifests:
        try:
            problems = check_file(path)
        except ManifestError as error:
            print(f"hfai-runtime check: {error}", file=sys.stderr)
            status = 2
            continue
        for problem in problems:
            print(problem if problem.cluster_refuses else f"warning: {problem}")
        if status == 0 and any(p.cluster_refuses or args.strict for p in problems):
            status = 1
    return status
