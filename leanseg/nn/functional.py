"""The lean convolution as a function (its backend chosen by ``leanseg.nn.backend``), plus the shape rules and
reference it builds on.

The operator, its shape rules (``check_args``, ``out_size``, ``STRIDES``) and its plain-PyTorch reference
(``lean_conv_reference``, ``dense_weight``) live in ``kernels3d.reference``, a leaf that imports only torch, so
the Triton kernels can share them without importing leanseg; they are re-exported here.
"""

from __future__ import annotations

import torch

from kernels3d.reference import (
    STRIDES,
    check_args,
    dense_weight,
    lean_conv_reference,
    lean_conv_reference_unchecked,
    out_size,
    shifted,
    stencil_channels_last,
)
from leanseg.nn import backend

__all__ = [
    "STRIDES",
    "check_args",
    "dense_weight",
    "lean_conv",
    "lean_conv_reference",
    "out_size",
    "shifted",
    "stencil_channels_last",
]


def lean_conv(
    x: torch.Tensor, weight: torch.Tensor, stencil: torch.Tensor, bias: torch.Tensor | None = None, stride: int = 1
) -> torch.Tensor:
    """Lean convolution on the backend ``leanseg.nn.backend`` picks for x; the one place its arguments are checked.

    CUDA tensors go to the fused Triton kernels of ``kernels3d`` when Triton is installed; CPU tensors
    (float32/float64/bfloat16) to the compiled channels-last path; everything else to the reference.
    Set LEANSEG_BACKEND=reference to force the reference (for debugging).
    """
    check_args(x, weight, stencil, bias, stride)
    where = backend.lean_conv_backend(x)
    launch = backend.triton_launch() if where == "triton" else None
    if launch is not None:
        return launch(x, weight, stencil, bias, stride)
    if where == "cpu":
        from leanseg.nn import ops  # the C kernel as a custom op while torch.compile/torch.export trace
        from leanseg.nn._cpu import lean_conv_cpu

        if ops.tracing():
            return ops.lean_conv_op(x, weight, stencil, bias, stride)
        return lean_conv_cpu(x, weight, stencil, bias, stride)
    return lean_conv_reference_unchecked(x, weight, stencil, bias, stride)
