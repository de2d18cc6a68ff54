"""Checkpoints: safetensors weights + JSON config, rebuilt through the registry, never unpickled."""

import json

import pytest
import torch
from safetensors import safe_open

from leanseg import load_model, save_model
from leanseg.errors import LeanSegError

KWARGS = {"spatial_dims": 3, "in_channels": 2, "out_channels": 3, "features": [4, 8]}


def _unet():
    import leanseg.models

    return leanseg.models.create("lean_unet", **KWARGS)


def test_round_trip(tmp_path):
    model = _unet()
    meta = {"task": "brats", "channels": ["flair", "t1c"], "labels": {"bg": 0, "edema": 2, "tumour": 4},
            "normalization": {"kind": "zscore", "nonzero": True}, "window": [32, 32, 32]}
    path = save_model(model, tmp_path / "m.safetensors", model="lean_unet", model_kwargs=KWARGS, **meta)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary file left behind
    loaded, got = load_model(path)
    assert got.to_json() | meta == got.to_json() and got.model_kwargs == KWARGS
    assert not loaded.training
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, msg=k)
    with safe_open(str(path), "pt") as f:  # the config is plain JSON in the safetensors header
        assert json.loads(f.metadata()["leanseg"])["model"] == "lean_unet"


def test_a_created_model_saves_itself(tmp_path):
    model = _unet()
    path = save_model(model, tmp_path / "m.safetensors")  # create() recorded its name and arguments
    loaded, meta = load_model(path)
    assert meta.model == "lean_unet" and loaded.config == model.config
    x = torch.randn(1, 2, 9, 10, 11)
    torch.testing.assert_close(loaded(x), model.eval()(x), rtol=0, atol=0)


class _Net(torch.nn.Module):  # a model nothing registered: a user's class in a session that never called register
    def __init__(self, width=4):
        super().__init__()
        self.conv = torch.nn.Conv3d(2, width, 3, padding=1)
        self.head = torch.nn.Conv3d(width, 3, 1)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)))


def test_an_unregistered_module_saves_and_fills_an_instance(tmp_path):
    net = _Net()
    path = save_model(net, tmp_path / "m.safetensors", labels={"bg": 0, "a": 1, "b": 2})
    loaded, meta = load_model(path, model=_Net())
    assert (meta.model, meta.model_module, meta.registered) == ("_Net", __name__, False)
    x = torch.randn(1, 2, 5, 6, 7)
    torch.testing.assert_close(loaded(x), net.eval()(x), rtol=0, atol=0)
    with pytest.raises(LeanSegError, match=r"model=_Net\(\.\.\.\)"):
        load_model(path)  # the config alone cannot rebuild it


@pytest.mark.parametrize("model, message", [
    (_Net(width=5), r"conv.weight is \[4, 2, 3, 3, 3\] in the checkpoint, \[5, 2, 3, 3, 3\] in the model "
                    r"\(and 2 more\)"),
    (torch.nn.Conv3d(2, 4, 3), "missing weight, bias; unexpected conv.bias, conv.weight, head.bias and 1 more"),
    (_Net, r"an instance, _Net\(\.\.\.\), not the class"),
    ("lean_unet", "takes an nn.Module instance"),
])
def test_filling_the_wrong_instance_is_one_line(tmp_path, model, message):
    path = save_model(_Net(), tmp_path / "m.safetensors")
    with pytest.raises(LeanSegError, match=message) as err:
        load_model(path, model=model)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("call, message", [
    (lambda net, p: save_model(net, p, labels=[0, 1, 2]), r"labels must map names to label values, e.g. labels="),
    (lambda net, p: save_model(net, p, regions=["WT"]), r"regions must map names to label values"),
    (lambda net, p: save_model(p, net), "takes the network first"),
    (lambda net, p: save_model(net, p, {"labels": {"a": 1}}), "give fields as keywords"),
    (lambda net, p: save_model({"w": 1}, p), "takes an nn.Module, got dict"),
])
def test_save_model_misuse_is_named(tmp_path, call, message):
    with pytest.raises(LeanSegError, match=message) as err:
        call(_unet(), tmp_path / "m.safetensors")
    assert "\n" not in str(err.value)


