"""The one place where a spatial dimension and a name become a layer class.

Blocks and models ask for ``conv_layer("lean", 3, ...)`` or ``norm_layer("instance", 3, C)`` and never test
``spatial_dims`` themselves, so 2D and 3D share every line above this module. Norms and activations are given
by name (what a JSON checkpoint can store), as ``(name, {kwargs})``, or as a class (a ``LayerSpec``); an
unknown name is a LeanSegError with the closest names (``leanseg.options.look_up_option``).
"""

from __future__ import annotations

import math
from typing import Any, TypeAlias

import torch
import torch.nn.functional as F
from torch import nn

from leanseg.errors import LeanSegError
from leanseg.nn.lean_conv import LeanConv
from leanseg.nn.norm import InstanceNorm
from leanseg.nn.ops import tracing
from leanseg.options import ConvKind, Norm, look_up_option

# A norm= or act= argument: a name ("instance", "leakyrelu"), a layer class, or (name or class, {kwargs}); a list
# counts as a tuple (that is what JSON gives back). None means no layer.
LayerSpec: TypeAlias = str | type[nn.Module] | tuple[str | type[nn.Module], dict[str, Any]] | list[Any] | None

CONV = {2: nn.Conv2d, 3: nn.Conv3d}
CONV_TRANSPOSE = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
AVG_POOL = {2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}
# 2x downsampling by pooling, name -> {spatial_dims: class}
POOL: dict[str, dict[int, type[nn.Module]]] = {"maxpool": {2: nn.MaxPool2d, 3: nn.MaxPool3d},
                                            "avgpool": {2: nn.AvgPool2d, 3: nn.AvgPool3d}}
INTERP_MODE = {2: "bilinear", 3: "trilinear"}

# name -> {spatial_dims: class}; group norm is dimension-free and takes its group count first
NORMS: dict[Norm, dict[int, type[nn.Module]]] = {
    Norm.INSTANCE: {2: InstanceNorm, 3: InstanceNorm},  # ours keeps channels-last data channels-last (see norm.py)
    Norm.BATCH: {2: nn.BatchNorm2d, 3: nn.BatchNorm3d},
    Norm.GROUP: {2: nn.GroupNorm, 3: nn.GroupNorm},
    Norm.NONE: {2: nn.Identity, 3: nn.Identity},
}
# Affine instance norm as nnU-Net uses it: the learnable scale and shift are 2C weights, nothing next to a conv.
_NORM_DEFAULTS: dict[Norm, dict[str, Any]] = {Norm.INSTANCE: {"affine": True}}
# 8 groups as MONAI's SegResNet; gcd keeps it a divisor of C for widths such as 12 or 20.
_MAX_GROUPS = 8

# The one activation table (model layers by name). kernels3d.fused.EPILOGUE_ACT_CODES are kernel constants for the
# fused epilogue, and leanseg.inference's output activations (softmax/sigmoid) turn logits into probabilities.
ACTS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leakyrelu": nn.LeakyReLU,  # slope 0.01, nnU-Net's default
    "prelu": nn.PReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "none": nn.Identity,
}


