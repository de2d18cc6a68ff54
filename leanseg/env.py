"""Every environment variable leanseg reads, in one place, each behind a typed accessor.

Values are read on each call (not cached at import) so tests and users can change them at run time; where a
value only matters once (the C build, malloc tuning) the caller caches the result. ``kernels3d`` is a leaf
that imports nothing from leanseg, so it reads TRITON_INTERPRET itself (``kernels3d.interpret``);
``triton_interpret`` here forwards to it, so the two can never disagree.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

Backend = Literal["auto", "reference"]
_OFF = ("0", "false", "off", "no")


def _switched_off(name: str) -> bool:
    """True when a default-on flag is set to 0/false/off/no (anything else, or unset, leaves it on)."""
    return os.environ.get(name, "").strip().lower() in _OFF


def backend() -> Backend:
    """LEANSEG_BACKEND: "reference" runs every layer as plain PyTorch (for debugging): no compiled C library is
    loaded, no Triton kernel runs (leanseg.nn.backend applies it). Anything else, or unset, is "auto" (the fastest
    path for the tensor's device)."""
    return "reference" if os.environ.get("LEANSEG_BACKEND", "auto").strip().lower() == "reference" else "auto"


def cext_enabled() -> bool:
    """LEANSEG_CEXT: "0" disables the compiled C kernels on CPU (plain PyTorch instead). Default on."""
    return not _switched_off("LEANSEG_CEXT")


def cache_dir() -> Path:
    """LEANSEG_CACHE: where the compiled C kernels are cached. Default ~/.cache/leanseg."""
    value = os.environ.get("LEANSEG_CACHE")
    return Path(value) if value else Path.home() / ".cache" / "leanseg"


def malloc_tune() -> bool:
    """LEANSEG_MALLOC_TUNE: "0" keeps glibc's default mmap/trim thresholds. Default on (see leanseg.nn._cext)."""
    return not _switched_off("LEANSEG_MALLOC_TUNE")


def c_compiler() -> str | None:
    """CC: the C compiler for the CPU kernels, when set; otherwise the caller looks for cc/gcc on PATH."""
    return os.environ.get("CC") or None


def triton_interpret() -> bool:
    """TRITON_INTERPRET: run the Triton kernels in Triton's CPU interpreter (read by kernels3d, the leaf)."""
    from kernels3d import interpret

    return interpret()


def world_size() -> int:
    """WORLD_SIZE (set by torchrun): processes in the run. Default 1."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """RANK (set by torchrun): this process's global rank. Default 0."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """LOCAL_RANK (set by torchrun): this process's rank on its machine, i.e. its CUDA device. Default 0."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def max_voxels() -> int:
    """LEANSEG_MAX_VOXELS: the most voxels (all channels) one input may claim before it is read. Default 2**28
    (1 GiB as float32, more than a 512 x 512 x 1000 CT): a header is untrusted, and an 83-byte file must not
    make leanseg allocate gigabytes."""
    value = os.environ.get("LEANSEG_MAX_VOXELS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else 2**28


def child_environ(**extra: str) -> dict[str, str]:
    """This process's environment with ``extra`` set, for the subprocesses a benchmark starts."""
    return dict(os.environ, **extra)


def check_budget(values: int, where: str, what: str) -> None:
    """The one memory budget, checked before a stage allocates: ``values`` (float32 values the stage will hold at
    once: a resampled volume with its probabilities, a decoded image, a slab, per-label masks) against
    LEANSEG_MAX_VOXELS. ``what`` says what makes them (``"resampling to 0.4 mm makes 640x640x640 x 5 values"``)."""
    from leanseg.errors import LeanSegError

    if values > max_voxels():
        raise LeanSegError(f"{where}: {what} = {values:,} values, over the limit of {max_voxels():,} "
                           "(LEANSEG_MAX_VOXELS raises it)")


def shared_data() -> Path | None:
    """LEANSEG_SHARED_DATA: the folder of the project's shared test data (benchmarks use its real cases)."""
    value = os.environ.get("LEANSEG_SHARED_DATA")
    return Path(value) if value else None
