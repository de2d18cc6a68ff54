"""leanseg.options: the one option look-up ("did you mean"), the string enums, window and device parsing."""

import pytest
import torch

from leanseg.errors import LeanSegError
from leanseg.options import ConvKind, Norm, Schedule, UpMode, look_up_option, parse_window, resolve_device


def test_look_up_option_enum_mapping_and_names():
    assert look_up_option("poly", Schedule, what="schedule") is Schedule.POLY
    assert look_up_option(UpMode.INTERP, UpMode, what="up") is UpMode.INTERP
    assert look_up_option("b", {"a": 1, "b": 2}, what="letter") == 2
    assert look_up_option("cpu", ("cpu", "cuda"), what="device") == "cpu"
    assert look_up_option("Instance", Norm, what="norm", key=str.lower) is Norm.INSTANCE
    assert ConvKind.LEAN == "lean" and isinstance(ConvKind.DENSE, str)  # string enums compare to plain names


@pytest.mark.parametrize("value, choices, message", [
    ("instanse", Norm, "unknown norm 'instanse'; did you mean 'instance'?"),
    ("cosin", Schedule, "unknown schedule 'cosin'; did you mean 'cosine'?"),
    ("qqq", UpMode, "unknown up 'qqq'; choose from 'interp', 'transpose'"),  # nothing close: every choice
    ("lean_unte", {"lean_unet": 1, "lean_resnet": 2}, "unknown model 'lean_unte'; did you mean 'lean_unet'"),
    (3, ConvKind, "unknown conv 3; choose from 'lean', 'dense'"),
])
def test_look_up_option_errors(value, choices, message):
    what = message.split()[1]
    with pytest.raises(LeanSegError) as err:
        look_up_option(value, choices, what=what)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize("window, ndim, expected", [
    ("128", 3, (128, 128, 128)),  # one size on every axis
    ("128,128,96", 3, (128, 128, 96)),
    ("64x32", 2, (64, 32)),
    (96, 2, (96, 96)),
    ((16, 8, 4), 3, (16, 8, 4)),
    ([16, 8], None, (16, 8)),  # dimension not known yet: as given
])
def test_parse_window(window, ndim, expected):
    assert parse_window(window, ndim) == expected


@pytest.mark.parametrize("window, ndim, message", [
    ("0", 3, "sizes must be positive"),
    ("128,-4,8", 3, "sizes must be positive"),
    ("128,96", 3, "needs 1 or 3 sizes for 3D data, got 2"),
    ("abc", 2, "expected an integer or comma-separated integers"),
    ((1.5, 2), 2, "expected an integer or a sequence of integers"),
    ("", 2, "expected an integer"),
])
def test_parse_window_errors(window, ndim, message):
    with pytest.raises(LeanSegError, match=message):
        parse_window(window, ndim, what="--window")


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for bad, message in [("mps", "'mps': not supported"), ("meta", "'meta': not supported"),
                         ("cdua", "unknown device 'cdua'; did you mean 'cuda'"), ("cpu:1", "expected cpu, cuda"),
                         ("cuda:x", "expected cpu, cuda")]:
        with pytest.raises(LeanSegError, match=message):
            resolve_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(LeanSegError, match="--device cuda:1: no CUDA device is available; use --device cpu"):
        resolve_device("cuda:1")


def test_prediction_resolve_device_is_the_same_function():
    from leanseg import options, prediction

    assert prediction.resolve_device is options.resolve_device
