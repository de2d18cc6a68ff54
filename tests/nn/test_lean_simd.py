"""The AVX-512 float32 kernels of the CPU lean convolution (lean_tile_f32, lean_wgrad_f32) against float64.

As the kernel tests of STYLE.md: the kernel output, PyTorch's float32 reference and the float64 reference;
|kernel - ref64| <= 2 |torch32 - ref64| + atol for the output and every gradient. The same check runs with the
kernels turned off (the portable direct kernel and BLAS), so both paths the dispatcher can take are covered.
"""

import pytest
import torch

from leanseg.nn import _cext, _cpu, lean_conv_reference

lib = _cext.load()
pytestmark = pytest.mark.skipif(lib is None or not lib.lean_simd(), reason="no AVX-512 build of the C kernels")

CASES = [
    # (spatial size, C_in, C_out)
    ((33, 29), 16, 16),  # one block of 16, odd sizes: a row's ends and a partial tile
    ((13, 40), 32, 32),  # two blocks
    ((5, 6, 21), 16, 16),  # 3D
    ((6, 5, 7), 32, 32),  # 3D, two blocks
    ((9, 11), 5, 19),  # C_out not a multiple of 16, C_in < C_out: channels >= 5 get no taps
    ((9, 11), 19, 5),  # C_in > C_out
    ((4, 7, 9), 40, 64),  # four blocks (the widest the tile kernel takes)
    ((7, 7, 5), 64, 48),
    ((1, 17), 33, 33),  # one row: every row tap outside the input
    ((17, 1), 16, 16),  # one column: every voxel is a row end
    ((2, 2), 3, 70),  # C_out > 64: the direct kernel, C_in small
    ((5, 150), 16, 16),  # rows of several 32-voxel tiles: the one-loop weight gradients of <= 16 channels
    ((3, 4, 99), 11, 7),  # the same in 3D, C_in and C_out below 16
]


def _leaves(*ts):
    return [t.clone().requires_grad_(True) if t is not None else None for t in ts]


def _grads(x, w, s, b, stride, g, fn=None):
    args = _leaves(x, w, s, b)
    y = (fn or (lean_conv_reference if x.dtype == torch.float64 else _cpu.lean_conv_cpu))(*args, stride=stride)
    return [y.detach(), *torch.autograd.grad(y, [a for a in args if a is not None], g.to(x.dtype))]


def _check_against_float64(size, cin, cout, stride, bias=True):
    torch.manual_seed(3)
    d = len(size)
    x = torch.randn((2, cin, *size), dtype=torch.float64)
    w = torch.randn(cout, cin, dtype=torch.float64) / cin**0.5
    s = torch.randn(min(cin, cout), 2 * d, dtype=torch.float64)
    b = torch.randn(cout, dtype=torch.float64) if bias else None
    g = torch.randn((2, cout, *[(n - 1) // stride + 1 for n in size]), dtype=torch.float64)
    ref = _grads(x, w, s, b, stride, g)
    x32, w32, s32 = (t.float() for t in (x, w, s))
    b32 = b.float() if bias else None
    ours = _grads(x32, w32, s32, b32, stride, g)
    torch_ = _grads(x32, w32, s32, b32, stride, g, fn=lean_conv_reference)
    for name, a, t, r in zip(["y", "dx", "dW", "dS", "dbias"], ours, torch_, ref, strict=False):
        err, torch_err = (a.double() - r).abs(), (t.double() - r).abs()
        atol = 1e-6 * r.abs().max().item() + 1e-7
        assert (err <= 2 * torch_err + atol).all(), f"{name}: max error {err.max():.3g}, torch {torch_err.max():.3g}"


@pytest.mark.parametrize("simd", [True, False])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size,cin,cout", CASES)
def test_float32_kernels_within_twice_torch_error(monkeypatch, simd, stride, size, cin, cout):
    monkeypatch.setattr(_cpu, "SIMD_F32", simd)
    _check_against_float64(size, cin, cout, stride)


# The one-pass backward (lean_bwd_f32, stride 1, up to 32 channels): one loop per voxel up to 16 channels, the
# row-wise tile + weight-gradient rows above. Rows long enough for whole 32-voxel tiles and rows of one voxel.
BWD_SIZES = [(7, 45), (1, 3), (3, 5, 37), (2, 3, 1)]


@pytest.mark.parametrize("simd", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", BWD_SIZES)
@pytest.mark.parametrize("c", [1, 3, 16, 17, 32])
def test_one_pass_backward_within_twice_torch_error(monkeypatch, simd, bias, stride, size, c):
    monkeypatch.setattr(_cpu, "SIMD_F32", simd)
    _check_against_float64(size, c, c, stride, bias)
    _check_against_float64(size, c, max(1, c // 2 + 1), stride, bias)  # C_in != C_out, m = C_out < C_in


def test_one_pass_backward_is_used(monkeypatch):
    """conv_backward takes lean_bwd_f32 when dx, dW and dS are all needed at stride 1, and not otherwise."""
    calls = []
    monkeypatch.setattr(_cpu, "_bwd", lambda *a: calls.append(1) or _bwd(*a))
    xl, dy = torch.randn(1, 5, 6, 16), torch.randn(1, 5, 6, 16)
    w, st = torch.randn(16, 16), torch.randn(4, 16)
    _cpu.conv_backward(dy, xl, w, st, 1, [True, True, True, False])
    _cpu.conv_backward(dy, xl, w, st, 1, [False, True, True, True])
    _cpu.conv_backward(dy, xl, w, st, 2, [True, True, True, True])
    assert calls == [1]


_bwd = _cpu._bwd


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize(
    "size,cin,cout", [((7, 61), 16, 16), ((3, 5, 45), 20, 32), ((4, 3, 40), 16, 64), ((3, 4, 37), 16, 16)]
)
def test_streamed_stores_and_prefetch(monkeypatch, bias, stride, size, cin, cout):
    """With every output streamed (the threshold at 0 bytes; rows of several tiles, odd ends), the forward and
    the adjoint still match float64; outputs whose channels are not whole blocks of 16 are not streamed. 16 -> 16
    without bias is the tile run with constant arguments."""
    monkeypatch.setattr(_cpu, "STREAM_BYTES", 0)
    x = torch.empty(2, 3, 16)
    assert _cpu._stream(torch.empty(2, 3, 32), x) and not _cpu._stream(torch.empty(2, 3, 19), x)
    _check_against_float64(size, cin, cout, stride, bias)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size,cin,cout", [((9, 11), 16, 16), ((5, 6, 7), 32, 19)])
def test_statistics_of_the_written_output(stride, size, cin, cout):
    """The per-(n, c) sums and sums of squares the tile kernel accumulates equal those of its output, in float64."""
    torch.manual_seed(4)
    xl = torch.randn((2, *size, cin))  # channels-last (N, *spatial, C_in)
    w, st, b = torch.randn(cout, cin) / cin**0.5, torch.randn(2 * len(size), min(cin, cout)), torch.randn(cout)
    y, sums, squares = _cpu.conv_forward(xl, w, st, b, stride, stats=True)
    flat = y.reshape(2, -1, cout).double()
    torch.testing.assert_close(sums, flat.sum(1), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(squares, flat.square().sum(1), rtol=1e-5, atol=1e-4)
    ref = lean_conv_reference(xl.movedim(-1, 1).double(), w.double(), st.t().double(), b.double(), stride)
    torch.testing.assert_close(y.movedim(-1, 1).double(), ref, rtol=1e-5, atol=1e-5)
