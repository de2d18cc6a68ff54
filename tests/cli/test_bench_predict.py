"""`leanseg bench predict --quick`: every requested row runs through leanseg.predict in its own process."""

import pytest

from leanseg.cli.main import main


@pytest.mark.slow
def test_quick_bench_predict_prints_rows(capsys, tmp_path):
    code = main(["bench", "predict", "--quick", "--models", "LeanUNet,MONAI UNet", "--workdir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("model "))
    rows = {line.split("|")[0].strip(): [c.strip() for c in line.split("|")[1:]] for line in lines[header + 2:]}
    assert set(rows) == {"LeanUNet", "MONAI UNet"}
    # 64x64x48 case, brain box about 44^3 inside it, 32^3 windows at overlap 0.5: 2 per axis
    assert rows["LeanUNet"][1] == rows["MONAI UNet"][1] == "8"
    assert rows["LeanUNet"][-2:] == ["1.00", "1.00"]  # ratios to itself
    assert float(rows["MONAI UNet"][4]) > 0 and int(rows["MONAI UNet"][5].replace(",", "")) > 100  # wall s, MiB
    assert "torch" in out and "threads" in out and "fp32" in out
    assert list(tmp_path.iterdir()) == []  # checkpoints and outputs removed


def test_unknown_row_is_one_line_error(capsys):
    assert main(["bench", "predict", "--quick", "--models", "LeanUNet,SegResNet"]) == 2
    assert "unknown row 'SegResNet'" in capsys.readouterr().err
