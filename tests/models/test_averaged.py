"""The ``averaged`` model (an ensemble in one checkpoint) predicts the mean probability of its members, exactly as
the checkpoints given one by one (``leanseg.ensemble``) do, and round-trips through a checkpoint."""

import numpy as np
import pytest
import torch

import leanseg
from leanseg.ensemble import average_checkpoints, load_ensemble
from leanseg.errors import LeanSegError
from leanseg.inference import sliding_window_predict
from leanseg.models import create


@pytest.mark.parametrize("kind", ["labels", "regions"])
def test_averaged_checkpoint_equals_the_ensemble(tmp_path, kind):
    fields = ({"labels": {"background": 0, "a": 1, "b": 2}} if kind == "labels"
              else {"regions": {"whole": [1, 2], "b": [2]}})
    out_channels = 3 if kind == "labels" else 2
    paths = []
    for seed in range(3):
        torch.manual_seed(seed)
        net = create("lean_unet", spatial_dims=3, in_channels=1, out_channels=out_channels, features=(4, 8),
                     deep_supervision=seed == 1)
        paths.append(leanseg.save_model(net, tmp_path / f"m{seed}.safetensors", window=[16, 16, 16], **fields))
    averaged = average_checkpoints(paths, tmp_path / "avg.safetensors")
    model, meta = leanseg.load_model(averaged)
    assert meta.model == "averaged" and meta.in_channels == 1 and meta.out_channels == out_channels
    activation = meta.label_manager.activation
    x = torch.randn(1, 1, 20, 18, 16)
    got = sliding_window_predict(model, x, 16, activation=activation)
    # the reference: each member's probabilities in float64, averaged
    members = [leanseg.load_model(p)[0] for p in paths]
    with torch.no_grad():
        probs = [(m(x).double().softmax(1) if kind == "labels" else m(x).double().sigmoid()) for m in members]
    ref = torch.stack(probs).mean(0)
    window_once = sliding_window_predict(load_ensemble(paths)[0], x, 16, activation=activation)
    assert torch.allclose(got.double(), window_once.double(), atol=1e-6)
    # one 16^3 window does not cover 20x18x16: compare on a case the window covers exactly
    y = torch.randn(1, 1, 16, 16, 16)
    one = sliding_window_predict(model, y, 16, activation=activation)
    with torch.no_grad():
        probs = [(m(y).double().softmax(1) if kind == "labels" else m(y).double().sigmoid()) for m in members]
    assert np.allclose(one.double().numpy(), torch.stack(probs).mean(0).numpy(), atol=1e-6)
    assert ref.shape == got.shape


def test_averaged_refuses_members_that_disagree(tmp_path):
    a = leanseg.save_model(create("lean_unet", spatial_dims=3, in_channels=1, out_channels=2, features=(4, 8)),
                           tmp_path / "a.safetensors", labels={"bg": 0, "x": 1})
    b = leanseg.save_model(create("lean_unet", spatial_dims=3, in_channels=2, out_channels=2, features=(4, 8)),
                           tmp_path / "b.safetensors", labels={"bg": 0, "x": 1})
    with pytest.raises(LeanSegError, match="in_channels"):
        average_checkpoints([a, b], tmp_path / "avg.safetensors")
    with pytest.raises(LeanSegError, match="member 0"):
        create("averaged", members=[{"model": "averaged"}])
