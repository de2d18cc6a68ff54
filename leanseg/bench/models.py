"""Weights, multiply-adds, CPU time and memory of whole models: ``leanseg models`` and ``leanseg bench unet``.

Multiply-adds are counted by forward hooks on the convolutions and linear layers (norms, activations and
interpolation are left out: they are a few operations per element next to hundreds per conv output), on the
``meta`` device, so counting a 128^3 model costs no memory and no time. fvcore and thop count only what they
know about, and neither knows LeanConv.
"""

from __future__ import annotations

import concurrent.futures
import gc
import math
import multiprocessing
import os
import platform
import resource
import time
from typing import Any

import torch
from torch import nn

from leanseg.errors import LeanSegError
from leanseg.models import available, create
from leanseg.nn.lean_conv import LeanConv
from leanseg.options import look_up_option

# Keyword arguments that make each registered model buildable for a given input; a model missing here gets
# spatial_dims and in_channels only.
EXAMPLE_KWARGS = {"lean_unet": {"out_channels": 3}, "lean_resnet": {"num_classes": 10}}


def parse_input(text: str) -> tuple[int, ...]:
    """'4x128x128x128' -> (4, 128, 128, 128): channels, then 2 or 3 spatial sizes."""
    try:
        shape = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) not in (3, 4) or min(shape) < 1:
        raise LeanSegError(f"--input must be CxHxW or CxDxHxW, positive integers (e.g. 4x128x128x128), got {text!r}")
    return shape


def _conv_macs(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    if isinstance(module, LeanConv):
        m = min(module.in_channels, module.out_channels)
        per_voxel = module.in_channels * module.out_channels + 2 * module.spatial_dims * m
        return out.numel() // module.out_channels * per_voxel
    if isinstance(module, nn.modules.conv._ConvTransposeNd):  # every input voxel scatters a kernel
        return inp.numel() * module.out_channels // module.groups * math.prod(module.kernel_size)
    if isinstance(module, nn.modules.conv._ConvNd):
        return out.numel() * module.in_channels // module.groups * math.prod(module.kernel_size)
    if isinstance(module, nn.Linear):
        return out.numel() * module.in_features
    return 0


def weights_and_macs(model: nn.Module, shape: tuple[int, ...]) -> tuple[int, int]:
    """(weights, multiply-adds of one forward pass) for one sample of ``shape`` (C, *spatial).

    ``model`` should live on the meta device (build it under ``with torch.device("meta")``); the count is the
    same on any device, only slower.
    """
    weights = sum(p.numel() for p in model.parameters())
    total = 0

    def hook(module, args, out):
        nonlocal total
        total += _conv_macs(module, args[0], out)

    device = next(model.parameters()).device
    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model.eval()(torch.empty((1, *shape), device=device))
    finally:
        for h in handles:
            h.remove()
    return weights, total


def _fmt(n: float, unit: str = "") -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(row):
        cells = [v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths, strict=True))]
        return " | ".join(cells)

    return "\n".join([line(header), "-+-".join("-" * w for w in widths), *map(line, rows)])


def models_table(input_shape: str = "4x128x128x128") -> str:
    """``leanseg models``: every registered model, lean and dense, with weights and multiply-adds for the input."""
    shape = parse_input(input_shape)
    rows = []
    for name in available():
        if name.startswith("monai_"):  # MONAI's networks have no lean/dense twin; bench unet compares them
            continue
        counts: dict[str, tuple[int, int] | Exception] = {}
        for conv in ("lean", "dense"):
            kwargs = {"spatial_dims": len(shape) - 1, "in_channels": shape[0], "conv": conv,
                      **EXAMPLE_KWARGS.get(name, {})}
            try:
                with torch.device("meta"):
                    counts[conv] = weights_and_macs(create(name, **kwargs), shape)
            except (TypeError, ValueError, RuntimeError) as err:  # a model that does not take this input
                counts[conv] = err
        for conv, c in counts.items():
            if isinstance(c, Exception):
                rows.append([name, conv, "-", "-", "-", f"n/a: {str(c).splitlines()[0][:60]}"])
                continue
            dense = counts["dense"]
            ratios = ["-", "-"] if isinstance(dense, Exception) else [f"{dense[i] / c[i]:.1f}x" for i in (0, 1)]
            rows.append([name, conv, f"{c[0]:,}", _fmt(c[1]), *ratios])
    header = ["model", "conv", "weights", "multiply-adds", "dense/this weights", "dense/this MACs"]
    return f"input {'x'.join(map(str, shape))} (batch 1)\n" + format_table(header, rows)


