"""The models shipped in leanseg/zoo: each has a card with its reproducing command, and loads; the fault model
predicts the real F3 crop with no -m and writes SEG-Y on the input's geometry, marking a plausible fraction."""

import os
from pathlib import Path

import numpy as np
import pytest
import segyio

import leanseg
from leanseg import zoo
from leanseg.cli.main import main

DATA = Path(os.environ.get("LEANSEG_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
F3 = DATA / "segy/segyio/f3.sgy"  # real F3 crop, 23 x 18 x 75, int16


@pytest.mark.parametrize("name", zoo.names())
def test_every_shipped_model_has_a_card_and_loads(name):
    card = (zoo.ZOO_DIR / f"{name}.md").read_text(encoding="utf-8").lower()
    for section in ("task", "input", "training data", "licence", "reproduce", "scores", "speed", "limits"):
        assert section in card, f"{name}.md lacks a '{section}' section"
    model, meta = leanseg.load_model(name)
    assert meta.task and meta.channels and sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.skipif(not F3.is_file(), reason="shared test data absent")
@pytest.mark.skipif("faults" not in zoo.names(), reason="the faults zoo model is not installed")
def test_faults_predicts_f3_with_no_model_given(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no runs/leanseg here: the zoo's model is the one picked
    assert main(["predict", str(F3), "-o", "out.sgy", "--no-progress"]) == 0
    assert "zoo model 'faults'" in capsys.readouterr().err
    with segyio.open(F3) as src, segyio.open("out.sgy") as out:
        assert list(out.ilines) == list(src.ilines) and list(out.xlines) == list(src.xlines)
        assert np.array_equal(out.samples, src.samples)
        for i in (0, len(src.trace) // 2, len(src.trace) - 1):
            for key in (segyio.TraceField.INLINE_3D, segyio.TraceField.CROSSLINE_3D, segyio.TraceField.CDP_X):
                assert out.header[i][key] == src.header[i][key]
        assert set(np.unique(segyio.tools.cube(out))) <= {0, 1}


@pytest.mark.skipif(not F3.is_file(), reason="shared test data absent")
@pytest.mark.skipif("faults" not in zoo.names(), reason="the faults zoo model is not installed")
def test_faults_marks_a_plausible_fraction_of_f3(tmp_path):
    out = leanseg.predict(F3, model="faults", output=tmp_path / "f3.npy", progress=False)
    # faults are thin sheets: a few percent at most (the card's 0.15%; 31.7% when the crop was padded by repeating
    # its border traces). That the model finds faults at all is the next test's job.
    assert np.load(out).mean() < 0.05


@pytest.mark.skipif("faults" not in zoo.names(), reason="the faults zoo model is not installed")
def test_faults_finds_the_faults_of_held_out_cubes():
    """Against the generator's own labels on cubes training never drew (the card's first four held-out cubes; their
    F1 spreads from 0.54 to 0.95, mean 0.82): a model that marks nothing, everything or the wrong axis fails."""
    from leanseg.bench.faults import heldout_f1

    score = heldout_f1("faults", cases=4, size=64)
    assert score["f1"] > 0.75, score
