"""seg2d: 2D segmentation from a folder of images and masks with matching names, on the 2D lean path.

Layouts: ``images/`` + ``masks/``, or ``image/`` + ``label/`` (the ISBI 2012 EM copy in data/images2d). Every
distinct mask value is a class, in increasing order: ISBI's 0 (membrane) and 255 (cell interior) become classes
0 and 1, and the checkpoint's ``labels`` map them back. Images are read by ``leanseg.io.read_image``, as predict
reads them: grey images train a 1-channel model, colour images a 3-channel one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from leanseg.errors import LeanSegError
from leanseg.io import IMAGE_SUFFIXES, read_image
from leanseg.tasks import Task, TaskConfig
from pipelines._common import missing_error, seeded_cases, softmax_dice_ce

_PAIRS = (("images", "masks"), ("image", "label"), ("images", "labels"), ("imgs", "masks"))
_COLOUR = ("red", "green", "blue")


@dataclass
class Seg2dConfig(TaskConfig):
    spatial_dims: int = 2
    channels: tuple[str, ...] = ("intensity",)  # a folder of colour images sets _COLOUR
    # the synthetic shapes' classes; a folder sets its own from the mask values (one softmax: classes exclude
    # each other)
    labels: dict = field(default_factory=lambda: {"background": 0, "disc": 1, "rectangle": 2})
    window: tuple[int, ...] = (256, 256)  # half an ISBI slice: membranes need context of a few cells
    batch_size: int = 4
    samples_per_case: int = 4
    epochs: int = 100
    # ISBI 2012 ablations (CHANGELOG, slices 15-19): max-pool then a stride-1 lean conv going down (+5.8 membrane Dice
    # points over stride-2 lean convs at 8 epochs) and dense 3x3s in the full-resolution decoder level (+6.0) add
    # up; at 40 epochs dense 3x3s in both finest levels, encoder and decoder (16 and 32 channels, where dense convs
    # are cheap), add 2.6 points over the decoder level alone; the transposed-conv up path (nnU-Net's) over the
    # interpolation's: Rand error 0.229 -> 0.199 (5 seeds). Over 5 seeds at 40 epochs, plain (non-residual) lean
    # levels with dense 3x3s in the three finest levels (16-64 channels) beat the residual encoder with two dense
    # levels: Dice 0.795 -> 0.802, Rand error 0.199 -> 0.168, at 471,586 weights (24.2% of BasicUNet's) and the
    # same s/step
    model_kwargs: dict = field(default_factory=lambda: {"features": (16, 32, 64, 128, 256), "down": "maxpool",
                                                        "dense_levels": 3, "residual": False, "up": "transpose"})
    lr: float = 5e-3  # +1.5 Dice points over 2e-3 on top of the two above (ablation B7)
    synthetic_size: int = 96
    # ids (file stems) of the validation cases; empty: a seeded val_fraction of the cases (`leanseg bench seg2d`
    # validates on ISBI slices 15-19, so that every network sees the same slices)
    val_ids: tuple[str, ...] = ()
    # with two classes, class 0 is a boundary (EM membranes): validation also reports pixel and adapted Rand error
    boundary_scores: bool = True
    elastic: float = 0.0  # probability of an elastic deformation per crop
    gamma: float = 0.0  # probability of a random gamma (contrast) change per crop
    normalization: object = "zscore"  # per image: EM and microscopy brightness varies from slice to slice


def discover(root: str | Path) -> list[dict]:
    root = Path(root)
    if not root.is_dir():
        raise LeanSegError(f"{root}: not a folder")
    for img_dir, mask_dir in _PAIRS:
        if (root / img_dir).is_dir() and (root / mask_dir).is_dir():
            break
    else:
        raise LeanSegError(f"{root}: expected subfolders images/ and masks/ (or image/ and label/)")
    images = {p.stem: p for p in sorted((root / img_dir).iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    masks = {p.stem: p for p in sorted((root / mask_dir).iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    if not images:
        raise LeanSegError(f"{root / img_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
    missing = [f"{mask_dir}/{name}.*" for name in images if name not in masks]
    if missing:
        raise missing_error("masks", root, missing)
    return [{"id": name, "image": str(p), "label": str(masks[name])} for name, p in images.items()]


def read_mask(path: str) -> np.ndarray:
    """A mask image as ``(H, W)`` values; a colour mask must be grey in all three channels."""
    mask, _ = read_image(path)
    if len(mask) == 3 and not (np.array_equal(mask[0], mask[1]) and np.array_equal(mask[0], mask[2])):
        raise LeanSegError(f"{path}: colour mask; save masks as single-channel label images")
    return mask[0]


class LoadCase:
    def __init__(self, manager, channels: int):
        self.manager = manager
        self.channels = channels

    def __call__(self, case: dict) -> dict:
        image, label = case["image"], case["label"]
        where = label if isinstance(label, str) else case["id"]
        if not isinstance(image, np.ndarray):
            image, _ = read_image(image)
            label = read_mask(label)
        if len(image) != self.channels:
            raise LeanSegError(f"{case['image'] if isinstance(case['image'], str) else case['id']}: "
                               f"{len(image)} channel(s), but the first image had {self.channels}")
        if label.shape != image.shape[1:]:
            raise LeanSegError(f"{where}: mask shape {label.shape} differs from the image's {image.shape[1:]}")
        return {"id": case["id"], "image": image.astype(np.float32), "label": self.manager.encode(label, where)}


class Seg2dTask(Task):
    name = "seg2d"
    Config = Seg2dConfig
    config: Seg2dConfig

    discover = staticmethod(discover)  # the module's function: folders need no task state

    def synthetic(self, n: int, seed: int) -> list[dict]:
        """``n`` cases of leanseg.synthetic.shapes2d, case i seeded by (seed, i)."""
        from leanseg.synthetic import shapes2d

        return seeded_cases(shapes2d, n, seed, self.config.synthetic_size, "shapes")

    def configure(self, cases: list[dict]) -> None:
        """Classes from the mask values found in a folder, channels from its first image (synthetic cases keep
        the defaults); with ``val_ids``, each case is marked with its split."""
        cfg = self.config
        if cfg.val_ids:  # each case names its split: the train loop honours a split every case names
            unknown = sorted(set(cfg.val_ids) - {c["id"] for c in cases})
            if unknown:
                raise LeanSegError(f"val_ids {unknown} are not among the cases")
            for case in cases:
                case["split"] = "val" if case["id"] in cfg.val_ids else "train"
        if not cases or isinstance(cases[0]["label"], np.ndarray):
            return
        values = sorted(set().union(*(np.unique(read_mask(c["label"])).tolist() for c in cases)))
        if len(values) < 2:
            raise LeanSegError(f"masks hold a single value {values}: nothing to segment")
        if len(values) > 32:
            raise LeanSegError(f"masks hold {len(values)} distinct values; expected a few class labels (are they "
                               "JPEG-compressed or anti-aliased?)")
        if not all(float(v).is_integer() for v in values):
            raise LeanSegError(f"masks hold non-integer values {values[:5]}")
        channels = len(read_image(cases[0]["image"])[0])
        self.config = dataclasses.replace(self.config, labels={f"label_{int(v)}": int(v) for v in values},
                                          channels=_COLOUR if channels == 3 else ("intensity",))

    def transforms(self, train: bool):
        from monai import transforms as T

        cfg = self.config
        keys = ["image", "label"]
        steps = [LoadCase(self.label_manager, len(cfg.channels)), self.normalize_transform()]
        if train:
            steps += [
                T.SpatialPadd(keys, spatial_size=cfg.window),
                T.RandSpatialCropSamplesd(keys, roi_size=cfg.window, num_samples=cfg.samples_per_case,
                                          random_size=False),
                T.RandFlipd(keys, prob=0.5, spatial_axis=0),
                T.RandFlipd(keys, prob=0.5, spatial_axis=1),
                T.RandRotate90d(keys, prob=0.5),
                T.Rand2DElasticd(keys, spacing=(32, 32), magnitude_range=(0.5, 1.5), prob=cfg.elastic,
                                 mode=("bilinear", "nearest"), padding_mode="reflection"),
                T.RandAdjustContrastd("image", gamma=(0.7, 1.5), prob=cfg.gamma),
                T.RandScaleIntensityd("image", factors=0.1, prob=0.5),
                T.RandShiftIntensityd("image", offsets=0.1, prob=0.5),
            ]
        steps.append(T.EnsureTyped(keys, track_meta=False))
        return T.Compose(steps)

    def loss(self):
        return softmax_dice_ce()

    def score_case(self, label_map: np.ndarray, target) -> dict[str, float]:
        """Dice per class as for every task; for a two-class boundary task (EM membranes) also pixel and adapted
        Rand error of the label map that predict writes."""
        from leanseg.metrics import boundary_scores

        row = super().score_case(label_map, target)
        manager = self.label_manager
        if self.config.boundary_scores and manager.num_outputs == 2:
            values = np.asarray(list(manager.labels.values()))
            ref = values[target[0, 0].cpu().numpy()]  # class indices -> label values, as label_map holds
            row |= boundary_scores(label_map, ref, boundary=int(values[0]))  # class 0: the membranes
        return row