def _key(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")  # "LeakyReLU", "leaky_relu" -> "leakyrelu"


def _split(spec: LayerSpec) -> tuple[object, dict[str, Any]]:
    """'name' | class | (name or class, {kwargs}) -> (name or class, kwargs). Lists count as tuples (JSON)."""
    if isinstance(spec, (tuple, list)):
        if len(spec) != 2 or not isinstance(spec[1], dict):
            raise LeanSegError(f"a layer spec is a name, a class or (name, {{kwargs}}), got {spec!r}")
        return spec[0], dict(spec[1])
    return spec, {}


def check_dims(spatial_dims: object) -> int:
    if not isinstance(spatial_dims, int) or spatial_dims not in CONV:
        raise LeanSegError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    return spatial_dims


def check_conv_kind(kind: str | ConvKind) -> str:
    """'lean' or 'dense' as a plain string (what a JSON config stores); anything else gets a 'did you mean'."""
    return look_up_option(kind, ConvKind, what="conv").value


def conv_layer(
    kind: str | ConvKind, spatial_dims: int, in_channels: int, out_channels: int, stride: int = 1, bias: bool = False
) -> nn.Module:
    """A 3x3(x3), padding-1 convolution: LeanConv for ``kind="lean"``, nn.Conv2d/3d for ``kind="dense"``.

    The two have the same signature and output shape, which is what makes a model's dense twin identical
    to it apart from these layers.
    """
    if check_conv_kind(kind) == ConvKind.LEAN:
        return LeanConv(check_dims(spatial_dims), in_channels, out_channels, stride=stride, bias=bias)
    return CONV[check_dims(spatial_dims)](in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)


class _PointwiseCPU:
    """A 1x1(x1) convolution that runs as one matrix product on channels-last CPU tensors. PyTorch sends a 1x1
    convolution of a batch under 16 to its unfold-based fallback when it has one thread (its heuristic keeps oneDNN
    for more threads): on an AMD EPYC, one thread, the 32 -> 3 head of a 4x128^3 LeanUNet took 1.3-2.4 s there,
    against 0.1-0.2 s for the same product as a GEMM. With more threads oneDNN's 1x1 is as fast
    (0.08 against 0.09 s for that head), so it keeps them. Same parameters as nn.Conv2d/3d."""

    weight: torch.Tensor
    bias: torch.Tensor | None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cl = torch.channels_last_3d if x.dim() == 5 else torch.channels_last
        slow = x.device.type == "cpu" and torch.get_num_threads() == 1 and x.shape[0] < 16
        if not slow or not x.is_contiguous(memory_format=cl) or tracing():
            return super().forward(x)  # type: ignore[misc]  # nn.Conv2d/3d's, the class this is mixed into
        y = F.linear(x.movedim(1, -1), self.weight.flatten(1), self.bias)  # (N, *spatial, C_out)
        return y.movedim(-1, 1)  # channels-last in memory


class PointwiseConv2d(_PointwiseCPU, nn.Conv2d):
    pass


class PointwiseConv3d(_PointwiseCPU, nn.Conv3d):
    pass


POINTWISE = {2: PointwiseConv2d, 3: PointwiseConv3d}


def pointwise_conv(spatial_dims: int, in_channels: int, out_channels: int, bias: bool = True) -> nn.Module:
    """A 1x1(x1) convolution (heads, projections): already lean, so the same in both twins."""
    return POINTWISE[check_dims(spatial_dims)](in_channels, out_channels, 1, bias=bias)


def norm_layer(norm: LayerSpec, spatial_dims: int, channels: int) -> nn.Module:
    """A normalisation over ``channels`` by name ('instance', 'batch', 'group', 'none'), (name, kwargs) or class."""
    spec, kwargs = _split(norm)
    if spec is None:
        return nn.Identity()
    if isinstance(spec, type):
        return spec(channels, **kwargs)
    if not isinstance(spec, str):
        raise LeanSegError(f"norm must be a name, a class or (name, kwargs), got {norm!r}")
    name = look_up_option(spec, Norm, what="norm", key=_key)
    cls = NORMS[name][check_dims(spatial_dims)]
    if cls is nn.Identity:
        return cls()
    if cls is nn.GroupNorm:
        groups = kwargs.pop("num_groups", math.gcd(channels, _MAX_GROUPS))
        return cls(groups, channels, **kwargs)
    return cls(channels, **{**_NORM_DEFAULTS.get(name, {}), **kwargs})


def act_layer(act: LayerSpec) -> nn.Module:
    """An activation by name ('relu', 'leakyrelu', 'prelu', 'elu', 'gelu', 'silu', 'none'), (name, kwargs) or class.

    Never in place: in a pre-activation residual block the activation's input is also the skip.
    """
    spec, kwargs = _split(act)
    if spec is None:
        return nn.Identity()
    if isinstance(spec, type):
        return spec(**kwargs)
    if not isinstance(spec, str):
        raise LeanSegError(f"act must be a name, a class or (name, kwargs), got {act!r}")
    return look_up_option(spec, ACTS, what="activation", key=_key)(**kwargs)


def has_norm(norm: LayerSpec) -> bool:
    """Whether ``norm`` normalises (a conv before it then needs no bias)."""
    spec, _ = _split(norm)
    return spec is not None and not (isinstance(spec, str) and spec.lower() == "none")
