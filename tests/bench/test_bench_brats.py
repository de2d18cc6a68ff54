"""``leanseg bench brats`` in seconds: every row trains through the registry and is scored by the predict path."""

import math

import pytest

from leanseg.bench.brats import DEFAULT_MODELS, contenders, run
from leanseg.cli.main import main


@pytest.mark.slow
def test_every_row_trains_and_scores(tmp_path):
    lines: list[str] = []
    names = list(contenders((8, 16)))
    assert set(DEFAULT_MODELS) < set(names)
    rows = run(tmp_path, cases=3, epochs=1, size=16, features=(8, 16), models=names, threads=1, echo=lines.append)
    assert [r["model"] for r in rows] == names
    assert lines[0].startswith("leanseg bench brats: hard phantoms 16^3, 2 training + 1 validation cases")
    assert "load average" in lines[0] and len(lines) == 2 + len(names)
    for r in rows:
        assert r["weights"] > 0 and r["s_per_epoch"] > 0
        assert all(0 <= r[k] <= 1 for k in ("WT", "TC", "ET", "mean")), r
        assert math.isclose(r["mean"], (r["WT"] + r["TC"] + r["ET"]) / 3)
        assert 0 <= r["no_et_right"] <= r["no_et"] <= 1  # one validation case
        if r["no_et"] == 0:  # the one validation case has ET: the split's mean is the ET column
            assert math.isclose(r["et_present"], r["ET"])
    weights = {r["model"]: r["weights"] for r in rows}
    assert weights["LeanUNet"] < weights["LeanUNet dense twin"]
    assert weights["LeanUNet"] < weights["LeanUNet maxpool+dense last"] < weights["LeanUNet dense twin"]
    assert (tmp_path / "MONAI_SegResNet" / "last.safetensors").exists()


def test_cli_easy_phantoms_one_row(tmp_path, capsys):
    argv = ["bench", "brats", "--cases", "2", "--epochs", "1", "--size", "16", "--features", "4,8", "--easy",
            "--models", "LeanUNet", "--threads", "1", "--out", str(tmp_path)]
    assert main(argv + ["--test-cases", "0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "easy phantoms 16^3, 1 training + 1 validation cases (scored on the validation cases)" in out[0]
    assert len(out) == 3 and out[2].startswith("LeanUNet ")
    weights, wt, tc, et, mean = (float(v) for v in out[2].split()[1:6])
    assert weights > 0 and all(0 <= d <= 1 for d in (wt, tc, et))
    assert math.isclose(mean, (wt + tc + et) / 3, abs_tol=1e-3)  # printed to three digits


def test_cli_unknown_row_is_one_line(tmp_path, capsys):
    assert main(["bench", "brats", "--models", "MONAI Unet", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean 'MONAI UNet'" in err
    assert list(tmp_path.iterdir()) == []


def test_test_cases_are_new_phantoms_and_scored_as_validation(tmp_path):
    """--test-cases scores on phantoms of another seed, none of them a training or validation case, through the
    same path as the validation Dice that train() reports."""
    import numpy as np

    from leanseg.bench.brats import score, scored_cases

    options = dict(window=(16,) * 3, synthetic_size=16, hard_phantoms=True, val_fraction=0.25)
    trained = scored_cases(4, 0, 0, options)  # the validation case of 4
    test = scored_cases(4, 0, 3, options)
    assert len(trained) == 1 and len(test) == 3
    from leanseg.tasks import get_task

    seen = get_task("brats", **options).synthetic(4, 0)
    assert not any(np.array_equal(t["image"], s["image"]) for t in test for s in seen)
    lines: list[str] = []
    rows = run(tmp_path, cases=4, epochs=1, size=16, features=(4, 8), models=["LeanUNet"], threads=1,
               test_cases=3, echo=lines.append)
    assert "(scored on 3 test cases)" in lines[0]
    from leanseg.checkpoint import load_model

    model = load_model(tmp_path / "LeanUNet" / "last.safetensors")[0]
    again = score(model, test, options)
    for key in ("WT", "TC", "ET", "et_present", "no_et_right", "no_et"):
        assert again[key] == rows[0][key] or (np.isnan(again[key]) and np.isnan(rows[0][key]))
    val = score(model, trained, options)  # the validation case: what train() logged as val_dice_*
    import csv

    last = list(csv.DictReader(open(tmp_path / "LeanUNet" / "metrics.csv")))[-1]
    assert abs(val["WT"] - float(last["val_dice_WT"])) < 1e-6
