"""`leanseg predict` / `leanseg evaluate` end to end: real BraTS and SEG-Y files, and one test per bad input."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import segyio
import torch
from torch import nn

from leanseg import save_model
from leanseg.cli.main import main
from leanseg.models import _registry
from leanseg.nn import LeanConv

DATA = Path(os.environ.get("LEANSEG_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} (shared test data) is absent")
CASE = DATA / "nifti/brats2015_deepmedic/brats_2013_pat0006_1"
F3 = DATA / "segy/segyio/f3.sgy"


class TinyTestNet(nn.Module):
    """One lean convolution: enough to exercise the whole path in a second on 240x240x155."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = LeanConv(spatial_dims, in_channels, out_channels, bias=True)

    def forward(self, x):
        return self.conv(x)


@pytest.fixture(autouse=True)
def tiny_test_net_registered(monkeypatch):
    """Registered for these tests only, so the registry other tests see is the library's."""
    monkeypatch.setitem(_registry._MODELS, "tiny_test_net", TinyTestNet)


def checkpoint(path: Path, spatial_dims=3, channels=("flair", "t1c"), labels=None, **meta) -> Path:
    labels = labels or {"background": 0, "necrosis": 1, "edema": 2, "non_enhancing": 3, "enhancing": 4}
    kwargs = {"spatial_dims": spatial_dims, "in_channels": len(channels), "out_channels": len(labels)}
    torch.manual_seed(0)
    meta = {
        "channels": list(channels),
        "labels": labels,
        "normalization": {"kind": "zscore", "nonzero": True},
        "window": [240, 240, 160][:spatial_dims],
        **meta,
    }
    return save_model(TinyTestNet(**kwargs), path, model="tiny_test_net", model_kwargs=kwargs, **meta)


def run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args] + (["--no-progress"] if args and args[0] == "predict" else []))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
@needs_data
@pytest.mark.parametrize("as_files", [False, True])
def test_brats2015_case_two_channels(tmp_path, capsys, as_files):
    ckpt = checkpoint(tmp_path / "m.safetensors")
    inputs = [CASE / "Flair_subtrMeanDivStd.nii.gz", CASE / "T1c_subtrMeanDivStd.nii.gz"] if as_files else [CASE]
    code, out, err = run(capsys, "predict", *inputs, "-m", ckpt, "-o", tmp_path / "seg.nii.gz", "--preview")
    assert code == 0, err
    seg, ref = nib.load(tmp_path / "seg.nii.gz"), nib.load(CASE / "OTMultiClass.nii.gz")
    assert seg.shape == (240, 240, 155) and seg.get_data_dtype().kind in "iu"
    np.testing.assert_array_equal(seg.affine, ref.affine)
    assert nib.aff2axcodes(seg.affine) == ("L", "P", "S")
    assert set(np.unique(np.asanyarray(seg.dataobj))) <= {0, 1, 2, 3, 4}
    assert (tmp_path / "seg_preview.png").stat().st_size > 0
    code, out, err = run(capsys, "evaluate", tmp_path / "seg.nii.gz", CASE / "OTMultiClass.nii.gz", "--json", "-")
    assert code == 0, err
    scores = json.loads(out[out.index("{") :])["scores"]
    assert set(scores) == {"label_1", "label_2", "label_3", "label_4"}
    assert all(0 <= s["dice"] <= 1 for s in scores.values())


