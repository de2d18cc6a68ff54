"""Fused Triton kernels for the lean convolution (2D is the depth-1 case of the 3D code).

A leaf: nothing here imports leanseg. The operator's shape rules and plain-PyTorch reference are in
``kernels3d.reference`` (torch only), which leanseg imports too. ``import kernels3d`` imports neither torch,
Triton nor the kernels: they load on the first call of ``lean_conv``, which raises an ImportError that says so
where Triton is missing.
"""

from __future__ import annotations

import importlib.util
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def interpret() -> bool:
    """TRITON_INTERPRET: whether Triton runs kernels in its CPU interpreter (the one place kernels3d reads it)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def available() -> bool:
    """True when the kernels can run here: Triton imports and there is a CUDA device or TRITON_INTERPRET=1."""
    if importlib.util.find_spec("triton") is None:
        return False
    import torch

    return interpret() or torch.cuda.is_available()


def lean_conv(
    x: torch.Tensor, weight: torch.Tensor, stencil: torch.Tensor, bias: torch.Tensor | None = None, stride: int = 1,
    residual: torch.Tensor | None = None, activation: str | None = None, negative_slope: float = 0.01,
) -> torch.Tensor:
    """act(lean convolution of x + bias + residual) by the fused kernels; see kernels3d.fused.lean_conv."""
    try:
        from kernels3d import fused
    except ImportError as err:
        if err.name != "triton":
            raise
        raise ImportError("kernels3d.lean_conv needs Triton (pip install triton, Linux only); "
                          "leanseg.nn.functional.lean_conv falls back to PyTorch without it") from err
    return fused.lean_conv(x, weight, stencil, bias, stride, residual, activation, negative_slope)


__all__ = ["available", "interpret", "lean_conv"]
