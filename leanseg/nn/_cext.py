"""Build (once, in about a second) and load the C stencil kernels of _stencil.c with ctypes.

No torch headers are involved, so the build is fast and independent of the PyTorch version. The library is
cached under $LEANSEG_CACHE (default ~/.cache/leanseg), keyed by the source, the flags and this CPU's features
(it is built with -march=native). Returns None, and the caller falls back to plain PyTorch, when no C compiler
with OpenMP is found or LEANSEG_CEXT=0.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

from leanseg import env

_SOURCE = Path(__file__).with_name("_stencil.c")
# -std=c11 (strict ISO C) turns off the contraction of a * b + c into one FMA: -ffp-contract=fast brings it back
# (twice the arithmetic rate, one rounding instead of two); GCC prefers 256-bit vectors on CPUs with AVX-512
# unless told otherwise, and the kernels here are the loops that gain from 512.
_FLAGS = ["-O3", "-march=native", "-ffp-contract=fast", "-mprefer-vector-width=512", "-fopenmp", "-shared", "-fPIC",
          "-std=c11"]


def suffix(dtype) -> str | None:
    """The C kernels' name suffix for a torch dtype ("f32", "f64", "bf16"), or None where they have none."""
    import torch

    return {torch.float32: "f32", torch.float64: "f64", torch.bfloat16: "bf16"}.get(dtype)


def acc_dtype(dtype):
    """The kernels' accumulator type for a storage dtype: per-channel coefficients are passed in it."""
    import torch

    return torch.float32 if dtype == torch.bfloat16 else dtype


# Below this many elements a kernel call runs on one thread: starting and joining an OpenMP team costs more than
# the work, and on a loaded machine a descheduled team member stalls the whole call for a time slice.
_PARALLEL_MIN = 1 << 16


def threads(numel: int) -> int:
    """OpenMP threads for a kernel over numel elements: torch's thread count, or 1 for small tensors."""
    import torch

    return torch.get_num_threads() if numel >= _PARALLEL_MIN else 1


class Grid(ctypes.Structure):
    _fields_ = [
        ("n", ctypes.c_int64),
        ("d", ctypes.c_int64),
        ("h", ctypes.c_int64),
        ("w", ctypes.c_int64),
        ("ld", ctypes.c_int64),
    ]


def _cpu_key() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = platform.processor()
    return flags


def _build(cc: str, flags: list[str]) -> Path:
    src = _SOURCE.read_bytes()
    key = hashlib.sha256(src + " ".join([cc, *flags, _cpu_key()]).encode()).hexdigest()[:16]
    cache = env.cache_dir()
    lib = cache / f"leanstencil-{key}.so"
    if lib.exists():
        return lib
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache)
    os.close(fd)
    try:
        subprocess.run([cc, *flags, str(_SOURCE), "-o", tmp], check=True, capture_output=True, text=True)
        os.replace(tmp, lib)  # atomic: concurrent builders (DDP ranks, test workers) never see half a file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return lib


# glibc serves blocks above 32 MiB with a fresh mmap and returns them on free, so every such activation (a 32 x 64^3
# float32 tensor is 33.5 MiB) page-faults on first touch: for a bandwidth-bound layer that costs more than the layer.
# Keeping blocks up to 1 GiB on the heap, and up to 1 GiB of free heap before trimming, removes that cost. 1 GiB,
# not 256 MiB: a level-0 activation of a BraTS U-Net (32 x 128^3 float32) is exactly 256 MiB, and with the lower
# threshold each of them was a fresh mapping (about 0.15 s of page faults each, a third of that network's time).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MALLOC_THRESHOLD = 1 << 30


def last_level_cache_bytes(default: int = 32 << 20) -> int:
    """The size of the CPU's largest cache (Linux sysfs; ``default`` where it cannot be read)."""
    sizes = []
    for entry in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        try:
            text = entry.read_text().strip().upper()
            sizes.append(int(text[:-1]) << {"K": 10, "M": 20, "G": 30}[text[-1]] if text[-1] in "KMG" else int(text))
        except (OSError, ValueError):
            continue
    return max(sizes, default=default)


