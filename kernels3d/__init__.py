"""Fused Triton kernels for the lean convolution (2D is the depth-1 case of the 3D code).

``import kernels3d`` imports neither Triton nor the kernels: they load on the first call of ``lean_conv``,
which raises an ImportError that says so where Triton is missing.
"""

from __future__ import annotations

import importlib.util
import os


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def available() -> bool:
    """True when the kernels can run here: Triton imports and there is a CUDA device or TRITON_INTERPRET=1."""
    if importlib.util.find_spec("triton") is None:
        return False
    import torch

    return _interpret() or torch.cuda.is_available()


def lean_conv(x, weight, stencil, bias=None, stride: int = 1, residual=None, activation=None,
              negative_slope: float = 0.01):
    """act(lean convolution of x + bias + residual) by the fused kernels; see kernels3d.fused.lean_conv."""
    try:
        from kernels3d import fused
    except ImportError as err:
        if err.name != "triton":
            raise
        raise ImportError("kernels3d.lean_conv needs Triton (pip install triton, Linux only); "
                          "leanseg.nn.functional.lean_conv falls back to PyTorch without it") from err
    return fused.lean_conv(x, weight, stencil, bias, stride, residual, activation, negative_slope)


__all__ = ["available", "lean_conv"]
