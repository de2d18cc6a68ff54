"""seg2d: 2D segmentation from a folder of images and masks with matching names, on the 2D lean path.

Layouts: ``images/`` + ``masks/``, or ``image/`` + ``label/`` (the ISBI 2012 EM copy in data/images2d). Every
distinct mask value is a class, in increasing order: ISBI's 0 (membrane) and 255 (cell interior) become classes
0 and 1, and the checkpoint's ``labels`` map them back. Colour images are turned to grey.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from leanseg.errors import LeanSegError
from pipelines._common import (
    TaskConfig,
    batch_score,  # noqa: F401  (part of the task's interface)
    build_model,
    missing_error,
    seeded_cases,
    softmax_dice_ce,
    synthetic_window,  # noqa: F401  (part of the task's interface)
)

_PAIRS = (("images", "masks"), ("image", "label"), ("images", "labels"), ("imgs", "masks"))
_EXT = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")


@dataclass
class Config(TaskConfig):
    spatial_dims: int = 2
    channels: tuple[str, ...] = ("intensity",)
    classes: tuple[str, ...] = ("background", "disc", "rectangle")  # the synthetic shapes; a folder sets its own
    label_values: tuple[int, ...] = (0, 1, 2)  # mask value of each class
    sigmoid: bool = False  # classes exclude each other: one softmax
    window: tuple[int, ...] = (256, 256)  # half an ISBI slice: membranes need context of a few cells
    batch_size: int = 4
    samples_per_case: int = 4
    epochs: int = 100
    # ISBI 2012 ablations (README, 8 epochs, slices 15-19): max-pool then a stride-1 lean conv going down (+5.8
    # membrane Dice points over stride-2 lean convs, Rand error 0.62 -> 0.49) and dense 3x3s in the full-resolution
    # decoder level (+6.0; 10k weights) add up (0.707 / 0.42) at 258,850 weights
    model_kwargs: dict = field(default_factory=lambda: {"features": (16, 32, 64, 128, 256), "down": "maxpool",
                                                        "last_conv": "dense"})
    lr: float = 5e-3  # +1.5 Dice points over 2e-3 on top of the two above (ablation B7)
    synthetic_size: int = 96
    # ids (file stems) of the validation cases; empty: a seeded val_fraction of the cases (`leanseg bench seg2d`
    # validates on ISBI slices 15-19, so that every network sees the same slices)
    val_ids: tuple[str, ...] = ()
    # with two classes, class 0 is a boundary (EM membranes): validation also reports pixel and adapted Rand error
    boundary_scores: bool = True
    elastic: float = 0.0  # probability of an elastic deformation per crop
    gamma: float = 0.0  # probability of a random gamma (contrast) change per crop


def discover(root: str | Path) -> list[dict]:
    root = Path(root)
    if not root.is_dir():
        raise LeanSegError(f"{root}: not a folder")
    for img_dir, mask_dir in _PAIRS:
        if (root / img_dir).is_dir() and (root / mask_dir).is_dir():
            break
    else:
        raise LeanSegError(f"{root}: expected subfolders images/ and masks/ (or image/ and label/)")
    images = {p.stem: p for p in sorted((root / img_dir).iterdir()) if p.suffix.lower() in _EXT}
    masks = {p.stem: p for p in sorted((root / mask_dir).iterdir()) if p.suffix.lower() in _EXT}
    if not images:
        raise LeanSegError(f"{root / img_dir}: no images ({', '.join(_EXT)})")
    missing = [f"{mask_dir}/{name}.*" for name in images if name not in masks]
    if missing:
        raise missing_error("masks", root, missing)
    return [{"id": name, "image": str(p), "label": str(masks[name])} for name, p in images.items()]


def _read(path: str, gray: bool) -> np.ndarray:
    from skimage import io
    from skimage.color import rgb2gray, rgba2rgb

    try:
        a = io.imread(path)
    except Exception as err:
        raise LeanSegError(f"{path}: cannot read as an image ({err})") from err
    if a.ndim == 3 and gray:
        a = rgb2gray(rgba2rgb(a) if a.shape[-1] == 4 else a[..., :3])
    return a


def configure(cfg: Config, cases: list[dict]) -> Config:
    """Classes from the mask values found in a folder (synthetic cases keep the defaults); with ``val_ids``, each
    case is marked with its split (the train loop honours a split every case names)."""
    if cfg.val_ids:
        unknown = sorted(set(cfg.val_ids) - {c["id"] for c in cases})
        if unknown:
            raise LeanSegError(f"val_ids {unknown} are not among the cases")
        for case in cases:
            case["split"] = "val" if case["id"] in cfg.val_ids else "train"
    if not cases or isinstance(cases[0]["label"], np.ndarray):
        return cfg
    values = sorted(set().union(*(np.unique(_read(c["label"], gray=True)).tolist() for c in cases)))
    if len(values) < 2:
        raise LeanSegError(f"masks hold a single value {values}: nothing to segment")
    if len(values) > 32:
        raise LeanSegError(f"masks hold {len(values)} distinct values; expected a few class labels (are they "
                           "JPEG-compressed or anti-aliased?)")
    return dataclasses.replace(cfg, label_values=tuple(int(v) for v in values),
                               classes=tuple(f"label_{int(v)}" for v in values))


def synthetic(n: int, seed: int, cfg: Config) -> list[dict]:
    """``n`` cases of leanseg.synthetic.shapes2d, case i seeded by (seed, i)."""
    from leanseg.synthetic import shapes2d

    return seeded_cases(shapes2d, n, seed, cfg.synthetic_size, "shapes")




class LoadCase:
    def __init__(self, label_values: tuple[int, ...]):
        self.lookup = {v: i for i, v in enumerate(label_values)}

    def __call__(self, case: dict) -> dict:
        image, label = case["image"], case["label"]
        if not isinstance(image, np.ndarray):
            image = _read(image, gray=True)[None]
            label = _read(label, gray=True)
        if label.shape != image.shape[1:]:
            raise LeanSegError(f"{case['label']}: mask shape {label.shape} differs from the image's {image.shape[1:]}")
        values = set(np.unique(label).tolist())
        if values - set(self.lookup):
            raise LeanSegError(f"{case['label'] if isinstance(case['label'], str) else case['id']}: mask values "
                               f"{sorted(values - set(self.lookup))} are not among {sorted(self.lookup)}")
        index = np.zeros(label.shape, np.int64)
        for value, cls in self.lookup.items():
            index[label == value] = cls
        return {"id": case["id"], "image": image.astype(np.float32), "label": index[None]}


def transforms(cfg: Config, train: bool):
    from monai import transforms as T

    keys = ["image", "label"]
    steps = [LoadCase(cfg.label_values), T.NormalizeIntensityd("image")]
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


@torch.no_grad()
def evaluate(net, loader, cfg: Config, device) -> dict[str, float]:
    """Mean over whole validation images of Dice per class and, for a two-class boundary task, pixel and adapted
    Rand error; prediction is ``leanseg.inference.sliding_window_predict`` (softmax blending, argmax), what
    ``leanseg predict`` runs."""
    from leanseg.inference import sliding_window_predict
    from leanseg.metrics import boundary_scores

    rows = []
    for batch in loader:
        probs = sliding_window_predict(net, batch["image"], cfg.window, device=device)  # (1, K, H, W)
        pred, ref = probs[0].argmax(0).numpy(), batch["label"][0, 0].numpy()
        row = {}
        for k, name in enumerate(cfg.classes):
            total = (pred == k).sum() + (ref == k).sum()
            row[f"dice_{name}"] = 2 * float(((pred == k) & (ref == k)).sum()) / total if total else 1.0
        if cfg.boundary_scores and len(cfg.classes) == 2:
            row |= boundary_scores(pred, ref, boundary=0)
        rows.append(row)
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} if rows else {}


def loss(cfg: Config):
    return softmax_dice_ce()


def model(cfg: Config, name: str | None = None, **overrides):
    return build_model(cfg, name, **overrides)


def checkpoint_meta(cfg: Config) -> dict:
    return {"task": "seg2d", "channels": list(cfg.channels),
            "labels": dict(zip(cfg.classes, cfg.label_values, strict=True)),
            "normalization": {"kind": "zscore"}, "window": list(cfg.window)}
