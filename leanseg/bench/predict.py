"""``leanseg bench predict``: one BraTS-size case predicted end to end by ``leanseg.predict``, one process per row.

Every row reads the same four NIfTI files, normalises, runs the same sliding window with the same threads and
writes a NIfTI label map, through ``leanseg.predict`` with a checkpoint path, as ``leanseg predict`` does. The
weights are random (speed and memory do not depend on their values). MONAI's networks are the registry's
``monai_unet`` and ``monai_segresnet``, so they are predicted through the same path.

Each row runs in a fresh process: its peak resident memory (``ru_maxrss``) is that process's alone, start-up
(Python, torch, MONAI) included, as a user's ``leanseg predict`` would see it.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import platform
import resource
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leanseg.bench.models import bench_specs, format_table
from leanseg.errors import LeanSegError

CASE_NAME = "brats_toolkit_TCGA-DU-7294"  # in <shared data>/nifti: 4 skull-stripped modalities, 240x240x155
CHANNELS = ["t1", "t1c", "t2", "flair"]
REGIONS = {"WT": [1, 2, 4], "TC": [1, 4], "ET": [4]}  # BraTS 2021 labels
ROWS = ("LeanUNet", "LeanUNet dense twin", "MONAI UNet", "MONAI SegResNet")


@dataclass
class Setup:
    """What every row shares. The defaults are the issue's: a whole BraTS case, 128^3 windows, overlap 0.5."""

    features: tuple[int, ...] = (32, 64, 128, 256, 320)  # BraTS widths (nnU-Net's)
    window: tuple[int, int, int] = (128, 128, 128)  # the BraTS training patch
    overlap: float = 0.5
    synthetic_shape: tuple[int, int, int] = (240, 240, 155)  # a BraTS grid, when the shared case is absent
    crop: bool | None = None  # None: leanseg.predict's default (on: the checkpoints normalise zscore nonzero)
    precision: str = "fp32"
    threads: int = 0  # 0: every core


# The quick run a test can afford: a small synthetic case, small windows and widths, a few seconds per row.
QUICK = Setup(features=(8, 16, 32, 64), window=(32, 32, 32), synthetic_shape=(64, 64, 48))


def shared_case() -> Path | None:
    """The shared TCGA case: $LEANSEG_SHARED_DATA/nifti/..., else ../shared/data beside the repository."""
    from leanseg import env

    root = env.shared_data() or Path(__file__).resolve().parents[2].parent / "shared" / "data"
    case = root / "nifti" / CASE_NAME
    return case if case.is_dir() else None


