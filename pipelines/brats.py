"""BraTS: brain-tumour MRI, four modalities in, three overlapping regions out (WT, TC, ET; sigmoid outputs).

Folders it recognises (see data_cards/): BraTS 2020/2021 (``BraTS2021_XXXXX/BraTS2021_XXXXX_{t1,t1ce,t2,flair,seg}
.nii.gz``; labels 1 NCR, 2 ED, 4 ET), BraTS 2023 GLI (``BraTS-GLI-XXXXX-XXX-{t1n,t1c,t2w,t2f,seg}.nii.gz``; ET is 3)
and MSD Task01_BrainTumour (4D ``imagesTr`` + ``labelsTr`` + ``dataset.json``; 1 edema, 2 non-enhancing, 3 enhancing).
Each case keeps its own convention; every convention maps to the same regions, so one model serves all.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from leanseg.errors import LeanSegError
from leanseg.io import read_nifti
from leanseg.labels import check_label_values
from leanseg.spacing import check_resampled, needs_resampling, resample, resample_labels, target_shape
from leanseg.tasks import Task, TaskConfig
from pipelines._common import dice_bce_loss, missing_error, seeded_cases

CHANNELS = ("t1", "t1ce", "t2", "flair")
# Regions in the BraTS 2015/2021 numbering (1 necrosis / non-enhancing core, 2 edema, 3 non-enhancing tumour (2015
# only), 4 enhancing), largest first: predict paints them back as labels (ET -> 4, TC - ET -> 1, WT - TC -> 2).
REGIONS = {"WT": (1, 2, 3, 4), "TC": (1, 3, 4), "ET": (4,)}


@dataclass(frozen=True)
class Convention:
    modalities: tuple[str, ...]  # file suffixes in CHANNELS order
    labels: frozenset[int]  # the values its label files may hold
    to_brats: dict  # its label values -> the BraTS 2015/2021 numbering that REGIONS is written in

    def canonical(self, label: np.ndarray, where) -> np.ndarray:
        """Its label map in the numbering REGIONS uses, or a one-line error for values outside the convention."""
        check_label_values(label, self.labels, where, "this convention's")
        out = label.astype(np.int64)
        for value, brats in self.to_brats.items():
            out[label == value] = brats
        return out


CONVENTIONS = {
    "brats2021": Convention(CHANNELS, frozenset({0, 1, 2, 4}), {}),
    "brats2023": Convention(("t1n", "t1c", "t2w", "t2f"), frozenset({0, 1, 2, 3}), {3: 4}),
    # MSD: 1 edema, 2 non-enhancing tumour, 3 enhancing
    "msd": Convention(("T1w", "t1gd", "T2w", "FLAIR"), frozenset({0, 1, 2, 3}), {1: 2, 2: 3, 3: 4}),
}
_FILE = re.compile(r"^(?P<case>.+)[_-](?P<mod>t1|t1ce|t2|flair|t1n|t1c|t2w|t2f|seg)\.nii(\.gz)?$")
_LAYOUTS = ("BraTS2021_*/*_{t1,t1ce,t2,flair,seg}.nii.gz, BraTS-GLI-*/*-{t1n,t1c,t2w,t2f,seg}.nii.gz "
            "or an MSD Task01 folder (dataset.json, imagesTr/, labelsTr/)")


@dataclass
class BratsConfig(TaskConfig):
    channels: tuple[str, ...] = CHANNELS
    # the regions nest (ET in TC in WT): one sigmoid each, as the BraTS winners do
    regions: dict = field(default_factory=lambda: dict(REGIONS))
    window: tuple[int, ...] = (128, 128, 128)  # the usual BraTS patch: covers most tumours whole
    batch_size: int = 2  # 2 x 4 x 128^3 fits 8 GB with AMP on the widths below
    samples_per_case: int = 2
    epochs: int = 300
    lr: float = 2e-3  # AdamW; lean layers have few weights per channel and tolerate a larger step than 1e-4
    model_kwargs: dict = field(default_factory=lambda: {"features": (32, 64, 128, 256, 320)})  # nnU-Net widths
    # z-score inside the brain (BraTS is skull-stripped: the background is exactly 0 and stays 0)
    normalization: object = field(default_factory=lambda: {"kind": "zscore", "nonzero": True})
    spacing: object = "median"  # BraTS is 1 mm isotropic; other brain MRI is resampled to what the cases share
    # --synthetic cases: the easy phantoms (the demo's; every network scores 0.97-0.99) or the hard ones that
    # ``leanseg bench brats`` ranks networks on (leanseg.synthetic.BratsGeology)
    hard_phantoms: bool = False


def discover(root: str | Path) -> list[dict]:
    """Cases under ``root``: dicts with id, image (paths), label (path) and convention. Errors list what is missing."""
    root = Path(root)
    if not root.is_dir():
        raise LeanSegError(f"{root}: not a folder")
    if (root / "dataset.json").exists() or (root / "imagesTr").is_dir():
        return _discover_msd(root)
    groups: dict[tuple[Path, str], dict[str, Path]] = {}
    for path in sorted(root.rglob("*.nii*")):
        m = _FILE.match(path.name)
        if m and not path.name.startswith("._"):
            groups.setdefault((path.parent, m["case"]), {})[m["mod"]] = path
    if not groups:
        raise LeanSegError(f"{root}: no BraTS cases found; expected {_LAYOUTS}")
    cases, missing = [], []
    for (folder, case), files in groups.items():
        convention = "brats2023" if {"t1n", "t1c", "t2w", "t2f"} & set(files) else "brats2021"
        sep = "-" if convention == "brats2023" else "_"
        wanted = (*CONVENTIONS[convention].modalities, "seg")
        absent = [w for w in wanted if w not in files]
        missing += [str((folder / f"{case}{sep}{w}.nii.gz").relative_to(root)) for w in absent]
        if not absent:
            cases.append({"id": case, "image": [str(files[w]) for w in wanted[:-1]], "label": str(files["seg"]),
                          "convention": convention})
    if missing:
        raise missing_error("files", root, missing)
    return cases


def _discover_msd(root: Path) -> list[dict]:
    order = [0, 1, 2, 3]  # the MSD default: FLAIR, T1w, t1gd, T2w -> reordered to CHANNELS below
    meta = root / "dataset.json"
    if meta.exists():
        modality = json.loads(meta.read_text()).get("modality", {})
        names = {v.lower(): int(k) for k, v in modality.items()}
        try:
            order = [names[m.lower()] for m in CONVENTIONS["msd"].modalities]
        except KeyError as err:
            raise LeanSegError(f"{meta}: modality {err} missing from {sorted(names)}") from None
    else:
        order = [1, 2, 3, 0]
    # MSD tarballs carry macOS '._' resource files next to every image: skip them
    images = sorted(p for p in (root / "imagesTr").glob("*.nii*") if not p.name.startswith("._"))
    if not images:
        raise LeanSegError(f"{root}: no images in imagesTr/; expected {_LAYOUTS}")
    missing = [f"labelsTr/{p.name}" for p in images if not (root / "labelsTr" / p.name).exists()]
    if missing:
        raise missing_error("files", root, missing)
    return [{"id": p.name.split(".")[0], "image": [str(p)], "label": str(root / "labelsTr" / p.name),
             "convention": "msd", "order": order} for p in images]


class LoadCase:
    """A case dict -> {"image": (4, D, H, W) float32 in CHANNELS order, "label": (3, D, H, W) WT/TC/ET masks}.

    Files are read by leanseg.io (RAS order, one grid for all modalities, as predict reads them); every
    convention's labels are mapped to the numbering of REGIONS, then encoded by the task's label manager."""

    def __init__(self, manager, spacing: tuple[float, ...] | None = None):
        self.manager = manager
        self.spacing = spacing  # files are resampled to it (synthetic arrays are at their own spacing)

    def __call__(self, case: dict) -> dict:
        conv = CONVENTIONS[case["convention"]]
        image, label = case["image"], case["label"]
        where = case["label"] if isinstance(label, str) else case["id"]
        if not isinstance(image, np.ndarray):  # files
            image, geometry = read_nifti(image)
            if case["convention"] == "msd":  # one 4D file, modalities in the order dataset.json gives
                image = image[case["order"]]
            label, _ = read_nifti(label)
            label = label[0]
            if label.shape != image.shape[1:]:
                raise LeanSegError(f"{where}: shape {label.shape} differs from the images' {image.shape[1:]}")
            if self.spacing is not None and needs_resampling(geometry.spacing, self.spacing):  # as predict does
                shape = target_shape(image.shape[1:], geometry.spacing, self.spacing)
                check_resampled(shape, image.shape[0], where)
                image, label = resample(image, shape).numpy(), resample_labels(label, shape)
        return {"id": case["id"], "image": image.astype(np.float32),
                "label": self.manager.encode(conv.canonical(label, where), where)}


class BratsTask(Task):
    name = "brats"
    Config = BratsConfig
    config: BratsConfig

    discover = staticmethod(discover)  # the module's function: folders need no task state

    def synthetic(self, n: int, seed: int) -> list[dict]:
        """``n`` cases of leanseg.synthetic.brats_phantom (hard ones if ``hard_phantoms``), case i seeded by
        (seed, i)."""
        from functools import partial

        from leanseg.synthetic import brats_phantom

        make = partial(brats_phantom, hard=self.config.hard_phantoms)
        return seeded_cases(make, n, seed, self.config.synthetic_size, "phantom", convention="brats2021")

    def transforms(self, train: bool):
        """Load, crop to the brain, z-score inside it per channel; for training, foreground-oversampled patches,
        flips on every axis and intensity scale/shift."""
        from monai import transforms as T

        cfg = self.config
        keys = ["image", "label"]
        steps = [
            LoadCase(self.label_manager, cfg.spacing if isinstance(cfg.spacing, tuple) else None),
            T.CropForegroundd(keys, source_key="image", select_fn=_nonzero, allow_smaller=True),
            self.normalize_transform(),
        ]
        if train:
            steps += [
                T.SpatialPadd(keys, spatial_size=cfg.window),
                # 2 of 3 patches centred on tumour: it fills ~1% of a BraTS brain and would rarely be seen otherwise
                T.RandCropByPosNegLabeld(keys, label_key="label", spatial_size=cfg.window, pos=2, neg=1,
                                         num_samples=cfg.samples_per_case),
                *[T.RandFlipd(keys, prob=0.5, spatial_axis=a) for a in range(3)],
                T.RandScaleIntensityd("image", factors=0.1, prob=0.5),
                T.RandShiftIntensityd("image", offsets=0.1, prob=0.5),
            ]
        steps.append(T.EnsureTyped(keys, track_meta=False))
        return T.Compose(steps)

    def loss(self):
        return dice_bce_loss()


def _nonzero(x):
    return x != 0  # BraTS is skull-stripped: the brain is wherever some modality is non-zero