@needs_data
@pytest.mark.parametrize(
    "name, endian",
    [("segyio/f3.sgy", "big"), ("segyio/little_endian/f3-lsb.sgy", "little"), ("segysak_f3/f3-withdead.sgy", "big")],
)
def test_segy_keeps_geometry_and_headers(tmp_path, capsys, name, endian):
    ckpt = checkpoint(
        tmp_path / "m.safetensors",
        channels=("amplitude",),
        labels={"rest": 0, "event": 1},
        window=[8, 16, 32],
        normalization="zscore",
    )
    out_path = tmp_path / "pred.sgy"
    code, _, err = run(capsys, "predict", DATA / "segy" / name, "-m", ckpt, "-o", out_path, "--probabilities")
    assert code == 0, err
    with (
        segyio.open(DATA / "segy" / name, ignore_geometry=True, endian=endian) as src,
        segyio.open(out_path, ignore_geometry=True, endian=endian) as dst,
    ):
        assert dst.tracecount == src.tracecount  # f3-withdead: the 239 live traces only
        np.testing.assert_array_equal(dst.samples, src.samples)
        assert dst.text[0] == src.text[0] and dst.bin[segyio.BinField.Format] == 5
        assert [dict(h) for h in dst.header] == [dict(h) for h in src.header]
        assert set(np.unique(dst.trace.raw[:])) <= {0.0, 1.0}
    assert np.load(tmp_path / "pred_probs.npy").shape == (2, 23, 18, 75)


@needs_data
def test_segy_prediction_with_geometry_matches_segyio(tmp_path, capsys):
    ckpt = checkpoint(
        tmp_path / "m.safetensors", channels=("amplitude",), labels={"rest": 0, "event": 1}, window=[8, 16, 32]
    )
    assert run(capsys, "predict", F3, "-m", ckpt, "-o", tmp_path / "pred.sgy")[0] == 0
    with segyio.open(tmp_path / "pred.sgy") as f, segyio.open(F3) as g:  # segyio infers the same geometry
        np.testing.assert_array_equal(f.ilines, g.ilines)
        np.testing.assert_array_equal(f.xlines, g.xlines)


@pytest.mark.skipif(not (DATA / "images2d").is_dir(), reason="shared 2D images are absent")
def test_image_2d(tmp_path, capsys):
    ckpt = checkpoint(
        tmp_path / "m.safetensors",
        spatial_dims=2,
        channels=("em",),
        labels={"membrane": 0, "cell": 255},
        window=[128, 128],
    )
    code, _, err = run(
        capsys,
        "predict",
        DATA / "images2d/isbi2012_em_membrane/image/0.png",
        "-m",
        ckpt,
        "-o",
        tmp_path / "0.png",
        "--preview",
    )
    assert code == 0, err
    import skimage.io

    label = skimage.io.imread(tmp_path / "0.png")
    assert label.shape == (512, 512) and set(np.unique(label)) <= {0, 255}


def test_default_output_beside_input(tmp_path, capsys):
    nib.save(
        nib.Nifti1Image(np.random.default_rng(0).normal(size=(6, 7, 8)).astype(np.float32), np.eye(4)),
        tmp_path / "vol.nii.gz",
    )
    ckpt = checkpoint(tmp_path / "m.safetensors", channels=("ct",), labels={"a": 0, "b": 3}, window=[4, 4, 4])
    code, out, err = run(capsys, "predict", tmp_path / "vol.nii.gz", "-m", ckpt, "--probabilities", "--tta")
    assert code == 0, err
    assert out.strip() == str(tmp_path / "vol_pred.nii.gz")
    assert nib.load(tmp_path / "vol_pred.nii.gz").get_data_dtype() == np.uint8
    assert nib.load(tmp_path / "vol_pred_probs.nii.gz").shape == (6, 7, 8, 2)


def test_regions_become_labels(tmp_path, capsys):
    nib.save(nib.Nifti1Image(np.ones((5, 5, 5), np.float32), np.eye(4)), tmp_path / "v.nii.gz")
    ckpt = checkpoint(tmp_path / "m.safetensors", channels=("t1",), labels=None, window=[8, 8, 8])
    meta = json.loads(__import__("safetensors").safe_open(str(ckpt), "pt").metadata()["leanseg"])
    from leanseg.labels import LabelManager

    decoder = LabelManager(regions={"WT": [1, 2, 3, 4], "TC": [1, 3, 4], "ET": [4]})
    probs = torch.tensor([[0.9, 0.9, 0.9, 0.1], [0.1, 0.9, 0.9, 0.1], [0.1, 0.1, 0.9, 0.9]])  # ET outside WT too
    np.testing.assert_array_equal(decoder.decode(probs), [2, 1, 4, 4])
    assert meta["model"] == "tiny_test_net"


