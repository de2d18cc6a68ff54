"""Inference precision on the CPU: float32, or bfloat16 where the processor computes it natively.

bfloat16 halves the bytes every activation moves, and on CPUs with AMX or AVX512-BF16 oneDNN runs the dense and
1x1 GEMMs in it at several times the float32 rate. Accumulation stays float32 (oneDNN's GEMMs, the C kernels of
csrc/), the instance norm's statistics are float64 sums of the bf16 data, and the model's output is
returned as float32. Elsewhere bfloat16 is emulated and slower than float32, hence the check.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import torch
from torch import nn

from leanseg.errors import LeanSegError

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo names of native bf16 arithmetic on x86


def cpu_supports_bf16() -> bool:
    """True when this CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16, from /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return any(f in flags for f in _BF16_FLAGS)


def _check(precision: str) -> torch.dtype:
    if precision not in PRECISIONS:
        close = difflib.get_close_matches(str(precision), PRECISIONS, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"choose from {', '.join(PRECISIONS)}"
        raise LeanSegError(f"unknown precision {precision!r}; {hint}")
    return PRECISIONS[precision]


def _cast_inputs(module, args):
    return tuple(a.to(module._leanseg_dtype) if torch.is_tensor(a) and a.is_floating_point() else a for a in args)


def _float_outputs(module, args, out):
    if torch.is_tensor(out):
        return out.float()
    if isinstance(out, (list, tuple)):
        return type(out)(o.float() if torch.is_tensor(o) else o for o in out)
    return out


def prepare(model: nn.Module, precision: str = "fp32", device: str | torch.device = "cpu") -> nn.Module:
    """Set ``model`` (in place, and returned) to run in ``precision`` ("fp32" or "bf16") on ``device``.

    bf16 converts the weights to bfloat16 and adds hooks that cast the input to bfloat16 and the output back to
    float32, so callers (sliding window, stitching, argmax) see float32 either way. On a CPU without native
    bfloat16 it raises a LeanSegError saying so. Calling it again with "fp32" undoes it.
    """
    dtype = _check(precision)
    if dtype == torch.bfloat16 and torch.device(device).type == "cpu" and not cpu_supports_bf16():
        raise LeanSegError(
            "precision bf16: this CPU has neither AVX512-BF16 nor AMX-BF16, so bfloat16 would be emulated and "
            "slower than float32; use precision fp32"
        )
    for handle in getattr(model, "_leanseg_precision_hooks", []):
        handle.remove()
    hooks = []
    model.to(dtype)
    if dtype != torch.float32:
        hooks = [model.register_forward_pre_hook(_cast_inputs), model.register_forward_hook(_float_outputs)]
    # plain attributes on the module (nn.Module's attribute typing only knows tensors and submodules)
    vars(model).update(_leanseg_precision_hooks=hooks, _leanseg_dtype=dtype)
    return model