def write_synthetic_case(folder: Path, shape: tuple[int, int, int], seed: int = 0) -> Path:
    """A skull-stripped BraTS-like phantom (zero outside a brain of about a third of the grid) in a grid of
    ``shape``, as four NIfTI files named like a BraTS 2021 case."""
    import nibabel as nib

    from leanseg.synthetic import brats_phantom

    size = int(min(shape))
    image, _ = brats_phantom(np.random.default_rng(seed), size=size)  # (4, size, size, size)
    grid = np.zeros((4, *shape), np.float32)
    at = tuple(slice((n - size) // 2, (n - size) // 2 + size) for n in shape)
    grid[(slice(None),) + at] = image
    folder.mkdir(parents=True, exist_ok=True)
    for name, channel in zip(("t1", "t1ce", "t2", "flair"), grid, strict=True):
        nib.save(nib.Nifti1Image(channel, np.eye(4)), folder / f"synthetic_{name}.nii.gz")
    return folder


def write_checkpoints(folder: Path, names: list[str], setup: Setup) -> dict[str, tuple[Path, int]]:
    """One random-initialised checkpoint per row: {row: (path, weights)}."""
    import torch

    from leanseg.checkpoint import save_model
    from leanseg.models import create

    specs = bench_specs(len(CHANNELS), len(REGIONS), setup.features)
    out = {}
    for name in names:
        model_name, model_kwargs, _ = specs[name]
        torch.manual_seed(0)
        model = create(model_name, **model_kwargs)
        path = folder / f"{name.replace(' ', '_')}.safetensors"
        save_model(model, path, model=model_name, model_kwargs=model_kwargs, channels=CHANNELS, regions=REGIONS,
                   normalization={"kind": "zscore", "nonzero": True}, window=list(setup.window))
        out[name] = (path, sum(p.numel() for p in model.parameters()))
    return out


def _row(checkpoint: str, case: str, output: str, setup: Setup) -> dict:
    """In a fresh process: predict the case once; wall time, windows run, forward time, peak RSS.

    The imports (torch, MONAI: about 2 s here) are timed apart, as start-up, so that the wall time is the work.
    """
    start = time.perf_counter()
    import torch

    import leanseg.checkpoint
    import leanseg.inference  # noqa: F401  (MONAI's sliding window: imported by predict, part of start-up)
    from leanseg.prediction import predict

    startup = time.perf_counter() - start

    torch.set_num_threads(setup.threads or os.cpu_count() or 1)
    counts = {"windows": 0, "forward_s": 0.0}
    load = leanseg.checkpoint.load_model

    def load_and_count(path, model=None):  # leanseg.predict loads through this: count windows, time the network
        model, meta = load(path, model)

        def before(module, args):
            counts["windows"] += args[0].shape[0]
            counts["t0"] = time.perf_counter()

        def after(module, args, out):
            counts["forward_s"] += time.perf_counter() - counts["t0"]

        model.register_forward_pre_hook(before)
        model.register_forward_hook(after)
        return model, meta

    leanseg.checkpoint.load_model = load_and_count
    start = time.perf_counter()
    predict(case, checkpoint, output=output, window=setup.window, overlap=setup.overlap, crop=setup.crop,
            precision=setup.precision, progress=False)
    seconds = time.perf_counter() - start
    if counts["windows"] == 0:
        raise RuntimeError("leanseg.predict no longer loads its model through leanseg.checkpoint.load_model; "
                           "the bench cannot count windows")
    return {"startup_s": startup, "seconds": seconds, "windows": counts["windows"], "forward_s": counts["forward_s"],
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}  # Linux: KiB


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run(names: list[str] | None = None, setup: Setup | None = None, repeats: int = 1, synthetic: bool = False,
        data: str | os.PathLike | None = None, workdir: str | None = None, verbose: bool = True) -> list[dict]:
    """Measure each row (``names``, default all of ``ROWS``) ``repeats`` times, each time in a fresh process,
    rows interleaved; print the table with medians and ratios to LeanUNet; return one dict per row."""
    import torch

    from leanseg.bench import check_counts, check_workdir

    check_counts(repeats=repeats)
    check_workdir(workdir)
    setup = setup or Setup()
    check_counts(0, threads=setup.threads)
    names = list(names or ROWS)
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        raise LeanSegError(f"--models: unknown row {unknown[0]!r}; choose from {', '.join(ROWS)}")
    if repeats < 1:
        raise LeanSegError(f"--repeats must be at least 1, got {repeats}")
    folder = Path(tempfile.mkdtemp(prefix="leanseg-bench-predict-", dir=workdir))
    try:
        case = Path(data) if data else (None if synthetic else shared_case())
        if case is not None and not case.is_dir():
            raise LeanSegError(f"--data {case}: no such case folder")
        source = str(case) if case else f"synthetic {'x'.join(map(str, setup.synthetic_shape))} phantom"
        case = case or write_synthetic_case(folder / "case", setup.synthetic_shape)
        checkpoints = write_checkpoints(folder, names, setup)
        spawn = multiprocessing.get_context("spawn")
        runs: dict[str, list[dict]] = {n: [] for n in names}
        for repeat in range(repeats):
            for name in names:  # interleaved, so a slow spell of the machine does not land on one row only
                with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
                    runs[name].append(pool.submit(_row, str(checkpoints[name][0]), str(case),
                                                  str(folder / "seg.nii.gz"), setup).result())
                if verbose:
                    print(f"  {name} (run {repeat + 1}/{repeats}): {runs[name][-1]['seconds']:.1f} s", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    rows = []
    for name in names:
        med = {k: statistics.median(r[k] for r in runs[name]) for k in ("startup_s", "seconds", "windows",
                                                                          "forward_s", "peak_rss")}
        rows.append({"model": name, "weights": checkpoints[name][1], **med})
    base = next((r for r in rows if r["model"] == "LeanUNet"), None)
    header = ["model", "weights", "windows", "start-up (s)", "wall (s)", "network (s)", "peak RSS (MiB)",
              "wall / LeanUNet", "RSS / LeanUNet"]
    table = [[r["model"], f"{r['weights']:,}", f"{r['windows']:.0f}", f"{r['startup_s']:.1f}", f"{r['seconds']:.1f}",
              f"{r['forward_s']:.1f}", f"{r['peak_rss'] / 2**20:,.0f}",
              f"{r['seconds'] / base['seconds']:.2f}" if base else "-",
              f"{r['peak_rss'] / base['peak_rss']:.2f}" if base else "-"] for r in rows]
    threads = setup.threads or os.cpu_count()
    crop = {None: "default (on)", True: "on", False: "off"}[setup.crop]
    print(f"leanseg bench predict: {cpu_name()}, {threads} threads, torch {torch.__version__}, {setup.precision}; "
          f"case {source}; window {'x'.join(map(str, setup.window))}, overlap {setup.overlap}, crop {crop}, "
          f"batch 1, no TTA; {'median of ' + str(repeats) if repeats > 1 else 'one run'} per row, each in its "
          f"own process; wall: leanseg.predict from checkpoint to written label map (load, read, normalise, "
          f"sliding window, write), after start-up (imports); network: the model's forward calls; peak RSS: the "
          f"process's, start-up included")
    print(format_table(header, table))
    return rows
