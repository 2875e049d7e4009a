"""The checks of the CUDA image that need a GPU: run them on a machine that has one.

    python tools/gpu_check.py --project myproj [--max-iter 12] [--preempt-after 5]

inside the CUDA image (``docker run --gpus all -v $PWD:/w -w /w d2-hfai-base:... python
tools/gpu_check.py --project /w/myproj``) or in any environment with torch's CUDA build and
detectron2 compiled with its CUDA ops. ``--project`` is a project rendered from this template
with the COCO dataset (the default answers). Two checks, each printing one line per result:

1. **CUDA ops against their CPU results**: rotated NMS (same boxes kept), ROIAlignRotated
   (forward and input gradient), deformable convolution (zero offsets against ``conv2d``; random
   offsets, with and without a modulation mask, against torchvision's CPU ``deform_conv2d``).
2. **Preempt and resume on CUDA**: the project's smoke config trains on a synthetic packed COCO
   with ``MODEL.DEVICE cuda``, one process per GPU (NCCL; on a single GPU one process, since
   NCCL refuses two ranks on one device and the launcher allows one process per GPU). One run
   goes straight through; another gets SIGTERM after ``--preempt-after`` iterations, must exit
   143 and resume to the end. Their final weights are compared: bit-identical, or the largest
   absolute difference (CUDA's atomics, e.g. in ROIAlign's backward, are not deterministic), which
   fails the check above ``--tolerance``.

Without a GPU it prints why it skipped and exits 0. Exit 1: a check failed; 2: bad arguments.
``--device cpu`` rehearses the second check on the CPU (tests/test_gpu_check.py runs it so).
Not part of ``make test`` (docs/cuda-image.md).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

SUSPEND_EXIT_CODE = 143
#: Largest difference between a CUDA op and its CPU reference that still counts as the same
#: result (float32 arithmetic in another order), relative to the reference's largest magnitude
#: (at least 1): a 3x3 convolution of 8 channels sums 72 products, ~1e-5 apart in another order.
OPS_TOLERANCE = 1e-4
RUN_TIMEOUT_S = 1800


@dataclass(frozen=True)
class Comparison:
    """Two sets of weights compared: bit-identical, or how far apart."""

    identical: bool
    max_abs_diff: float
    worst: str | None
    #: Keys in one state dict but not the other, or of another shape/dtype.
    mismatched: tuple[str, ...] = ()

    def within(self, tolerance: float) -> bool:
        return not self.mismatched and self.max_abs_diff <= tolerance

    def describe(self) -> str:
        if self.mismatched:
            return f"different tensors: {', '.join(self.mismatched[:5])}"
        if self.identical:
            return "bit-identical"
        return f"max abs diff {self.max_abs_diff:.3g} (in {self.worst})"


@dataclass(frozen=True)
class OpResult:
    name: str
    max_abs_diff: float
    ok: bool

    def describe(self) -> str:
        verdict = "ok" if self.ok else "FAILED"
        return f"{verdict:6} {self.name}: max diff vs CPU {self.max_abs_diff:.3g} (relative)"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gpu_check.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, help="a project rendered from the template (COCO dataset)")
    parser.add_argument("--work-dir", type=Path, help="where the runs write (default: a temporary folder)")
    parser.add_argument("--max-iter", type=int, default=12, help="iterations of each run (default 12)")
    parser.add_argument(
        "--preempt-after", type=int, default=5, help="SIGTERM after this many iterations (default 5)"
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1e-3,
        help="largest abs difference of the resumed run's weights from the straight run's (default 1e-3)",
    )
    parser.add_argument("--ops-only", action="store_true", help="only compare the CUDA ops with the CPU")
    parser.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        default="cuda",
        help="cpu: rehearse the preempt/resume comparison without a GPU (no ops check; for testing this script)",
    )
    args = parser.parse_args(argv)
    if args.ops_only and args.device == "cpu":
        parser.error("--ops-only compares CUDA ops with the CPU: not with --device cpu")
    if not args.ops_only and args.project is None:
        parser.error("--project: required unless --ops-only (a project rendered from the template)")
    if args.project is not None and not (args.project / "train_net.py").is_file():
        parser.error(f"--project {args.project}: no train_net.py there (render the template first)")
    if args.max_iter < 2:
        parser.error(f"--max-iter {args.max_iter}: expected at least 2")
    if not 1 <= args.preempt_after < args.max_iter:
        parser.error(
            f"--preempt-after {args.preempt_after}: expected 1 to --max-iter - 1 ({args.max_iter - 1})"
        )
    if not (math.isfinite(args.tolerance) and args.tolerance >= 0):
        parser.error(f"--tolerance {args.tolerance}: expected a finite number >= 0")
    return args


def gpu_unavailable() -> str | None:
    """Why the checks cannot run here (None: a CUDA device is visible)."""
    import torch

    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU build"
    if not torch.cuda.is_available():
        return "no CUDA device visible (torch.cuda.is_available() is False)"
    return None


# ------------------------------------------------------------------------------------------------
# Comparisons (pure: the unit tests run them on CPU tensors)
# ------------------------------------------------------------------------------------------------


def max_abs_diff(a, b) -> float:
    """Largest |a - b| of two tensors (moved to the CPU, in float64); inf when shapes differ."""
    if a.shape != b.shape:
        return math.inf
    if a.numel() == 0:
        return 0.0
    return float((a.detach().cpu().double() - b.detach().cpu().double()).abs().max())


def relative_diff(got, reference) -> float:
    """:func:`max_abs_diff` scaled by the reference's largest magnitude when that exceeds 1."""
    scale = float(reference.detach().abs().max()) if reference.numel() else 0.0
    return max_abs_diff(got, reference) / max(1.0, scale)


