"""The training job passes what the cluster would check at admission (``hfai-runtime check``):
the CRD's schema and CEL rules, the operator's webhook rules and the kubelet's rules that stop
pods. (The eval and pack Jobs are plain batch/v1 Jobs: ``kubectl apply --dry-run=server``.)"""

import pytest

from conftest import PROJECT


def test_job_passes_admission():
    check = pytest.importorskip("hfai_runtime.check")
    if not hasattr(check, "check_file"):
        pytest.skip("this hfai-runtime has no check_file (hfai-runtime check)")
    problems = check.check_file(PROJECT / "k8s" / "job.yaml")
    assert not problems, "\n".join(str(problem) for problem in problems)
