"""leanseg.synthetic.fault_cube: the wide FaultSeg3D-style generator the faults task trains on."""

import dataclasses

import numpy as np
import pytest

from leanseg.synthetic import FaultGeology, fault_cube, seismic_faults


@pytest.mark.parametrize("size", [32, 48])
def test_shapes_dtypes_and_zscore(size):
    image, label = fault_cube(np.random.default_rng(0), size)
    assert image.shape == (1, size, size, size) and image.dtype == np.float32
    assert label.shape == (size, size, size) and label.dtype == np.uint8
    assert set(np.unique(label)) <= {0, 1}
    assert abs(float(image.mean())) < 1e-4 and abs(float(image.std()) - 1) < 1e-3  # as predict normalises
    assert np.isfinite(image).all()


def test_seeded():
    a = fault_cube(np.random.default_rng([3, 1]), 32)
    b = fault_cube(np.random.default_rng([3, 1]), 32)
    c = fault_cube(np.random.default_rng([3, 2]), 32)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_fault_fraction_is_sane():
    fractions = [fault_cube(np.random.default_rng(i), 64)[1].mean() for i in range(8)]
    assert 0.003 < np.mean(fractions) < 0.12  # thin sheets: a few percent of the cube, never most of it
    assert max(fractions) < 0.25


def test_labels_are_one_voxel_thick():
    """A single planar fault crossing the cube: along its dominant normal axis each line holds at most one label."""
    geo = FaultGeology(n_faults=(1, 1), unfaulted=0.0, listric=0.0, curved=0.0, extent=(5.0, 5.0),
                       throw=(6.0, 6.0))
    for seed in range(4):
        label = fault_cube(np.random.default_rng(seed), 40, geo)[1]
        counts = [label.sum(axis=a) for a in (0, 1)]  # near-vertical faults: the dominant axis is x or y
        assert min(int(c.max()) for c in counts) == 1


def test_a_fault_offsets_the_reflectors():
    """The same geology with and without throw: the hanging wall's traces move in time, the footwall's do not."""
    geo = FaultGeology(n_faults=(1, 1), unfaulted=0.0, listric=0.0, curved=0.0, extent=(5.0, 5.0),
                       throw=(8.0, 8.0), noise=(0.0, 0.0),
                       fold_amplitude=(0.0, 0.0), shear=(0.0, 0.0), reverse=0.0)
    size = 48
    faulted, label = fault_cube(np.random.default_rng(7), size, geo)
    flat, _ = fault_cube(np.random.default_rng(7), size, dataclasses.replace(geo, throw=(0.0, 0.0),
                                                                             label_throw=-1.0))
    assert label.sum() > 0
    # traces over a middle time window that the fault does not cross there: either wall, away from the fault
    mid = slice(12, 36)
    a, b = faulted[0, :, :, mid], flat[0, :, :, mid]
    a, b = a - a.mean(2, keepdims=True), b - b.mean(2, keepdims=True)
    corr = (a * b).sum(2) / np.sqrt((a * a).sum(2) * (b * b).sum(2))
    clear = label[:, :, mid].sum(2) == 0
    moved, still = clear & (corr < 0.9), clear & (corr > 0.99)
    assert moved.mean() > 0.1 and still.mean() > 0.1  # the hanging wall moved, the footwall did not
    # on a moved trace, the best lag against the unfaulted trace is the vertical throw
    lags = range(-12, 13)
    for x, y in np.argwhere(moved)[:: max(1, int(moved.sum()) // 10)]:
        tr, ref = faulted[0, x, y, mid], flat[0, x, y]
        best = max(lags, key=lambda k: float(np.dot(tr, ref[12 + k:36 + k])))
        assert 1 <= abs(best) <= 9  # up to 8 voxels along a 60-85 degree dip, less where the throw tapers


def test_old_generator_still_works():
    image, label = seismic_faults(np.random.default_rng(0), size=32, n_faults=(1, 2))
    assert image.shape == (1, 32, 32, 32) and label.shape == (32, 32, 32)


def test_unfaulted_cubes_have_no_label_and_still_have_layers():
    image, label = fault_cube(np.random.default_rng(0), 32, FaultGeology(unfaulted=1.0, noise=(0.0, 0.0)))
    assert label.sum() == 0
    a = image[0] - image[0].mean(2, keepdims=True)
    corr = (a[1:] * a[:-1]).sum(2) / np.sqrt((a[1:] ** 2).sum(2) * (a[:-1] ** 2).sum(2))
    assert np.median(corr) > 0.8  # coherent reflectors: the 'no fault' class is not only noise


@pytest.mark.parametrize("coloured, drop", [
    (0.0, 0.5),  # white noise: neighbouring traces correlate at ~0.3 (the F3 crop's at ~0.5)
    (1.0, 0.1),  # band-limited and smoothed across traces: partly shared by neighbours, so less of a drop
])
def test_noise_lowers_trace_coherence(coloured, drop):
    """Noise 1.5 times the signal: neighbouring traces correlate less than in a clean cube."""
    def coherence(noise):
        geo = FaultGeology(noise=(noise, noise), coloured_noise=coloured, unfaulted=1.0, mute=0.0)
        a = fault_cube(np.random.default_rng(5), 32, geo)[0][0]
        a = a - a.mean(2, keepdims=True)
        return float(np.median((a[1:] * a[:-1]).sum(2) / np.sqrt((a[1:] ** 2).sum(2) * (a[:-1] ** 2).sum(2))))

    clean, noisy = coherence(0.0), coherence(1.5)
    assert clean > 0.8 and noisy < clean - drop


def test_mute_zeroes_the_top_and_its_labels():
    geo = FaultGeology(mute=1.0, mute_depth=(0.25, 0.25), unfaulted=0.0, n_faults=(6, 6), extent=(5.0, 5.0))
    image, label = fault_cube(np.random.default_rng(2), 32, geo)
    top = image[0, :, :, :8]
    assert np.ptp(top) < 1e-5  # one value (zero before the z-score) over the muted samples
    assert label[..., :8].sum() == 0 and label[..., 8:].sum() > 0
