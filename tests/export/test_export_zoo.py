"""ONNX export of a shipped zoo model: onnxruntime's output on a real EM window equals leanseg's within 1e-4, for
both stencil forms, and the ONNX metadata carries the checkpoint's config."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from leanseg.checkpoint import load_model
from leanseg.export import export

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'leanseg[export]')")

DATA = Path(os.environ.get("LEANSEG_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
SLICE = DATA / "images2d/isbi2012_em_membrane/image/17.png"  # any real slice: this compares runtimes, not accuracy


@pytest.mark.parametrize("stencil", ["depthwise", "shifted"])
def test_onnxruntime_matches_leanseg_on_the_em_membrane_zoo_model(tmp_path, stencil):
    if not SLICE.exists():
        pytest.skip(f"{SLICE} (shared ISBI slice) is absent")
    net, meta = load_model("em-membrane")
    path = export("em-membrane", tmp_path / "em.onnx", stencil=stencil)
    pixels = np.asarray(Image.open(SLICE).convert("L"), dtype=np.float32)[100:356, 60:316]  # (256, 256): a window
    x = torch.from_numpy((pixels - pixels.mean()) / pixels.std())[None, None]  # z-scored, as the card says
    with torch.no_grad():
        expected = net(x).numpy()  # leanseg: the fast path
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    [got] = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert got.shape == expected.shape == (1, 2, 256, 256)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    assert np.ptp(expected) > 1  # logits that separate membrane from interior, not a constant map
    props = session.get_modelmeta().custom_metadata_map
    stored = json.loads(props["leanseg"])
    assert stored["model"] == meta.model and stored["labels"] == meta.labels == json.loads(props["labels"])
