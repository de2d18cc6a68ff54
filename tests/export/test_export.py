"""Export: the CPU fast path as a custom op (torch.export, torch.compile) and ONNX on onnxruntime, on a BraTS-width
LeanUNet and a 2D LeanUNet, with the checkpoint's config in the ONNX metadata."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from leanseg import save_model
from leanseg.cli.main import main
from leanseg.export import export
from leanseg.models import create
from leanseg.nn import LeanConv
from leanseg.nn.functional import lean_conv, lean_conv_reference

DATA = Path(os.environ.get("LEANSEG_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
CASE = DATA / "nifti/brats_toolkit_TCGA-DU-7294"
REGIONS = {"WT": [1, 2, 4], "TC": [1, 4], "ET": [4]}


def brats_checkpoint(path: Path, spatial_dims=3, features=(32, 64, 128, 256, 320)) -> Path:
    torch.manual_seed(0)
    net = create("lean_unet", spatial_dims=spatial_dims, in_channels=4, out_channels=3, features=features)
    return save_model(net, path, regions=REGIONS, channels=["t1", "t1c", "t2", "flair"],
                      normalization={"kind": "zscore", "nonzero": True}, window=[128] * spatial_dims,
                      postprocess={"largest": ["WT"]})


def real_input(shape) -> torch.Tensor:
    """A crop of the 4 real modalities of the shared TCGA case (z-scored), or skip."""
    if not CASE.is_dir():
        pytest.skip(f"{CASE} (shared BraTS-space case) is absent")
    from leanseg.io import read_nifti
    from leanseg.normalize import ZScore

    files = [CASE / f"TCGA-DU-7294_{m}_bet.nii.gz" for m in ("t1", "t1c", "t2", "fla")]
    array, _ = read_nifti(files)
    array = np.asarray(ZScore(True)(array), dtype=np.float32)
    centre = [n // 2 for n in array.shape[1:]]
    if len(shape) == 2:
        return torch.from_numpy(array[:, 120 - shape[0] // 2:120 - shape[0] // 2 + shape[0],
                                      120 - shape[1] // 2:120 - shape[1] // 2 + shape[1], centre[2]].copy())[None]
    box = tuple(slice(c - s // 2, c - s // 2 + s) for c, s in zip(centre, shape, strict=True))
    return torch.from_numpy(array[(slice(None), *box)].copy())[None]


# ------------------------------------------------------------------------------------- the custom op
@pytest.mark.parametrize("spatial_dims, stride, shape", [
    (3, 1, (2, 6, 5, 7, 9)),  # odd sizes
    (3, 2, (1, 8, 9, 6, 7)),  # stride 2, C_in > C_out below
    (2, 2, (2, 5, 11, 13)),   # 2D
])
def test_custom_op_compiles_with_gradients_against_float64(spatial_dims, stride, shape):
    torch.manual_seed(0)
    conv = LeanConv(spatial_dims, shape[1], 4, stride=stride, bias=True)
    x = torch.randn(shape, requires_grad=True)
    params = [x, conv.weight, conv.stencil, conv.bias]

    def grads(fn, dtype):
        inputs = [p.detach().to(dtype).requires_grad_() for p in params]
        y = fn(*inputs)
        (y * torch.linspace(-1, 1, y.numel(), dtype=dtype).view(y.shape)).sum().backward()
        return [y.detach()] + [p.grad for p in inputs]

    # the dispatcher, compiled without graph breaks: it must route the CPU fast path through leanseg::lean_conv
    compiled = torch.compile(lambda x, w, s, b: lean_conv(x, w, s, b, stride), fullgraph=True)
    got = grads(compiled, torch.float32)
    eager = grads(lambda x, w, s, b: lean_conv_reference(x, w, s, b, stride), torch.float32)
    ref = grads(lambda x, w, s, b: lean_conv_reference(x, w, s, b, stride), torch.float64)
    for g, e, r in zip(got, eager, ref, strict=True):
        atol = 1e-5 + 1e-6 * r.abs().max()  # float32 sums in another order (dbias sums 2x6x5x7x9 values)
        assert ((g.double() - r).abs() <= 2 * (e.double() - r).abs() + atol).all()


@pytest.mark.slow
def test_torch_export_keeps_the_fast_path_as_one_op(tmp_path):
    ckpt = brats_checkpoint(tmp_path / "m.safetensors", features=(8, 16, 32))
    out = export(ckpt, tmp_path / "m.pt2")
    program = torch.export.load(str(out))
    targets = {str(n.target) for n in program.graph.nodes}
    assert "leanseg.lean_conv.default" in targets
    net, _ = __import__("leanseg").load_model(ckpt)
    x = torch.randn(1, 4, 24, 20, 28)  # not the traced example's size: sizes are dynamic
    with torch.no_grad():
        np.testing.assert_allclose(program.module()(x).numpy(), net(x).numpy(), atol=1e-5)


# -------------------------------------------------------------------------------------------- ONNX
@pytest.mark.parametrize("spatial_dims, features, shape, stencil", [
    (3, (32, 64, 128, 256, 320), (32, 32, 32), "depthwise"),  # BraTS width, 4x32^3
    (3, (8, 16, 32), (24, 20, 28), "shifted"),                # sizes other than the traced example's
    (2, (16, 32, 64), (48, 40), "depthwise"),                 # 2D LeanUNet
])
def test_onnxruntime_matches_leanseg(tmp_path, spatial_dims, features, shape, stencil):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    ckpt = brats_checkpoint(tmp_path / "m.safetensors", spatial_dims, features)
    path = export(ckpt, tmp_path / "m.onnx", stencil=stencil)
    x = real_input(shape)
    net, meta = __import__("leanseg").load_model(ckpt)
    with torch.no_grad():
        expected = net(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": x.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    graph = onnx.load(str(path)).graph
    assert {n.domain for n in graph.node} <= {"", "ai.onnx"}  # standard operators only
    assert "Conv" in {n.op_type for n in graph.node}
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(props["regions"]) == REGIONS and props["activation"] == "sigmoid"
    assert json.loads(props["channels"]) == ["t1", "t1c", "t2", "flair"]
    assert json.loads(props["normalization"]) == {"kind": "zscore", "nonzero": True}
    assert json.loads(props["window"]) == [128] * spatial_dims
    assert json.loads(props["postprocess"]) == {"largest": ["WT"]}
    assert json.loads(props["leanseg"]) == meta.to_json()


def test_export_cli_and_its_errors(tmp_path, capsys):
    pytest.importorskip("onnx")
    ckpt = brats_checkpoint(tmp_path / "m.safetensors", 2, (8, 16))
    assert main(["export", str(ckpt), "-o", str(tmp_path / "m.onnx"), "--input-shape", "16"]) == 0
    assert (tmp_path / "m.onnx").stat().st_size > 0
    capsys.readouterr()
    for args, message in ((["-o", str(tmp_path / "m.tflite")], "unknown export format '.tflite'"),
                          (["-o", str(tmp_path / "x.onnx"), "--stencil", "depthwse"], "did you mean 'depthwise'"),
                          (["-o", str(tmp_path / "z.onnx"), "--input-shape", "0"], "sizes must be positive")):
        assert main(["export", str(ckpt), *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert main(["export", str(tmp_path / "missing.safetensors"), "-o", str(tmp_path / "y.onnx")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_bench_export_reports_onnxruntime_beside_the_fast_path(capsys):
    pytest.importorskip("onnxruntime")
    assert main(["bench", "export", "--size", "16", "--features", "4,8", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if " | " in line and not line.startswith("path")]
    assert [r.split(" | ")[0].split(",")[0].strip() for r in rows] == [
        "leanseg fast path (PyTorch + C kernel)", f"onnxruntime {__import__('onnxruntime').__version__}",
        f"onnxruntime {__import__('onnxruntime').__version__}"]
    assert all(float(r.split(" | ")[-1]) < 1e-4 for r in rows)  # the same numbers
