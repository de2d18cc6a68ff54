"""The hostile suite: small files and arguments built to break leanseg, each run as a user would (the CLI in a fresh
process). Every case must end in one line naming the problem, exit code 2, no traceback, a peak memory under
1.5 GB, and every input byte for byte as it was. The summary line is printed (``pytest -s``) for the record."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

PEAK_LIMIT_MB = 1536
# the CLI in a fresh process, reporting its own peak RSS to a file: VmHWM (kB) of /proc/self/status, which starts
# afresh at exec (ru_maxrss would carry over the forking pytest process's peak)
RUNNER = ("import sys\nfrom leanseg.cli.main import main\ntry:\n    code = main(sys.argv[2:])\nfinally:\n"
          "    hwm = [line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')]\n"
          "    open(sys.argv[1], 'w').write(hwm[0])\nsys.exit(code)\n")

HALF_NET = '''
import torch
from torch import nn
import leanseg


@leanseg.models.register
class half_net(nn.Module):
    """Returns a grid half the input's size: the silent-semantics case."""

    def __init__(self, spatial_dims=3, in_channels=1, out_channels=2):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, 1)

    def forward(self, x):
        return self.conv(x)[:, :, ::2, ::2, ::2]
'''


def _digest(path: Path) -> str:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def _forged(src: Path, dst: Path, **changes) -> Path:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(src), "pt") as f:
        config = json.loads(f.metadata()["leanseg"])
    weights = load_file(str(src))
    for key, value in changes.items():
        if key == "nan_weight":
            name = sorted(weights)[value]
            weights[name].view(-1)[0] = float("nan")
        elif key.startswith("kw_"):
            config["model_kwargs"][key[3:]] = value
        else:
            config[key] = value
    save_file(weights, str(dst), metadata={"leanseg": json.dumps(config)})
    return dst


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The hostile inputs, written once: each a few kB."""
    from PIL import Image

    import leanseg

    d = tmp_path_factory.mktemp("hostile")
    torch.manual_seed(0)
    net = leanseg.models.create("lean_unet", spatial_dims=3, in_channels=1, out_channels=2, features=(4, 8))
    model = leanseg.save_model(net, d / "m.safetensors", labels={"background": 0, "fg": 1}, window=[16, 16, 16],
                               spacing=[1.0, 1.0, 1.0], normalization="zscore")
    rng = np.random.default_rng(0)
    small = rng.normal(size=(24, 24, 24)).astype(np.float32)
    nib.save(nib.Nifti1Image(small, np.eye(4)), d / "ok.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((64, 64, 64), np.float32), np.diag([10.0, 10.0, 10.0, 1.0])), d / "coarse.nii.gz")
    nan = small.copy()
    nan[3, 3, 3] = np.nan
    nib.save(nib.Nifti1Image(nan, np.eye(4)), d / "nan.nii.gz")
    img = nib.Nifti1Image(small, np.eye(4))
    img.header["srow_x"], img.header["sform_code"] = [np.nan, 0, 0, 0], 1
    img.update_header = lambda: None  # keep the forged sform (nibabel would rebuild it from a valid affine)
    nib.save(img, d / "nan_affine.nii.gz")
    Image.new("L", (12000, 12000)).save(d / "bomb.png")
    (d / "text.png").write_text("not an image\n")
    np.save(d / "cube.npy", small)
    raw = (d / "cube.npy").read_bytes().replace(b"(24, 24, 24)", b"(9999, 9999, 9999)")
    (d / "lie.npy").write_bytes(raw)
    labels = (np.arange(80 ** 3).reshape(80, 80, 80) % 999).astype(np.int16)
    nib.save(nib.Nifti1Image(labels, np.eye(4)), d / "labels999.nii.gz")
    case = d / "case"
    case.mkdir()
    nib.save(nib.Nifti1Image(small, np.eye(4)), case / "t1.nii.gz")
    _forged(model, d / "nan_weight.safetensors", nan_weight=2)
    _forged(model, d / "nan_slope.safetensors", kw_act=["leakyrelu", {"negative_slope": float("nan")}])
    _forged(model, d / "big_config.safetensors", kw_features=[4000, 8])
    _forged(model, d / "nan_norm.safetensors", normalization={"kind": "fixed", "mean": [float("nan")], "std": [1.0]})
    (d / "halfnets.py").write_text(HALF_NET)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import halfnets, leanseg\n"
            "net = leanseg.models.create('half_net', spatial_dims=3, in_channels=1, out_channels=2)\n"
            "leanseg.save_model(net, sys.argv[2], labels={'background': 0, 'fg': 1}, window=[16, 16, 16])\n")
    subprocess.run([sys.executable, "-c", code, str(d), str(d / "half.safetensors")], check=True)
    empty = d / "empty"
    empty.mkdir()
    return d


# (name, argv with {d} for the inputs' folder, the message's words, the inputs to watch)
CASES = [
    ("10 mm NIfTI, 1 mm model (640^3)", "predict {d}/coarse.nii.gz -m {d}/m.safetensors -o {d}/o1.nii.gz",
     "over the limit", ["coarse.nii.gz"]),
    ("--spacing 0.1", "predict {d}/ok.nii.gz -m {d}/m.safetensors -o {d}/o2.nii.gz --spacing 0.1", "windows",
     ["ok.nii.gz"]),
    ("--spacing 1000", "predict {d}/ok.nii.gz -m {d}/m.safetensors -o {d}/o3.nii.gz --spacing 1000",
     "wider than the volume", ["ok.nii.gz"]),
    ("--spacing -1", "predict {d}/ok.nii.gz -m {d}/m.safetensors -o {d}/o4.nii.gz --spacing -1", "spacing", []),
    ("12000^2 PNG of 140 kB", "predict {d}/bomb.png -m em-membrane -o {d}/o5.png", "over the limit", ["bomb.png"]),
    ("text named .png", "predict {d}/text.png -m em-membrane -o {d}/o6.png", "not a readable image", ["text.png"]),
    (".npy input with a lying header", "predict {d}/lie.npy -m {d}/m.safetensors -o {d}/o7.nii.gz", "npy",
     ["lie.npy"]),
    ("a NaN voxel", "predict {d}/nan.nii.gz -m {d}/m.safetensors -o {d}/o8.nii.gz", "NaN", ["nan.nii.gz"]),
    ("a NaN affine", "predict {d}/nan_affine.nii.gz -m {d}/m.safetensors -o {d}/o9.nii.gz", "NaN",
     ["nan_affine.nii.gz"]),
    ("a NaN weight", "predict {d}/ok.nii.gz -m {d}/nan_weight.safetensors -o {d}/o10.nii.gz", "NaN or infinite",
     ["nan_weight.safetensors"]),
    ("a NaN negative_slope", "predict {d}/ok.nii.gz -m {d}/nan_slope.safetensors -o {d}/o11.nii.gz",
     "not a finite number", []),
    ("a NaN fixed mean", "predict {d}/ok.nii.gz -m {d}/nan_norm.safetensors -o {d}/o12.nii.gz", "finite numbers", []),
    ("a 5 kB file asking for 48M weights", "predict {d}/ok.nii.gz -m {d}/big_config.safetensors -o {d}/o13.nii.gz",
     "in the file, the model needs", ["big_config.safetensors"]),
    ("-o is the input", "predict {d}/ok.nii.gz -m {d}/m.safetensors -o {d}/ok.nii.gz", "is the input file",
     ["ok.nii.gz"]),
    ("-o is the checkpoint", "predict {d}/ok.nii.gz -m {d}/m.safetensors -o {d}/m.safetensors", "",
     ["m.safetensors"]),
    ("-o inside the case folder", "predict {d}/case -m {d}/m.safetensors -o {d}/case/seg.nii.gz",
     "inside the input folder", ["case"]),
    ("a case folder plus a file", "predict {d}/case {d}/ok.nii.gz -m {d}/m.safetensors -o {d}/o14.nii.gz",
     "holds every channel", ["case"]),
    ("a model whose output is half the input", "predict {d}/ok.nii.gz -m {d}/half.safetensors -o {d}/o15.nii.gz "
     "--import {d}/halfnets.py --no-crop", "differs from its input", ["ok.nii.gz"]),
    ("a custom model without --import", "predict {d}/ok.nii.gz -m {d}/half.safetensors -o {d}/o16.nii.gz", "import",
     []),
    ("evaluate: 999 labels", "evaluate {d}/labels999.nii.gz {d}/labels999.nii.gz", "over the limit",
     ["labels999.nii.gz"]),
    ("export --input-shape 1", "export {d}/m.safetensors -o {d}/m.onnx --input-shape 1", "input-shape",
     ["m.safetensors"]),
    ("train --features 100000", "train --task seg2d --synthetic 2 --features 100000 -o {d}/run", "--features", []),
    ("train --window 100000", "train --task seg2d --synthetic 2 --window 100000 -o {d}/run2", "window", []),
    ("bench conv --repeats 0", "bench conv --repeats 0", "--repeats", []),
    ("bench conv --channels 0", "bench conv --channels 0", "--channels", []),
    ("bench conv --channels a", "bench conv --channels a", "--channels", []),
    ("bench unet --repeats 0", "bench unet --repeats 0", "--repeats", []),
    ("bench predict --threads -1", "bench predict --threads -1", "--threads", []),
    ("bench predict: missing --workdir", "bench predict --workdir {d}/nowhere", "--workdir", []),
    ("bench stream --size-gb 0", "bench stream --size-gb 0", "--size-gb", []),
    ("a usage error", "predict {d}/ok.nii.gz --bogus", "--bogus", []),
    ("folder: empty", "predict {d}/empty -o {d}/out_empty -m {d}/m.safetensors", "", ["empty"]),
    ("folder: OUT inside IN", "predict {d}/case -o {d}/case/preds -m {d}/m.safetensors", "", ["case"]),
    ("an unknown device", "predict {d}/ok.nii.gz -m {d}/m.safetensors -o {d}/o17.nii.gz --device tpu", "device",
     []),
    ("overlap 0.95", "predict {d}/ok.nii.gz -m {d}/m.safetensors -o {d}/o18.nii.gz --overlap 0.95", "overlap", []),
]


@pytest.mark.slow
def test_hostile_suite(files, tmp_path):
    d = files
    rows, bad = [], []
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    for name, argv, words, watched in CASES:
        before = {w: _digest(d / w) for w in watched}
        peak_file = tmp_path / "peak"
        args = [a.replace("{d}", str(d)) for a in argv.split()]
        proc = subprocess.run([sys.executable, "-c", RUNNER, str(peak_file), *args], capture_output=True, text=True,
                              env=env, timeout=600)
        peak_mb = int(peak_file.read_text()) / 1024 if peak_file.exists() else float("nan")
        err = proc.stderr.strip()
        lines = [line for line in err.splitlines() if line.strip() and "it/s]" not in line]  # not progress bars
        changed = [w for w in watched if _digest(d / w) != before[w]]
        row = {"case": name, "code": proc.returncode, "lines": len(lines), "traceback": "Traceback" in err,
               "peak_mb": peak_mb, "changed": changed, "said": lines[-1] if lines else ""}
        rows.append(row)
        ok = (proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("leanseg: error:") and
              words in lines[0] and not row["traceback"] and peak_mb < PEAK_LIMIT_MB and not changed)
        if not ok:
            bad.append(row)
    summary = (f"hostile suite: {len(rows)} cases, {sum(r['code'] == 2 and r['lines'] == 1 for r in rows)} one-line "
               f"errors, {sum(r['traceback'] for r in rows)} tracebacks, "
               f"{sum(r['peak_mb'] >= PEAK_LIMIT_MB for r in rows)} over {PEAK_LIMIT_MB} MB "
               f"(highest {max(r['peak_mb'] for r in rows):.0f} MB), {sum(bool(r['changed']) for r in rows)} inputs "
               f"changed")
    print("\n" + summary)
    assert not bad, "\n".join(f"{r['case']}: exit {r['code']}, {r['lines']} lines, {r['peak_mb']:.0f} MB, "
                              f"changed {r['changed']}: {r['said']}" for r in bad)