# ---------------------------------------------------------------------------------------------------------------
# leanseg bench unet


def bench_specs(in_channels: int, out_channels: int, features: tuple[int, ...]) -> dict[str, tuple[str, dict]]:
    """The compared 3D models as (builder, kwargs), picklable for the worker process. MONAI's at about our widths."""
    ours = {"spatial_dims": 3, "in_channels": in_channels, "out_channels": out_channels, "features": features}
    io = {"spatial_dims": 3, "in_channels": in_channels, "out_channels": out_channels}
    return {
        "LeanUNet": ("leanseg", {**ours, "conv": "lean"}),
        "LeanUNet dense twin": ("leanseg", {**ours, "conv": "dense"}),
        # two residual units per level is the setting of MONAI's tutorials; the widths are ours
        "MONAI UNet": ("UNet", {**io, "channels": features, "strides": (2,) * (len(features) - 1),
                                "num_res_units": 2, "norm": "instance"}),
        "MONAI SegResNet": ("SegResNet", {**io, "init_filters": features[0]}),  # 32-64-128-256
        "MONAI BasicUNet": ("BasicUNet", {**io, "features": (*features, features[0])}),
    }


def _build(builder: str, kwargs: dict) -> nn.Module:
    if builder == "leanseg":
        return create("lean_unet", **kwargs)
    import monai.networks.nets as nets

    return getattr(nets, builder)(**kwargs)


def _proc_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _measure(builder: str, kwargs: dict, shape: tuple[int, ...], repeats: int) -> tuple[float, float]:
    """In a fresh process: (best forward seconds, peak resident memory added by the first forward, in bytes).

    Inference as it is run (eval, inference_mode, batch 1). The peak is Linux's VmHWM, reset through
    /proc/self/clear_refs once the model and input exist; it is taken on the first forward, before the allocator
    holds freed blocks that later forwards reuse. Elsewhere ru_maxrss, which includes start-up. The timed
    forwards come after that first one, which also serves as warm-up (thread pools, BLAS, C kernels).
    """
    model = _build(builder, kwargs).eval()
    x = torch.randn(1, *shape)
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _proc_kb("VmRSS")
    except OSError:
        base = None
    with torch.inference_mode():
        model(x)
        peak = _proc_kb("VmHWM") if base is not None else None
        if peak is None or base is None:
            peak, base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, 0
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return min(times), 1024.0 * (peak - base)


def bench_unet(size: int = 128, in_channels: int = 4, out_channels: int = 3,
               features: tuple[int, ...] = (32, 64, 128, 256, 320), repeats: int = 1,
               names: list[str] | None = None) -> list[dict]:
    """Weights, multiply-adds, CPU forward time and peak memory for a size^3 patch; prints the table, returns rows."""
    if size < 16 or size % 16:
        raise LeanSegError(f"--size must be a multiple of 16 (MONAI's UNet and SegResNet need it), got {size}")
    specs = bench_specs(in_channels, out_channels, tuple(features))
    for name in names or []:
        look_up_option(name, specs, what="model")
    shape = (in_channels, size, size, size)
    rows: list[dict[str, Any]] = []
    spawn = multiprocessing.get_context("spawn")
    for name, (builder, kwargs) in specs.items():
        if names and name not in names:
            continue
        with torch.device("meta"):
            weights, macs = weights_and_macs(_build(builder, kwargs), shape)
        # one process per model: the peak memory of one must not hide in the high-water mark of another
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
            seconds, peak = pool.submit(_measure, builder, kwargs, shape, repeats).result()
        rows.append({"model": name, "weights": weights, "macs": macs, "seconds": seconds, "peak_bytes": peak})
        print(f"  measured {name}", flush=True)
    header = ["model", "weights", "multiply-adds", "CPU forward (s)", "peak memory (MiB)"]
    table = [[r["model"], f"{r['weights']:,}", _fmt(r["macs"]), f"{r['seconds']:.2f}",
              f"{r['peak_bytes'] / 2**20:,.0f}"] for r in rows]
    print(f"{'x'.join(map(str, shape))} patch, batch 1, float32 inference, best of {repeats} after a warm-up; "
          f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} cores, torch {torch.__version__}")
    print(format_table(header, table))
    return rows
