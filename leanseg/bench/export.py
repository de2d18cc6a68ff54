"""``leanseg bench export``: onnxruntime CPU time of an exported LeanUNet beside leanseg's own CPU fast path."""

from __future__ import annotations

import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _median_seconds(run, repeats: int) -> float:
    run()  # warm-up: allocations, the C kernel's first load, onnxruntime's first-run planning
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def bench_export(size: int = 64, in_channels: int = 4, out_channels: int = 3,
                 features: tuple[int, ...] = (32, 64, 128, 256, 320), repeats: int = 3) -> list[dict]:
    """Forward time of one ``in_channels x size^3`` patch, batch 1, float32: leanseg's fast path and the ONNX
    export (both stencil forms) on onnxruntime's CPU provider with as many threads as torch uses."""
    import onnxruntime as ort

    from leanseg.export import STENCILS, export
    from leanseg.models import create

    torch.manual_seed(0)
    net = create("lean_unet", spatial_dims=3, in_channels=in_channels, out_channels=out_channels,
                 features=features).eval()
    x = torch.randn(1, in_channels, size, size, size)
    with torch.no_grad():
        ref = net(x)
    with torch.no_grad():
        rows: list[dict] = [{"path": "leanseg fast path (PyTorch + C kernel)", "max |diff|": 0.0,
                 "seconds": _median_seconds(lambda: net(x), repeats)}]
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as folder, torch.no_grad():
        for stencil in STENCILS:
            path = export((net, {"model": "lean_unet", "model_kwargs": net.config,
                                 "regions": {f"r{i}": [i + 1] for i in range(out_channels)}}),
                          Path(folder) / f"{stencil}.onnx", stencil=stencil, input_shape=32)
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            feed = {"image": x.numpy()}
            out = session.run(None, feed)[0]
            rows.append({"path": f"onnxruntime {ort.__version__}, stencil={stencil}",
                         "max |diff|": float(np.abs(out - ref.numpy()).max()),
                         "seconds": _median_seconds(lambda s=session, f=feed: s.run(None, f), repeats)})
    print(f"{in_channels}x{size}^3 patch, batch 1, float32, LeanUNet widths {'-'.join(map(str, features))}; "
          f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; median of {repeats}")
    width = max(len(str(r["path"])) for r in rows)
    base = float(rows[0]["seconds"])
    print(f"{'path':<{width}} | forward (s) | vs fast path | max |diff| vs leanseg")
    print(f"{'-' * width}-+-------------+--------------+----------------------")
    for r in rows:
        print(f"{r['path']:<{width}} | {r['seconds']:11.3f} | {float(r['seconds']) / base:11.2f}x | "
              f"{r['max |diff|']:.2e}")
    return rows
