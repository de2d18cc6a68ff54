"""Building blocks for lean 2D/3D networks: conv-norm-act, the paper's residual step, down and up blocks.

Every block takes ``spatial_dims`` and ``conv="lean" | "dense"``; with "dense" it is the same block with
ordinary 3x3(x3) convolutions, so a model built from them has a dense twin for fair comparisons. A custom 3D
model is a few lines::

    net = nn.Sequential(ConvNormAct(3, 4, 32, conv="dense"), DownBlock(3, 32, 64), ResidualBlock(3, 64))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from leanseg.nn import fused
from leanseg.nn.factories import (
    CONV_TRANSPOSE,
    INTERP_MODE,
    POOL,
    LayerSpec,
    act_layer,
    check_conv_kind,
    check_dims,
    conv_layer,
    has_norm,
    norm_layer,
    pointwise_conv,
)
from leanseg.options import ConvKind, DownMode, UpMode, look_up_option


class ConvNormAct(nn.Module):
    """3x3(x3) convolution (lean or dense, stride 1 or 2), then norm, then activation."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, stride: int = 1,
                 conv: str | ConvKind = "lean", norm: LayerSpec = "instance", act: LayerSpec = "leakyrelu"):
        super().__init__()
        # a bias just before a norm is removed by the norm's mean: only keep it when there is no norm
        self.conv = conv_layer(conv, spatial_dims, in_channels, out_channels, stride, bias=not has_norm(norm))
        self.norm = norm_layer(norm, spatial_dims, out_channels)
        self.act = act_layer(act)
        if has_norm(norm) and hasattr(self.act, "inplace"):
            # the norm's output is a fresh tensor that neither norm keeps for its backward: activating it in place
            # saves one activation-sized buffer per block
            setattr(self.act, "inplace", True)  # noqa: B010  (nn.Module's attribute typing hides `inplace`)

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        # the CPU's fused kernels where they apply (leanseg.nn.fused); out: memory for the result in inference
        y = fused.conv_norm_act(self, x, out)
        return y if y is not None else self.act(self.norm(self.conv(x)))  # (N, C_out, *spatial / stride)


class ResidualBlock(nn.Module):
    """The paper's step y + K2 s(N(K1 s(N(y)))), pre-activation, two convolutions.

    When the step changes the width or the stride (K1 has the stride) there is no identity to add, and the
    block is the two convolutions alone: the paper's ResNets have no projection shortcuts (their Table 1
    weight counts come out only without them).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int | None = None, stride: int = 1,
                 conv: str | ConvKind = "lean", norm: LayerSpec = "instance", act: LayerSpec = "leakyrelu"):
        super().__init__()
        out_channels = out_channels or in_channels
        self.skip = in_channels == out_channels and stride == 1
        self.norm1 = norm_layer(norm, spatial_dims, in_channels)
        self.act1 = act_layer(act)
        self.conv1 = conv_layer(conv, spatial_dims, in_channels, out_channels, stride, bias=not has_norm(norm))
        self.norm2 = norm_layer(norm, spatial_dims, out_channels)
        self.act2 = act_layer(act)
        self.conv2 = conv_layer(conv, spatial_dims, out_channels, out_channels)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        r = self.conv1(self.act1(self.norm1(y)))  # (N, C_out, *spatial / stride)
        r = self.conv2(self.act2(self.norm2(r)))  # (N, C_out, *spatial / stride)
        return y + r if self.skip else r


class DownBlock(nn.Module):
    """One encoder level: a 2x downsampling ConvNormAct that changes the width, then a ConvNormAct or a ResidualBlock.

    ``down="conv"`` downsamples with a stride-2 convolution; ``"maxpool"`` / ``"avgpool"`` pool 2x first and then
    convolve at stride 1. A stride-2 lean conv reads its 1x1 part at one pixel in four and its taps at five, so
    three quarters of the input never reach the channel mix; pooling first lets every pixel reach it.
    ``stride=1`` makes the first level of a U-Net (no downsampling); ``first_conv`` overrides the kind of the first
    convolution (a dense 3x3 where the input has few channels, as the paper advises).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, stride: int = 2,
                 conv: str | ConvKind = "lean", norm: LayerSpec = "instance", act: LayerSpec = "leakyrelu",
                 residual: bool = False, first_conv: str | ConvKind | None = None, down: str | DownMode = "conv"):
        super().__init__()
        down = look_up_option(down, DownMode, what="down").value
        pooled = down != "conv" and stride > 1
        # ceil_mode: n -> ceil(n / 2), as the stride-2 padded conv does, so odd sizes come back exactly
        self.pool = POOL[down][check_dims(spatial_dims)](stride, ceil_mode=True) if pooled else nn.Identity()
        self.down = ConvNormAct(spatial_dims, in_channels, out_channels, 1 if pooled else stride, first_conv or conv,
                                norm, act)
        body = ResidualBlock if residual else ConvNormAct
        self.body = body(spatial_dims, out_channels, out_channels, conv=conv, norm=norm, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.down(self.pool(x)))  # (N, C_out, *ceil(spatial / stride))


