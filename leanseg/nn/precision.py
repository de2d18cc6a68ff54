"""Inference precision: ``prepare(model, "fp32" | "bf16")`` and the CPU check that bf16 needs.

A minimal version that the prediction path calls through this interface; the fast bf16 path (float32 accumulation
and norm statistics inside fused kernels) replaces the internals, not the two signatures. Callers cast outputs
back to float32: probabilities are always blended and stored in float32.
"""

from __future__ import annotations

import torch
from torch import nn

from leanseg.errors import LeanSegError

PRECISIONS = ("fp32", "bf16")
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of native bfloat16 dot products


def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16): without it bf16 is emulated and
    slower than float32. False where /proc/cpuinfo is unreadable (not Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return bool(set(line.split()) & set(_BF16_FLAGS))
    except OSError:
        pass
    return False


class _CastInput(nn.Module):
    """Runs ``model`` on inputs cast to its dtype; the caller casts the output back to float32."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.dtype))


def prepare(model: nn.Module, precision: str) -> nn.Module:
    """The model ready to predict in ``precision``: "fp32" (unchanged) or "bf16" (weights and inputs bfloat16).

    bf16 on the CPU needs a processor with native bfloat16 (``cpu_supports_bf16``); LeanSegError otherwise.
    """
    if precision not in PRECISIONS:
        raise LeanSegError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return model
    first = next(model.parameters(), None)
    if (first is None or first.device.type == "cpu") and not cpu_supports_bf16():
        raise LeanSegError("--precision bf16: this CPU has no bfloat16 support (avx512_bf16/amx_bf16); use fp32")
    return _CastInput(model.to(torch.bfloat16), torch.bfloat16).eval()
