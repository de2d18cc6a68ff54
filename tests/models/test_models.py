"""Every registered model, the same way (timm's tests/test_models.py): forward and backward on odd sizes, output
shape, no NaN, a gradient for every parameter; lean and dense twins; the paper's weight counts."""

import json

import pytest
import torch
from torch import nn

import leanseg
from leanseg.errors import LeanSegError
from leanseg.models import VARIANTS, LeanResNet, LeanUNet, available, create
from leanseg.nn import LeanConv, LeanConvTranspose

ODD = {2: (37, 41), 3: (37, 41, 29)}  # odd sizes: every stride-2 level rounds up, the decoder must give them back

# Small widths per registered model (fast on 2 CPU cores) and the output shape it must give for (N, C, *spatial).
SMALL = {
    "lean_unet": ({"features": (4, 8, 12), "out_channels": 3}, lambda n, sp: (n, 3, *sp)),
    "lean_resnet": ({"widths": (4, 8, 12), "steps": (1, 2, 1), "num_classes": 5}, lambda n, sp: (n, 5)),
}


def num_weights(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# Registered networks without a lean/dense twin (MONAI's, FaultSeg3D's); their strided levels need sizes divisible
# by 8
MONAI_SMALL = {
    "monai_unet": {"features": (4, 8, 16), "num_res_units": 1},
    "monai_segresnet": {"init_filters": 8},
    "monai_basicunet": {"features": (4, 4, 8, 8, 16)},
    "faultseg3d_unet": {"features": (4, 8, 8, 16, 16)},  # FaultSeg3D's dense U-Net (leanseg bench faults)
    "monai_dynunet": {"features": (4, 8, 16)},  # DynUNet as nnU-Net plans a network (leanseg bench msd)
}
# tested in their own module: the averaged container (tests/models/test_averaged.py)
ELSEWHERE = {"averaged"}


def test_every_registered_model_has_a_test_entry():
    assert set(available()) == set(SMALL) | set(MONAI_SMALL) | ELSEWHERE, "add new models to SMALL so that they are " \
        "tested"


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", sorted(MONAI_SMALL))
def test_monai_models_through_the_registry(name, spatial_dims, tmp_path):
    torch.manual_seed(0)
    model = create(name, spatial_dims=spatial_dims, in_channels=2, out_channels=3, **MONAI_SMALL[name])
    sizes = (32, 32, 16)[:spatial_dims]  # BasicUNet halves four times and instance-norms what is left
    x = torch.randn(2, 2, *sizes, requires_grad=True)
    check_forward_backward(model, x, (2, 3, *sizes))
    loaded, _ = leanseg.load_model(leanseg.save_model(model, tmp_path / "m.safetensors"))  # rebuilt from its spec
    torch.testing.assert_close(loaded(x.detach()), model.eval()(x.detach()))


def check_forward_backward(model: nn.Module, x: torch.Tensor, shape: tuple):
    model.train()
    y = model(x)
    outs = y if isinstance(y, list) else [y]
    assert outs[0].shape == shape
    assert all(torch.isfinite(o).all() for o in outs)
    sum(o.float().square().mean() for o in outs).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without a gradient: {missing}"
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients: {bad}"
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("conv", ["lean", "dense"])
@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", sorted(SMALL))
def test_forward_backward_odd_sizes(name, spatial_dims, conv):
    torch.manual_seed(0)
    kwargs, out_shape = SMALL[name]
    model = create(name, spatial_dims=spatial_dims, in_channels=2, conv=conv, **kwargs)
    x = torch.randn(2, 2, *ODD[spatial_dims], requires_grad=True)
    check_forward_backward(model, x, out_shape(2, ODD[spatial_dims]))


UNET_VARIANTS = [
    {"residual": True},  # the paper's residual steps in the encoder
    {"up": "transpose"},  # cheap lean transposed conv, cropped to odd skip sizes
    {"norm": "group", "act": "gelu"},
    {"norm": "batch", "act": "relu", "first_conv": "lean"},
    {"features": (4, 8, 12, 16, 20)},  # 5 levels: 29 -> 15 -> 8 -> 4 -> 2
    {"down": "maxpool"},  # pool, then a stride-1 conv; ceil_mode keeps odd sizes
    {"down": "avgpool", "residual": True, "features": (4, 8, 12, 16)},
    {"last_conv": "dense"},  # dense convs in the full-resolution decoder level only
    {"down": "maxpool", "last_conv": "dense", "up": "transpose", "features": (4, 8, 12, 16, 20)},
    {"dense_levels": 2, "down": "maxpool"},  # dense convs in the two finest levels, encoder and decoder
]


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("options", UNET_VARIANTS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_unet_variants(options, spatial_dims):
    torch.manual_seed(0)
    model = LeanUNet(spatial_dims, 2, 2, **{"features": (4, 8, 12), **options})
    x = torch.randn(2, 2, *ODD[spatial_dims], requires_grad=True)
    check_forward_backward(model, x, (2, 2, *ODD[spatial_dims]))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_dense_levels_make_exactly_the_finest_levels_dense(spatial_dims):
    f = (4, 8, 12, 16)
    model = LeanUNet(spatial_dims, 2, 3, features=f, dense_levels=2)
    decoder = dict(zip(reversed(range(len(f) - 1)), model.decoder, strict=True))  # level -> its decoder block
    for level in range(len(f)):
        blocks = [model.encoder[level]] + ([decoder[level]] if level in decoder else [])
        kinds = {type(m) for b in blocks for m in b.modules() if isinstance(m, (LeanConv, nn.Conv2d, nn.Conv3d))
                 and not (isinstance(m, (nn.Conv2d, nn.Conv3d)) and m.kernel_size[0] == 1)}
        assert kinds == ({nn.Conv2d if spatial_dims == 2 else nn.Conv3d} if level < 2 else {LeanConv}), level
    # every level dense: the dense twin, weight for weight
    twin, all_dense = LeanUNet(spatial_dims, 2, 3, features=f, conv="dense"), LeanUNet(spatial_dims, 2, 3, features=f,
                                                                                         dense_levels=len(f))
    assert [p.shape for p in twin.parameters()] == [p.shape for p in all_dense.parameters()]


def test_lean_first_conv_on_one_channel():
    model = LeanUNet(2, 1, 2, features=(4, 8), first_conv="lean")
    assert model(torch.randn(1, 1, 9, 11)).shape == (1, 2, 9, 11)


def test_deep_supervision_returns_one_output_per_decoder_level_in_training_only():
    model = LeanUNet(3, 1, 2, features=(4, 8, 12, 16), deep_supervision=True)
    x = torch.randn(1, 1, *ODD[3], requires_grad=True)
    check_forward_backward(model, x, (1, 2, *ODD[3]))  # the aux heads get gradients too
    outs = model.train()(x)
    assert [tuple(o.shape[2:]) for o in outs] == [(37, 41, 29), (19, 21, 15), (10, 11, 8)]
    assert model.eval()(x).shape == (1, 2, 37, 41, 29)
    assert not LeanUNet(3, 1, 2, features=(4, 8)).aux_heads  # off by default: no unused parameters


# The types of a model's modules in order, with every convolution written as its dense kind: a lean model and its
# dense twin must give the same list.
CONV_KIND = {LeanConv: "conv", nn.Conv2d: "conv", nn.Conv3d: "conv",
             LeanConvTranspose: "conv_t", nn.ConvTranspose2d: "conv_t", nn.ConvTranspose3d: "conv_t"}


def module_types(model: nn.Module) -> list[str]:
    out, inside = [], None
    for name, m in model.named_modules():
        if inside and name.startswith(inside):
            continue  # a part of a LeanConvTranspose, which stands for one transposed conv
        out.append(CONV_KIND.get(type(m), type(m).__name__))
        if type(m) in CONV_KIND:
            inside = name + "."
    return out


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name, kwargs", [
    ("lean_unet", {"features": (4, 8, 12), "out_channels": 2}),
    ("lean_unet", {"features": (4, 8, 12), "out_channels": 2, "up": "transpose", "residual": True,
                   "deep_supervision": True}),
    ("lean_resnet", {"variant": "A"}),
])
def test_lean_and_dense_twins_differ_only_in_convolutions(name, kwargs, spatial_dims):
    lean_model = create(name, spatial_dims=spatial_dims, in_channels=4, conv="lean", **kwargs)
    dense_model = create(name, spatial_dims=spatial_dims, in_channels=4, conv="dense", **kwargs)
    assert module_types(lean_model) == module_types(dense_model)
    assert any(isinstance(m, LeanConv) for m in lean_model.modules())
    assert not any(isinstance(m, (LeanConv, LeanConvTranspose)) for m in dense_model.modules())