# ---- bad input: one line naming the file, exit code 2, no traceback, no partial output ---------------------------


def _nifti(path, shape=(6, 6, 6), affine=None, value=1.0):
    data = np.full(shape, value, np.float32)
    data[0, 0, 0] = 2.0
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


def _bad_case(tmp_path, case):
    """(inputs, checkpoint, output, the name the message must contain)."""
    ckpt = checkpoint(tmp_path / "m.safetensors", channels=("t1",), labels={"a": 0, "b": 1}, window=[4, 4, 4])
    out = tmp_path / "out" / "seg.nii.gz"
    out.parent.mkdir()
    good = _nifti(tmp_path / "good.nii.gz")
    if case == "truncated_gz":
        bad = tmp_path / "trunc.nii.gz"
        bad.write_bytes(gzip.compress(np.full((40, 40, 40), 3, np.float32).tobytes())[:500])
        _nifti(tmp_path / "full.nii.gz", shape=(40, 40, 40))
        bad.write_bytes((tmp_path / "full.nii.gz").read_bytes()[:400])
        return [bad], ckpt, out, "trunc.nii.gz"
    if case == "not_nifti":
        bad = tmp_path / "notes.nii"
        bad.write_text("this is not an image\n" * 30)
        return [bad], ckpt, out, "notes.nii"
    if case == "channel_count":
        return [good, good], ckpt, out, "good.nii.gz"
    if case == "shape_mismatch":
        ckpt2 = checkpoint(
            tmp_path / "m2.safetensors", channels=("t1", "t2"), labels={"a": 0, "b": 1}, window=[4, 4, 4]
        )
        return [good, _nifti(tmp_path / "small.nii.gz", shape=(6, 6, 5))], ckpt2, out, "small.nii.gz"
    if case == "affine_mismatch":
        ckpt2 = checkpoint(
            tmp_path / "m2.safetensors", channels=("t1", "t2"), labels={"a": 0, "b": 1}, window=[4, 4, 4]
        )
        return [good, _nifti(tmp_path / "moved.nii.gz", affine=np.diag([1, 1, 2, 1]))], ckpt2, out, "moved.nii.gz"
    if case == "nan":
        return [_nifti(tmp_path / "nan.nii.gz", value=np.nan)], ckpt, out, "nan.nii.gz"
    if case in ("segy_text_only", "not_segy"):
        bad = tmp_path / f"{case}.sgy"
        if case == "segy_text_only":
            spec = segyio.spec()
            spec.samples, spec.format, spec.tracecount = list(range(10)), 5, 1
            with segyio.create(bad, spec) as f:
                f.trace[0] = np.zeros(10, np.float32)
            bad.write_bytes(bad.read_bytes()[:3600])  # text and binary headers, no traces
        else:
            bad.write_bytes(b"\x00\x01" * 3000)
        return (
            [bad],
            checkpoint(tmp_path / "m1.safetensors", channels=("amp",), labels={"a": 0, "b": 1}, window=[4, 4, 4]),
            tmp_path / "out" / "p.sgy",
            bad.name,
        )
    if case == "missing_checkpoint":
        return [good], tmp_path / "nope.safetensors", out, "nope.safetensors"
    if case == "corrupt_checkpoint":
        ckpt.write_bytes(ckpt.read_bytes()[:60])
        return [good], ckpt, out, "m.safetensors"
    if case == "output_is_input":
        return [good], ckpt, good, "good.nii.gz"
    if case == "unwritable_folder":  # a folder that cannot exist: its parent is a file (root may write anywhere)
        return [good], ckpt, good.parent / "good.nii.gz.d" / "x" / "seg.nii.gz", "seg.nii.gz"
    raise AssertionError(case)


BAD = [
    "truncated_gz",
    "not_nifti",
    "channel_count",
    "shape_mismatch",
    "affine_mismatch",
    "nan",
    "segy_text_only",
    "not_segy",
    "missing_checkpoint",
    "corrupt_checkpoint",
    "output_is_input",
    "unwritable_folder",
]


