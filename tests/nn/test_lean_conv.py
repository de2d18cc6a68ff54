"""LeanConv against its independent reference: the dense convolution with the equivalent sparse kernel, float64."""

import pytest
import torch
import torch.nn.functional as F

from leanseg.nn import LeanConv, _cpu, lean_conv_reference

SIZES = {2: (9, 7), 3: (7, 9, 5)}  # odd, unequal sizes: an off-by-one at any border or axis shows
CHANNELS = [
    (5, 5),  # square
    (7, 3),  # C_in > C_out: the stencil covers the output channels only
    (3, 6),  # C_in < C_out: channels >= C_in get the 1x1 only
]


def dense(x, conv):
    fn = F.conv3d if conv.spatial_dims == 3 else F.conv2d
    return fn(x, conv.dense_weight(), conv.bias, stride=conv.stride, padding=1)


@pytest.fixture(params=["fast", "torch-fallback", "reference"])
def backend(request, monkeypatch):
    """Every CPU path: the C stencil kernels, their plain-PyTorch fallback, and the reference."""
    if request.param == "torch-fallback":
        monkeypatch.setattr(_cpu, "_use_c", lambda t: None)
    if request.param == "reference":
        monkeypatch.setenv("LEANSEG_BACKEND", "reference")
    return request.param


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("cin,cout", CHANNELS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_equals_dense_float64(backend, d, stride, cin, cout, channels_last):
    torch.manual_seed(0)
    conv = LeanConv(d, cin, cout, stride=stride, bias=True).double()
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn((2, cin, *SIZES[d]), dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last if d == 2 else torch.channels_last_3d)
    x.requires_grad_(True)
    y = conv(x)
    y_ref = dense(x, conv)
    assert y.shape == y_ref.shape == (2, cout, *[(n - 1) // stride + 1 for n in SIZES[d]])
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-12)

    g = torch.randn_like(y_ref)
    params = [x, conv.weight, conv.stencil, conv.bias]
    grads = torch.autograd.grad(y, params, g)
    grads_ref = torch.autograd.grad(y_ref, params, g)
    for name, a, b in zip(["x", "weight", "stencil", "bias"], grads, grads_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11, msg=lambda m, n=name: f"grad {n}: {m}")


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("stride", [1, 2])
def test_float32_fast_path_close_to_float64(d, stride):
    """float32 through the C kernels stays within float32 rounding of the float64 result, with many channels."""
    torch.manual_seed(1)
    conv = LeanConv(d, 40, 24, stride=stride)
    x = torch.randn((2, 40, *[n + 6 for n in SIZES[d]]), requires_grad=True)
    y = conv(x)
    conv64 = LeanConv(d, 40, 24, stride=stride).double()
    conv64.load_state_dict({k: v.double() for k, v in conv.state_dict().items()})
    x64 = x.detach().double().requires_grad_(True)
    y64 = dense(x64, conv64)
    torch.testing.assert_close(y.double(), y64, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(y64)
    gx, gw, gs = torch.autograd.grad(y, [x, conv.weight, conv.stencil], g.float())
    gx64, gw64, gs64 = torch.autograd.grad(y64, [x64, conv64.weight, conv64.stencil], g)
    for a, b in ((gx, gx64), (gw, gw64), (gs, gs64)):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-3 * b.abs().max().item())


def test_reference_matches_module_functional():
    torch.manual_seed(2)
    conv = LeanConv(3, 4, 4).double()
    x = torch.randn(1, 4, 5, 6, 7, dtype=torch.float64)
    torch.testing.assert_close(lean_conv_reference(x, conv.weight, conv.stencil), dense(x, conv), rtol=0, atol=1e-12)


@pytest.mark.parametrize("d", [2, 3])
def test_dense_weight_has_the_lean_sparsity(d):
    conv = LeanConv(d, 6, 4)
    k = conv.dense_weight()
    assert k.shape == (4, 6) + (3,) * d
    centre = (slice(None), slice(None)) + (1,) * d
    off_centre = k.clone()
    off_centre[centre] = 0
    nonzero = off_centre.ne(0)
    # neighbour taps only on the diagonal o == c, 2d of them per output channel
    assert nonzero.sum().item() == 2 * d * 4
    for o, c in nonzero.nonzero()[:, :2].tolist():
        assert o == c


@pytest.mark.parametrize(
    "d,cin,cout,bias", [(2, 16, 16, False), (3, 16, 16, False), (3, 4, 32, True), (2, 48, 8, True)]
)
def test_weight_count_formula(d, cin, cout, bias):
    conv = LeanConv(d, cin, cout, bias=bias)
    n = sum(p.numel() for p in conv.parameters())
    assert n == cout * cin + 2 * d * min(cin, cout) + (cout if bias else 0)
    assert n == LeanConv.num_weights(d, cin, cout, bias)
    if cin == cout and not bias:
        assert n == cin**2 + 2 * d * cin  # C^2 + 4C in 2D, C^2 + 6C in 3D


def test_initialisation_keeps_activation_scale_through_depth():
    """40 LeanConv + ReLU layers: the mean square of the activations stays within a factor 4 of the input's."""
    torch.manual_seed(3)
    layers = [m for _ in range(40) for m in (LeanConv(3, 32, 32), torch.nn.ReLU())]
    net = torch.nn.Sequential(*layers)
    x = torch.randn(2, 32, 12, 12, 12)
    with torch.no_grad():
        ratio = net(x).pow(2).mean() / x.pow(2).mean()
    assert 0.25 < ratio.item() < 4.0


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        (dict(spatial_dims=4, in_channels=3, out_channels=3), "spatial_dims must be 2 or 3, got 4"),
        (dict(spatial_dims=3, in_channels=3, out_channels=3, stride=3), "stride must be 1 or 2, got 3"),
        (dict(spatial_dims=2, in_channels=0, out_channels=3), "in_channels must be a positive integer, got 0"),
    ],
)
def test_bad_constructor_arguments(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        LeanConv(**kwargs)


def test_bad_inputs():
    conv = LeanConv(3, 4, 8)
    with pytest.raises(ValueError, match=r"input must have 5 dims .* got shape \(1, 4, 8, 8\)"):
        conv(torch.randn(1, 4, 8, 8))
    with pytest.raises(ValueError, match="input has 3 channels, the layer expects in_channels=4"):
        conv(torch.randn(1, 3, 8, 8, 8))


@pytest.mark.parametrize(
    "shape,cin,cout",
    [
        ((2, 1, 5, 6, 7), 1, 4),  # one input channel: the channel stride is arbitrary
        ((1, 3, 1, 6, 7), 3, 3),  # depth 1
        ((3, 4, 1, 1, 5), 4, 2),  # a line of voxels
        ((1, 2, 1, 1), 2, 5),  # a single 2D pixel
    ],
)
def test_degenerate_sizes(shape, cin, cout):
    torch.manual_seed(4)
    d = len(shape) - 2
    conv = LeanConv(d, cin, cout, bias=True).double()
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    y = conv(x)
    y_ref = dense(x, conv)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-12)
    g = torch.randn_like(y_ref)
    params = [x, conv.weight, conv.stencil, conv.bias]
    for a, b in zip(torch.autograd.grad(y, params, g), torch.autograd.grad(y_ref, params, g), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11)


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_one_shape_check_per_call(monkeypatch, backend):
    """LeanConv.forward -> the dispatcher checks the arguments once; the backends behind it do not check again."""
    import kernels3d.reference
    from leanseg.nn import functional

    calls = []
    real = kernels3d.reference.check_args

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setenv("LEANSEG_BACKEND", backend)
    monkeypatch.setattr(functional, "check_args", counting)
    monkeypatch.setattr(kernels3d.reference, "check_args", counting)
    conv = LeanConv(3, 4, 8)
    conv(torch.randn(1, 4, 5, 6, 7)).sum().backward()
    assert len(calls) == 1
