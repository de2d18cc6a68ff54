"""The one place that decides which implementation runs a layer: Triton, the CPU path, or the reference.

Every layer with a fast path asks here: the lean convolution (``functional.lean_conv``), the fused conv + norm +
activation blocks (``fused``), ``InstanceNorm``, the CPU path's own pieces (``_cpu``) and the sliding-window
blending (``leanseg.stitch``). ``LEANSEG_BACKEND=reference`` makes every answer "reference": no compiled library is
built or loaded and no Triton kernel runs, so a model runs as plain PyTorch (for debugging, and to check the fast
paths against). ``LEANSEG_CEXT=0`` only turns the compiled library off (the CPU path then uses plain PyTorch for
its kernels).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal

import torch

from leanseg import env
from leanseg.nn import _cext

Backend = Literal["triton", "cpu", "reference"]
# the storage types the C kernels are instantiated for
CPU_DTYPES = (torch.float32, torch.float64, torch.bfloat16)


@functools.cache
def triton_launch() -> Callable[..., torch.Tensor] | None:
    """kernels3d's unchecked launcher, or None where Triton (or the kernels) cannot be imported."""
    try:
        from kernels3d.fused import launch
    except ImportError:
        return None
    return launch


def lean_conv_backend(x: torch.Tensor) -> Backend:
    """Where a lean convolution of x runs: "triton" for CUDA tensors when Triton imports, "cpu" (the
    channels-last path of ``_cpu``) for CPU tensors of CPU_DTYPES, else, or under LEANSEG_BACKEND=reference,
    "reference"."""
    if env.backend() == "reference":
        return "reference"
    if x.is_cuda:
        return "triton" if triton_launch() is not None else "reference"
    if x.device.type == "cpu" and x.dtype in CPU_DTYPES:
        return "cpu"
    return "reference"


def c_library(t: torch.Tensor, dtypes: tuple[torch.dtype, ...] = CPU_DTYPES) -> Any:
    """The compiled CPU library (``_cext.load()``) for a kernel on t, or None: under LEANSEG_BACKEND=reference, for
    a tensor not on the CPU or not of one of ``dtypes``, or where the library cannot be built (LEANSEG_CEXT=0, no
    C compiler). The only caller of ``_cext.load`` in leanseg."""
    if env.backend() == "reference" or t.device.type != "cpu" or t.dtype not in dtypes:
        return None
    return _cext.load()
