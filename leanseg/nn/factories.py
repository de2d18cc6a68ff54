"""The one place where a spatial dimension and a name become a layer class.

Blocks and models ask for ``conv_layer("lean", 3, ...)`` or ``norm_layer("instance", 3, C)`` and never test
``spatial_dims`` themselves, so 2D and 3D share every line above this module. Norms and activations are given
by name (what a JSON checkpoint can store), as ``(name, {kwargs})``, or as a class; an unknown name is a
LeanSegError with the closest names.
"""

from __future__ import annotations

import difflib
import math

from torch import nn

from leanseg.errors import LeanSegError
from leanseg.nn.lean_conv import LeanConv
from leanseg.nn.norm import InstanceNorm

CONV = {2: nn.Conv2d, 3: nn.Conv3d}
CONV_TRANSPOSE = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
AVG_POOL = {2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}
# 2x downsampling by pooling, name -> {spatial_dims: class}
POOL = {"maxpool": {2: nn.MaxPool2d, 3: nn.MaxPool3d}, "avgpool": {2: nn.AvgPool2d, 3: nn.AvgPool3d}}
INTERP_MODE = {2: "bilinear", 3: "trilinear"}

CONV_KINDS = ("lean", "dense")

# name -> {spatial_dims: class}; group norm is dimension-free and takes its group count first
NORMS = {
    "instance": {2: InstanceNorm, 3: InstanceNorm},  # ours keeps channels-last data channels-last (see norm.py)
    "batch": {2: nn.BatchNorm2d, 3: nn.BatchNorm3d},
    "group": {2: nn.GroupNorm, 3: nn.GroupNorm},
    "none": {2: nn.Identity, 3: nn.Identity},
}
# Affine instance norm as nnU-Net uses it: the learnable scale and shift are 2C weights, nothing next to a conv.
_NORM_DEFAULTS = {"instance": {"affine": True}}
# 8 groups as MONAI's SegResNet; gcd keeps it a divisor of C for widths such as 12 or 20.
_MAX_GROUPS = 8

ACTS = {
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


def _pick(table: dict, name: str, what: str):
    key = _key(name)
    if key in table:
        return table[key]
    close = difflib.get_close_matches(key, table, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"choose from {', '.join(table)}"
    raise LeanSegError(f"unknown {what} {name!r}; {hint}")


def _split(spec) -> tuple[object, dict]:
    """'name' | class | (name or class, {kwargs}) -> (name or class, kwargs). Lists count as tuples (JSON)."""
    if isinstance(spec, (tuple, list)):
        if len(spec) != 2 or not isinstance(spec[1], dict):
            raise LeanSegError(f"a layer spec is a name, a class or (name, {{kwargs}}), got {spec!r}")
        return spec[0], dict(spec[1])
    return spec, {}


def check_dims(spatial_dims) -> int:
    if spatial_dims not in CONV:
        raise LeanSegError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    return spatial_dims


def check_conv_kind(kind) -> str:
    if kind not in CONV_KINDS:
        close = difflib.get_close_matches(str(kind), CONV_KINDS, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "choose 'lean' or 'dense'"
        raise LeanSegError(f"unknown conv {kind!r}; {hint}")
    return kind


def conv_layer(
    kind: str, spatial_dims: int, in_channels: int, out_channels: int, stride: int = 1, bias: bool = False
) -> nn.Module:
    """A 3x3(x3), padding-1 convolution: LeanConv for ``kind="lean"``, nn.Conv2d/3d for ``kind="dense"``.

    The two have the same signature and output shape, which is what makes a model's dense twin identical
    to it apart from these layers.
    """
    check_conv_kind(kind)
    if kind == "lean":
        return LeanConv(check_dims(spatial_dims), in_channels, out_channels, stride=stride, bias=bias)
    return CONV[check_dims(spatial_dims)](in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)


def pointwise_conv(spatial_dims: int, in_channels: int, out_channels: int, bias: bool = True) -> nn.Module:
    """A 1x1(x1) convolution (heads, projections): already lean, so the same in both twins."""
    return CONV[check_dims(spatial_dims)](in_channels, out_channels, 1, bias=bias)


def norm_layer(norm, spatial_dims: int, channels: int) -> nn.Module:
    """A normalisation over ``channels`` by name ('instance', 'batch', 'group', 'none'), (name, kwargs) or class."""
    spec, kwargs = _split(norm)
    if spec is None:
        return nn.Identity()
    if isinstance(spec, type):
        return spec(channels, **kwargs)
    if not isinstance(spec, str):
        raise LeanSegError(f"norm must be a name, a class or (name, kwargs), got {norm!r}")
    cls = _pick(NORMS, spec, "norm")[check_dims(spatial_dims)]
    if cls is nn.Identity:
        return cls()
    if cls is nn.GroupNorm:
        groups = kwargs.pop("num_groups", math.gcd(channels, _MAX_GROUPS))
        return cls(groups, channels, **kwargs)
    return cls(channels, **{**_NORM_DEFAULTS.get(_key(spec), {}), **kwargs})


def act_layer(act) -> nn.Module:
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
    return _pick(ACTS, spec, "activation")(**kwargs)


def has_norm(norm) -> bool:
    """Whether ``norm`` normalises (a conv before it then needs no bias)."""
    spec, _ = _split(norm)
    return spec is not None and not (isinstance(spec, str) and spec.lower() == "none")
