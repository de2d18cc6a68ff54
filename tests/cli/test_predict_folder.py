"""`leanseg predict IN/ -o OUT/` and `leanseg.predict_folder`: discovery, resuming, shards, one line per bad input."""

import os

import nibabel as nib
import numpy as np
import pytest
import torch

import leanseg
from leanseg.batch import Case, find_cases, shard
from leanseg.cli.main import main
from leanseg.errors import LeanSegError
from leanseg.models import create


def make_model(path, in_channels=1):
    torch.manual_seed(0)
    net = create("lean_unet", spatial_dims=3, in_channels=in_channels, out_channels=3, features=(4, 8))
    channels = [f"c{i}" for i in range(in_channels)]
    leanseg.save_model(net, path, labels={"background": 0, "a": 1, "b": 2}, window=[16, 16, 16], channels=channels)
    return path


def make_cases(folder, n, names=None, shape=(20, 18, 14), seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = names or [f"case_{i:03d}.nii.gz" for i in range(n)]
    for name in names:
        nib.save(nib.Nifti1Image(rng.normal(size=shape).astype(np.float32), np.diag([1.0, 1.2, 1.5, 1.0])),
                 folder / name)
    return names


def labels_of(path):
    img = nib.load(path)
    return np.asanyarray(img.dataobj), img.affine


def run(capsys, *args):
    code = main([str(a) for a in args] + ["--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err


def test_folder_equals_one_case_at_a_time_and_resumes(tmp_path, capsys):
    model = make_model(tmp_path / "m.safetensors")
    names = make_cases(tmp_path / "in", 6)
    code, out, err = run(capsys, "predict", tmp_path / "in", "-m", model, "-o", tmp_path / "out")
    assert code == 0, err
    assert "6 case(s)" in err and "6 predicted" in err
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == sorted(names)  # case_000.nii.gz -> OUT/case_000.nii.gz; no failures file
    for name in names[:2]:  # the model loaded once gives what one predict per case gives
        leanseg.predict(tmp_path / "in" / name, str(model), output=tmp_path / f"single_{name}", progress=False)
        single, folder = labels_of(tmp_path / f"single_{name}"), labels_of(tmp_path / "out" / name)
        np.testing.assert_array_equal(single[0], folder[0])
        np.testing.assert_array_equal(single[1], folder[1])
    # delete two outputs: a re-run predicts those only and leaves the others untouched
    kept = {n: (tmp_path / "out" / n).stat().st_mtime_ns for n in names[2:]}
    for name in names[:2]:
        (tmp_path / "out" / name).unlink()
    result = leanseg.predict_folder(tmp_path / "in", str(model), output=tmp_path / "out", progress=False)
    assert sorted(result.predicted) == [n[: -len(".nii.gz")] for n in names[:2]]
    assert len(result.skipped) == 4 and not result.failed
    assert {n: (tmp_path / "out" / n).stat().st_mtime_ns for n in names[2:]} == kept


def test_shards_union_equals_single_run(tmp_path):
    model = str(make_model(tmp_path / "m.safetensors"))
    names = make_cases(tmp_path / "in", 7)
    leanseg.predict_folder(tmp_path / "in", model, output=tmp_path / "single", progress=False)
    parts = [leanseg.predict_folder(tmp_path / "in", model, output=tmp_path / "sharded", num_parts=2, part_id=k,
                                    progress=False) for k in (0, 1)]
    assert len(parts[0].predicted) == 4 and len(parts[1].predicted) == 3
    assert not set(parts[0].predicted) & set(parts[1].predicted)
    assert sorted(p.name for p in (tmp_path / "sharded").iterdir()) == sorted(names)
    for name in names:
        single, sharded = labels_of(tmp_path / "single" / name), labels_of(tmp_path / "sharded" / name)
        np.testing.assert_array_equal(single[0], sharded[0])


def test_shard_is_a_deterministic_partition():
    items = [Case(f"c{i:02d}", (), "nifti") for i in range(10)]
    parts = [shard(list(reversed(items)), 3, k) for k in range(3)]
    assert sorted(c.name for p in parts for c in p) == [c.name for c in items]
    assert [c.name for c in parts[1]] == ["c01", "c04", "c07"]
    with pytest.raises(LeanSegError, match="part_id must be 0 to 2"):
        shard(items, 3, 3)


def test_nnunet_channel_files_grouped_and_a_bad_case_skipped(tmp_path, capsys):
    model = make_model(tmp_path / "m.safetensors", in_channels=2)
    make_cases(tmp_path / "in", 0, names=["a_0000.nii.gz", "a_0001.nii.gz", "b_0000.nii.gz", "b_0001.nii.gz",
                                          "c_0001.nii.gz"])  # c lacks its channel 0000
    (tmp_path / "in" / "dataset.json").write_text("{}")  # not a case: passed over with a note
    with pytest.warns(leanseg.errors.LeanSegWarning, match="dataset.json"):
        cases = find_cases(tmp_path / "in")
    assert [(c.name, [p.name for p in c.inputs]) for c in cases][:2] == [
        ("a", ["a_0000.nii.gz", "a_0001.nii.gz"]), ("b", ["b_0000.nii.gz", "b_0001.nii.gz"])]
    code, out, err = run(capsys, "predict", tmp_path / "in", "-m", model, "-o", tmp_path / "out")
    assert code == 2, err
    assert "c_0000.nii.gz: channel file missing" in err and "1 failed" in err
    assert "dataset.json" in err  # the note
    assert (tmp_path / "out" / "a.nii.gz").is_file() and (tmp_path / "out" / "b.nii.gz").is_file()
    assert (tmp_path / "out" / "failures.tsv").read_text().startswith("c\t")
    assert err.strip().splitlines()[-1].startswith("leanseg: error: 1 case(s) failed, listed in")
    # the failed case fixed, the re-run predicts it alone and the failures file goes
    make_cases(tmp_path / "in", 0, names=["c_0000.nii.gz"])
    code, out, err = run(capsys, "predict", tmp_path / "in", "-m", model, "-o", tmp_path / "out")
    assert code == 0, err
    assert "1 predicted" in err and "2 already written" in err
    assert not (tmp_path / "out" / "failures.tsv").exists()


def test_case_folders_and_probabilities(tmp_path):
    model = str(make_model(tmp_path / "m.safetensors", in_channels=2))
    for case in ("p1", "p2"):
        make_cases(tmp_path / "in" / case, 0, names=[f"{case}_c0.nii.gz", f"{case}_c1.nii.gz"])
    result = leanseg.predict_folder(tmp_path / "in", model, output=tmp_path / "out", probabilities=True,
                                    progress=False)
    assert sorted(result.predicted) == ["p1", "p2"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["p1.nii.gz", "p1_probs.nii.gz", "p2.nii.gz",
                                                                    "p2_probs.nii.gz"]


@pytest.mark.parametrize("case, message", [
    ("empty", "no cases in the folder"),
    ("mixed", "holds 1 NIfTI files and 1 SEG-Y files; give a folder with one kind of case"),
    ("out_inside", "the output folder is inside the input folder"),
    ("out_is_in", "the output folder is inside the input folder"),
    ("out_is_file", "exists and is not a folder"),
    ("parts_on_a_file", "--num-parts and --part-id split a folder's cases"),
    ("bad_part", "part_id must be 0 to 1"),
])
def test_bad_folder_input_one_line_nothing_written(tmp_path, capsys, case, message):
    model = make_model(tmp_path / "m.safetensors")
    src = tmp_path / "in"
    src.mkdir()
    out = tmp_path / "out"
    extra = []
    if case != "empty":
        make_cases(src, 1)
    if case == "mixed":
        (src / "survey.sgy").write_bytes(b"\0" * 4000)
    if case == "out_inside":
        out = src / "preds"
    if case == "out_is_in":
        out = src
    if case == "out_is_file":
        out.write_text("precious")
    target = src
    if case == "parts_on_a_file":
        target, out, extra = src / "case_000.nii.gz", tmp_path / "x.nii.gz", ["--num-parts", "2"]
    if case == "bad_part":
        extra = ["--num-parts", "2", "--part-id", "2"]
    before = sorted(os.listdir(src))
    code, _, err = run(capsys, "predict", target, "-m", model, "-o", out, *extra)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("leanseg: error:") and message in lines[0], err
    assert sorted(os.listdir(src)) == before
    if case == "out_is_file":
        assert out.read_text() == "precious"
    if case == "out_inside":
        assert not out.exists()
