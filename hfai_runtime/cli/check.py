"""``hfai-runtime check MANIFEST...``: what a cluster would refuse, before ``kubectl apply``.

::

    hfai-runtime check k8s/job.yaml
    k8s/job.yaml: spec.runtimePatches[0].manager: Invalid value: 'd2': must be a domain-prefixed ...

Exit status: 0 when every manifest is clean; 1 with one line per problem on stdout (the file, the
field path, what is wrong); 2 when a file cannot be read or is not YAML (one line on stderr).
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
        "2 when a file cannot be read or is not YAML.",
    )
    parser.add_argument("manifests", nargs="+", metavar="MANIFEST", help="YAML file(s)")
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
            print(problem)
        if problems and status == 0:
            status = 1
    return status
