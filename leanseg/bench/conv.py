"""``leanseg bench conv``: the lean operator against the dense 3x3(x3) convolution, and its distance to the floor.

Rows (per spatial dims and channel count C, square layers C -> C, stride 1):
  dense      nn.Conv 3x3(x3), in the faster of its two memory layouts (contiguous / channels-last)
  dw+1x1     depthwise 3x3(x3) + 1x1 as two PyTorch convolutions (the usual "separable" alternative)
  reference  leanseg's plain-PyTorch lean convolution
  compiled   torch.compile of the reference (CUDA only; on CPU the compile time per shape is prohibitive)
  fast       leanseg's fast path (CPU: BLAS GEMM + C stencil; CUDA: the Triton kernels of kernels3d)
The floor is max(bytes that must move / measured copy bandwidth, flops / measured GEMM rate) for the lean layer:
forward reads x and writes y; forward+backward also reads dy and x again and writes dx. The GEMM rate is the better
of the 1x1's own matrix product and a square 1024^2 product: BLAS runs the skinny 1x1 product (few channels, many
voxels) far below the machine's rate on some CPUs (a third of it at C = 16 on an AMD EPYC), and a floor taken from
it alone is one a fused kernel can beat.
All ratios come from one run on one machine.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from leanseg.nn.functional import lean_conv, lean_conv_reference

# Sizes of the CPU targets (3D) and 2D sizes with a similar number of elements.
CPU_SIZES = {3: {16: 64, 32: 64, 64: 48, 128: 32}, 2: {16: 512, 32: 512, 64: 384, 128: 256}}
GPU_SIZE = {3: 128, 2: 1024}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _timer(device: torch.device, repeats: int) -> Callable[[Callable[[], object]], float]:
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def best_ms(fn) -> float:
        for _ in range(2):  # warm-up: allocations, kernel selection, autotuning, compilation
            fn()
        sync()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
        return 1e3 * min(times)

    return best_ms


def _fwd_bwd(fn, x, params):
    """One forward and backward. The output gradient is made once, in the warm-up: in a network it arrives from the
    next layer, and filling a new one each call (a write of the whole output) is no part of the layer's cost."""
    grad: list[torch.Tensor] = []

    def run():
        for p in (x, *params):
            p.grad = None
        y = fn()
        if not grad:
            grad.append(torch.ones_like(y))
        y.backward(grad[0])

    return run


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def bench_one(d: int, c: int, size: int, batch: int, dtype: torch.dtype, device: torch.device, repeats: int) -> dict:
    """Times (ms) and floors for one layer shape; every number in the returned row is measured here."""
    best_ms = _timer(device, repeats)
    g = torch.Generator().manual_seed(0)
    shape = (batch, c) + (size,) * d
    fmt = torch.channels_last_3d if d == 3 else torch.channels_last
    conv = F.conv3d if d == 3 else F.conv2d
    x_cl = torch.randn(shape, generator=g).to(device, dtype).contiguous(memory_format=fmt).requires_grad_(True)
    x_nc = x_cl.detach().contiguous().requires_grad_(True)
    w_dense = (torch.randn((c, c) + (3,) * d, generator=g) * 0.05).to(device, dtype).requires_grad_(True)
    w_dw = (torch.randn((c, 1) + (3,) * d, generator=g) * 0.1).to(device, dtype).requires_grad_(True)
    w_pw = (torch.randn((c, c) + (1,) * d, generator=g) * 0.1).to(device, dtype).requires_grad_(True)
    w = (torch.randn(c, c, generator=g) * 0.1).to(device, dtype).requires_grad_(True)
    s = (torch.randn(c, 2 * d, generator=g) * 0.1).to(device, dtype).requires_grad_(True)

    fns = {
        "dense/contig": (lambda: conv(x_nc, w_dense, padding=1), x_nc, [w_dense]),
        "dense/cl": (lambda: conv(x_cl, w_dense, padding=1), x_cl, [w_dense]),
        "dw+1x1": (lambda: conv(conv(x_cl, w_dw, padding=1, groups=c), w_pw), x_cl, [w_dw, w_pw]),
        "reference": (lambda: lean_conv_reference(x_cl, w, s), x_cl, [w, s]),
        "fast": (lambda: lean_conv(x_cl, w, s), x_cl, [w, s]),
    }
    if device.type == "cuda":
        compiled = torch.compile(lean_conv_reference)
        fns["compiled"] = (lambda: compiled(x_cl, w, s), x_cl, [w, s])

    row: dict[str, Any] = {"d": d, "C": c, "size": size, "batch": batch}
    for name, (fn, x, params) in fns.items():
        with torch.no_grad():
            row[f"{name} fwd"] = best_ms(fn)
        row[f"{name} f+b"] = best_ms(_fwd_bwd(fn, x, params))
    for kind in ("fwd", "f+b"):
        layouts = {k: row[f"dense/{k} {kind}"] for k in ("contig", "cl")}
        row[f"dense {kind}"] = min(layouts.values())
        row[f"dense layout {kind}"] = min(layouts, key=lambda k: layouts[k])

    # The floor: bandwidth from a copy of the same tensor, GEMM rate from the 1x1's own matrix product.
    with torch.no_grad():
        xv = x_cl.detach().movedim(1, -1).reshape(-1, c)
        out = torch.empty_like(xv)
        copy_ms = best_ms(lambda: out.copy_(xv))
        gemm_ms = best_ms(lambda: torch.mm(xv, w.detach().t(), out=out))
        sq = torch.randn(1024, 1024, generator=g).to(device, dtype)
        sq_out = torch.empty_like(sq)
        square_ms = best_ms(lambda: torch.mm(sq, sq, out=sq_out))
    nbytes = xv.numel() * xv.element_size()
    bandwidth = 2 * nbytes / (copy_ms / 1e3)  # bytes/s: a copy reads and writes
    gemm_rate = max(2 * xv.shape[0] * c * c / (gemm_ms / 1e3), 2 * 1024**3 / (square_ms / 1e3))  # flop/s
    flops = 2 * xv.shape[0] * (c * c + 2 * d * c)
    row["floor fwd"] = 1e3 * max(2 * nbytes / bandwidth, flops / gemm_rate)
    row["floor f+b"] = 1e3 * max(5 * nbytes / bandwidth, 3 * flops / gemm_rate)
    row["bandwidth GB/s"] = bandwidth / 1e9
    row["gemm GFLOP/s"] = gemm_rate / 1e9
    row["weights dense"] = c * c * 3**d
    row["weights lean"] = c * c + 2 * d * c
    return row


