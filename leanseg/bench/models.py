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
import statistics
import time
from typing import Any

import torch
from torch import nn

from leanseg.errors import LeanSegError
from leanseg.models import available, create
from leanseg.models._registry import registered_by
from leanseg.nn.lean_conv import LeanConv
from leanseg.options import look_up_option

# Keyword arguments that make each registered model buildable for a given input, besides spatial_dims and
# in_channels; a model missing here gets 3 outputs (the BraTS regions).
EXAMPLE_KWARGS = {"lean_resnet": {"num_classes": 10}}
# the models with a lean/dense twin (their ``conv`` option); every other model is listed once
TWINS = ("lean_unet", "lean_resnet")


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
    """``leanseg models``: every registered model with its weights and multiply-adds for the input; leanseg's own
    networks lean and dense, with the ratio."""
    shape = parse_input(input_shape)
    rows = []
    for name in available():
        if name == "averaged":
            rows.append([name, "-", "-", "-", "-", "-", "leanseg: the mean of other models (crossval --ensemble)"])
            continue
        convs: tuple[str | None, ...] = ("lean", "dense") if name in TWINS else (None,)
        counts: dict[str | None, tuple[int, int] | str] = {}
        for conv in convs:
            kwargs: dict[str, int | str] = {"spatial_dims": len(shape) - 1, "in_channels": shape[0],
                      **EXAMPLE_KWARGS.get(name, {"out_channels": 3})}
            if conv is not None:
                kwargs["conv"] = conv
            try:
                with torch.device("meta"):
                    counts[conv] = weights_and_macs(create(name, **kwargs), shape)
            except (TypeError, ValueError, RuntimeError, LeanSegError) as err:  # a model that does not take this input
                counts[conv] = f"does not take this input ({str(err).splitlines()[0][:60]})"
        dense = counts.get("dense")
        for conv, c in counts.items():
            if isinstance(c, str):
                rows.append([name, conv or "-", "-", "-", "-", "-", c])
                continue
            ratios = [f"{dense[i] / c[i]:.1f}x" for i in (0, 1)] if isinstance(dense, tuple) else ["-", "-"]
            rows.append([name, conv or "-", f"{c[0]:,}", _fmt(c[1]), *ratios, _origin(name)])
    header = ["model", "conv", "weights", "multiply-adds", "dense/this weights", "dense/this MACs", "from"]
    return f"input {'x'.join(map(str, shape))} (batch 1)\n" + format_table(header, rows)


def _origin(name: str) -> str:
    module = registered_by(name) or ""
    if name.startswith("monai_"):
        return "MONAI"
    return "leanseg" if module.partition(".")[0] == "leanseg" else module


# ---------------------------------------------------------------------------------------------------------------
# leanseg bench unet


def bench_specs(in_channels: int, out_channels: int, features: tuple[int, ...]) -> dict[str, tuple[str, dict, str]]:
    """The compared 3D models as (registry name, kwargs, precision), picklable for the worker process; MONAI's
    networks through the registry's monai_* entries, at about our widths."""
    io = {"spatial_dims": 3, "in_channels": in_channels, "out_channels": out_channels}
    ours = {**io, "features": features}
    return {
        "LeanUNet": ("lean_unet", {**ours, "conv": "lean"}, "fp32"),
        "LeanUNet bf16": ("lean_unet", {**ours, "conv": "lean"}, "bf16"),
        "LeanUNet dense twin": ("lean_unet", {**ours, "conv": "dense"}, "fp32"),
        # two residual units per level is the setting of MONAI's tutorials; the widths are ours
        "MONAI UNet": ("monai_unet", {**ours, "num_res_units": 2, "norm": "instance"}, "fp32"),
        "MONAI SegResNet": ("monai_segresnet", {**io, "init_filters": features[0]}, "fp32"),  # 32-64-128-256
        "MONAI BasicUNet": ("monai_basicunet", {**io, "features": features}, "fp32"),
    }


# the training-step table: the lean network, its twin and the strongest MONAI network of the inference table
TRAIN_ROWS = ("LeanUNet", "LeanUNet dense twin", "MONAI SegResNet")


def _build(name: str, kwargs: dict, precision: str = "fp32") -> nn.Module:
    model = create(name, **kwargs)
    if precision != "fp32":
        from leanseg.nn.precision import prepare

        prepare(model, precision)
    return model