def compare_state_dicts(a: Mapping, b: Mapping) -> Comparison:
    """Compare two state dicts tensor by tensor (non-tensor entries must be equal)."""
    import torch

    mismatched = sorted(set(a) ^ set(b))
    identical, worst, largest = not mismatched, None, 0.0
    for key in sorted(set(a) & set(b)):
        x, y = a[key], b[key]
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            if x != y:
                mismatched.append(key)
            continue
        if x.shape != y.shape or x.dtype != y.dtype:
            mismatched.append(key)
            continue
        if torch.equal(x.cpu(), y.cpu()):
            continue
        identical = False
        diff = max_abs_diff(x, y) if x.is_floating_point() else math.inf
        if diff >= largest:
            largest, worst = diff, key
    return Comparison(identical and not mismatched, largest, worst, tuple(mismatched))


# ------------------------------------------------------------------------------------------------
# CUDA ops against CPU
# ------------------------------------------------------------------------------------------------


def check_ops(device: str = "cuda") -> list[OpResult]:
    """detectron2's compiled CUDA ops against the CPU implementations on random inputs."""
    import torch

    torch.manual_seed(0)
    checks: list[tuple[str, Callable[[str], float]]] = [
        ("nms_rotated (kept boxes)", _nms_rotated_diff),
        ("ROIAlignRotated forward", lambda d: _roi_align_rotated_diff(d)[0]),
        ("ROIAlignRotated backward (input grad)", lambda d: _roi_align_rotated_diff(d)[1]),
        ("deform conv, zero offsets vs conv2d", _deform_conv_zero_offset_diff),
        ("deform conv vs torchvision (CPU)", lambda d: _deform_conv_torchvision_diff(d, modulated=False)),
        (
            "modulated deform conv vs torchvision (CPU)",
            lambda d: _deform_conv_torchvision_diff(d, modulated=True),
        ),
    ]
    results = []
    for name, diff in checks:
        value = diff(device)
        results.append(OpResult(name, value, value <= OPS_TOLERANCE))
    return results


def _random_rotated_boxes(n: int, size: float = 100.0):
    import torch

    centers = torch.rand(n, 2) * size
    sides = torch.rand(n, 2) * size / 4 + 2
    angles = torch.rand(n, 1) * 180 - 90
    return torch.cat([centers, sides, angles], dim=1)