def format_table(rows: list[dict], device: torch.device) -> str:
    methods = ["dense", "dw+1x1", "reference"] + (["compiled"] if device.type == "cuda" else []) + ["fast"]
    head = ["d", "C", "size", "weights dense/lean", "pass"]
    head += [f"{m} ms (x)" if m != "dense" else "dense ms [layout]" for m in methods]
    head += ["floor ms", "fast/floor"]
    lines = []
    for r in rows:
        for kind, label in (("fwd", "fwd"), ("f+b", "fwd+bwd")):
            cells = [
                str(r["d"]),
                str(r["C"]),
                f"{r['batch']}x{r['size']}^{r['d']}",
                f"{r['weights dense']:,}/{r['weights lean']:,}",
                label,
            ]
            dense = r[f"dense {kind}"]
            for m in methods:
                t = r[f"{m} {kind}"]
                cells.append(
                    f"{t:.2f} [{r[f'dense layout {kind}']}]" if m == "dense" else f"{t:.2f} ({dense / t:.1f}x)"
                )
            cells += [f"{r[f'floor {kind}']:.2f}", f"{r[f'fast {kind}'] / r[f'floor {kind}']:.2f}"]
            lines.append(cells)
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]
    fmt = " | ".join(f"{{:>{w}}}" for w in widths)
    out = [fmt.format(*head), "-+-".join("-" * w for w in widths)]
    out += [fmt.format(*line) for line in lines]
    return "\n".join(out)


def run(dims, channels, device="cpu", dtype="float32", size=0, batch=1, repeats=5) -> list[dict]:
    from leanseg.bench import check_counts
    from leanseg.errors import LeanSegError
    from leanseg.options import look_up_option, resolve_device

    check_counts(dims=list(dims), channels=list(channels), batch=batch, repeats=repeats)
    check_counts(0, size=size)
    torch_dtype = look_up_option(dtype, DTYPES, what="--dtype")
    dev = resolve_device(device)
    malloc = "default"
    if dev.type == "cpu":  # the fast path's allocator setting (see leanseg.nn._cext) applies to every row alike
        from leanseg.nn import _cext

        malloc = "tuned (1 GiB heap thresholds)" if _cext.tune_malloc() else "default"
    rows = []
    for d in dims:
        if d not in (2, 3):
            raise LeanSegError(f"--dims must be 2 or 3, got {d}")
        for c in channels:
            n = size or (GPU_SIZE[d] if dev.type == "cuda" else CPU_SIZES[d].get(c, 32))
            rows.append(bench_one(d, c, n, batch, torch_dtype, dev, repeats))
            print(f"  measured d={d} C={c} at {batch}x{n}^{d}", flush=True)
    print(
        f"\nleanseg bench conv: {_machine(dev)}, {dtype}, stride 1, square C -> C; times are the best of "
        f"{repeats}; (x) is the speed-up over dense; glibc malloc {malloc}"
    )
    print(format_table(rows, dev))
    bw = ", ".join(
        f"{r['d']}D C={r['C']}: {r['bandwidth GB/s']:.0f} GB/s, {r['gemm GFLOP/s']:.0f} GFLOP/s" for r in rows
    )
    print(f"floor inputs (measured copy bandwidth, GEMM rate): {bw}")
    return rows
