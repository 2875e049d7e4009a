"""tools/gpu_check.py's parts that need no GPU: its arguments, its comparisons, its records,
that it skips cleanly on a machine without one (this one: no GPU can be had here), and its
preempt/resume comparison run for real on the CPU (``--device cpu``) on a rendered project.

The GPU checks themselves (CUDA ops against the CPU, preempt/resume on CUDA) run only where a GPU
is (docs/cuda-image.md).
"""

from __future__ import annotations

import math

import pytest
import torch
from _template_render import render, template_repo

from hfai_runtime.records import RecordKind, format_record
from tools import gpu_check


@pytest.fixture
def project(tmp_path):
    (tmp_path / "train_net.py").write_text("")
    return tmp_path


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        ([], "--project: required unless --ops-only"),
        (["--project", "nowhere"], "--project nowhere: no train_net.py there"),
        (["--ops-only", "--max-iter", "1"], "--max-iter 1: expected at least 2"),
        (["--ops-only", "--preempt-after", "12"], "--preempt-after 12: expected 1 to --max-iter - 1 (11)"),
        (["--ops-only", "--preempt-after", "0"], "--preempt-after 0"),
        (["--ops-only", "--tolerance", "nan"], "--tolerance nan: expected a finite number >= 0"),
        (["--ops-only", "--tolerance", "-1"], "--tolerance -1.0"),
        (["--ops-only", "--device", "cpu"], "--ops-only compares CUDA ops with the CPU"),
    ],
)
def test_bad_arguments_exit_2_naming_the_option(argv, says, capsys):
    with pytest.raises(SystemExit) as exited:
        gpu_check.parse_args(argv)
    assert exited.value.code == 2
    assert says in capsys.readouterr().err


def test_good_arguments(project):
    args = gpu_check.parse_args(["--project", str(project), "--max-iter", "8", "--preempt-after", "3"])
    assert (args.project, args.max_iter, args.preempt_after, args.ops_only) == (project, 8, 3, False)
    assert gpu_check.parse_args(["--ops-only"]).tolerance == 1e-3


def test_identical_weights_are_bit_identical():
    a = {"w": torch.arange(6.0).reshape(2, 3), "n": torch.tensor(3)}
    result = gpu_check.compare_state_dicts(a, {k: v.clone() for k, v in a.items()})
    assert result.identical and result.max_abs_diff == 0 and result.within(0.0)
    assert result.describe() == "bit-identical"


def test_differing_weights_report_the_largest_difference_and_where():
    a = {"x": torch.zeros(4), "y": torch.zeros(3)}
    b = {"x": torch.tensor([0.0, 1e-6, 0.0, 0.0]), "y": torch.tensor([0.0, -2e-3, 0.0])}
    result = gpu_check.compare_state_dicts(a, b)
    assert not result.identical and result.worst == "y"
    assert result.max_abs_diff == pytest.approx(2e-3)
    assert result.within(3e-3) and not result.within(1e-3)
    assert result.describe() == "max abs diff 0.002 (in y)"


@pytest.mark.parametrize(
    "b",
    [
        {"x": torch.zeros(4), "extra": torch.zeros(1)},  # a key only one side has
        {"x": torch.zeros(5)},  # another shape
        {"x": torch.zeros(4, dtype=torch.float64)},  # another dtype
    ],
)
def test_mismatched_tensors_never_pass(b):
    result = gpu_check.compare_state_dicts({"x": torch.zeros(4)}, b)
    assert result.mismatched and not result.identical
    assert not result.within(math.inf)
    assert result.describe().startswith("different tensors: ")


def test_integer_tensors_that_differ_count_as_infinitely_far():
    result = gpu_check.compare_state_dicts({"n": torch.tensor(3)}, {"n": torch.tensor(4)})
    assert result.max_abs_diff == math.inf and not result.within(1e9)


def test_max_abs_diff_of_shapes_that_differ_is_inf():
    assert gpu_check.max_abs_diff(torch.zeros(2), torch.zeros(3)) == math.inf
    assert gpu_check.max_abs_diff(torch.zeros(0), torch.zeros(0)) == 0.0


def test_records_are_read_from_the_console_log():
    log = "\n".join(
        [
            "[12/07 04:00:00 d2]: " + format_record(RecordKind.TRAINING_STARTED, iteration=0),
            "noise hfai-record {not json",
            format_record(RecordKind.PROGRESS, iteration=4, max_iter=12),
            format_record(RecordKind.SUSPENDED, iteration=5, exit_code=143),
        ]
    )
    assert [r["iteration"] for r in gpu_check.records(log, "progress")] == [4]
    assert gpu_check.records(log, "suspended") == [{"iteration": 5, "exit_code": 143}]


def test_training_runs_the_smoke_config_on_cuda(tmp_path):
    command = gpu_check.train_command(tmp_path / "out", 12)
    assert command[1] == "train_net.py"
    joined = " ".join(command)
    assert "--config-file configs/smoke_cpu.yaml" in joined and "MODEL.DEVICE cuda" in joined
    assert f"OUTPUT_DIR {tmp_path / 'out'} SOLVER.MAX_ITER 12" in joined
    assert gpu_check.train_env(tmp_path)["DETECTRON2_DATASETS"] == str(tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the checks would run")
def test_without_a_gpu_it_skips_and_exits_0(project, capsys):
    assert gpu_check.main(["--project", str(project)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("gpu_check: skipped: ") and "torch.cuda.is_available() is False" in out


@pytest.mark.slow
@pytest.mark.detectron2
def test_cpu_rehearsal_preempts_resumes_and_finds_the_weights_identical(tmp_path, capsys):
    """The training half of the check, on CPU: a straight run, a run preempted after iteration 3
    (143) and resumed, their final weights compared (bit-identical on the CPU)."""
    project = render(template_repo(tmp_path / "template"), tmp_path / "project", {})
    argv = ["--project", str(project), "--device", "cpu", "--max-iter", "6", "--preempt-after", "3"]
    code = gpu_check.main([*argv, "--work-dir", str(tmp_path / "work")])
    out = capsys.readouterr().out
    assert code == 0, out + (tmp_path / "work" / "resumed.log").read_text()[-3000:]
    assert "resumed vs straight final weights: bit-identical" in out, out
    stopped = gpu_check.records((tmp_path / "work" / "resumed.log").read_text(), "suspended")
    assert len(stopped) == 1 and 2 <= stopped[0]["iteration"] < 5, stopped


def test_op_differences_are_relative_to_the_reference_scale():
    reference = torch.tensor([100.0, -200.0])
    assert gpu_check.relative_diff(reference + 0.02, reference) == pytest.approx(1e-4, rel=1e-3)  # float32
    small = torch.tensor([0.5, 0.25])
    assert gpu_check.relative_diff(small + 1e-3, small) == pytest.approx(1e-3, rel=1e-3)  # scale >= 1