def _proc_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> int | None:
    """Reset Linux's VmHWM to the current resident size (/proc/self/clear_refs) and return that size in kB."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    return _proc_kb("VmRSS")


def _peak_bytes(base: int | None) -> float:
    """Resident memory added since _reset_peak; elsewhere ru_maxrss, which includes start-up."""
    peak = _proc_kb("VmHWM") if base is not None else None
    if peak is None or base is None:
        peak, base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, 0
    return 1024.0 * (peak - base)


def _measure(builder: str, kwargs: dict, shape: tuple[int, ...], repeats: int, precision: str = "fp32",
             train_batch: int = 0) -> tuple[float, float, float]:
    """In a fresh process: (median seconds, median CPU seconds of all threads, peak resident memory added by the
    first pass, in bytes). CPU time is the figure to compare on a machine shared with other jobs: wall time there
    includes the time other processes hold the cores.

    train_batch 0: inference as it is run (eval, inference_mode, batch 1). Otherwise one training step on a batch
    of that many: forward, a loss (mean of the logits: the network's cost, not the loss's), backward. The peak
    is Linux's VmHWM, reset through /proc/self/clear_refs once the model and input exist; it is taken on the
    first pass, before the allocator holds freed blocks that later passes reuse. The timed passes come after
    that first one, which also serves as warm-up (thread pools, BLAS, C kernels). Every row gets the allocator
    setting of leanseg's CPU path (leanseg.nn._cext.tune_malloc), so that it helps or hinders all alike.
    """
    from leanseg.nn import _cext

    model = _build(builder, kwargs, precision)
    if train_batch:
        model.train()
        x = torch.randn(train_batch, *shape)

        def step():
            model.zero_grad(set_to_none=True)
            model(x).float().mean().backward()
    else:
        model.eval()
        x = torch.randn(1, *shape)

        def step():
            with torch.inference_mode():
                model(x)
    _cext.tune_malloc()  # where leanseg's first forward applies it: after the model and its input exist
    base = _reset_peak()
    step()
    peak = _peak_bytes(base)
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(times), statistics.median(cpu), peak


def _run(fn, *args):
    """fn(*args) in a fresh spawned process: the peak memory of one row must not hide in another's high-water mark.
    (nan, nan) when the process dies (the kernel's out-of-memory killer, on a machine shared with other jobs)."""
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            return pool.submit(fn, *args).result()
        except concurrent.futures.process.BrokenProcessPool:
            print("  the worker process was killed (out of memory?)", flush=True)
            return math.nan, math.nan, math.nan


def bench_unet(size: int = 128, in_channels: int = 4, out_channels: int = 3,
               features: tuple[int, ...] = (32, 64, 128, 256, 320), repeats: int = 1,
               names: list[str] | None = None, train_batch: int = 2, train_repeats: int = 1) -> list[dict]:
    """Weights, multiply-adds, CPU forward time and peak memory for a size^3 patch, then (train_batch > 0) the
    time and peak memory of one training step on train_batch patches; prints the tables, returns the rows."""
    from leanseg.bench import check_counts

    check_counts(in_channels=in_channels, out_channels=out_channels, features=list(features), repeats=repeats,
                 train_repeats=train_repeats)
    check_counts(0, train_batch=train_batch)
    if size < 16 or size % 16:
        raise LeanSegError(f"--size must be a multiple of 16 (MONAI's UNet and SegResNet need it), got {size}")
    specs = bench_specs(in_channels, out_channels, tuple(features))
    for name in names or []:
        look_up_option(name, specs, what="model")
    shape = (in_channels, size, size, size)
    rows: list[dict[str, Any]] = []
    for name, (builder, kwargs, precision) in specs.items():
        if names and name not in names:
            continue
        with torch.device("meta"):
            weights, macs = weights_and_macs(_build(builder, kwargs), shape)
        seconds, cpu, peak = _run(_measure, builder, kwargs, shape, repeats, precision)
        rows.append({"model": name, "weights": weights, "macs": macs, "seconds": seconds, "cpu_seconds": cpu,
                     "peak_bytes": peak, "pass": "inference"})
        print(f"  measured {name}", flush=True)
    header = ["model", "weights", "multiply-adds", "forward, wall (s)", "CPU time (s)", "peak memory (MiB)"]
    table = [[r["model"], f"{r['weights']:,}", _fmt(r["macs"]), f"{r['seconds']:.2f}", f"{r['cpu_seconds']:.2f}",
              f"{r['peak_bytes'] / 2**20:,.0f}"] for r in rows]
    where = (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {os.cpu_count()} "
             f"cores, torch {torch.__version__}")
    print(f"{'x'.join(map(str, shape))} patch, batch 1, inference (float32 unless marked), median of {repeats} "
          f"after a warm-up; CPU time: all threads; {where}; load average {os.getloadavg()[0]:.1f}")
    print(format_table(header, table))
    train = [n for n in TRAIN_ROWS if not names or n in names] if train_batch else []
    train_rows = []
    for name in train:
        builder, kwargs, _ = specs[name]
        seconds, cpu, peak = _run(_measure, builder, kwargs, shape, train_repeats, "fp32", train_batch)
        train_rows.append({"model": name, "seconds": seconds, "cpu_seconds": cpu, "peak_bytes": peak,
                           "pass": "train"})
        print(f"  measured {name} (training step)", flush=True)
    if train_rows:
        lean = train_rows[0] if train_rows[0]["model"] == "LeanUNet" else None
        header = ["model", "fwd+bwd, wall (s)", "CPU time (s)", "peak memory (MiB)"] + (
            ["time / LeanUNet", "CPU time / LeanUNet", "memory / LeanUNet"] if lean else [])
        table = [[r["model"], f"{r['seconds']:.2f}", f"{r['cpu_seconds']:.2f}", f"{r['peak_bytes'] / 2**20:,.0f}"]
                 + ([f"{r['seconds'] / lean['seconds']:.2f}x", f"{r['cpu_seconds'] / lean['cpu_seconds']:.2f}x",
                     f"{r['peak_bytes'] / lean['peak_bytes']:.2f}x"] if lean else []) for r in train_rows]
        print(f"\ntraining step: {train_batch}x{'x'.join(map(str, shape))}, float32, forward + backward of the "
              f"mean of the logits, median of {train_repeats} after a warm-up step; {where}; load average "
              f"{os.getloadavg()[0]:.1f}")
        print(format_table(header, table))
    return rows + train_rows
