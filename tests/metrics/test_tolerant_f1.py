"""leanseg.metrics.tolerant_f1 against a brute-force float64 reference (every pair of voxels, Chebyshev distance)."""

import numpy as np
import pytest

from leanseg.metrics import tolerant_f1


def brute_force(pred: np.ndarray, ref: np.ndarray, tol: int) -> dict:
    p, r = np.argwhere(pred).astype(np.float64), np.argwhere(ref).astype(np.float64)
    if len(p) == 0 or len(r) == 0:
        both = len(p) == len(r) == 0
        prec = 1.0 if len(p) == 0 and both else (0.0 if len(p) else 1.0 * (len(r) == 0))
        rec = 1.0 if len(r) == 0 and both else (0.0 if len(r) else 1.0 * (len(p) == 0))
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        return {"precision": prec, "recall": rec, "f1": f1}
    cheb = np.abs(p[:, None, :] - r[None, :, :]).max(-1)  # (n_pred, n_ref)
    prec = float((cheb.min(1) <= tol).mean())
    rec = float((cheb.min(0) <= tol).mean())
    return {"precision": prec, "recall": rec, "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0}


def plane(shape, x):
    m = np.zeros(shape, bool)
    m[x] = True
    return m


CASES = [
    (plane((9, 8, 7), 4), plane((9, 8, 7), 4), 1.0),  # identical sheets
    (plane((9, 8, 7), 5), plane((9, 8, 7), 4), 1.0),  # shifted by one voxel: within tolerance
    (plane((9, 8, 7), 6), plane((9, 8, 7), 4), 0.0),  # shifted by two: nothing counts
]


@pytest.mark.parametrize("pred, ref, expected", CASES)
def test_hand_made_sheets(pred, ref, expected):
    got = tolerant_f1(pred, ref, tolerance=1)
    assert got["f1"] == pytest.approx(expected)
    assert got == pytest.approx(brute_force(pred, ref, 1))


@pytest.mark.parametrize("shape, tol", [
    ((11, 7, 9), 1),  # odd 3D
    ((13, 10), 1),  # 2D
    ((8, 9, 10), 2),  # wider tolerance
    ((6, 5, 4), 0),  # exact match only
])
def test_random_masks_match_brute_force(shape, tol):
    rng = np.random.default_rng(sum(shape) + tol)
    pred, ref = rng.random(shape) < 0.05, rng.random(shape) < 0.05
    got = tolerant_f1(pred, ref, tolerance=tol)
    want = brute_force(pred, ref, tol)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-12)


def test_partial_overlap_by_hand():
    ref = np.zeros((10, 10), bool)
    ref[5, :] = True  # 10 reference voxels
    pred = np.zeros((10, 10), bool)
    pred[6, :5] = True  # 5 near the reference
    pred[0, :5] = True  # 5 far away
    got = tolerant_f1(pred, ref)
    assert got["precision"] == pytest.approx(0.5)
    assert got["recall"] == pytest.approx(0.6)  # columns 0..5 of row 5 are within one step of a prediction
    assert got["f1"] == pytest.approx(2 * 0.5 * 0.6 / 1.1)


def test_empty_masks():
    empty = np.zeros((4, 4, 4), bool)
    assert tolerant_f1(empty, empty)["f1"] == 1.0
    full = empty.copy()
    full[1, 1, 1] = True
    assert tolerant_f1(empty, full)["f1"] == 0.0
    assert tolerant_f1(full, empty)["f1"] == 0.0
