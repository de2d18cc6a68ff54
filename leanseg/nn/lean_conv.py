"""LeanConv, the module, and lean(), which puts it in place of the 3x3(x3) convolutions of any model."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from kernels3d.reference import STRIDES, dense_weight
from leanseg.errors import LeanSegError
from leanseg.nn.functional import lean_conv


class LeanConv(nn.Module):
    """A 1x1 convolution plus a per-channel 5-point (2D) or 7-point (3D) stencil, applied in one read of x.

    Replaces a 3x3(x3) convolution with padding 1: ``F.conv3d(x, conv.dense_weight(), conv.bias, stride=s,
    padding=1)`` equals ``conv(x)`` (conv2d in 2D). A square layer has C^2 + 2dC weights instead of 9C^2 / 27C^2.

    Initialisation: every output sums C_in + 2d taps (the 1x1 row and, for o < min(C_in, C_out), the 2d
    neighbours). Drawing W and S from N(0, 2 / (C_in + 2d)), He's rule with that fan-in, keeps the second moment
    of the activations constant through a deep stack of LeanConv + ReLU; the bias starts at zero.

    Args:
        spatial_dims: 2 or 3.
        in_channels, out_channels: channel counts (any positive integers).
        stride: 1 or 2 (stride 2 halves every spatial size, rounding up, as a 3x3 conv with padding 1 does).
        bias: add a learnable bias (off by default: a norm usually follows).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, stride: int = 1, bias: bool = False):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise LeanSegError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not isinstance(value, int) or value < 1:
                raise LeanSegError(f"{name} must be a positive integer, got {value!r}")
        if stride not in STRIDES:
            raise LeanSegError(f"stride must be 1 or 2, got {stride!r}")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels))
        self.stencil = nn.Parameter(torch.empty(min(in_channels, out_channels), 2 * spatial_dims))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = math.sqrt(2.0 / (self.in_channels + 2 * self.spatial_dims))
        nn.init.normal_(self.weight, 0.0, std)
        nn.init.normal_(self.stencil, 0.0, std)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the shapes are checked once, by the dispatcher (the stencil's width fixes the spatial dims)
        return lean_conv(x, self.weight, self.stencil, self.bias, self.stride)  # (N, C_out, *out)

    def dense_weight(self) -> torch.Tensor:
        """The equivalent dense kernel (C_out, C_in, 3, 3[, 3])."""
        return dense_weight(self.weight, self.stencil)

    @staticmethod
    def num_weights(spatial_dims: int, in_channels: int, out_channels: int, bias: bool = False) -> int:
        """C_out C_in + 2d min(C_in, C_out) (+ C_out): the formula, for checks and tables."""
        return (
            out_channels * in_channels
            + 2 * spatial_dims * min(in_channels, out_channels)
            + (out_channels if bias else 0)
        )

    def extra_repr(self) -> str:
        return (
            f"spatial_dims={self.spatial_dims}, {self.in_channels}, {self.out_channels}, stride={self.stride}, "
            f"bias={self.bias is not None}"
        )


@dataclass
class LeanReport:
    """What lean() did: the layers it replaced and the weights of the whole model before and after."""

    replaced: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, reason) of 3x3(x3) convs it kept
    weights_before: int = 0
    weights_after: int = 0

    @property
    def reduction(self) -> float:
        return self.weights_before / max(self.weights_after, 1)

    def __str__(self) -> str:
        lines = [
            f"lean(): replaced {len(self.replaced)} convolutions; weights {self.weights_before:,} -> "
            f"{self.weights_after:,} ({self.reduction:.1f}x fewer)"
        ]
        lines += [f"  kept {name}: {why}" for name, why in self.skipped]
        return "\n".join(lines)


def _why_not(conv: nn.Conv2d | nn.Conv3d) -> str | None:
    """None when conv is a 3x3(x3) convolution LeanConv can replace, else the reason it cannot."""
    d = 2 if isinstance(conv, nn.Conv2d) else 3
    if tuple(conv.kernel_size) != (3,) * d:
        return ""  # not a 3x3(x3) conv: not a candidate, nothing to report
    checks = [
        (conv.groups == 1, f"groups={conv.groups}"),
        (tuple(conv.dilation) == (1,) * d, f"dilation={conv.dilation}"),
        (isinstance(conv.padding, tuple) and tuple(conv.padding) == (1,) * d, f"padding={conv.padding}"),
        (conv.padding_mode == "zeros", f"padding_mode={conv.padding_mode}"),
        (len(set(conv.stride)) == 1 and conv.stride[0] in STRIDES, f"stride={conv.stride}"),
    ]
    for ok, why in checks:
        if not ok:
            return why
    return None


def lean(model: nn.Module) -> LeanReport:
    """Replace, in place, every 3x3 / 3x3x3 nn.Conv2d / nn.Conv3d (groups 1, dilation 1, padding 1, stride 1 or 2)
    by a LeanConv with the same channels, stride and bias. Returns a LeanReport.

    The new layers are freshly initialised (a dense 3x3 kernel has no exact lean equivalent), so convert before
    training. Transposed convolutions and other kernel sizes are left alone.
    """
    report = LeanReport(weights_before=sum(p.numel() for p in model.parameters()))
    # exact types only: a subclass may change what forward does
    targets = [(name, m) for name, m in model.named_modules()
               if isinstance(m, nn.Conv2d | nn.Conv3d) and type(m) in (nn.Conv2d, nn.Conv3d)]
    for name, conv in targets:
        why = _why_not(conv)
        if why:
            report.skipped.append((name, why))
        if why is not None:
            continue
        new = LeanConv(
            conv.weight.dim() - 2, conv.in_channels, conv.out_channels, conv.stride[0], conv.bias is not None
        )
        new.to(device=conv.weight.device, dtype=conv.weight.dtype)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
        report.replaced.append(name)
    report.weights_after = sum(p.numel() for p in model.parameters())
    return report