# The paper's Table 1 (weights; None where the paper's row has no such network) and the dataset's classes.
PAPER = {"A": (4.3e6, 0.5e6, 10), "B": (0.6e6, None, 10), "C": (27e6, 2.9e6, 100), "D": (3.8e6, None, 100),
         "E": (17e6, 2.0e6, 10)}


@pytest.mark.parametrize("variant", sorted(PAPER))
def test_resnet_weight_counts_match_the_paper(variant):
    dense, lean, classes = PAPER[variant]
    with torch.device("meta"):
        for conv, expected in (("dense", dense), ("lean", lean)):
            if expected is None:
                continue
            got = num_weights(LeanResNet(variant, num_classes=classes, conv=conv))
            assert abs(got - expected) <= 0.15 * expected, f"{variant} {conv}: {got:,} vs the paper's {expected:,.0f}"


def test_resnet_variants_are_the_papers_table_2():
    assert VARIANTS["E"].widths == (32, 64, 128, 256, 512) and VARIANTS["C"].steps == (3, 5, 7, 4)
    model = LeanResNet("F", num_classes=10)
    x = torch.randn(2, 3, 96, 96)  # STL-10 images
    assert model(x).shape == (2, 10)


def test_brats_unet_lean_has_at_most_a_tenth_of_the_dense_weights():
    kwargs = {"spatial_dims": 3, "in_channels": 4, "out_channels": 3, "features": (32, 64, 128, 256, 320)}
    with torch.device("meta"):
        lean_w = num_weights(create("lean_unet", **kwargs))
        dense_w = num_weights(create("lean_unet", conv="dense", **kwargs))
    assert lean_w * 10 <= dense_w, f"lean {lean_w:,} vs dense {dense_w:,}"


