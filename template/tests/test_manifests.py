"""Every manifest passes what the cluster would check at admission (``hfai-runtime check``): the
CRD's schema and CEL rules, the operator's webhook rules and the kubelet's rules that stop pods
(for the eval and pack Jobs, the Pod rules)."""

import pytest

from conftest import PROJECT


def test_manifests_pass_admission():
    # The check needs hfai-runtime's [local] extra (PyYAML, jsonschema, cel-python), which the
    # base image leaves out: skipped there, with the reason.
    check = pytest.importorskip("hfai_runtime.check", reason="needs hfai-runtime[local]")
    manifests = sorted((PROJECT / "k8s").glob("*.yaml"))
    assert manifests
    problems = [problem for manifest in manifests for problem in check.check_file(manifest)]
    assert not problems, "\n".join(str(problem) for problem in problems)