def test_leansegs_own_classes_save_without_create(tmp_path):
    from leanseg.models import LeanResNet, LeanUNet
    from leanseg.models.faultseg import FaultSegUNet

    for net, shape in [(LeanUNet(3, 2, 3, features=(4, 8)), (1, 2, 8, 8, 8)),
                       (LeanResNet("B", num_classes=4, widths=(4, 8), steps=(1, 1)), (2, 3, 8, 8)),
                       (FaultSegUNet(features=(2, 4)), (1, 1, 8, 8, 8))]:
        path = save_model(net, tmp_path / f"{type(net).__name__}.safetensors")
        loaded, meta = load_model(path)  # rebuilt from the registry, no instance given
        assert meta.registered and meta.model_module is None and type(loaded) is type(net)
        x = torch.randn(shape)
        torch.testing.assert_close(loaded(x), net.eval()(x), rtol=0, atol=0)


def test_save_into_a_missing_folder(tmp_path):
    with pytest.raises(LeanSegError, match="does not exist"):
        save_model(_unet(), tmp_path / "no" / "m.safetensors")


@pytest.mark.parametrize("damage", ["missing", "truncated", "garbage", "not_leanseg", "wrong_weights"])
def test_bad_checkpoints(tmp_path, damage):
    path = tmp_path / "m.safetensors"
    if damage != "missing":
        save_model(_unet(), path, model="lean_unet", model_kwargs=KWARGS)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00" * 100)
    elif damage == "not_leanseg":
        from safetensors.torch import save_file

        save_file({"w": torch.zeros(2)}, str(path))
    elif damage == "wrong_weights":  # the config builds a 4-class net; the weights are of a 3-class one
        save_model(_unet(), path, model="lean_unet", model_kwargs={**KWARGS, "out_channels": 4})
    with pytest.raises(LeanSegError) as err:
        load_model(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def _forged(tmp_path, **changes):
    """A valid checkpoint whose JSON config was edited (as an attacker or a careless script would)."""
    from safetensors.torch import load_file, save_file

    path = save_model(_unet(), tmp_path / "m.safetensors", window=[8, 8, 8])
    with safe_open(str(path), "pt") as f:
        config = json.loads(f.metadata()["leanseg"])
    for key, value in changes.items():
        if key.startswith("kw_"):
            config["model_kwargs"][key[3:]] = value
        else:
            config[key] = value
    save_file(load_file(str(path)), str(path), metadata={"leanseg": json.dumps(config)})
    return path


@pytest.mark.parametrize("changes, message", [
    ({"kw_features": [100000, 100000]}, "refusing to build"),  # 1e10 weights: counted on the meta device
    ({"kw_act": ["prelu", {"num_parameters": 600000000}]}, "refusing to build"),
    ({"kw_in_channels": 10**12}, "in_channels"),
    ({"kw_out_channels": 3 * 10**9}, "out_channels"),
    ({"window": [0, 8, 8]}, "window"),
    ({"window": "abc"}, "window"),
    ({"window": [48.5, 8, 8]}, "window"),
    ({"window": [8, 8]}, "does not fit a 3D model"),
    ({"regions": {"WT": []}}, "non-empty list"),
    ({"labels": {"a": "zero", "b": 1}}, "label values must be integers"),
    ({"normalization": {"kind": "fixed", "mean": [0.0], "std": [1.0]}}, "input channels"),
    ({"normalization": "minmax"}, "unknown"),
    ({"kw_act": ["leakyrelu", {"negative_slope": float("nan")}]}, "act\\[1\\].negative_slope=nan is not a finite"),
    ({"normalization": {"kind": "fixed", "mean": [float("nan")] * 2, "std": [1.0] * 2}}, "finite numbers"),
    ({"spacing": [1.0, float("inf"), 1.0]}, "spacing"),
    ({"labels": {"a": 0, "b": 1, "c": 2, "d": 3}}, "names 4 classes but the model has 3 outputs"),
    # a 48M-weight config over a file holding 4-8 weights: the header's tensor shapes refuse it before allocation
    ({"kw_features": [4000, 8]}, "tensor 'encoder.0"),
])
def test_forged_configs_are_refused_before_anything_is_allocated(tmp_path, changes, message):
    path = _forged(tmp_path, **changes)
    with pytest.raises(LeanSegError, match=message) as err:
        load_model(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(tmp_path, value):
    """A NaN weight makes every voxel background; loading refuses it and names the tensor."""
    from safetensors.torch import load_file, save_file

    path = save_model(_unet(), tmp_path / "m.safetensors", model="lean_unet", model_kwargs=KWARGS)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    weights = load_file(str(path))
    name = sorted(weights)[3]
    weights[name].view(-1)[0] = value
    save_file(weights, str(path), metadata=meta)
    with pytest.raises(LeanSegError, match=f"tensor '{name}' holds NaN or infinite values"):
        load_model(path)
