"""The hippocampus model of leanseg/zoo (the five folds of a cross-validation on MSD Task04, averaged in one
checkpoint): `leanseg predict case.nii.gz -m hippocampus` writes a label map on the input's grid."""

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from leanseg.cli.main import main

ZOO = Path(__file__).resolve().parents[2] / "leanseg" / "zoo"
MODEL = ZOO / "hippocampus.safetensors"
DATA = Path(os.environ.get("LEANSEG_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
CASES = DATA / "nifti" / "msd_hippocampus"


def test_checkpoint_and_card_describe_the_model():
    from leanseg.checkpoint import read_meta

    meta = read_meta(MODEL)
    assert meta.labels == {"background": 0, "Anterior": 1, "Posterior": 2} and meta.channels == ("MRI",)
    assert meta.model == "averaged" and meta.spacing == (1.0, 1.0, 1.0) and meta.window == (40, 56, 40)
    card = (ZOO / "hippocampus.md").read_text()
    assert "leanseg train -d" in card and "CC BY-SA 4.0" in card and "leanseg crossval" in card


@pytest.mark.skipif(not (CASES / "dataset.json").is_file(), reason=f"{CASES} (shared MSD hippocampus) is absent")
def test_predict_real_cases_on_their_grid(tmp_path):
    dice = []
    for case in ("hippocampus_001", "hippocampus_204", "hippocampus_386"):
        image = CASES / "imagesTr" / f"{case}.nii.gz"
        out = tmp_path / f"{case}.nii.gz"
        assert main(["predict", str(image), "-m", "hippocampus", "-o", str(out), "--no-progress"]) == 0
        pred, src = nib.load(out), nib.load(image)
        assert pred.shape == src.shape and np.allclose(pred.affine, src.affine)
        labels = np.asarray(pred.dataobj)
        ref = np.asarray(nib.load(CASES / "labelsTr" / f"{case}.nii.gz").dataobj)
        assert labels.dtype == np.uint8 and set(np.unique(labels).tolist()) <= {0, 1, 2}
        for value in (1, 2):
            a, b = labels == value, ref == value
            dice.append(2 * (a & b).sum() / (a.sum() + b.sum()))
    # four of the five folds trained on each of these cases (the card's scores are out of fold); 0.8 still fails
    # for a broken checkpoint, swapped labels, a wrong normalisation or a shifted grid
    assert min(dice) > 0.8, dice