@pytest.mark.parametrize("case", BAD)
def test_bad_input(tmp_path, capsys, case):
    inputs, ckpt, out, name = _bad_case(tmp_path, case)
    if case == "unwritable_folder":
        (tmp_path / "good.nii.gz.d").write_text("a file where a folder should be")
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    code, _, err = run(capsys, "predict", *inputs, "-m", ckpt, "-o", out)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("leanseg: error: "), err
    assert name in lines[0] and "Traceback" not in err
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == before  # no file written or touched


def test_npy_input_is_refused_by_name(tmp_path, capsys):
    """.npy is an output format only: the one line says so, not an empty list of output formats."""
    np.save(tmp_path / "x.npy", np.zeros((4, 4, 4), np.float32))
    ckpt = checkpoint(tmp_path / "m.safetensors", channels=("t1",), labels={"a": 0, "b": 1})
    code, _, err = run(capsys, "predict", tmp_path / "x.npy", "-m", ckpt, "-o", tmp_path / "y.npy")
    assert code == 2 and err.count("\n") == 1 and "x.npy: .npy is an output format only" in err, err
    assert not (tmp_path / "y.npy").exists()


def test_unknown_input_file_type(tmp_path, capsys):
    (tmp_path / "x.xyz").write_text("?")
    ckpt = checkpoint(tmp_path / "m.safetensors", channels=("t1",), labels={"a": 0, "b": 1})
    code, _, err = run(capsys, "predict", tmp_path / "x.xyz", "-m", ckpt)
    assert code == 2 and "x.xyz" in err


def test_cli_imports_no_torch():
    code = "import sys, leanseg.cli.main; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_evaluate_regions_and_task(tmp_path, capsys):
    ref = np.zeros((12, 12, 12), np.uint8)
    ref[2:8, 2:8, 2:8] = 2
    ref[3:6, 3:6, 3:6] = 1
    ref[4:5, 4:5, 4:5] = 4
    pred = ref.copy()
    pred[7, 7, 7] = 0  # one edema voxel missed
    for name, data in (("ref", ref), ("pred", pred)):
        nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), tmp_path / f"{name}.nii.gz")
    code, out, err = run(
        capsys,
        "evaluate",
        tmp_path / "pred.nii.gz",
        tmp_path / "ref.nii.gz",
        "--regions",
        '{"WT": [1, 2, 4], "TC": [1, 4], "ET": [4]}',
        "--json",
        tmp_path / "s.json",
    )
    assert code == 0, err
    scores = json.loads((tmp_path / "s.json").read_text())["scores"]
    assert scores["TC"]["dice"] == 1.0 and scores["ET"]["hd95"] == 0.0
    assert 0.99 < scores["WT"]["dice"] < 1.0
    assert "WT" in out and "dice" in out
    code, out, err = run(capsys, "evaluate", tmp_path / "pred.nii.gz", tmp_path / "ref.nii.gz", "--task", "brats")
    assert code == 0 and "ET" in out, err
    code, _, err = run(capsys, "evaluate", tmp_path / "pred.nii.gz", tmp_path / "missing.nii.gz")
    assert code == 2 and "missing.nii.gz" in err


