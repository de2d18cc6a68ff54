"""Fused Triton kernels for the lean convolution (2D is the depth-1 case of the 3D code).

``import kernels3d`` works without Triton; calling ``lean_conv`` then raises an ImportError that says so.
"""

from __future__ import annotations

import os

try:
    import triton  # noqa: F401
except ImportError:
    HAS_TRITON = False
else:
    HAS_TRITON = True

if HAS_TRITON:
    from kernels3d.fused import lean_conv
else:

    def lean_conv(*args, **kwargs):
        raise ImportError("kernels3d.lean_conv needs Triton (pip install triton, Linux only); "
                          "leanseg.nn.functional.lean_conv falls back to PyTorch without it")


def available() -> bool:
    """True when the kernels can run here: Triton imports and there is a CUDA device or TRITON_INTERPRET=1."""
    if not HAS_TRITON:
        return False
    import torch

    interpret = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")
    return interpret or torch.cuda.is_available()


__all__ = ["available", "lean_conv"]
