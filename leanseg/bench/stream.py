"""``leanseg bench stream``: predict a synthetic SEG-Y cube larger than is comfortable in RAM, in streaming mode.

The cube is written to a temporary folder (removed afterwards), predicted with ``leanseg.predict`` by a small
lean network, and the output SEG-Y is checked. Reported: cube size, wall time, throughput and the peak resident
memory of the process (``ru_maxrss``), which must stay under 1.5 GB whatever the cube size. The network's own
forward time is measured apart (hooks), so the throughput of the path around it (reading, normalising, stitching,
decoding, writing) is reported too: that is what this bench is for, a real model's compute comes on top.
"""

from __future__ import annotations

import math
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import segyio
import torch
from torch import nn
from tqdm.auto import tqdm

from leanseg.nn import LeanConv

_TRACE_HEADER = 240


class TinyLeanNet(nn.Module):
    """Two lean convolutions (receptive field 5 voxels): the cost of I/O and stitching shows, not the network's."""

    def __init__(self, hidden: int = 4, out_channels: int = 2):
        super().__init__()
        self.net = nn.Sequential(LeanConv(3, 1, hidden, bias=True), nn.ReLU(), LeanConv(3, hidden, out_channels,
                                                                                         bias=True))

    def forward(self, x):  # (N, 1, I, X, S)
        return self.net(x)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def write_cube(path: Path, inlines: int, xlines: int, samples: int, progress: bool = True) -> None:
    """A synthetic post-stack cube: dipping reflectors plus noise, IEEE float, inline-sorted, inline by inline."""
    spec = segyio.spec()
    spec.ilines, spec.xlines, spec.offsets = list(range(1, inlines + 1)), list(range(1, xlines + 1)), [1]
    spec.samples, spec.format, spec.sorting = list(range(samples)), 5, segyio.TraceSortingFormat.INLINE_SORTING
    rng = np.random.default_rng(0)
    t = np.arange(samples, dtype=np.float32)
    with segyio.create(str(path), spec) as f:
        f.bin.update(hdt=4000, hns=samples)
        for i in tqdm(range(inlines), desc="writing cube", unit="inline", disable=not progress):
            shift = (0.05 * i + 0.03 * np.arange(xlines, dtype=np.float32))[:, None]
            section = np.sin(0.2 * (t[None] + shift)) + 0.1 * rng.standard_normal((xlines, samples), np.float32)
            for j in range(xlines):
                trace = i * xlines + j
                f.header[trace] = {segyio.TraceField.INLINE_3D: i + 1, segyio.TraceField.CROSSLINE_3D: j + 1,
                                   segyio.TraceField.TRACE_SAMPLE_COUNT: samples}
                f.trace[trace] = section[j]


def run(size_gb: float = 4.0, xlines: int = 1024, samples: int = 512, window: tuple[int, ...] = (32, 256, 256),
        slab: int = 28, halo: int = 2, overlap: float = 0.0625, workdir: str | None = None, keep: bool = False,
        progress: bool = True) -> dict:
    import leanseg.inference  # noqa: F401  (MONAI's sliding window: imported before the clock starts)
    from leanseg.bench import check_counts, check_number, check_workdir
    from leanseg.prediction import predict

    check_number("size_gb", size_gb, 1e-6, 1e4)
    check_counts(xlines=xlines, samples=samples, window=list(window), slab=slab)
    check_counts(0, halo=halo)
    check_number("overlap", overlap, 0.0, 0.9)
    check_workdir(workdir)
    inlines = max(1, math.ceil(size_gb * 1e9 / (xlines * (samples * 4 + _TRACE_HEADER))))
    folder = Path(tempfile.mkdtemp(prefix="leanseg-bench-stream-", dir=workdir))
    try:
        cube, out = folder / "cube.sgy", folder / "pred.sgy"
        start = time.perf_counter()
        write_cube(cube, inlines, xlines, samples, progress)
        written = time.perf_counter() - start
        gb = cube.stat().st_size / 1e9
        rss_before = peak_rss_mb()
        torch.manual_seed(0)
        net = TinyLeanNet().eval()
        forward = {"seconds": 0.0, "t0": 0.0}
        net.register_forward_pre_hook(lambda module, args: forward.update(t0=time.perf_counter()))
        net.register_forward_hook(lambda module, args, out: forward.update(
            seconds=forward["seconds"] + time.perf_counter() - forward["t0"]))
        meta = {"model": "tiny_lean_net", "model_kwargs": {"spatial_dims": 3, "in_channels": 1, "out_channels": 2},
                "normalization": "zscore", "labels": {"background": 0, "event": 1}}
        start = time.perf_counter()
        predict(cube, (net, meta), output=out, window=window, overlap=overlap, slab=slab, halo=halo,
                progress=progress)
        seconds = time.perf_counter() - start
        with segyio.open(str(out), ignore_geometry=True) as f:
            assert f.tracecount == inlines * xlines
            values = np.unique(f.trace.raw[f.tracecount // 2])
        # seconds to the millisecond: a tiny cube's network time is under 0.1 s with the small-channel kernels
        result: dict[str, Any] = {
            "cube": f"{inlines} x {xlines} x {samples} (inline x xline x sample), float32",
            "cube_gb": round(gb, 3), "write_cube_s": round(written, 3), "predict_s": round(seconds, 3),
            "throughput_mvox_s": round(inlines * xlines * samples / seconds / 1e6, 2),
            "throughput_mb_s": round(gb * 1e3 / seconds, 1),
            "network_s": round(forward["seconds"], 3),
            "path_s": round(seconds - forward["seconds"], 3),
            "path_mb_s": round(gb * 1e3 / (seconds - forward["seconds"]), 1),
            "peak_rss_mb_before_predict": round(rss_before, 1), "peak_rss_mb": round(peak_rss_mb(), 1),
            "labels_in_middle_trace": [int(v) for v in values],
        }
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
    result["peak_rss_ok"] = result["peak_rss_mb"] < 1536
    for key, value in result.items():
        print(f"{key:>28}: {value}")
    return result
