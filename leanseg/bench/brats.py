"""``leanseg bench brats``: LeanUNet, its dense twin and MONAI's UNet trained on the same synthetic BraTS-like
cases with the same budget (epochs, window, optimiser, seed); Dice per region on the validation cases, weights,
seconds per epoch."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def run(out: Path, cases: int = 16, epochs: int = 20, size: int = 48, features=(8, 16, 32, 64), seed: int = 0,
        progress: bool = False) -> list[dict]:
    from leanseg.training import TrainConfig, train

    common: dict[str, Any] = dict(epochs=epochs, window=(size,) * 3, synthetic_size=size, batch_size=2,
                                  samples_per_case=1, lr=5e-3, hd95=False)
    contenders: list[tuple[str, dict[str, Any]]] = [
        ("LeanUNet", {"model_kwargs": {"features": tuple(features), "conv": "lean"}}),
        ("LeanUNet dense twin", {"model_kwargs": {"features": tuple(features), "conv": "dense"}}),
        ("MONAI UNet", {"model": "monai_unet", "model_kwargs": {"features": tuple(features), "num_res_units": 1}}),
    ]
    rows = []
    for name, options in contenders:
        t0 = time.perf_counter()
        result = train("brats", synthetic=cases, config=TrainConfig(out=Path(out) / name.replace(" ", "_"),
                                                                    seed=seed, progress=progress,
                                                                    val_every=epochs),
                       **common, **options)
        assert result.model is not None  # train() always returns the model it trained
        weights = sum(p.numel() for p in result.model.parameters())
        dice = {r: result.last.get(f"val_dice_{r}", float("nan")) for r in ("WT", "TC", "ET")}
        rows.append({"model": name, "weights": weights, **dice, "mean": sum(dice.values()) / 3,
                     "s_per_epoch": result.seconds_per_epoch, "total_s": time.perf_counter() - t0})
        print(format_row(rows[-1]), flush=True)
    return rows


HEADER = f"{'model':<22}{'weights':>10}{'WT':>8}{'TC':>8}{'ET':>8}{'mean':>8}{'s/epoch':>10}"


def format_row(r: dict) -> str:
    return (f"{r['model']:<22}{r['weights']:>10,}{r['WT']:>8.3f}{r['TC']:>8.3f}{r['ET']:>8.3f}{r['mean']:>8.3f}"
            f"{r['s_per_epoch']:>10.1f}")
