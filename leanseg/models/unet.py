"""LeanUNet: an nnU-Net-shaped encoder-decoder on lean convolutions, for 2D and 3D, with a dense twin."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from leanseg.errors import LeanSegError
from leanseg.models._registry import register
from leanseg.nn.blocks import ConvNormAct, DownBlock, UpBlock
from leanseg.nn.factories import LayerSpec, check_conv_kind, check_dims, pointwise_conv
from leanseg.nn.ops import tracing
from leanseg.options import DownMode, UpMode, look_up_option


@dataclass
class UNetConfig:
    """Everything that defines a LeanUNet; plain values only, so a checkpoint stores it as JSON."""

    spatial_dims: int  # 2 or 3
    in_channels: int  # e.g. 4 MRI modalities (BraTS), 1 seismic amplitude
    out_channels: int  # classes (or regions) the head predicts
    # nnU-Net's 3D widths: 5 levels take a 128^3 patch down to 8^3, and 320 caps the memory of the deep levels
    features: tuple[int, ...] = (32, 64, 128, 256, 320)
    # plain conv-conv levels by default: the residual encoder costs two more convs per level for a small gain
    residual: bool = False
    # instance norm: batches of 2 patches are too small for batch statistics (nnU-Net's finding)
    norm: LayerSpec = "instance"
    act: LayerSpec = "leakyrelu"  # nnU-Net's choice; avoids dead units with the small batches of 3D training
    conv: str = "lean"  # "dense" builds the twin with ordinary 3x3(x3) convolutions
    # a dense 3x3 where channels are few (4 in -> 32): the paper's advice; it costs 27 * 4 * 32 = 3,456 weights
    first_conv: str = "dense"
    deep_supervision: bool = False  # off: a plain model returns one tensor, which is what inference expects
    # interpolation + conv is exactly twin-comparable; "transpose" is nnU-Net's 2x transposed conv (lean: 1x1 +
    # per-channel taps)
    up: str = "interp"
    # "conv": stride-2 convolutions go down (the old models); "maxpool"/"avgpool": pool, then a stride-1 conv
    down: str = "conv"
    # kind of the convolutions of the last (full-resolution) decoder level; None: the same as ``conv``
    last_conv: str | None = None
    # the first N levels (encoder and decoder, full resolution first) built with dense 3x3(x3) convolutions: where
    # channels are few a dense conv costs little (16 channels: 2,304 weights in 2D), and thin structures (EM
    # membranes) are resolved there; 0: only first_conv (and last_conv) are dense
    dense_levels: int = 0

    def __post_init__(self) -> None:
        check_dims(self.spatial_dims)
        self.conv = check_conv_kind(self.conv)
        self.first_conv = check_conv_kind(self.first_conv)
        if self.last_conv is not None:
            self.last_conv = check_conv_kind(self.last_conv)
        self.features = tuple(self.features)  # JSON gives lists
        if not self.features or any(not isinstance(f, int) or f < 1 for f in self.features):
            raise LeanSegError(f"features must be positive integers, one per level, got {self.features!r}")
        for name in ("in_channels", "out_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise LeanSegError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.dense_levels, int) or not 0 <= self.dense_levels <= len(self.features):
            raise LeanSegError(f"dense_levels must be an integer from 0 to {len(self.features)} (the levels), "
                               f"got {self.dense_levels!r}")
        self.up = look_up_option(self.up, UpMode, what="up").value
        self.down = look_up_option(self.down, DownMode, what="down").value


_FIELDS = [f.name for f in dataclasses.fields(UNetConfig)]


class LeanUNet(nn.Module):
    """U-Net with lean 3x3(x3) convolutions: stride-2 convs go down, conv + interpolation (or a cheap transposed
    conv) goes up, skips are concatenated. Odd sizes work (every decoder level returns its skip's exact size).

    ``LeanUNet(3, 4, 3)`` is a BraTS-sized 3D model; ``conv="dense"`` its dense twin, with the same modules
    apart from the convolutions. Options are the fields of :class:`UNetConfig`; ``model.config`` gives them back.

    In training mode with ``deep_supervision=True`` forward returns a list of logits, full resolution first, then
    one per coarser decoder level; otherwise one tensor (N, out_channels, *spatial).
    """

    registry_name = "lean_unet"  # with ``config``: leanseg.save_model rebuilds it without leanseg.models.create

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, **options: Any):
        super().__init__()
        for name in sorted(set(options) - set(_FIELDS)):
            look_up_option(name, _FIELDS[3:], what="LeanUNet option")
        cfg = UNetConfig(spatial_dims, in_channels, out_channels, **options)
        self.cfg = cfg
        d, f = cfg.spatial_dims, cfg.features
        common: dict[str, Any] = {"conv": cfg.conv, "norm": cfg.norm, "act": cfg.act}
        first = cfg.first_conv if cfg.conv == "lean" else "dense"

        def kind(level: int) -> dict[str, Any]:  # the convolutions of one level
            return common | ({"conv": "dense"} if level < cfg.dense_levels else {})

        self.encoder = nn.ModuleList(
            [DownBlock(d, cfg.in_channels, f[0], stride=1, residual=cfg.residual, first_conv=first, **kind(0))]
            + [DownBlock(d, f[i - 1], f[i], residual=cfg.residual, down=cfg.down, **kind(i)) for i in range(1, len(f))]
        )
        # deepest first: level i takes f[i + 1] channels up to the grid and width of skip i; level 0 (full
        # resolution) may use last_conv
        last = {"conv": cfg.last_conv} if cfg.conv == "lean" and cfg.last_conv else {}
        self.decoder = nn.ModuleList(
            [UpBlock(d, f[i + 1], f[i], f[i], up=cfg.up, **(kind(i) | (last if i == 0 else {})))
             for i in reversed(range(len(f) - 1))]
        )
        self.head = pointwise_conv(d, f[0], cfg.out_channels)
        heads = [pointwise_conv(d, f[i], cfg.out_channels) for i in range(1, len(f) - 1)]
        self.aux_heads = nn.ModuleList(heads if cfg.deep_supervision else [])

    @property
    def config(self) -> dict:
        """The constructor's keyword arguments as plain values: ``LeanUNet(**model.config)`` rebuilds the model."""
        return dataclasses.asdict(self.cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        # channels-last throughout: the lean convs' native layout; on CPU it also makes the backward of the dense
        # first conv (few input channels) 20-70x faster than in NCDHW order
        x = x.contiguous(memory_format=torch.channels_last_3d if x.dim() == 5 else torch.channels_last)
        # In inference the activations a level no longer needs are handed on as memory for later results of the
        # same shape (a level's down output for its decoder merge, a skip for the decoder body that consumes it):
        # the decoder then allocates no activation-sized block, which on glibc's heap would land above the holes
        # that smaller tensors have fragmented (the peak at 4x128^3 grew by a third that way).
        reuse = not torch.is_grad_enabled() and isinstance(self.encoder[0].body, ConvNormAct) and not tracing()
        skips: list[torch.Tensor] = []
        spare: list[torch.Tensor] = []
        for level in self.encoder:
            if reuse:
                down: DownBlock = level  # type: ignore[assignment]  # ModuleList items are typed as Module
                a = down.down(down.pool(x))  # (N, f[i], *ceil(spatial / 2^i))
                x = down.body(a)
                spare.append(a)
                del a
            else:
                x = level(x)  # (N, f[i], *ceil(spatial / 2^i))
            skips.append(x)
        x = skips.pop()  # (N, f[-1], *coarsest)
        if reuse:
            spare.pop()
        outs = []
        for level in self.decoder:
            # merge, then body, so that the skip (popped: the list no longer holds it) is freed, or reused, before
            # the body's conv writes its output
            up: UpBlock = level  # type: ignore[assignment]  # ModuleList items are typed as Module
            skip = skips.pop()
            x = up.merge(x, skip, out=spare.pop() if reuse else None)
            x = up.body(x, out=skip) if reuse else up.body(x)  # (N, f[i], *skip i)
            del skip
            if self.aux_heads:
                outs.append(x)
        logits = self.head(x)  # (N, out_channels, *spatial)
        if not (self.training and self.aux_heads):
            return logits
        # outs[-2] is level 1 (half resolution), outs[0] the coarsest decoder level
        return [logits] + [head(out) for head, out in zip(self.aux_heads, outs[-2::-1], strict=True)]


@register
def lean_unet(**kwargs: Any) -> LeanUNet:
    """LeanUNet(spatial_dims, in_channels, out_channels, ...); ``conv="dense"`` builds its dense twin."""
    return LeanUNet(**kwargs)
