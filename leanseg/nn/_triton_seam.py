"""Where CUDA tensors meet the Triton kernels of ``kernels3d``; None when Triton or the kernels are absent."""

from __future__ import annotations

import functools


@functools.cache
def get():
    try:
        import triton  # noqa: F401

        from kernels3d import lean_conv
    except ImportError:
        return None
    return lean_conv
