"""Postprocessing on the BraTS 2015 expert references: each rule against an independent skimage reference, the
choice on validation cases, the checkpoint field, and `predict`/`evaluate`/`postprocess-select` end to end."""

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import skimage.measure

from leanseg.checkpoint import CheckpointMeta, read_meta
from leanseg.cli.main import main
from leanseg.errors import LeanSegError
from leanseg.labels import LabelManager
from leanseg.postprocess import Postprocess, select_postprocess

DATA = Path(os.environ.get("LEANSEG_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
CASES = [DATA / f"nifti/brats2015_deepmedic/brats_2013_pat000{i}_1" for i in (6, 1)]
needs_data = pytest.mark.skipif(not CASES[0].is_dir(), reason=f"{CASES[0]} (shared BraTS 2015 case) is absent")
# BraTS 2015 values: 1 necrosis, 2 edema, 3 non-enhancing, 4 enhancing; nested regions paint 2, 1, 4
BRATS = LabelManager(regions={"WT": [1, 2, 3, 4], "TC": [1, 3, 4], "ET": [4]})


def reference(case: Path) -> np.ndarray:
    return np.asanyarray(nib.load(case / "OTMultiClass.nii.gz").dataobj).astype(np.int64)


def components(mask: np.ndarray) -> list[np.ndarray]:
    """Independent of leanseg: skimage's face-connected labelling, one boolean mask per component."""
    labelled = skimage.measure.label(mask, connectivity=1)
    return [labelled == i for i in range(1, labelled.max() + 1)]


@needs_data
def test_largest_component_of_a_region_removes_its_inner_regions_too():
    ref = reference(CASES[0])
    out = Postprocess.parse({"largest": ["WT"]}, BRATS).apply(ref, BRATS)
    parts = components(ref > 0)
    assert len(parts) > 1  # the expert reference has stray WT voxels: the rule has something to do
    keep = max(parts, key=lambda m: m.sum())
    np.testing.assert_array_equal(out, np.where(keep, ref, 0))


@needs_data
@pytest.mark.parametrize("name, values, floor", [
    pytest.param("ET", [4], 30, marks=pytest.mark.slow),  # many small ET components, each a whole-volume mask
    ("TC", [1, 3, 4], 5),
    ("WT", [1, 2, 3, 4], 3),
])
def test_min_size_removes_exactly_the_small_components(name, values, floor):
    ref = reference(CASES[0])
    out = Postprocess.parse({"min_size": {name: floor}}, BRATS).apply(ref, BRATS)
    expected = ref.copy()
    for part in components(np.isin(ref, values)):
        if part.sum() < floor:
            expected[part] = 0
    assert not np.array_equal(expected, ref)
    np.testing.assert_array_equal(out, expected)


@needs_data
@pytest.mark.parametrize("threshold, demoted", [(40_000, False), (50_000, True)])  # the case has 43,379 ET voxels
def test_small_enhancing_tumour_becomes_necrosis(threshold, demoted):
    ref = reference(CASES[0])
    out = Postprocess.parse({"demote": {"ET": threshold}}, BRATS).apply(ref, BRATS)
    expected = np.where(ref == 4, 1, ref) if demoted else ref  # TC's paint value: necrosis
    np.testing.assert_array_equal(out, expected)


@pytest.mark.slow
@needs_data
def test_selection_on_validation_cases_keeps_only_rules_that_help():
    refs = [reference(c) for c in CASES]
    rng = np.random.default_rng(0)
    preds = []
    for ref in refs:  # the reference plus false-positive specks of every label, away from the tumour
        pred = ref.copy()
        for _ in range(40):
            x, y, z = rng.integers(20, 60, 3)
            pred[x:x + 2, y:y + 2, z] = rng.choice([1, 2, 4])
        preds.append(pred)
    rules, scores = select_postprocess(preds, refs, BRATS)
    assert scores["after"] > scores["before"]
    assert rules and not rules.demote  # ET is large in both cases: demoting it would cost Dice
    assert select_postprocess(refs, refs, BRATS)[0].to_json() == {}  # already perfect: nothing helps


def test_rules_are_checked_in_one_place():
    with pytest.raises(LeanSegError, match=r"'largest' names 'XT'.*regions \(WT, TC, ET\)"):
        Postprocess.parse({"largest": ["XT"]}, BRATS)
    with pytest.raises(LeanSegError, match="'demote' needs a region inside another"):
        Postprocess.parse({"demote": {"WT": 10}}, BRATS)
    with pytest.raises(LeanSegError, match="unknown rules"):
        Postprocess.parse('{"biggest": ["WT"]}', BRATS)
    with pytest.raises(LeanSegError, match="positive number of voxels"):
        Postprocess.parse({"min_size": {"ET": -3}}, BRATS)
    with pytest.raises(LeanSegError, match="not JSON"):
        Postprocess.parse("{largest", BRATS)
    assert not Postprocess.parse("none", BRATS)


def test_checkpoint_field_round_trip_and_old_checkpoints():
    base = {"model": "lean_unet", "model_kwargs": {"spatial_dims": 3, "in_channels": 4, "out_channels": 3},
            "regions": {"WT": [1, 2, 4], "TC": [1, 4], "ET": [4]}}
    assert not CheckpointMeta.from_json(base).postprocess  # written before the field existed
    meta = CheckpointMeta.from_json(base | {"postprocess": {"largest": ["WT"], "demote": {"ET": 500}}})
    assert meta.postprocess == Postprocess(("WT",), {}, {"ET": 500})
    assert CheckpointMeta.from_json(meta.to_json()) == meta
    with pytest.raises(LeanSegError, match=r"ckpt: checkpoint 'postprocess': 'min_size' names 'edema'"):
        CheckpointMeta.from_json(base | {"postprocess": {"min_size": {"edema": 5}}}, source="ckpt")


# ------------------------------------------------------------------------------------------------------ CLI
def run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@needs_data
def test_evaluate_prints_scores_before_and_after(tmp_path, capsys):
    ref = nib.load(CASES[0] / "OTMultiClass.nii.gz")
    regions = json.dumps(BRATS.to_json()["regions"])
    code, out, err = run(capsys, "evaluate", CASES[0] / "OTMultiClass.nii.gz", CASES[0] / "OTMultiClass.nii.gz",
                         "--regions", regions, "--postprocess", '{"largest": ["WT"]}', "--json", tmp_path / "s.json")
    assert code == 0, err
    result = json.loads((tmp_path / "s.json").read_text())
    assert result["scores"]["WT"]["dice"] == 1.0
    kept = max(components(np.asanyarray(ref.dataobj) > 0), key=lambda m: m.sum()).sum()
    assert result["postprocessed"]["scores"]["WT"]["dice"] == pytest.approx(2 * kept / (kept + 217380), abs=1e-6)
    assert "after postprocess" in out
    code, out, err = run(capsys, "evaluate", CASES[0] / "OTMultiClass.nii.gz", CASES[0] / "OTMultiClass.nii.gz",
                         "--regions", regions, "--postprocess", '{"largest": ["XT"]}')
    assert code == 2 and err.count("\n") == 1 and "--postprocess: 'largest' names 'XT'" in err


@pytest.mark.slow
@needs_data
def test_postprocess_select_writes_the_rules_into_a_checkpoint(tmp_path, capsys):
    from leanseg import save_model
    from leanseg.models import create

    preds, refs = tmp_path / "preds", tmp_path / "refs"
    preds.mkdir()
    refs.mkdir()
    for case in CASES:
        img = nib.load(case / "OTMultiClass.nii.gz")
        ref = np.asanyarray(img.dataobj).astype(np.uint8)
        pred = ref.copy()
        pred[10:14, 10:14, 10:14] = 2  # a false edema blob (64 voxels) far from the tumour
        nib.save(nib.Nifti1Image(ref, img.affine), refs / f"{case.name}.nii.gz")
        nib.save(nib.Nifti1Image(pred, img.affine), preds / f"{case.name}_pred.nii.gz")
    net = create("lean_unet", spatial_dims=3, in_channels=2, out_channels=3, features=(4, 8))
    ckpt = save_model(net, tmp_path / "m.safetensors", regions=BRATS.to_json()["regions"], channels=["flair", "t1c"])
    code, out, err = run(capsys, "postprocess-select", preds, refs, "-m", ckpt, "-o", tmp_path / "pp.safetensors")
    assert code == 0, err
    rules = read_meta(tmp_path / "pp.safetensors").postprocess
    assert rules.to_json() == json.loads(out.splitlines()[1]) and rules
    code, out, err = run(capsys, "postprocess-select", preds, tmp_path, "-m", ckpt)
    assert code == 2 and "no NIfTI file pairs" in err and err.count("\n") == 1
    # -o onto one of the predictions it reads is refused before any work, and the file is untouched
    victim = preds / f"{CASES[0].name}_pred.nii.gz"
    before = victim.read_bytes()
    code, out, err = run(capsys, "postprocess-select", preds, refs, "-m", ckpt, "-o", victim)
    assert code == 2 and "is the input file" in err and victim.read_bytes() == before


def test_training_chooses_rules_on_its_validation_cases(tmp_path):
    from leanseg.training import TrainConfig, train

    result = train("brats", synthetic=4, config=TrainConfig(out=tmp_path, progress=False, postprocess=True),
                   epochs=2, synthetic_size=24, model_kwargs={"features": (4, 8)}, batch_size=2, samples_per_case=1)
    chosen = result.postprocess
    assert chosen["after"] >= chosen["before"]
    assert read_meta(tmp_path / "best.safetensors").postprocess.to_json() == chosen["postprocess"]
    assert not read_meta(tmp_path / "last.safetensors").postprocess  # only best gets them
