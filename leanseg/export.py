"""``leanseg.export``: a checkpoint as ONNX (standard operators, for onnxruntime & co.) or as a torch.export ``.pt2``.

ONNX has no lean convolution, so each ``LeanConv`` of a copy of the model is replaced by :class:`OnnxLeanConv`,
the same operator written with standard ONNX operators: a 1x1 ``Conv`` plus the 5/7-point stencil, either as a
depthwise ``Conv`` whose 3x3(x3) kernel is zero but for the 2d taps (``stencil="depthwise"``, the default) or as
2d shifted slices multiplied and added (``stencil="shifted"``). Measured with onnxruntime 1.31 on this project's
2-core CPU (``leanseg bench export``, BraTS-width LeanUNet, 1x4x64^3, float32): the depthwise form runs faster,
because onnxruntime's depthwise Conv reads each input voxel once for all its taps, while every shifted slice is
a separate strided copy plus a multiply and an add over the whole tensor (about 3 passes per tap), and its graph
is 3x larger. The norms are exported as ``InstanceNormalization`` (the plain PyTorch path, ``leanseg.nn.ops.tracing``).

The network's output is the logits, as in PyTorch; the model's metadata (``metadata_props``) carries what a user
needs to run it: ``leanseg`` (the whole checkpoint config as JSON) and, one JSON value each, ``channels``,
``labels`` or ``regions``, ``activation`` (sigmoid for regions, softmax for classes), ``normalization``,
``window``, ``spatial_dims`` and ``postprocess``.

``.pt2``: ``torch.export`` of the model with the CPU fast path as the custom op ``leanseg::lean_conv``
(``leanseg.nn.ops``); loading it needs ``import leanseg.nn.ops`` to register the op. The config travels as the
extra file ``leanseg.json``.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from leanseg.checkpoint import CheckpointMeta
from leanseg.errors import LeanSegError
from leanseg.nn import LeanConv
from leanseg.options import look_up_option, parse_window

FORMATS = {".onnx": "onnx", ".pt2": "pt2"}
STENCILS = ("depthwise", "shifted")
OPSET = 17  # onnxruntime >= 1.11 and every current runtime read it; InstanceNormalization and Conv are older
_CONV = {2: F.conv2d, 3: F.conv3d}


class OnnxLeanConv(nn.Module):
    """A ``LeanConv`` in standard operators (same weights, same result to float rounding)."""

    def __init__(self, conv: LeanConv, stencil: str = "depthwise"):
        super().__init__()
        self.stencil_as = look_up_option(stencil, STENCILS, what="stencil")
        d, m = conv.spatial_dims, conv.stencil.shape[0]
        self.d, self.m, self.stride = d, m, conv.stride
        w = conv.weight.detach()
        self.register_buffer("weight", w.reshape(*w.shape, *([1] * d)).clone())  # (C_out, C_in, 1, 1[, 1])
        self.register_buffer("bias", conv.bias.detach().clone() if conv.bias is not None else None)
        s = conv.stencil.detach()
        if self.stencil_as == "depthwise":
            kernel = s.new_zeros((m, 1) + (3,) * d)  # zero but for the 2d taps of the stencil
            for k in range(2 * d):
                tap = [1] * d
                tap[k // 2] = 0 if k % 2 == 0 else 2
                kernel[(slice(None), 0) + tuple(tap)] = s[:, k]
            self.register_buffer("taps", kernel)
        else:
            self.register_buffer("taps", s.t().reshape(2 * d, 1, m, *([1] * d)).clone())  # (2d, 1, m, 1, 1[, 1])

    weight: torch.Tensor
    bias: torch.Tensor | None
    taps: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C_in, *spatial)
        conv = _CONV[self.d]
        y = conv(x, self.weight, self.bias, stride=self.stride)  # (N, C_out, *out)
        xm = x[:, : self.m]
        if self.stencil_as == "depthwise":
            s = conv(xm, self.taps, stride=self.stride, padding=1, groups=self.m)
        else:
            s = self._shifted(xm, y.shape[2:])
        if self.m == y.shape[1]:
            return y + s
        return torch.cat([y[:, : self.m] + s, y[:, self.m:]], 1)

    def _shifted(self, xm: torch.Tensor, out_shape) -> torch.Tensor:
        xp = F.pad(xm, (1, 1) * self.d)  # (N, m, *spatial + 2)
        total = torch.zeros(())
        for k in range(2 * self.d):
            axis, sign = k // 2, (-1 if k % 2 == 0 else 1)
            starts = [1 + (sign if b == axis else 0) for b in range(self.d)]
            both: tuple[slice, ...] = (slice(None), slice(None))
            view = xp[both + tuple(slice(s, None, self.stride) for s in starts)]
            # cut to the output's sizes, kept symbolic (not int()) so the exported graph takes any size
            view = view[both + tuple(slice(0, n) for n in out_shape)]
            term = view * self.taps[k]
            total = term if k == 0 else total + term
        return total


def onnx_ready(model: nn.Module, stencil: str = "depthwise") -> nn.Module:
    """A copy of ``model`` in eval mode with every LeanConv replaced by :class:`OnnxLeanConv`."""
    model = copy.deepcopy(model).eval()
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, LeanConv):
                setattr(module, child_name, OnnxLeanConv(child, stencil))
    return model


def metadata(meta: CheckpointMeta) -> dict[str, str]:
    """The ONNX ``metadata_props``: the whole config, and its fields a runtime needs, one JSON value each."""
    config = meta.to_json()
    labels = meta.label_manager
    props = {"leanseg": json.dumps(config), "activation": labels.activation,
             labels.kind if labels.kind == "regions" else "labels": json.dumps(labels.to_json()[
                 "regions" if labels.sigmoid else "labels"]),
             "channels": json.dumps(list(meta.channels)), "normalization": json.dumps(meta.normalization.to_json()),
             "window": json.dumps(list(meta.window) if meta.window else None),
             "spatial_dims": json.dumps(meta.spatial_dims), "postprocess": json.dumps(meta.postprocess.to_json()),
             "spacing": json.dumps(list(meta.spacing) if meta.spacing else None)}
    return props


def _example(meta: CheckpointMeta, shape: int | Sequence[int] | None) -> torch.Tensor:
    dims, channels = meta.spatial_dims, meta.in_channels
    if dims not in (2, 3) or channels is None:
        raise LeanSegError(f"the checkpoint's model_kwargs give no spatial_dims (2 or 3) and in_channels "
                           f"({meta.model_kwargs}); cannot build an example input")
    # a small example: the traced graph does not depend on it (sizes are dynamic), only the trace time does
    sizes = parse_window(shape if shape is not None else 32, dims, what="input_shape")
    return torch.randn(2, channels, *sizes)  # batch 2: torch.export specialises sizes 0 and 1


def export(checkpoint, output: str | os.PathLike, stencil: str = "depthwise",
           input_shape: int | Sequence[int] | None = None, opset: int = OPSET) -> Path:
    """Write ``checkpoint`` (a path, or a ``(model, meta)`` pair) as ``.onnx`` or ``.pt2``; returns the path.

    ``stencil``: "depthwise" or "shifted" (ONNX only, see the module notes). ``input_shape``: the spatial size of
    the example input the export traces (default 32 per axis); batch and spatial sizes stay dynamic.
    """
    from leanseg.checkpoint import load_model
    from leanseg.io import atomic_path, check_output, full_suffix

    output = Path(output)
    kind = FORMATS.get(full_suffix(output))
    if kind is None:
        raise LeanSegError(f"{output}: unknown export format {full_suffix(output) or '(no suffix)'!r}; "
                           f"use {' or '.join(FORMATS)}")
    if isinstance(checkpoint, str | os.PathLike):
        check_output(output, [checkpoint])
        net, meta = load_model(checkpoint)
    else:
        check_output(output, [])
        net, meta = checkpoint
        meta = meta if isinstance(meta, CheckpointMeta) else CheckpointMeta.from_json(meta, source="model meta")
    stencil = look_up_option(stencil, STENCILS, what="stencil")
    x = _example(meta, input_shape)
    names = ["D", "H", "W"][-(x.ndim - 2):]
    with atomic_path(output) as tmp:
        try:
            if kind == "onnx":
                _export_onnx(onnx_ready(net, stencil), x, tmp, names, metadata(meta), opset)
            else:
                _export_pt2(net.eval(), x, tmp, names, meta)
        except (LeanSegError, KeyboardInterrupt):
            raise
        except Exception as err:  # the tracer's own errors (a 1-voxel example through a U-Net's pooling...)
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise LeanSegError(f"{output}: cannot trace the model on an example of {list(x.shape[2:])} voxels "
                               f"({first}); a larger --input-shape (default 32) may help") from None
    return output


def _export_onnx(model: nn.Module, x: torch.Tensor, path: Path, names: list[str], props: dict[str, str],
                 opset: int) -> None:
    try:
        import onnx
    except ImportError:
        raise LeanSegError("ONNX export needs the onnx package: pip install 'leanseg[export]'") from None
    axes = {0: "N"} | {i + 2: n for i, n in enumerate(names)}
    # leanseg's models make activations channels-last (a memory layout; the values are the same), which the
    # TorchScript exporter refuses; ONNX tensors have no layout, so the call exports as the identity
    torch.onnx.register_custom_op_symbolic("aten::contiguous", _layout_only, opset)
    with torch.no_grad():
        # the TorchScript-based exporter: the dynamo one needs onnxscript, and this graph has only standard ops
        torch.onnx.export(model, (x,), str(path), input_names=["image"], output_names=["logits"], opset_version=opset,
                          dynamic_axes={"image": axes, "logits": axes}, dynamo=False)
    proto = onnx.load(str(path))
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "leanseg"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def _layout_only(g, tensor, memory_format):
    return tensor


def _export_pt2(model: nn.Module, x: torch.Tensor, path: Path, names: list[str], meta: CheckpointMeta) -> None:
    import leanseg.nn.ops  # noqa: F401  (registers leanseg::lean_conv, which the exported graph calls)

    # batch and sizes free, with whatever relations the model's forward imposes (Dim.AUTO infers them)
    dims = {i: torch.export.Dim.AUTO for i in [0, *range(2, x.ndim)]}
    try:
        program = torch.export.export(model, (x,), dynamic_shapes=(dims,))
    except Exception as err:  # a model whose forward cannot be traced with free sizes: export the example's sizes
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LeanSegError(f"torch.export failed on {type(model).__name__} ({first})") from None
    torch.export.save(program, str(path), extra_files={"leanseg.json": json.dumps(meta.to_json())})


__all__ = ["OnnxLeanConv", "export", "metadata", "onnx_ready"]