def test_evaluate_refuses_what_would_score_wrongly(tmp_path, capsys):
    ref = np.zeros((12, 12, 12), np.uint8)
    ref[2:8, 2:8, 2:8] = 2
    nib.save(nib.Nifti1Image(ref, np.eye(4)), tmp_path / "ref.nii.gz")
    shifted = np.eye(4)
    shifted[0, 3] = 20.0  # the same voxels, 20 mm away
    nib.save(nib.Nifti1Image(ref, shifted), tmp_path / "shifted.nii.gz")
    nib.save(nib.Nifti1Image(ref + np.float32(0.4), np.eye(4)), tmp_path / "float.nii.gz")
    before = (tmp_path / "ref.nii.gz").read_bytes()
    cases = [
        (["shifted.nii.gz", "ref.nii.gz"], "shifted.nii.gz: its grid (affine) differs"),
        (["ref.nii.gz", "float.nii.gz"], "float.nii.gz: non-integer values"),
        (["ref.nii.gz", "ref.nii.gz", "--json", str(tmp_path / "ref.nii.gz")], "output path is the input file"),
    ]
    for args, message in cases:
        code, _, err = run(capsys, "evaluate", *[tmp_path / a if a.endswith(".nii.gz") and "/" not in a else a
                                                 for a in args])
        assert code == 2 and err.count("\n") == 1 and message in err, err
    assert (tmp_path / "ref.nii.gz").read_bytes() == before  # the reference was not replaced by JSON
    assert sorted(p.name for p in tmp_path.iterdir()) == ["float.nii.gz", "ref.nii.gz", "shifted.nii.gz"]


# ---- hostile and careless input (issue 13): options, SEG-Y samples and grids, channel order, outputs ----------