class LeanConvTranspose(nn.Module):
    """A cheap 2x transposed convolution: a 1x1 channel mix, then a per-channel 2x2(x2) transposed conv.

    C_in C_out + 2^d C_out weights instead of the 2^d C_in C_out of nn.ConvTranspose: the lean split of a
    convolution into a channel mix and per-channel spatial taps, applied to upsampling.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, bias: bool = True):
        super().__init__()
        self.mix = pointwise_conv(spatial_dims, in_channels, out_channels, bias=False)  # on the coarse grid
        self.up = CONV_TRANSPOSE[spatial_dims](out_channels, out_channels, 2, stride=2, groups=out_channels, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.mix(x))  # (N, C_out, *2 spatial)


def _transpose_layer(kind: str | ConvKind, spatial_dims: int, in_channels: int, out_channels: int) -> nn.Module:
    if check_conv_kind(kind) == ConvKind.LEAN:
        return LeanConvTranspose(spatial_dims, in_channels, out_channels)
    return CONV_TRANSPOSE[check_dims(spatial_dims)](in_channels, out_channels, 2, stride=2)


class UpBlock(nn.Module):
    """One decoder level: bring x to the skip's grid with ``skip_channels`` channels, concatenate, two ConvNormActs.

    ``up="interp"``: a 3x3 conv on the coarse grid (2^d times fewer multiply-adds than after upsampling), then
    linear interpolation to the skip's exact size. ``up="transpose"``: a 2x transposed conv (the cheap lean one
    in a lean model), cropped to the skip's size. Either way odd sizes work: the encoder's stride-2 conv takes
    n to ceil(n / 2), and the decoder returns exactly n.
    """

    def __init__(self, spatial_dims: int, in_channels: int, skip_channels: int, out_channels: int,
                 conv: str | ConvKind = "lean", norm: LayerSpec = "instance", act: LayerSpec = "leakyrelu",
                 up: str | UpMode = "interp"):
        super().__init__()
        self.mode = look_up_option(up, UpMode, what="up").value
        self.interp = INTERP_MODE[check_dims(spatial_dims)]
        if self.mode == UpMode.INTERP:
            self.up = conv_layer(conv, spatial_dims, in_channels, skip_channels, bias=True)
        else:
            self.up = _transpose_layer(conv, spatial_dims, in_channels, skip_channels)
        self.fuse = ConvNormAct(spatial_dims, 2 * skip_channels, out_channels, conv=conv, norm=norm, act=act)
        self.body = ConvNormAct(spatial_dims, out_channels, out_channels, conv=conv, norm=norm, act=act)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.body(self.merge(x, skip))  # (N, C_out, *skip)

    def merge(self, x: torch.Tensor, skip: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """The first half of forward: up, concatenate, fuse. (N, C_out, *skip). out: as for ConvNormAct."""
        y = fused.up_merge(self, x, skip, out)  # in CPU inference, without building the concatenation
        if y is not None:
            return y
        size = skip.shape[2:]
        x = self.up(x)  # (N, C_skip, *coarse) or (N, C_skip, *2 coarse)
        if self.mode == UpMode.INTERP:
            x = F.interpolate(x, size=size, mode=self.interp, align_corners=False)
            x = fused.channels_last_grad(x)  # the interpolation's backward is fast only on a channels-last gradient
        else:
            x = x[(slice(None), slice(None)) + tuple(slice(0, n) for n in size)]
        x = torch.cat([skip, x], dim=1)  # (N, 2 C_skip, *skip)
        return self.fuse(x)  # (N, C_out, *skip)
