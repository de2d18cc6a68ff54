"""The EM scores of ``leanseg bench seg2d`` against float64 references written from their definitions, the
bench's curve reading, and the seg2d task's fixed validation split."""

import numpy as np
import pytest

from leanseg.bench.seg2d import flat_epoch
from leanseg.errors import LeanSegError
from leanseg.metrics import boundary_scores


def adapted_rand_reference(true: np.ndarray, test: np.ndarray) -> float:
    """1 - F-score of the counts of pixel pairs (two distinct pixels) in one segment of ``true``, of ``test``, and of
    both (Arganda-Carreras et al. 2015), over pixels where ``true`` is not 0."""
    keep = true != 0
    t, s = true[keep].astype(np.int64), test[keep].astype(np.int64)
    pairs = np.unique(np.stack([t, s]), axis=1, return_counts=True)[1].astype(np.float64)
    a = np.unique(t, return_counts=True)[1].astype(np.float64)
    b = np.unique(s, return_counts=True)[1].astype(np.float64)
    both, same_true, same_test = (pairs * (pairs - 1)).sum(), (a * (a - 1)).sum(), (b * (b - 1)).sum()
    precision, recall = both / same_test, both / same_true
    return 1 - 2 * precision * recall / (precision + recall)


def test_perfect_prediction():
    ref = np.full((9, 9), 255, np.uint8)
    ref[4, :] = 0  # a membrane splits the slice into two cells
    assert boundary_scores(ref, ref, boundary=0) == {"boundary_dice": 1.0, "pixel_error": 0.0, "rand_error": 0.0}


def test_a_gap_in_the_membrane_merges_two_cells():
    ref = np.full((8, 10), 255, np.uint8)
    ref[:, 4] = 0  # two cells of 8 x 4 and 8 x 5 pixels
    pred = ref.copy()
    pred[3, 4] = 255  # one missing membrane pixel joins them: Dice and pixel error barely move, Rand error jumps
    s = boundary_scores(pred, ref, boundary=0)
    assert s["pixel_error"] == pytest.approx(1 / 80)
    assert s["boundary_dice"] == pytest.approx(2 * 7 / 15)
    from skimage.measure import label

    reference = adapted_rand_reference(label(ref != 0, connectivity=1), label(pred != 0, connectivity=1))
    assert s["rand_error"] == pytest.approx(reference, abs=1e-12)
    assert s["rand_error"] > 0.3


def test_shape_mismatch_is_a_user_error():
    with pytest.raises(LeanSegError, match="differs"):
        boundary_scores(np.zeros((4, 4)), np.zeros((4, 5)), boundary=0)


@pytest.mark.parametrize("values, epoch", [
    ([0.5, 0.6, 0.702, 0.705, 0.71], 3),  # within 0.01 of the last value from epoch 3 on
    ([0.5, 0.72, 0.6, 0.71], 4),  # a dip after an early high: flat only at the end
    ([0.7], 1),
])
def test_flat_epoch(values, epoch):
    assert flat_epoch(values) == epoch


def test_val_ids_fix_the_split():
    from leanseg.tasks import get_task

    task = get_task("seg2d", val_ids=("shapes_001", "shapes_003"))
    cases = task.synthetic(5, 0)
    task.configure(cases)
    assert [c["id"] for c in cases if c["split"] == "val"] == ["shapes_001", "shapes_003"]
    with pytest.raises(LeanSegError, match="not among the cases"):
        get_task("seg2d", val_ids=("nope",)).configure(task.synthetic(2, 0))
