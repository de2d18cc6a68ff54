"""leanseg.synthetic.brats_phantom: the demo's easy phantoms and the hard ones ``leanseg bench brats`` ranks on."""

import dataclasses
import time

import numpy as np
import pytest

from leanseg import synthetic
from leanseg.synthetic import BratsGeology, brats_phantom


def overlap(a: np.ndarray, b: np.ndarray, bins: int = 64) -> float:
    """Overlap coefficient of two intensity samples: the shared area of their normalised histograms (0 apart, 1
    the same distribution)."""
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    pa, _ = np.histogram(a, bins, (lo, hi))
    pb, _ = np.histogram(b, bins, (lo, hi))
    return float(np.minimum(pa / pa.sum(), pb / pb.sum()).sum())


def zscore(volume: np.ndarray, brain: np.ndarray) -> np.ndarray:
    return (volume - volume[brain].mean()) / volume[brain].std()  # what the brats task does before the network


def hard_case(seed: int, size: int = 48, geo: BratsGeology | None = None):
    """The hard phantom of ``seed`` with its tissue map: the same draws as ``brats_phantom(..., hard=True)``."""
    geo = geo or BratsGeology()
    rng = np.random.default_rng([0, seed])
    tissue, label, brain = synthetic._hard_brats_anatomy(rng, size, geo)
    return synthetic._hard_brats_scan(rng, tissue, brain, geo), label, tissue, brain


@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize("size", [32, 48])
def test_shapes_dtypes_and_labels(size, hard):
    for seed in range(3):
        image, label = brats_phantom(np.random.default_rng(seed), size, hard=hard)
        assert image.shape == (4, size, size, size) and image.dtype == np.float32
        assert label.shape == (size, size, size) and label.dtype == np.uint8
        assert set(np.unique(label)) <= {0, 1, 2, 4} and (label > 0).any()
        assert np.isfinite(image).all() and (image >= 0).all()
        brain = image[0] != 0
        assert not label[~brain].any()  # skull-stripped: no tumour outside the brain, zero background


def test_hard_matches_its_anatomy_and_scan():
    image, label = brats_phantom(np.random.default_rng([0, 5]), 32, hard=True)
    image2, label2, _, _ = hard_case(5, 32)
    assert np.array_equal(image, image2) and np.array_equal(label, label2)


def test_seeded():
    a = brats_phantom(np.random.default_rng([3, 1]), 32, hard=True)
    b = brats_phantom(np.random.default_rng([3, 1]), 32, hard=True)
    c = brats_phantom(np.random.default_rng([3, 2]), 32, hard=True)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_hard_is_fast():
    brats_phantom(np.random.default_rng(0), 64, hard=True)  # warm-up (imports, caches)
    t0 = time.process_time()  # CPU time: the wall time of a shared machine says more about its load
    brats_phantom(np.random.default_rng(1), 64, hard=True)
    assert time.process_time() - t0 < 1.0  # 0.3-0.5 s on this project's machine


def test_edema_and_grey_matter_overlap_on_flair():
    """The point of the hard phantoms: edema's flair histogram overlaps grey matter's (0.49 on average over 12
    cases when measured), while on the easy phantoms edema stands clear of the normal brain (0.01)."""
    hard = []
    for seed in range(6):
        image, label, tissue, brain = hard_case(seed)
        flair = zscore(image[3], brain)
        hard.append(overlap(flair[label == 2], flair[tissue == synthetic._GM]))
    easy = []
    for seed in range(6):
        image, label = brats_phantom(np.random.default_rng([0, seed]), 48)
        brain = image[3] != 0
        flair = zscore(image[3], brain)
        easy.append(overlap(flair[label == 2], flair[brain & (label == 0)]))
    assert np.mean(hard) > 0.35 and min(hard) > 0.1
    assert np.mean(easy) < 0.05


def test_enhancing_rim_and_vessels_overlap_on_t1ce():
    scores = []
    for seed in range(8):
        image, label, tissue, brain = hard_case(seed)
        vessels = tissue == synthetic._VESSEL
        if (label == 4).any() and vessels.any():
            t1ce = zscore(image[1], brain)
            scores.append(overlap(t1ce[label == 4], t1ce[vessels]))
    assert len(scores) >= 4 and np.mean(scores) > 0.2  # 0.41 over 11 cases when measured


def octant_spread(image: np.ndarray, tissue: np.ndarray, brain: np.ndarray) -> float:
    """Largest over smallest median white-matter t1 among the brain's eight octants: a bias field's signature."""
    centre = np.argwhere(brain).mean(0)
    idx = np.indices(brain.shape)
    medians = []
    for corner in range(8):
        mask = (tissue == synthetic._WM) & brain
        for axis in range(3):
            upper = idx[axis] >= centre[axis]
            mask &= upper if corner >> axis & 1 else ~upper
        if mask.sum() > 50:  # a lesion or the ventricles may fill an octant's white matter
            medians.append(np.median(image[0][mask]))
    return float(max(medians) / min(medians))


def test_bias_field_is_strong():
    """The same anatomy and draws without the bias field: white matter is uniform across the brain up to texture
    and noise; with it, octants differ by tens of percent."""
    flat = dataclasses.replace(BratsGeology(), bias=(0.0, 0.0))
    biased, unbiased = [], []
    for seed in range(4):
        for geo, spreads in ((None, biased), (flat, unbiased)):
            image, _, tissue, brain = hard_case(seed, geo=geo)
            spreads.append(octant_spread(image, tissue, brain))
    assert np.mean(unbiased) < 1.2  # 1.10 over these seeds when measured (texture, partial volume, gamma)
    assert np.mean(biased) > np.mean(unbiased) + 0.15


def roughness(volume: np.ndarray, axis: int) -> float:
    return float(np.abs(np.diff(volume, 2, axis=axis)).mean())


def test_thick_slices_blur_one_axis():
    """Flair from 5-voxel slices: second differences along the slice axis are a fraction of those across it."""
    geo = dataclasses.replace(BratsGeology(), slices_thick=(5, 5), noise=(0.05, 0.05))
    for seed in range(3):
        image, _, _, brain = hard_case(seed, geo=geo)
        inner = tuple(slice(8, -8) for _ in range(3))  # away from the brain's edge
        r = sorted(roughness(image[3][inner], a) for a in range(3))
        assert r[0] < 0.6 * r[1]


def test_thick_slices_keep_a_flat_volume_flat():
    ramp = np.broadcast_to(np.arange(20, dtype=np.float32)[:, None, None], (20, 6, 6)).copy()
    out = synthetic._thick_slices(ramp, 0, 3)
    assert out.shape == ramp.shape
    np.testing.assert_allclose(out[2:-3], ramp[2:-3], atol=1e-5)  # linear between slice centres: a ramp survives
    np.testing.assert_array_equal(synthetic._thick_slices(ramp, 1, 1), ramp)
    np.testing.assert_array_equal(synthetic._thick_slices(ramp, 2, 1, lambda x: x + 1), ramp + 1)


def test_geology_switches():
    no_et = dataclasses.replace(BratsGeology(), no_enhancement=1.0)
    assert not any((brats_phantom(np.random.default_rng(s), 32, geology=no_et)[1] == 4).any() for s in range(3))
    labels = [brats_phantom(np.random.default_rng([0, s]), 32, hard=True)[1] for s in range(40)]
    missing_et = sum(not (lab == 4).any() for lab in labels)
    assert 1 <= missing_et <= 15  # drawn with probability 0.15 per case (and tiny rims can vanish)
