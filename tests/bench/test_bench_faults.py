"""The contenders of `leanseg bench faults` build through the faults task, run on a cube, and the lean designs keep
the issue's weight budget (at most a tenth of their dense twin's)."""

import pytest
import torch

from leanseg.bench.faults import CONTENDERS
from leanseg.tasks import get_task


def _build(key):
    options = CONTENDERS[key][1]
    task = get_task("faults", **options)
    return task.model(options.get("model"))


@pytest.mark.parametrize("lean,twin", [("lean", "dense"), ("lean-d1", "dense-d1")])
def test_lean_contender_has_at_most_a_tenth_of_its_twins_weights(lean, twin):
    def count(net):
        return sum(p.numel() for p in net.parameters())

    a, b = _build(lean), _build(twin)
    assert a.config | {"conv": "dense", "dense_levels": 0} == b.config | {"dense_levels": 0}  # same design
    assert 10 * count(a) <= count(b), (count(a), count(b))


@pytest.mark.parametrize("key", list(CONTENDERS))
def test_contender_predicts_a_cube(key):
    net = _build(key).eval()
    with torch.no_grad():
        y = net(torch.randn(1, 1, 16, 16, 16))
    assert y.shape == (1, 1, 16, 16, 16) and torch.isfinite(y).all()
