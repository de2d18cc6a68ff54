"""The dataset task: MSD and nnU-Net v2 folders train with no other option, the plan and its JSON, folds and
splits.json, fold ensembles, cross-validation scores, and bad datasets as one-line errors."""

import json
import os

import nibabel as nib
import numpy as np
import pytest

from leanseg.cli.main import main
from leanseg.training.splits import load_splits, make_splits

SHAPE = (12, 14, 10)


def _case(rng, shape=SHAPE, channels=1):
    """A small two-label case: label 1 a box, label 2 the box beside it; the image shows them."""
    label = np.zeros(shape, np.uint8)
    x0 = int(rng.integers(1, 4))
    label[x0:x0 + 4, 3:8, 2:7] = 1
    label[x0 + 4:x0 + 8, 3:8, 2:7] = 2
    image = rng.normal(0, 0.3, (*shape, channels)).astype(np.float32) + label[..., None] * np.float32(1.5)
    return image[..., 0] if channels == 1 else image, label


def _save(array, path, affine=None):
    nib.save(nib.Nifti1Image(array, np.diag([1.0, 1.0, 1.5, 1.0]) if affine is None else affine), path)


def make_msd(root, n=6, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for i in range(n):
        image, label = _case(rng, channels=channels)
        _save(image, root / "imagesTr" / f"toy_{i:03d}.nii.gz")
        _save(label, root / "labelsTr" / f"toy_{i:03d}.nii.gz")
        training.append({"image": f"./imagesTr/toy_{i:03d}.nii.gz", "label": f"./labelsTr/toy_{i:03d}.nii.gz"})
    modality = {str(c): f"MR{c}" for c in range(channels)}
    (root / "dataset.json").write_text(json.dumps({
        "name": "Toy", "modality": modality, "labels": {"0": "background", "1": "front", "2": "back"},
        "numTraining": n, "training": training}))
    return root


def make_v2(root, n=6, regions=False, seed=1):
    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i in range(n):
        image, label = _case(rng, channels=2)
        for c in range(2):
            _save(image[..., c], root / "imagesTr" / f"case{i}_{c:04d}.nii.gz")
        _save(label, root / "labelsTr" / f"case{i}.nii.gz")
    labels = ({"background": 0, "whole": [1, 2], "back": 2} if regions
              else {"background": 0, "front": 1, "back": 2})
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T1", "1": "T2"}, "labels": labels, "numTraining": n, "file_ending": ".nii.gz"}))
    return root


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


FAST = ["--epochs", "1", "--features", "4,8"]


def test_msd_folder_trains_with_no_task_and_predicts(tmp_path, capsys):
    data = make_msd(tmp_path / "Task99_Toy")
    out = tmp_path / "runs"
    code, stdout, err = _run(["train", "-d", data, "-o", out, *FAST], capsys)
    assert code == 0, err
    # the plan table is printed before training, and written beside the checkpoints
    assert "patch (window)" in stdout and "target spacing" in stdout and "1x1x1.5" in stdout
    plan = json.loads((out / "plan.json").read_text())
    assert plan["spacing"] == [1.0, 1.0, 1.5] and plan["normalization"] == {"kind": "zscore"}
    assert plan["model_kwargs"]["features"] == [4, 8]  # the flag wins over the plan
    assert all(w % 2 == 0 for w in plan["window"]) and plan["batch_size"] >= 1
    assert (out / "fingerprint.json").is_file()
    # the checkpoint predicts a label map on the input's grid, with the dataset's values
    image = data / "imagesTr" / "toy_000.nii.gz"
    pred = tmp_path / "pred.nii.gz"
    code, _, err = _run(["predict", image, "-m", out / "best.safetensors", "-o", pred, "--no-progress"], capsys)
    assert code == 0, err
    written = nib.load(pred)
    assert written.shape == SHAPE and np.allclose(written.affine, nib.load(image).affine)
    assert set(np.unique(np.asarray(written.dataobj)).tolist()) <= {0, 1, 2}


def test_v2_folder_folds_splits_and_fold_ensemble(tmp_path, capsys):
    data = make_v2(tmp_path / "Dataset042_Toy")
    out = tmp_path / "cv"
    for fold in ("0", "1"):
        code, stdout, err = _run(["train", "-d", data, "-o", out, "--fold", fold, "--keep-last", *FAST], capsys)
        assert code == 0, err
        assert f"fold {fold} of" in stdout
        assert (out / f"fold_{fold}" / "best.safetensors").is_file() and (out / f"fold_{fold}" / "plan.json").is_file()
    splits = json.loads((out / "splits.json").read_text())
    ids = [f"case{i}" for i in range(6)]
    assert splits == make_splits(ids)  # written once from the seeded split, reused by fold 1
    # the validation cases of the folds partition the data, and no fold trains on its validation cases
    assert sorted(i for s in splits for i in s["val"]) == sorted(ids)
    assert all(not set(s["train"]) & set(s["val"]) for s in splits)
    # a folder of folds predicts as their ensemble; both channel files are given
    files = [data / "imagesTr" / f"case0_{c:04d}.nii.gz" for c in range(2)]
    pred = tmp_path / "ens.nii.gz"
    code, _, err = _run(["predict", *files, "-m", out, "-o", pred, "--no-progress"], capsys)
    assert code == 0, err
    assert nib.load(pred).shape == SHAPE
    # cross-validation scores: each fold's validation cases, and postprocessing stored in every fold
    # --ensemble onto a fold's checkpoint (a file the command reads) is refused before any work
    victim = out / "fold_0" / "best.safetensors"
    before = victim.read_bytes()
    code, _, err = _run(["crossval", out, "-d", data, "--no-progress", "--ensemble", victim], capsys)
    assert code == 2 and err.count("\n") == 0 and "is the input file" in err and victim.read_bytes() == before
    ensemble = tmp_path / "both.safetensors"
    code, stdout, err = _run(["crossval", out, "-d", data, "--postprocess", "--no-progress", "--ensemble", ensemble],
                             capsys)
    assert code == 0, err
    scores = json.loads((out / "crossval.json").read_text())
    assert sorted(c["id"] for c in scores["per_case"]) == sorted(splits[0]["val"] + splits[1]["val"])
    assert "front" in stdout and "back" in stdout and "postprocess" in stdout
    # the per-fold means are the means of their cases
    for fold in (0, 1):
        cases = [c["dice_front"] for c in scores["per_case"] if c["fold"] == fold]
        assert scores["per_fold"][str(fold)]["dice_front"] == pytest.approx(np.mean(cases))
    # the one-file ensemble predicts what the folder of folds predicts (the rules were stored in both folds)
    again = tmp_path / "one_file.nii.gz"
    code, _, err = _run(["predict", *files, "-m", ensemble, "-o", again, "--no-progress"], capsys)
    assert code == 0, err
    code, _, err = _run(["predict", *files, "-m", out, "-o", tmp_path / "folds.nii.gz", "--no-progress"], capsys)
    assert code == 0, err
    assert np.array_equal(np.asarray(nib.load(again).dataobj), np.asarray(nib.load(tmp_path / "folds.nii.gz").dataobj))


def test_v2_regions_train_as_sigmoid_regions(tmp_path, capsys):
    from leanseg.checkpoint import read_meta

    data = make_v2(tmp_path / "Dataset043_Regions", regions=True)
    code, stdout, err = _run(["train", "-d", data, "-o", tmp_path / "run", *FAST], capsys)
    assert code == 0, err
    meta = read_meta(tmp_path / "run" / "best.safetensors")
    assert meta.regions == {"whole": (1, 2), "back": (2,)} and meta.channels == ("T1", "T2")


def test_split_is_deterministic_and_reused(tmp_path):
    ids = [f"c{i:03d}" for i in range(23)]
    first = make_splits(ids)
    assert first == make_splits(list(reversed(ids)))  # a function of the set of ids
    assert [len(s["val"]) for s in first] == [5, 5, 5, 4, 4]
    path = tmp_path / "splits.json"
    assert load_splits(path, ids) == first and path.is_file()
    # an edited split is kept (a user's own split), not recomputed
    edited = [{"train": s["train"], "val": s["val"]} for s in first]
    edited[0], edited[1] = edited[1], edited[0]
    path.write_text(json.dumps(edited))
    assert load_splits(path, ids) == edited
    # a splits.json of another dataset is refused
    from leanseg.errors import LeanSegError

    with pytest.raises(LeanSegError, match="other cases"):
        load_splits(path, ids[:-1])


def test_plan_json_round_trip_and_override(tmp_path, capsys):
    from pipelines.dataset import Plan, plan_from, read_dataset

    data = make_msd(tmp_path / "Task98_Toy")
    first = tmp_path / "first"
    code, _, err = _run(["train", "-d", data, "-o", first, *FAST], capsys)
    assert code == 0, err
    written = json.loads((first / "plan.json").read_text())
    fields = Plan.from_json(written, "plan.json")
    assert Plan(**fields).to_json() == written  # JSON -> Plan -> JSON is the identity
    # a user's plan with fewer fields: those replace the planned ones, the rest stays planned
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps({"window": [8, 8, 8], "batch_size": 3}))
    second = tmp_path / "second"
    code, stdout, err = _run(["train", "-d", data, "-o", second, "--plan", mine, *FAST], capsys)
    assert code == 0, err
    used = json.loads((second / "plan.json").read_text())
    assert used["window"] == [8, 8, 8] and used["batch_size"] == 3 and used["spacing"] == written["spacing"]
    # flags win over the plan file
    third = tmp_path / "third"
    code, _, err = _run(["train", "-d", data, "-o", third, "--plan", mine, "--batch-size", "2", *FAST], capsys)
    assert code == 0, err
    assert json.loads((third / "plan.json").read_text())["batch_size"] == 2
    # an unknown plan field is named
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"windw": [8, 8, 8]}))
    code, _, err = _run(["train", "-d", data, "-o", tmp_path / "x", "--plan", bad, *FAST], capsys)
    assert code == 2 and err.count("\n") == 0 and "windw" in err and "window" in err
    bad.write_text(json.dumps({"model_kwargs": 5}))
    code, _, err = _run(["train", "-d", data, "-o", tmp_path / "x", "--plan", bad, *FAST], capsys)
    assert code == 2 and err.count("\n") == 0 and "model_kwargs" in err and "wrong type" in err
    # planning rules on a fingerprint: patch rounded to the network's stride, depth from the smallest axis
    spec = read_dataset(data)
    fp = {"spacings": [[1.0, 1.0, 1.0]] * 4, "shapes": [[35, 50, 36]] * 4, "nonzero_box_fraction": [1.0] * 4,
          "intensities": [{"mean": 0.0, "std": 1.0, "p00_5": -1.0, "p99_5": 1.0}]}
    plan = plan_from(fp, spec, memory_bytes=8 << 30)
    assert plan.window == (40, 56, 40) and plan.model_kwargs["features"] == (16, 32, 64, 128)
    assert plan.batch_size == 2 and plan.epochs == min(1000, 2760 // 2)  # 2 steps an epoch, capped at 1000


def test_ct_channels_get_global_clipped_zscore(tmp_path):
    import torch

    from leanseg.checkpoint import Normalization
    from pipelines.dataset import fingerprint, plan_from, read_dataset

    data = make_msd(tmp_path / "Task97_CT")
    meta = json.loads((data / "dataset.json").read_text())
    meta["modality"] = {"0": "CT"}
    (data / "dataset.json").write_text(json.dumps(meta))
    spec = read_dataset(data)
    fp = fingerprint(spec, spec.cases, progress=False)
    plan = plan_from(fp, spec)
    norm = Normalization.parse(plan.normalization)
    assert norm.kind == "ct"
    # the reference: the foreground's 0.5/99.5 percentiles and clipped mean/std, computed here from every voxel
    fg = np.concatenate([
        np.asarray(nib.load(c["image"][0]).dataobj)[np.asarray(nib.load(c["label"]).dataobj) > 0]
        for c in spec.cases]).astype(np.float64)
    low, high = np.percentile(fg, [0.5, 99.5])
    assert norm.low[0] == pytest.approx(low, rel=1e-4) and norm.high[0] == pytest.approx(high, rel=1e-4)
    clipped = np.clip(fg, low, high)
    assert norm.mean[0] == pytest.approx(clipped.mean(), rel=1e-4, abs=1e-5)
    assert norm.std[0] == pytest.approx(clipped.std(), rel=1e-4)
    x = np.linspace(-5, 5, 64, dtype=np.float32).reshape(1, 4, 4, 4)
    expected = (np.clip(x.astype(np.float64), norm.low[0], norm.high[0]) - norm.mean[0]) / norm.std[0]
    assert np.allclose(np.asarray(norm.transform()(torch.from_numpy(x))), expected, atol=1e-5)
    assert Normalization.parse(norm.to_json()) == norm


@pytest.mark.parametrize("breakage, message", [
    ("label_value", "case toy_002"),
    ("grid", "case toy_001"),
    ("missing", "labelsTr/toy_003.nii.gz"),
    ("json", "not valid JSON"),
    ("form", "neither MSD"),
    ("channels", "case toy_000"),
    ("v2_missing_channel", "case1_0001.nii.gz"),
    ("v2_name", "CASE_XXXX"),
])
def test_bad_datasets_are_one_line(tmp_path, capsys, breakage, message):
    if breakage.startswith("v2"):
        data = make_v2(tmp_path / "Dataset044_Bad")
        if breakage == "v2_missing_channel":
            os.remove(data / "imagesTr" / "case1_0001.nii.gz")
        else:
            (data / "imagesTr" / "case1_0001.nii.gz").rename(data / "imagesTr" / "case1-T2.nii.gz")
    else:
        data = make_msd(tmp_path / "Task96_Bad")
        if breakage == "label_value":
            label = np.zeros(SHAPE, np.uint8)
            label[2:4, 2:4, 2:4] = 7
            _save(label, data / "labelsTr" / "toy_002.nii.gz")
        elif breakage == "grid":
            _save(np.zeros((12, 14, 11), np.uint8), data / "labelsTr" / "toy_001.nii.gz")
        elif breakage == "missing":
            os.remove(data / "labelsTr" / "toy_003.nii.gz")
        elif breakage == "json":
            (data / "dataset.json").write_text("{\"modality\": ")
        elif breakage == "form":
            (data / "dataset.json").write_text(json.dumps({"name": "x"}))
        elif breakage == "channels":
            _save(np.zeros((*SHAPE, 2), np.float32), data / "imagesTr" / "toy_000.nii.gz")
    before = {p: p.stat().st_mtime_ns for p in data.rglob("*")}
    code, _, err = _run(["train", "-d", data, "-o", tmp_path / "run", *FAST], capsys)
    assert code == 2 and err.count("\n") == 0 and message in err, err
    assert {p: p.stat().st_mtime_ns for p in data.rglob("*")} == before  # the dataset is never written


def test_train_without_task_or_dataset_json_names_the_choices(tmp_path, capsys):
    code, _, err = _run(["train", "-d", tmp_path], capsys)
    assert code == 2 and err.count("\n") == 0 and "--task" in err and "dataset.json" in err
    code, _, err = _run(["train", "-d", make_msd(tmp_path / "T"), "--fold", "5"], capsys)
    assert code == 2 and err.count("\n") == 0 and "0 to 4" in err


def test_synthetic_dataset_task_learns(tmp_path):
    from leanseg.training import TrainConfig, train

    result = train("dataset", synthetic=6, config=TrainConfig(out=tmp_path, progress=False, val_every=3), epochs=3,
                   lr=1e-2, batch_size=2, model_kwargs={"features": (4, 8)}, window=(16, 16, 16), synthetic_size=16)
    losses = result.step_losses
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses


def test_bench_msd_rows_on_a_toy_dataset(tmp_path):
    from leanseg.bench.msd import run
    from leanseg.models import create

    data = make_msd(tmp_path / "Task95_Toy", n=10)
    lines: list[str] = []
    rows = run(data, tmp_path / "bench", folds=(0,), epochs=1, models=("LeanUNet (plan)", "MONAI UNet"),
               echo=lines.append)
    assert [r["model"] for r in rows] == ["LeanUNet (plan)", "MONAI UNet"]
    plan = json.loads((tmp_path / "bench" / "LeanUNet_plan" / "fold_0" / "plan.json").read_text())
    lean = create("lean_unet", spatial_dims=3, in_channels=1, out_channels=3, **plan["model_kwargs"])
    assert rows[0]["weights"] == sum(p.numel() for p in lean.parameters())
    for r in rows:
        assert 0.0 <= r["front"] <= 1.0 and 0.0 <= r["back"] <= 1.0 and r["epochs"] == 1
        assert r["mean"] == pytest.approx((r["front"] + r["back"]) / 2)
        assert r["s_per_epoch"] > 0 and r["predict_s"] > 0
    # both rows were scored on fold 0's validation cases, out of fold
    splits = json.loads((tmp_path / "bench" / "MONAI_UNet" / "splits.json").read_text())
    scored = json.loads((tmp_path / "bench" / "MONAI_UNet" / "crossval.json").read_text())
    assert sorted(c["id"] for c in scored["per_case"]) == sorted(splits[0]["val"])


def test_model_folder_without_checkpoints_is_one_line(tmp_path, capsys):
    data = make_msd(tmp_path / "Task94_Toy", n=2)
    (tmp_path / "empty").mkdir()
    code, _, err = _run(["predict", data / "imagesTr" / "toy_000.nii.gz", "-m", tmp_path / "empty", "-o",
                         tmp_path / "p.nii.gz"], capsys)
    assert code == 2 and err.count("\n") == 0 and "fold_*/best.safetensors" in err
