"""Counting weights and multiply-adds, and the two commands that print them."""

import math

import pytest
import torch
from torch import nn

from leanseg.bench.models import parse_input, weights_and_macs
from leanseg.cli.main import main
from leanseg.nn import LeanConv


def test_macs_of_single_layers_follow_the_formulas():
    voxels = 5 * 6 * 7
    lean = LeanConv(3, 8, 16)
    assert weights_and_macs(lean, (8, 5, 6, 7)) == (8 * 16 + 6 * 8, voxels * (8 * 16 + 6 * 8))
    dense = nn.Conv3d(8, 16, 3, padding=1, bias=False)
    assert weights_and_macs(dense, (8, 5, 6, 7)) == (27 * 8 * 16, voxels * 27 * 8 * 16)
    up = nn.ConvTranspose2d(8, 4, 2, stride=2, bias=False)
    assert weights_and_macs(up, (8, 5, 6))[1] == 30 * 4 * 4 * 8  # each input pixel scatters 2x2 taps per output


def test_meta_device_counts_like_a_real_forward():
    kwargs = {"spatial_dims": 3, "in_channels": 2, "out_channels": 3, "features": (4, 8, 12)}
    from leanseg.models import create

    real = weights_and_macs(create("lean_unet", **kwargs), (2, 11, 13, 9))
    with torch.device("meta"):
        meta = weights_and_macs(create("lean_unet", **kwargs), (2, 11, 13, 9))
    assert real == meta


def test_models_command_prints_every_model_lean_and_dense(capsys):
    assert main(["models", "--input", "4x33x35x31"]) == 0
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines() if "|" in line][1:]
    assert {(r[0].strip(), r[1].strip()) for r in rows} >= {("lean_unet", "lean"), ("lean_unet", "dense"),
                                                            ("lean_resnet", "lean"), ("lean_resnet", "dense")}
    lean_unet = next(r for r in rows if r[0].strip() == "lean_unet" and r[1].strip() == "lean")
    assert float(lean_unet[4].strip().rstrip("x")) >= 10  # dense/lean weights


@pytest.mark.parametrize("text", ["4x1x", "128x128", "4x0x3x3", "axbxc"])
def test_bad_input_shape_is_one_line_exit_2(text, capsys):
    with pytest.raises(Exception, match="--input must be"):
        parse_input(text)
    assert main(["models", "--input", text]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.mark.slow
def test_bench_unet_runs_small(capsys):
    assert main(["bench", "unet", "--size", "16", "--features", "4,8", "--models", "LeanUNet"]) == 0
    out = capsys.readouterr().out
    rows = [[cell.strip() for cell in line.split("|")] for line in out.splitlines() if line.startswith("LeanUNet ")]
    assert rows and "peak memory" in out
    for row in rows:  # wall seconds, CPU seconds, then the peak memory in MiB of each table (inference, training)
        numbers = [float(cell.rstrip("xKMGT").replace(",", "")) for cell in row[1:]]
        assert all(0 <= n < math.inf for n in numbers) and max(numbers) > 0, row
    assert main(["bench", "unet", "--size", "24"]) == 2  # not a multiple of 16
