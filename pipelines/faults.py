"""Faults: binary fault segmentation of 3D seismic cubes (axes x, y, time), as in FaultSeg3D (Wu et al. 2019).

Training data: a folder with ``seis/`` and ``fault/`` holding cubes of the same names (FaultSeg3D's layout: raw
little-endian float32 ``.dat`` cubes, side inferred from the size; ``.npy`` and ``.nii(.gz)`` work too), or the
built-in generator (``--synthetic N``). Prediction on real SEG-Y goes through ``leanseg predict cube.sgy -m ...``,
which reads the checkpoint's ``normalization`` and ``window`` written below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from leanseg.errors import LeanSegError
from leanseg.io import stem
from leanseg.io.cube import CUBE_SUFFIXES, read_cube
from leanseg.tasks import Task, TaskConfig
from pipelines._common import missing_error, seeded_cases

FAULT_WEIGHT = 4.0  # BCE weight of a fault voxel against a non-fault one (see balanced_loss)


@dataclass
class FaultsConfig(TaskConfig):
    channels: tuple[str, ...] = ("amplitude",)
    regions: dict = field(default_factory=lambda: {"fault": (1,)})  # one sigmoid: fault or not
    window: tuple[int, ...] = (128, 128, 128)  # FaultSeg3D's cube size: every training cube is one window
    batch_size: int = 2
    samples_per_case: int = 1
    epochs: int = 100
    val_fraction: float = 0.1  # FaultSeg3D's split (200 training, 20 validation cubes); generated cubes are many
    lr: float = 2e-3
    # the EM design carried to 3D (docs/benchmarks.md, faults): dense 3x3x3s in the 16-channel level, encoder and
    # decoder, and max pooling down; 105,041 weights. On the bench recipe (3 seeds) 5.5 F1 points above the all-lean
    # stride-2 design (65,489 weights) and 1.1 behind its dense twin; its zoo model (2,700 steps) scores 0.878
    # held out, the old design's (1,170 steps) 0.731
    model_kwargs: dict = field(default_factory=lambda: {"features": (16, 32, 64, 128), "dense_levels": 1,
                                                        "down": "maxpool"})  # one input channel
    hd95: bool = False  # thin sheets: HD95 is dominated by a few stray voxels and says little here
    normalization: object = "zscore"  # per cube: amplitudes vary by survey and gain


def discover(root: str | Path) -> list[dict]:
    root = Path(root)
    if not root.is_dir():
        raise LeanSegError(f"{root}: not a folder")
    seis = {stem(p): p for p in sorted((root / "seis").glob("*")) if p.name.endswith(CUBE_SUFFIXES)}
    if not seis:
        raise LeanSegError(f"{root}: no seismic cubes; expected seis/NAME.dat (or .npy, .nii.gz) and fault/NAME.*")
    faults = {stem(p): p for p in sorted((root / "fault").glob("*")) if p.name.endswith(CUBE_SUFFIXES)}
    missing = [f"fault/{name}{''.join(p.suffixes)}" for name, p in seis.items() if name not in faults]
    if missing:
        raise missing_error("label cubes", root, missing)
    return [{"id": name, "image": str(p), "label": str(faults[name])} for name, p in seis.items()]


class LoadCase:
    def __init__(self, manager):
        self.manager = manager

    def __call__(self, case: dict) -> dict:
        image, label = case["image"], case["label"]
        where = label if isinstance(label, str) else case["id"]
        if not isinstance(image, np.ndarray):
            image = read_cube(Path(image))[None]
            label = read_cube(Path(label))
            if label.shape != image.shape[1:]:
                raise LeanSegError(f"{where}: shape {label.shape} differs from the cube's {image.shape[1:]}")
        return {"id": case["id"], "image": image.astype(np.float32), "label": self.manager.encode(label, where)}


def balanced_loss(fault_weight: float = FAULT_WEIGHT):
    """Weighted BCE plus Dice. Wu et al. balance the classes fully (faults weigh the fraction of non-fault voxels,
    ~30x the rest); that puts the 0.5 threshold at a posterior of ~3%, so an unsure model marks noise as fault (the
    first zoo model marked 27% of white noise). ``fault_weight`` w puts it at 1 / (1 + w), 20% for 4: still below
    the ~1/3 that the 1-voxel uncertainty of a fault's position leaves to each of 3 voxels, so thin faults are kept.
    MONAI's BCE takes a weight but no Dice beside it, hence these few lines."""
    import torch
    from monai.losses import DiceLoss

    class BalancedLoss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dice = DiceLoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5)

        def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            target = target.float()
            weight = 1 + (fault_weight - 1) * target
            weight = weight / weight.mean()  # weights average 1, like plain BCE, whatever the fault fraction
            bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, weight=weight)
            return bce + self.dice(logits, target)

    return BalancedLoss()


class FaultsTask(Task):
    name = "faults"
    Config = FaultsConfig
    config: FaultsConfig

    discover = staticmethod(discover)  # the module's function: folders need no task state

    def synthetic(self, n: int, seed: int) -> list[dict]:
        """``n`` cases of leanseg.synthetic.fault_cube (the wide FaultSeg3D-style geology), case i seeded by
        (seed, i)."""
        from leanseg.synthetic import fault_cube

        return seeded_cases(fault_cube, n, seed, self.config.synthetic_size, "faults")

    def transforms(self, train: bool):
        """Per-cube z-score (amplitudes vary by survey and gain); for training, random windows, flips and quarter
        turns about the time axis only: turning time upside down would invert the geology."""
        from monai import transforms as T

        cfg = self.config
        keys = ["image", "label"]
        steps = [LoadCase(self.label_manager), self.normalize_transform()]
        if train:
            steps += [
                T.SpatialPadd(keys, spatial_size=cfg.window),
                T.RandSpatialCropSamplesd(keys, roi_size=cfg.window, num_samples=cfg.samples_per_case,
                                          random_size=False),
                T.RandFlipd(keys, prob=0.5, spatial_axis=0),
                T.RandFlipd(keys, prob=0.5, spatial_axis=1),
                T.RandRotate90d(keys, prob=0.5, spatial_axes=(0, 1)),
            ]
        steps.append(T.EnsureTyped(keys, track_meta=False))
        return T.Compose(steps)

    def loss(self):
        return balanced_loss()
