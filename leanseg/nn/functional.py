"""The lean convolution as functions: the one dispatcher, plus the shape rules and reference it builds on.

The operator, its shape rules (``check_args``, ``out_size``, ``STRIDES``) and its plain-PyTorch reference
(``lean_conv_reference``, ``dense_weight``) live in ``kernels3d.reference``, a leaf that imports only torch, so
the Triton kernels can share them without importing leanseg; they are re-exported here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

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
from leanseg import env

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

_CPU_DTYPES = (torch.float32, torch.float64, torch.bfloat16)


@functools.cache
def _triton_launch() -> Callable[..., torch.Tensor] | None:
    """kernels3d's unchecked launcher, or None where Triton (or the kernels) cannot be imported."""
    try:
        from kernels3d.fused import launch
    except ImportError:
        return None
    return launch


def lean_conv(
    x: torch.Tensor, weight: torch.Tensor, stencil: torch.Tensor, bias: torch.Tensor | None = None, stride: int = 1
) -> torch.Tensor:
    """Lean convolution on the fastest path for x's device; the one place its arguments are checked.

    CUDA tensors go to the fused Triton kernels of ``kernels3d`` when Triton is installed; CPU tensors
    (float32/float64/bfloat16) to the compiled channels-last path; everything else to the reference.
    Set LEANSEG_BACKEND=reference to force the reference (for debugging).
    """
    check_args(x, weight, stencil, bias, stride)
    if env.backend() == "reference":
        return lean_conv_reference_unchecked(x, weight, stencil, bias, stride)
    if x.is_cuda:
        launch = _triton_launch()
        if launch is not None:
            return launch(x, weight, stencil, bias, stride)
    elif x.device.type == "cpu" and x.dtype in _CPU_DTYPES:
        from leanseg.nn._cpu import lean_conv_cpu

        return lean_conv_cpu(x, weight, stencil, bias, stride)
    return lean_conv_reference_unchecked(x, weight, stencil, bias, stride)
