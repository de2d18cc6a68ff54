"""bf16 with an ensemble (`-m a -m b --precision bf16`): every member runs in bfloat16 (an Ensemble calls its
members, not its own forward) and the label map agrees with float32's on a real EM slice; where the CPU lacks
native bfloat16 it is one line, exit 2."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leanseg.cli.main import main
from leanseg.nn import precision
from leanseg.zoo import path_of

DATA = Path(os.environ.get("LEANSEG_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
SLICE = DATA / "images2d/isbi2012_em_membrane/image/3.png"


@pytest.fixture
def two_models_and_a_slice(tmp_path):
    if not SLICE.exists():
        pytest.skip(f"{SLICE} (shared ISBI slice) is absent")
    Image.open(SLICE).crop((128, 128, 384, 384)).save(tmp_path / "slice.png")  # one 256^2 window
    a = path_of("em-membrane")
    b = shutil.copy(a, tmp_path / "b.safetensors")  # the same weights under another name: still two members
    return tmp_path / "slice.png", ["-m", str(a), "-m", str(b)]


@pytest.mark.skipif(not precision.cpu_supports_bf16(), reason="this CPU has no native bfloat16 (AVX512-BF16/AMX)")
def test_bf16_ensemble_agrees_with_fp32(tmp_path, two_models_and_a_slice):
    image, models = two_models_and_a_slice
    for name in ("fp32", "bf16"):
        assert main(["predict", str(image), *models, "--precision", name, "-o", str(tmp_path / f"{name}.png"),
                     "--no-progress"]) == 0
    fp32, bf16 = (np.asarray(Image.open(tmp_path / f"{n}.png")) for n in ("fp32", "bf16"))
    assert fp32.shape == bf16.shape == (256, 256) and set(np.unique(fp32)) == {0, 255}
    agree = float(np.mean(fp32 == bf16))
    assert agree > 0.98, agree  # bfloat16 keeps 8 bits of mantissa: a few boundary pixels flip


def test_bf16_ensemble_without_cpu_support_is_one_line(tmp_path, two_models_and_a_slice, monkeypatch, capsys):
    image, models = two_models_and_a_slice
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: False)
    assert main(["predict", str(image), *models, "--precision", "bf16", "-o", str(tmp_path / "o.png"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "precision bf16: this CPU has neither AVX512-BF16 nor AMX-BF16" in err, err
    assert not (tmp_path / "o.png").exists()
