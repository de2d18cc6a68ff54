"""``leanseg bench brats`` in seconds: every row trains through the registry and is scored by the predict path."""

import math

from leanseg.bench.brats import DEFAULT_MODELS, contenders, run
from leanseg.cli.main import main


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
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert "easy phantoms 16^3, 1 training + 1 validation cases" in out[0]
    assert len(out) == 3 and out[2].startswith("LeanUNet ")


def test_cli_unknown_row_is_one_line(tmp_path, capsys):
    assert main(["bench", "brats", "--models", "MONAI Unet", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean 'MONAI UNet'" in err
    assert list(tmp_path.iterdir()) == []