def test_config_is_json_and_rebuilds_the_model():
    model = create("lean_unet", spatial_dims=2, in_channels=3, out_channels=4, features=[4, 8], norm="group")
    config = json.loads(json.dumps(model.config))
    again = create("lean_unet", **config)
    assert again.config == model.config
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_old_configs_without_the_new_options_build_the_old_model():
    # a checkpoint written before `down` and `last_conv` existed stores neither; the defaults rebuild its layers
    old = {"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "features": [4, 8, 12], "residual": False,
           "norm": "instance", "act": "leakyrelu", "conv": "lean", "first_conv": "dense", "deep_supervision": False,
           "up": "interp"}
    model = create("lean_unet", **old)
    assert model.config["down"] == "conv" and model.config["last_conv"] is None
    assert not any(isinstance(m, nn.MaxPool2d | nn.AvgPool2d) for m in model.modules())
    assert not any(isinstance(m, nn.Conv2d) for m in model.decoder[-1].modules())  # lean throughout
    with_dense = create("lean_unet", **old, last_conv="dense")
    assert sum(isinstance(m, nn.Conv2d) for m in with_dense.decoder[-1].modules()) == 3  # up, fuse, body


@pytest.mark.parametrize("kwargs, message", [
    ({"norm": "instnce"}, "unknown norm 'instnce'; did you mean 'instance'"),
    ({"act": "leaky_rel"}, "unknown activation 'leaky_rel'; did you mean 'leakyrelu'"),
    ({"conv": "laen"}, "did you mean 'lean'"),
    ({"up": "transpsoe"}, "did you mean 'transpose'"),
    ({"featurs": (4, 8)}, "unknown LeanUNet option 'featurs'; did you mean 'features'"),
    ({"norm": "zzz"}, "unknown norm 'zzz'; choose from 'instance', 'batch', 'group', 'none'"),
    ({"down": "maxpol"}, "did you mean 'maxpool'"),
    ({"last_conv": "dens"}, "did you mean 'dense'"),
    ({"dense_levels": 4, "features": (4, 8)}, "dense_levels must be an integer from 0 to 2"),
    ({"spatial_dims": 4}, "spatial_dims must be 2 or 3"),
    ({"features": (4, 0)}, "features must be positive integers"),
])
def test_user_errors_are_leanseg_errors(kwargs, message):
    args = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, **kwargs}
    with pytest.raises(LeanSegError, match=message):
        create("lean_unet", **args)


def test_unknown_model_and_resnet_variant():
    with pytest.raises(LeanSegError, match="unknown model 'lean_unte'; did you mean 'lean_unet'"):
        create("lean_unte")
    with pytest.raises(LeanSegError, match="unknown LeanResNet variant 'G'; choose from 'A', 'B'"):
        create("lean_resnet", variant="G")
    with pytest.raises(TypeError, match="config"):  # the old name is gone, not silently ignored
        create("lean_resnet", config="A")


def test_norm_and_act_by_class_or_with_arguments():
    model = LeanUNet(2, 1, 2, features=(4, 8), norm=nn.BatchNorm2d, act=("leakyrelu", {"negative_slope": 0.2}))
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(m.negative_slope == 0.2 for m in model.modules() if isinstance(m, nn.LeakyReLU))
    groups = {m.num_groups for m in LeanUNet(2, 1, 2, features=(12, 20), norm="group").modules()
              if isinstance(m, nn.GroupNorm)}
    assert groups == {4}  # gcd with 8: a divisor of 12 and 20


def test_a_custom_3d_model_is_a_few_lines():
    net = nn.Sequential(
        leanseg.ConvNormAct(3, 4, 8, conv="dense"),
        leanseg.DownBlock(3, 8, 16, residual=True),
        leanseg.ResidualBlock(3, 16),
        leanseg.ResidualBlock(3, 16, 24, stride=2),  # changes width and resolution: no identity shortcut
    )
    assert net(torch.randn(1, 4, 9, 10, 11)).shape == (1, 24, 3, 3, 3)
    up = leanseg.UpBlock(3, 16, 8, 8)
    assert up(torch.randn(1, 16, 5, 5, 6), torch.randn(1, 8, 9, 10, 11)).shape == (1, 8, 9, 10, 11)