def _nms_rotated_diff(device: str) -> float:
    """0 when CUDA keeps exactly the boxes the CPU keeps, else inf."""
    import torch
    from detectron2.layers import nms_rotated

    boxes, scores = _random_rotated_boxes(500), torch.rand(500)
    on_cpu = nms_rotated(boxes, scores, 0.5)
    on_gpu = nms_rotated(boxes.to(device), scores.to(device), 0.5).cpu()
    return 0.0 if torch.equal(on_cpu.sort().values, on_gpu.sort().values) else math.inf


def _roi_align_rotated_diff(device: str) -> tuple[float, float]:
    """(forward, input-gradient) differences of ROIAlignRotated, CUDA vs CPU."""
    import torch
    from detectron2.layers import ROIAlignRotated

    op = ROIAlignRotated((7, 7), spatial_scale=0.25, sampling_ratio=2)
    features = torch.rand(2, 8, 32, 32)
    rois = torch.cat([torch.randint(0, 2, (40, 1)).float(), _random_rotated_boxes(40, size=120.0)], dim=1)
    outputs, grads = [], []
    for dev in ("cpu", device):
        x = features.to(dev).requires_grad_()
        y = op(x, rois.to(dev))
        y.sum().backward()
        outputs.append(y)
        grads.append(x.grad)
    return relative_diff(outputs[1], outputs[0]), relative_diff(grads[1], grads[0])


def _deform_conv_zero_offset_diff(device: str) -> float:
    """Deformable convolution with zero offsets is a plain convolution (conv2d on the CPU)."""
    import torch
    import torch.nn.functional as F
    from detectron2.layers import DeformConv

    conv = DeformConv(8, 16, kernel_size=3, padding=1, bias=False)
    x = torch.rand(2, 8, 20, 20)
    offset = torch.zeros(2, 18, 20, 20)
    reference = F.conv2d(x, conv.weight, padding=1)
    return relative_diff(conv.to(device)(x.to(device), offset.to(device)), reference)


def _deform_conv_torchvision_diff(device: str, modulated: bool) -> float:
    """detectron2's CUDA deformable convolution against torchvision's CPU one (same offset layout,
    both from the original DCN code), on random offsets (and mask)."""
    import torch
    from detectron2.layers import DeformConv, ModulatedDeformConv
    from torchvision.ops import deform_conv2d

    x = torch.rand(2, 8, 20, 20)
    offset = torch.randn(2, 18, 20, 20) * 2
    mask = torch.rand(2, 9, 20, 20) if modulated else None
    if modulated:
        conv = ModulatedDeformConv(8, 16, kernel_size=3, padding=1, bias=True)
        got = conv.to(device)(x.to(device), offset.to(device), mask.to(device))
    else:
        conv = DeformConv(8, 16, kernel_size=3, padding=1, bias=False)
        got = conv.to(device)(x.to(device), offset.to(device))
    bias = conv.bias.detach().cpu() if modulated else None
    reference = deform_conv2d(x, offset, conv.weight.detach().cpu(), bias, padding=(1, 1), mask=mask)
    return relative_diff(got, reference)


# ------------------------------------------------------------------------------------------------
# Training: straight vs preempted and resumed
# ------------------------------------------------------------------------------------------------


def train_command(output: Path, max_iter: int, device: str = "cuda") -> list[str]:
    """The project's smoke training on ``device`` (fixed seed, one loader worker)."""
    return [
        sys.executable,
        "train_net.py",
        *("--config-file", "configs/smoke_cpu.yaml", "MODEL.DEVICE", device, "SEED", "1234"),
        *("OUTPUT_DIR", str(output), "SOLVER.MAX_ITER", str(max_iter), "DATALOADER.NUM_WORKERS", "1"),
    ]


