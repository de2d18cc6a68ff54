"""``leanseg bench faults``: the lean U-Net, its dense twin and FaultSeg3D's network (``faultseg3d_unet``) trained
on the same synthetic fault cubes (``leanseg.synthetic.fault_cube``) with the same epochs, window and seed; fault
F1 at a 1-voxel tolerance on held-out cubes (seeds the training never drew), weights, seconds per epoch, and the
fraction of a real SEG-Y cube (the F3 crop) each marks as fault. The scoring functions also score the zoo model."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HELDOUT_SEED = 10_000  # held-out cube i is fault_cube(default_rng([HELDOUT_SEED + seed, i])); training uses [seed, i]


def heldout_f1(checkpoint: str | os.PathLike, cases: int = 8, size: int = 64, seed: int = 0,
               tolerance: int = 1) -> dict[str, float]:
    """Mean precision, recall and F1 (``leanseg.metrics.tolerant_f1``) of a checkpoint over held-out generated cubes,
    predicted as ``leanseg predict`` predicts (its normalisation, window, sigmoid and 0.5 threshold)."""
    import torch

    from leanseg.checkpoint import load_model
    from leanseg.inference import sliding_window_predict
    from leanseg.metrics import tolerant_f1
    from leanseg.synthetic import fault_cube

    net, meta = load_model(checkpoint)
    norm = meta.normalization.transform()
    manager = meta.label_manager
    rows = []
    for i in range(cases):
        image, label = fault_cube(np.random.default_rng([HELDOUT_SEED + seed, i]), size)
        x = torch.from_numpy(np.asarray(norm(image) if norm else image, np.float32))[None]
        with torch.no_grad():
            probs = sliding_window_predict(net, x, meta.window or size, activation=manager.activation)[0]
        rows.append(tolerant_f1(manager.decode(probs) > 0, label > 0, tolerance))
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def segy_fraction(checkpoint: str | os.PathLike, segy: str | os.PathLike) -> float:
    """The fraction of a SEG-Y cube's voxels that ``leanseg.predict`` labels as fault with this checkpoint."""
    from leanseg.prediction import predict

    with tempfile.TemporaryDirectory() as tmp:
        out = predict(segy, checkpoint, output=Path(tmp) / "faults.npy", progress=False)
        return float((np.load(out) > 0).mean())


def shared_f3() -> Path | None:
    """The real F3 crop of the shared test data, when present ($LEANSEG_SHARED_DATA or ../shared/data)."""
    from leanseg import env

    for root in (env.shared_data(), "../shared/data"):
        if root and (Path(root) / "segy/segyio/f3.sgy").is_file():
            return Path(root) / "segy/segyio/f3.sgy"
    return None


_UNET = {"features": (16, 32, 64, 128)}  # the widths of the faults task's LeanUNet, for every LeanUNet row
CONTENDERS: dict[str, tuple[str, dict[str, Any]]] = {
    "lean": ("LeanUNet", {"model_kwargs": _UNET | {"conv": "lean"}}),
    "dense": ("LeanUNet dense twin", {"model_kwargs": _UNET | {"conv": "dense"}}),
    "faultseg3d": ("FaultSeg3D U-Net", {"model": "faultseg3d_unet", "model_kwargs": {}}),
    # the EM ablations' design carried to 3D: dense 3x3x3s where there are 16 channels (encoder and decoder: 6,912
    # weights each) and max pooling down; and the same network with every conv dense, its own twin
    "lean-d1": ("LeanUNet, dense level 1",
                {"model_kwargs": _UNET | {"conv": "lean", "dense_levels": 1, "down": "maxpool"}}),
    "dense-d1": ("its dense twin", {"model_kwargs": _UNET | {"conv": "dense", "down": "maxpool"}}),
}


def run(out: Path, cases: int = 12, epochs: int = 2, size: int = 32, heldout: int = 4, seed: int = 0,
        segy: Path | None = None, models: tuple[str, ...] = tuple(CONTENDERS), progress: bool = False) -> list[dict]:
    """Train each contender on the same ``cases`` generated cubes of ``size``^3 (window = size) for ``epochs``;
    print and return one row each."""
    from leanseg.bench import check_counts
    from leanseg.training import TrainConfig, train

    check_counts(cases=cases, epochs=epochs, size=size, heldout=heldout)
    segy = segy or shared_f3()
    rows = []
    for key in models:
        name, options = CONTENDERS[key]
        t0 = time.perf_counter()
        run_dir = Path(out) / key
        result = train("faults", synthetic=cases, config=TrainConfig(out=run_dir, seed=seed, progress=progress,
                                                                     val_every=epochs),
                       epochs=epochs, window=(size,) * 3, synthetic_size=size, **options)
        last = run_dir / "last.safetensors"
        score = heldout_f1(last, cases=heldout, size=size, seed=seed)
        assert result.model is not None  # train() always returns the model it trained
        rows.append({"model": name, "weights": sum(p.numel() for p in result.model.parameters()),
                     "s_per_epoch": result.seconds_per_epoch, **score,
                     "f3_fraction": segy_fraction(last, segy) if segy else float("nan"),
                     "total_s": time.perf_counter() - t0})
        print(format_row(rows[-1]), flush=True)
    return rows


HEADER = f"{'model':<22}{'weights':>11}{'s/epoch':>9}{'F1@1':>7}{'prec':>7}{'recall':>7}{'F3 fault %':>11}"


def format_row(r: dict) -> str:
    return (f"{r['model']:<22}{r['weights']:>11,}{r['s_per_epoch']:>9.1f}{r['f1']:>7.3f}{r['precision']:>7.3f}"
            f"{r['recall']:>7.3f}{100 * r['f3_fraction']:>10.1f}%")