@pytest.mark.parametrize("args, message", [
    (["--slab", "-5"], "slab must be a positive number"),
    (["--halo", "-3"], "halo must be 0 or more"),
    (["--halo", "1000"], "halo must be at most"),
    (["--overlap", "-0.5"], "overlap must be a number from 0 to 0.9"),
    (["--overlap", "1.0"], "overlap must be a number from 0 to 0.9"),
    (["--overlap", "2"], "overlap must be a number from 0 to 0.9"),
    (["--overlap", "nan"], "overlap must be a number from 0 to 0.9"),
    (["--overlap", "0.99"], "overlap must be a number from 0 to 0.9"),
    (["--batch-size", "0"], "batch_size must be a positive integer"),
    (["--batch-size", "-1"], "batch_size must be a positive integer"),
    (["--window", "1"], "windows"),
    (["--window", "1100"], "sizes must be 1 to 1024"),
    (["--window", "48,48"], "needs 1 or 3 sizes"),
    (["--device", "meta"], "--device"),
    (["--device", "mps"], "--device"),
    (["-o", "OUT.png"], "a prediction of a segy input is written as"),
])
def test_bad_options_are_one_line_before_any_work(tmp_path, capsys, args, message):
    if not F3.is_file():
        pytest.skip(f"{F3} (shared test data) is absent")
    ckpt = checkpoint(tmp_path / "m.safetensors", channels=("amp",), labels={"a": 0, "b": 1}, window=[16, 16, 16])
    args = [str(tmp_path / "out.png") if a == "OUT.png" else a for a in args]
    code, _, err = run(capsys, "predict", F3, "-m", ckpt, "-o", tmp_path / "out.sgy", *args)
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def _float_segy(tmp_path, values: np.ndarray, ilines=None, xlines=None, name="c.sgy") -> Path:
    """A post-stack IEEE-float SEG-Y cube (I, X, S) with inline/crossline numbers in the trace headers."""
    n_il, n_xl, ns = values.shape
    ilines = list(range(1, n_il + 1)) if ilines is None else ilines
    xlines = list(range(1, n_xl + 1)) if xlines is None else xlines
    spec = segyio.spec()
    spec.ilines, spec.xlines, spec.samples, spec.format, spec.sorting = ilines, xlines, list(range(ns)), 5, 2
    path = tmp_path / name
    with segyio.create(path, spec) as f:
        for i, (il, xl) in enumerate((a, b) for a in ilines for b in xlines):
            f.header[i] = {segyio.TraceField.INLINE_3D: il, segyio.TraceField.CROSSLINE_3D: xl}
            f.trace[i] = values[i // n_xl, i % n_xl].astype(np.float32)
    return path


def test_segy_with_a_nan_sample_is_refused(tmp_path, capsys):
    cube = np.random.default_rng(0).normal(size=(6, 5, 20)).astype(np.float32)
    cube[3, 2, 7] = np.nan
    path = _float_segy(tmp_path, cube)
    ckpt = checkpoint(tmp_path / "m.safetensors", channels=("amp",), labels={"a": 0, "b": 1}, window=[8, 8, 8])
    code, _, err = run(capsys, "predict", path, "-m", ckpt, "-o", tmp_path / "p.sgy")
    assert code == 2 and err.count("\n") == 1 and "c.sgy: NaN or infinite sample at inline index 3" in err, err
    assert not (tmp_path / "p.sgy").exists() and not list(tmp_path.glob(".*partial*"))


def test_one_absurd_segy_sample_changes_only_its_neighbourhood(tmp_path, capsys):
    cube = np.random.default_rng(1).normal(size=(10, 9, 24)).astype(np.float32)
    spoiled = cube.copy()
    spoiled[5, 4, 12] = 3e38
    ckpt = checkpoint(tmp_path / "m.safetensors", channels=("amp",), labels={"a": 0, "b": 1}, window=[8, 8, 8],
                      normalization={"kind": "zscore"})
    labels = []
    for name, values in (("clean.sgy", cube), ("spoiled.sgy", spoiled)):
        code, _, err = run(capsys, "predict", _float_segy(tmp_path, values, name=name), "-m", ckpt, "-o",
                           tmp_path / f"p_{name}.npy")
        assert code == 0, err
        labels.append(np.load(tmp_path / f"p_{name}.npy"))
    differ = labels[0] != labels[1]
    differ[4:7, 3:6, 11:14] = False  # the one-voxel stencil of the absurd sample
    assert not differ.any() and 0.05 < labels[0].mean() < 0.95


@pytest.mark.parametrize("case, message", [
    ("diagonal", "do not describe a 3D cube"),
    ("one_trace", "a 2D line or a single trace"),
])
def test_segy_grids_that_are_not_cubes(tmp_path, capsys, case, message):
    if case == "diagonal":  # every trace its own inline and crossline: a 3000 x 3000 grid for 3000 traces
        n = 3000
        spec = segyio.spec()
        spec.samples, spec.format, spec.tracecount = list(range(4)), 5, n
        path = tmp_path / "diag.sgy"
        with segyio.create(path, spec) as f:
            for i in range(n):
                f.header[i] = {segyio.TraceField.INLINE_3D: i, segyio.TraceField.CROSSLINE_3D: i}
                f.trace[i] = np.zeros(4, np.float32)
    else:  # one trace of 32767 samples
        spec = segyio.spec()
        spec.samples, spec.format, spec.tracecount = list(range(32767)), 5, 1
        path = tmp_path / "one.sgy"
        with segyio.create(path, spec) as f:
            f.header[0] = {segyio.TraceField.INLINE_3D: 1, segyio.TraceField.CROSSLINE_3D: 1}
            f.trace[0] = np.zeros(32767, np.float32)
    ckpt = checkpoint(tmp_path / "m.safetensors", channels=("amp",), labels={"a": 0, "b": 1}, window=[8, 8, 8])
    code, _, err = run(capsys, "predict", path, "-m", ckpt, "-o", tmp_path / "p.sgy")
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_the_checkpoint_is_never_an_output(tmp_path, capsys):
    vol = _nifti(tmp_path / "v.nii.gz")
    ckpt = checkpoint(tmp_path / "ck.nii.gz", channels=("t1",), labels={"a": 0, "b": 1}, window=[4, 4, 4])
    before = ckpt.read_bytes()
    code, _, err = run(capsys, "predict", vol, "-m", ckpt, "-o", ckpt)
    assert code == 2 and "output path is the input file" in err and ckpt.read_bytes() == before


@needs_data
def test_channel_files_in_the_wrong_order_are_reordered_by_name(tmp_path, capsys):
    ckpt = checkpoint(tmp_path / "m.safetensors")  # channels flair, t1c
    files = [CASE / "Flair_subtrMeanDivStd.nii.gz", CASE / "T1c_subtrMeanDivStd.nii.gz"]
    code, _, err = run(capsys, "predict", *files, "-m", ckpt, "-o", tmp_path / "a.nii.gz")
    assert code == 0 and err.strip() == "", err
    code, _, err = run(capsys, "predict", *files[::-1], "-m", ckpt, "-o", tmp_path / "b.nii.gz")
    assert code == 0 and err.strip().startswith("leanseg: note: channel files reordered"), err
    a, b = (np.asarray(nib.load(tmp_path / f"{n}.nii.gz").dataobj) for n in "ab")
    np.testing.assert_array_equal(a, b)


def test_the_default_output_never_replaces_a_file(tmp_path, capsys):
    vol = _nifti(tmp_path / "v.nii.gz")
    ckpt = checkpoint(tmp_path / "m.safetensors", channels=("t1",), labels={"a": 0, "b": 1}, window=[4, 4, 4])
    (tmp_path / "v_pred.nii.gz").write_bytes(b"someone's segmentation")
    code, _, err = run(capsys, "predict", vol, "-m", ckpt)
    assert code == 2 and err.count("\n") == 1 and "v_pred.nii.gz: exists; give -o" in err
    assert (tmp_path / "v_pred.nii.gz").read_bytes() == b"someone's segmentation"


def test_evaluate_more_careless_inputs(tmp_path, capsys):
    ref = np.zeros((8, 8, 8), np.uint8)
    ref[2:5, 2:5, 2:5] = 1
    nib.save(nib.Nifti1Image(ref, np.eye(4)), tmp_path / "ref.nii.gz")
    mri = np.random.default_rng(0).normal(100, 20, (8, 8, 8)).astype(np.float32)  # an image, not a label map
    nib.save(nib.Nifti1Image(mri, np.eye(4)), tmp_path / "mri.nii.gz")
    code, _, err = run(capsys, "evaluate", tmp_path / "ref.nii.gz", tmp_path / "mri.nii.gz")
    assert code == 2 and "mri.nii.gz: non-integer values" in err
    code, out, err = run(capsys, "evaluate", tmp_path / "ref.nii.gz", tmp_path / "ref.nii.gz", "--regions",
                         '{"WT": 5}')  # a single value where a list was meant
    assert code == 0 and "WT" in out, err
    code, _, err = run(capsys, "evaluate", tmp_path / "ref.nii.gz", tmp_path / "ref.nii.gz", "--json",
                       "/proc/leanseg-scores.json")  # a read-only file system
    assert code == 2 and err.count("\n") == 1 and "leanseg-scores.json: cannot write" in err, err


@pytest.mark.parametrize("failing", ["x_pred.nii.gz", "x_pred_probs.nii.gz"])
def test_outputs_stand_or_fall_together(tmp_path, capsys, monkeypatch, failing):
    """The label map is written last and marks a finished case: when it cannot be written the probabilities asked
    for are removed again; a killed run's partial probabilities are removed by a later run that writes none."""
    import leanseg.prediction as prediction

    ckpt = checkpoint(tmp_path / "m.safetensors", channels=("t1",), labels={"background": 0, "fg": 1},
                      window=[16, 16, 16])
    image = tmp_path / "x.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).normal(size=(16, 16, 16)).astype(np.float32), np.eye(4)), image)
    stale = tmp_path / ".x_pred_probs.partial-999999999-deadbeef.nii.gz"  # a writer PID that no longer exists
    stale.write_bytes(b"half")
    real_write = prediction.write_volume

    def full_disk_for_labels(path, array, geometry):
        if Path(path).name == failing:
            from leanseg.errors import LeanSegError

            raise LeanSegError(f"{path}: cannot write (No space left on device)")
        return real_write(path, array, geometry)

    monkeypatch.setattr(prediction, "write_volume", full_disk_for_labels)
    code, _, err = run(capsys, "predict", image, "-m", ckpt, "-o", tmp_path / "x_pred.nii.gz", "--probabilities")
    assert code == 2 and "No space left" in err
    assert not (tmp_path / "x_pred.nii.gz").exists() and not (tmp_path / "x_pred_probs.nii.gz").exists()
    assert not stale.exists()
