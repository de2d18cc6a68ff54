"""Build (once, in about a second) and load the CPU kernels of csrc/ with ctypes.

No torch headers are involved, so the build is fast and independent of the PyTorch version. The library is
cached under $LEANSEG_CACHE (default ~/.cache/leanseg), keyed by the sources, the flags and this CPU's features
(it is built with -march=native). Returns None, and the caller falls back to plain PyTorch, when no C compiler
with OpenMP is found or LEANSEG_CEXT=0. Every function's ctypes signature comes from SIGNATURES, the Python
copy of csrc/leanseg_cpu.h (tests/nn/test_cext.py checks that the two agree).
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
from typing import Any

from leanseg import env

_CSRC = Path(__file__).with_name("csrc")
_SOURCE = _CSRC / "leanseg_cpu.c"  # the unity build: includes every other file of csrc/
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


def _sources_key() -> bytes:
    """Every file of csrc/ by name and content: a change to any of them makes a new library."""
    return b"".join(f.name.encode() + b"\0" + f.read_bytes() for f in sorted(_CSRC.glob("*.[ch]")))


def _build(cc: str, flags: list[str]) -> Path:
    key = hashlib.sha256(_sources_key() + " ".join([cc, *flags, _cpu_key()]).encode()).hexdigest()[:16]
    cache = env.cache_dir()
    lib = cache / f"leanseg-cpu-{key}.so"
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


# The library's interface: one row per function of csrc/leanseg_cpu.h, name -> (restype, [(argname, ctype), ...],
# the storage suffixes it exists for). "{s}" in a name stands for the suffix; ACC for the suffix's accumulator
# scalar (float for f32 and bf16, double for f64). Pointers are passed as data_ptr() integers (or None for NULL).
_P, _I64, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
ACC = "acc"
_ALL, _FLOAT = ("f32", "f64", "bf16"), ("f32", "f64")
# AVX-512 float32 kernels: present only where lib.lean_simd() is 1
SIMD_ONLY = frozenset({"lean_tile_f32", "lean_wgrad_f32", "lean_bwd_f32"})
_TAPS = [("axis", _P), ("sign", _P), ("ntaps", _I64)]
SIGNATURES: dict[str, tuple[Any, list[tuple[str, Any]], tuple[str, ...]]] = {
    "bf16_simd": (_INT, [], ()),
    "lean_simd": (_INT, [], ()),
    "stencil_gather_{s}": (None, [("out", _P), ("go", Grid), ("in", _P), ("gi", Grid), ("taps", _P), ("zeros", _P),
                                  *_TAPS, ("m", _I64), ("mul", _I64), ("div", _I64), ("stats", _P), ("cs", _I64),
                                  ("nthreads", _INT)], _ALL),
    "lean_direct_{s}": (None, [("out", _P), ("go", Grid), ("in", _P), ("gi", Grid), ("wt", _P), ("bias", _P),
                               ("taps", _P), ("zeros", _P), *_TAPS, ("cin", _I64), ("cout", _I64), ("m", _I64),
                               ("mul", _I64), ("div", _I64), ("stats", _P), ("nthreads", _INT)], _ALL),
    "lean_tile_f32": (None, [("out", _P), ("go", Grid), ("in", _P), ("gi", Grid), ("wt", _P), ("bias", _P),
                             ("taps", _P), ("zeros", _P), *_TAPS, ("cin", _I64), ("cout", _I64), ("m", _I64),
                             ("mul", _I64), ("stats", _P), ("stream", _INT), ("nthreads", _INT)], ()),
    "stencil_grad_{s}": (None, [("partial", _P), ("g", _P), ("gg", Grid), ("in", _P), ("gi", Grid), ("zeros", _P),
                                *_TAPS, ("m", _I64), ("stride", _I64), ("nthreads", _INT)], _ALL),
    "lean_wgrad_f32": (None, [("partial", _P), ("g", _P), ("gg", Grid), ("in", _P), ("gi", Grid), *_TAPS,
                              ("cin", _I64), ("cout", _I64), ("m", _I64), ("stride", _I64), ("nthreads", _INT)], ()),
    "lean_bwd_f32": (None, [("partial", _P), ("dx", _P), ("gx", Grid), ("g", _P), ("gg", Grid), ("in", _P),
                            ("gi", Grid), ("wt", _P), ("taps", _P), ("zeros", _P), *_TAPS, ("cin", _I64),
                            ("cout", _I64), ("m", _I64), ("nthreads", _INT)], ()),
    "channel_sums_{s}": (None, [("partial", _P), ("a", _P), ("b", _P), ("n", _I64), ("v", _I64), ("c", _I64),
                                ("nthreads", _INT)], _ALL),
    "affine2_{s}": (None, [("out", _P), ("u", _P), ("v_", _P), ("p", _P), ("q", _P), ("r", _P), ("n", _I64),
                           ("v", _I64), ("c", _I64), ("nthreads", _INT)], _ALL),
    "norm_act_{s}": (None, [("out", _P), ("u", _P), ("p", _P), ("r", _P), ("slope", ACC), ("n", _I64), ("v", _I64),
                            ("c", _I64), ("nthreads", _INT)], _ALL),
    "norm_act_grad_sums_{s}": (None, [("partial", _P), ("da", _P), ("z", _P), ("p", _P), ("r", _P), ("slope", ACC),
                                      ("n", _I64), ("v", _I64), ("c", _I64), ("nthreads", _INT)], _ALL),
    "norm_act_grad_{s}": (None, [("out", _P), ("da", _P), ("z", _P), ("p", _P), ("r", _P), ("slope", ACC),
                                 ("P", _P), ("Q", _P), ("R", _P), ("n", _I64), ("v", _I64), ("c", _I64),
                                 ("nthreads", _INT)], _ALL),
    "upsample_linear_{s}": (None, [("out", _P), ("go", Grid), ("in", _P), ("gi", Grid), ("iz", _P), ("iy", _P),
                                   ("ix", _P), ("wz", _P), ("wy", _P), ("wx", _P), ("nthreads", _INT)], _ALL),
    "stitch_add_{s}": (None, [("acc", _P), ("k", _I64), ("D", _I64), ("H", _I64), ("W", _I64), ("y", _P),
                              ("d", _I64), ("h", _I64), ("w", _I64), ("sc", _I64), ("sz", _I64), ("sy", _I64),
                              ("sx", _I64), ("z0", _I64), ("y0", _I64), ("x0", _I64), ("wt", _P), ("act", _INT),
                              ("nthreads", _INT)], _FLOAT),
}
_ACC_CTYPE = {"f32": ctypes.c_float, "f64": ctypes.c_double, "bf16": ctypes.c_float}


def signatures(simd: bool = True) -> dict[str, tuple[Any, list[tuple[str, Any]]]]:
    """SIGNATURES with one entry per C function (suffixes expanded, ACC resolved); without the AVX-512 kernels
    when simd is false."""
    out = {}
    for pattern, (restype, args, suffixes) in SIGNATURES.items():
        for sfx in suffixes or ("",):
            name = pattern.format(s=sfx)
            if simd or name not in SIMD_ONLY:
                out[name] = (restype, [(a, _ACC_CTYPE[sfx] if t == ACC else t) for a, t in args])
    return out


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
            f"leanseg: building the C kernels failed ({detail.strip()[:300]}); using plain PyTorch",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    for name, (restype, args) in signatures(bool(lib.lean_simd())).items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, [ctype for _, ctype in args]
    return lib