def tune_malloc() -> bool:
    """Apply the thresholds above (glibc only; LEANSEG_MALLOC_TUNE=0 opts out). True when applied."""
    if not env.malloc_tune() or platform.system() != "Linux":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl and other libcs: nothing to tune
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, _MALLOC_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, _MALLOC_THRESHOLD))


@functools.cache
def load(bf16_simd: bool = True):
    """The loaded library, or None when it cannot be built here. Loading it also applies tune_malloc().

    bf16_simd=False builds the portable bf16 loops even where the CPU has AVX512-BF16 (tests compare the two);
    lib.bf16_simd() says which a library has."""
    if not env.cext_enabled():
        return None
    tune_malloc()
    cc = env.c_compiler() or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        warnings.warn(
            "leanseg: no C compiler found; the CPU lean convolution uses plain PyTorch (slower)",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    try:
        lib = ctypes.CDLL(str(_build(cc, _FLAGS if bf16_simd else [*_FLAGS, "-DLEANSEG_NO_BF16_SIMD"])))
    except (OSError, subprocess.CalledProcessError) as err:
        detail = getattr(err, "stderr", "") or str(err)
        warnings.warn(
            f"leanseg: building the C stencil failed ({detail.strip()[:300]}); using plain PyTorch",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    p, i64, c_int = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.bf16_simd.argtypes, lib.bf16_simd.restype = [], c_int
    for suffix, acc in (("f32", ctypes.c_float), ("f64", ctypes.c_double), ("bf16", ctypes.c_float)):
        fn = getattr(lib, f"stencil_gather_{suffix}")
        fn.argtypes = [p, Grid, p, Grid, p, p, p, p, i64, i64, i64, i64, p, i64, c_int]
        fn.restype = None
        fn = getattr(lib, f"lean_direct_{suffix}")
        fn.argtypes = [p, Grid, p, Grid, p, p, p, p, p, p, i64, i64, i64, i64, i64, i64, p, c_int]
        fn.restype = None
        fn = getattr(lib, f"stencil_grad_{suffix}")
        fn.argtypes = [p, p, Grid, p, Grid, p, p, p, i64, i64, i64, c_int]
        fn.restype = None
        fn = getattr(lib, f"channel_sums_{suffix}")
        fn.argtypes = [p, p, p, i64, i64, i64, c_int]
        fn.restype = None
        fn = getattr(lib, f"affine2_{suffix}")
        fn.argtypes = [p, p, p, p, p, p, i64, i64, i64, c_int]
        fn.restype = None
        fn = getattr(lib, f"norm_act_{suffix}")
        fn.argtypes = [p, p, p, p, acc, i64, i64, i64, c_int]
        fn.restype = None
        fn = getattr(lib, f"norm_act_grad_sums_{suffix}")
        fn.argtypes = [p, p, p, p, p, acc, i64, i64, i64, c_int]
        fn.restype = None
        fn = getattr(lib, f"upsample_linear_{suffix}")
        fn.argtypes = [p, Grid, p, Grid, p, p, p, p, p, p, c_int]
        fn.restype = None
        fn = getattr(lib, f"norm_act_grad_{suffix}")
        fn.argtypes = [p, p, p, p, p, acc, p, p, p, i64, i64, i64, c_int]
        fn.restype = None
    lib.lean_simd.argtypes, lib.lean_simd.restype = [], c_int
    if lib.lean_simd():  # the AVX-512 float32 kernels exist only in builds for CPUs that have it
        lib.lean_tile_f32.argtypes = [p, Grid, p, Grid, p, p, p, p, p, p, i64, i64, i64, i64, i64, p, c_int, c_int]
        lib.lean_tile_f32.restype = None
        lib.lean_wgrad_f32.argtypes = [p, p, Grid, p, Grid, p, p, i64, i64, i64, i64, i64, c_int]
        lib.lean_wgrad_f32.restype = None
        lib.lean_bwd_f32.argtypes = [p, p, Grid, p, Grid, p, Grid, p, p, p, p, p, i64, i64, i64, i64, c_int]
        lib.lean_bwd_f32.restype = None
    for suffix in ("f32", "f64"):
        fn = getattr(lib, f"stitch_add_{suffix}")
        fn.argtypes = [p, i64, i64, i64, i64, p, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, p, c_int,
                       c_int]
        fn.restype = None
    return lib