def train_env(datasets: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DETECTRON2_DATASETS": str(datasets),
        "HFAI_PROGRESS_EVERY": "1",
        "HFAI_SUSPEND_EXIT_CODE": str(SUSPEND_EXIT_CODE),
        # cuBLAS picks deterministic reductions only with a fixed workspace.
        "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
    }


def records(log: str, kind: str) -> list[dict]:
    """The hfai-record lines of ``kind`` in a console log."""
    from hfai_runtime.records import parse_record

    found = [parse_record(line) for line in log.splitlines()]
    return [r.fields for r in found if r is not None and r.kind.value == kind]


def run(
    project: Path, command: list[str], env: dict[str, str], log: Path, preempt_after: int | None = None
) -> int:
    """Run ``command`` in ``project`` (console to ``log``); with ``preempt_after``, SIGTERM once
    rank 0 reports that iteration. Returns the exit code."""
    with log.open("a") as out:
        proc = subprocess.Popen(command, cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while preempt_after is not None and proc.poll() is None and time.monotonic() < deadline:
            done = [r.get("iteration", -1) for r in records(log.read_text(), "progress")]
            if done and max(done) + 1 >= preempt_after:
                proc.send_signal(signal.SIGTERM)  # what the kubelet sends on preemption
                break
            time.sleep(0.2)
        try:
            return proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()


def final_weights(output: Path) -> dict:
    import torch

    return torch.load(output / "model_final.pth", map_location="cpu", weights_only=True)["model"]


def check_training(args: argparse.Namespace, work: Path) -> list[str]:
    """Straight run vs preempted + resumed run; returns the failures (empty: passed)."""
    import torch

    from hfai_runtime.synthetic import packed_coco_pvc

    pvc = packed_coco_pvc(work / "pvc", work / "source")
    env = train_env(pvc / "datasets")
    if args.device == "cuda":
        print(f"gpu_check: training on {torch.cuda.device_count()} GPU(s), {torch.cuda.get_device_name(0)}")
    failures = []
    straight, resumed = work / "straight", work / "resumed"
    code = run(args.project, train_command(straight, args.max_iter, args.device), env, work / "straight.log")
    if code != 0:
        return [f"the straight run exited {code} (log: {work / 'straight.log'})"]
    log = work / "resumed.log"
    command = train_command(resumed, args.max_iter, args.device)
    code = run(args.project, command, env, log, preempt_after=args.preempt_after)
    if code != SUSPEND_EXIT_CODE:
        failures.append(f"the preempted run exited {code}, expected {SUSPEND_EXIT_CODE} (log: {log})")
    code = run(args.project, command, env, log)
    if code != 0:
        return [*failures, f"the resumed run exited {code} (log: {log})"]
    stopped = [r.get("iteration") for r in records(log.read_text(), "suspended")]
    starts = [r.get("iteration") for r in records(log.read_text(), "training_started")]
    print(f"gpu_check: preempted after iteration {stopped}, attempts started at {starts}")
    if len(starts) != 2 or not stopped or starts[1] != stopped[0] + 1:
        failures.append(
            f"the resumed run did not continue after the suspended iteration: {starts}, {stopped}"
        )
    comparison = compare_state_dicts(final_weights(straight), final_weights(resumed))
    print(f"gpu_check: resumed vs straight final weights: {comparison.describe()}")
    if not comparison.within(args.tolerance):
        failures.append(
            f"resumed weights differ from the straight run's beyond {args.tolerance}: {comparison.describe()}"
        )
    return failures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    reason = gpu_unavailable() if args.device == "cuda" else None
    if reason is not None:
        print(f"gpu_check: skipped: {reason}")
        return 0
    failures = []
    for result in check_ops() if args.device == "cuda" else []:
        print(f"gpu_check: {result.describe()}")
        if not result.ok:
            failures.append(result.name)
    if not args.ops_only:
        with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
            work = (args.work_dir or Path(tmp)).resolve()
            work.mkdir(parents=True, exist_ok=True)
            failures += check_training(args, work)
    print(json.dumps({"gpu_check": "failed" if failures else "passed", "failures": failures}))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
