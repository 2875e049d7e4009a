"""Stand-in for detectron2's compiled extension in the pure-Python CPU build.

This wheel is built from the PyPI sdist ``pb1-detectron2==0.6``, which ships no C++ sources, or
from a main checkout whose C++ sources were dropped (hfai_runtime/devenv/detectron2_wheel/build.py).
Everything that detection training needs is pure PyTorch; only the ops below are compiled.
Using one raises :class:`CompiledOpUnavailable` with the reason, instead of an obscure
``AttributeError`` or a silently wrong result. The CUDA image builds real detectron2 from
source, where this module does not exist.
"""

import torch

_WHY = (
    "detectron2.{op} is a compiled C++/CUDA op, and this detectron2 is the pure-Python CPU "
    "build made by d2-hfai-template's hfai_runtime/devenv/detectron2_wheel (without the C++ sources). "
    "Use the project's CUDA image (which builds detectron2 from source) for rotated boxes, "
    "rotated ROIAlign, deformable convolution on GPU and the fast COCO evaluator; on CPU pass "
    "COCOEvaluator(..., use_fast_impl=False)."
)


class CompiledOpUnavailable(RuntimeError):
    """Raised when code calls a detectron2 op that only exists in the compiled extension."""


def _unavailable(op: str):
    def op_stub(*args, **kwargs):
        raise CompiledOpUnavailable(_WHY.format(op=op))

    op_stub.__name__ = op
    return op_stub


_OPS = (
    "box_iou_rotated",
    "roi_align_rotated_forward",
    "roi_align_rotated_backward",
    "deform_conv_forward",
    "deform_conv_backward_input",
    "deform_conv_backward_filter",
    "modulated_deform_conv_forward",
    "modulated_deform_conv_backward",
    "InstanceAnnotation",
    "COCOevalEvaluateImages",
    "COCOevalAccumulate",
)
globals().update({op: _unavailable(op) for op in _OPS})


# What detectron2.utils.collect_env (called by default_setup) reports about the build.
def get_compiler_version() -> str:
    return "none (pure-Python CPU build, compiled ops unavailable)"


def get_cuda_version() -> str:
    return "none"


def has_cuda() -> bool:
    return False


def __getattr__(name: str):
    """Any other compiled symbol fails the same clear way."""
    if name.startswith("__"):
        raise AttributeError(name)
    return _unavailable(name)


# Rotated ops are called through the dispatcher, where the real extension registers them
# (layers/csrc/vision.cpp): nms_rotated in 0.6 and after, box_iou_rotated and roi_align_rotated_*
# after 0.6 (0.6 calls those through this module). Register schema-compatible ops that raise the
# same error.
_SCHEMAS = (
    "nms_rotated(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor",
    "box_iou_rotated(Tensor boxes1, Tensor boxes2) -> Tensor",
    "roi_align_rotated_forward(Tensor input, Tensor rois, float spatial_scale, int pooled_height, "
    "int pooled_width, int sampling_ratio) -> Tensor",
    "roi_align_rotated_backward(Tensor grad, Tensor rois, float spatial_scale, int pooled_height, "
    "int pooled_width, int batch_size, int channels, int height, int width, int sampling_ratio) -> Tensor",
)
_LIB = torch.library.Library("detectron2", "DEF")
for _schema in _SCHEMAS:
    _name = _schema.split("(", 1)[0]
    _LIB.define(_schema)
    _LIB.impl(_name, _unavailable(_name), "CompositeExplicitAutograd")
