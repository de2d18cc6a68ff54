"""Seeded synthetic data for every task, generated on the fly (nothing is downloaded).

- ``brats_phantom``: four MRI-like modalities (t1, t1ce, t2, flair) of a brain-shaped head with a tumour made of a
  necrotic core, an enhancing rim and surrounding edema, in BraTS 2021 labels (1 NCR, 2 ED, 4 ET).
- ``seismic_faults``: a FaultSeg3D-style cube (Wu et al. 2019): layered random reflectivity, folding, planar shear,
  faults with random strike, dip and throw, a Ricker wavelet, noise; binary fault labels. Axes (x, y, time).
- ``shapes2d``: a noisy 2D image of discs (label 1) and rectangles (label 2) on a textured background.
- ``cifar_like``: 32x32 colour images whose class is an oriented, coloured stripe pattern (a smoke test only).

All take a ``numpy.random.Generator`` so a data set is a pure function of its seed. numpy and scipy only, vectorised:
a 64^3 phantom or fault cube takes a few tens of milliseconds.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

BRATS_MODALITIES = ("t1", "t1ce", "t2", "flair")

# Mean intensity of each tissue in each modality (rows follow BRATS_MODALITIES). Distinct contrasts as in real
# scans: enhancing tumour is bright only on t1ce, edema is bright on t2 and flair, the necrotic core is dark on t1
# and t1ce and bright on t2. Columns: white matter, grey matter, edema, enhancing, necrosis.
_CONTRAST = np.array([
    [1.00, 0.80, 0.65, 0.75, 0.40],  # t1
    [1.00, 0.80, 0.65, 1.70, 0.35],  # t1ce
    [0.60, 0.85, 1.40, 1.05, 1.70],  # t2
    [0.70, 0.85, 1.55, 1.20, 0.95],  # flair
], dtype=np.float32)


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], cells: int = 4) -> np.ndarray:
    """A smooth random field of ``shape`` with unit-ish amplitude: coarse Gaussian noise, upsampled linearly."""
    coarse = rng.standard_normal((cells + 3,) * len(shape)).astype(np.float32)
    zoom = [(s + 2 * max(1, s // cells)) / (cells + 3) for s in shape]
    big = ndimage.zoom(coarse, zoom, order=1, mode="nearest")  # linear: cubic costs 20x for no visible gain
    # drop a margin so the field does not show the zoom's boundary handling
    return big[tuple(slice(max(1, s // cells), max(1, s // cells) + s) for s in shape)]


def _grid(shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    return np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij", sparse=True)


def _blob(rng: np.random.Generator, shape, centre, radii, wobble: float) -> np.ndarray:
    """Ellipsoidal 'radius' field: < 1 inside a randomly rotated, lumpy ellipsoid."""
    axes = np.linalg.qr(rng.standard_normal((3, 3)))[0]  # random rotation
    pos = np.stack(np.broadcast_arrays(*[g - c for g, c in zip(_grid(shape), centre, strict=True)]), -1)
    local = pos @ axes
    r = np.sqrt(((local / np.asarray(radii, np.float32)) ** 2).sum(-1))
    return r * (1.0 + wobble * smooth_field(rng, shape, cells=3))


def brats_phantom(rng: np.random.Generator, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """One case: image (4, S, S, S) float32 (t1, t1ce, t2, flair) and label (S, S, S) uint8 in {0, 1, 2, 4}."""
    shape = (size,) * 3
    c = (size - 1) / 2
    brain_r = _blob(rng, shape, (c, c, c), size * rng.uniform(0.36, 0.42, 3), wobble=0.04)
    brain = brain_r < 1.0
    grey = smooth_field(rng, shape, cells=6) > 0.3  # grey-matter islands in white matter

    # the tumour: a centre well inside the brain, a core of random size, edema reaching further out
    core_radii = size * rng.uniform(0.10, 0.16, 3)
    offset = rng.uniform(-1, 1, 3) * (size * 0.38 - core_radii.max() * 1.8) * 0.6
    centre = c + offset
    tr = _blob(rng, shape, centre, core_radii, wobble=0.12)
    edema_extent = rng.uniform(1.5, 2.1)
    er = _blob(rng, shape, centre, core_radii * edema_extent, wobble=0.2)
    necrosis_frac = rng.uniform(0.55, 0.75)

    label = np.zeros(shape, np.uint8)
    label[(er < 1.0) & brain] = 2
    label[(tr < 1.0) & brain] = 4
    label[(tr < necrosis_frac) & brain] = 1

    tissue = np.where(grey, 1, 0).astype(np.int64)  # column of _CONTRAST
    tissue[label == 2] = 2
    tissue[label == 4] = 3
    tissue[label == 1] = 4
    scale = rng.uniform(0.9, 1.1, (4, 1, 1, 1)).astype(np.float32)  # per-scan gain
    image = _CONTRAST[:, tissue] * scale
    image = ndimage.gaussian_filter(image, sigma=(0, 0.7, 0.7, 0.7))  # partial volume at the boundaries
    bias = 1.0 + 0.1 * smooth_field(rng, shape, cells=2)  # smooth coil bias field
    image = image * bias + rng.normal(0, 0.06, image.shape).astype(np.float32)
    image *= brain  # skull-stripped: zero outside the brain, as in BraTS
    return image.astype(np.float32), label


def ricker(peak_hz: float, dt: float = 0.002, half_len: int = 25) -> np.ndarray:
    """The Ricker (Mexican hat) wavelet with peak frequency ``peak_hz`` sampled every ``dt`` seconds."""
    t = np.arange(-half_len, half_len + 1) * dt
    a = (np.pi * peak_hz * t) ** 2
    return ((1 - 2 * a) * np.exp(-a)).astype(np.float32)


def seismic_faults(rng: np.random.Generator, size: int = 64, n_faults: tuple[int, int] = (2, 5)
                   ) -> tuple[np.ndarray, np.ndarray]:
    """One cube: amplitude (1, S, S, S) float32 and fault label (S, S, S) uint8 in {0, 1}; axes (x, y, time)."""
    shape = (size,) * 3
    x, y, z = _grid(shape)
    # relative geologic time: depth, folded by Gaussian bumps that grow with depth, then planar shear
    depth = np.broadcast_to(z, shape).astype(np.float32).copy()
    for _ in range(rng.integers(3, 7)):
        cx, cy = rng.uniform(0, size, 2)
        sigma = rng.uniform(0.1, 0.3) * size
        amp = rng.uniform(-1, 1) * size * 0.12
        depth += amp * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2)) * (1.5 * z / size)
    depth += rng.uniform(-0.15, 0.15) * x + rng.uniform(-0.15, 0.15) * y + rng.uniform(-3, 3)

    label = np.zeros(shape, np.uint8)
    for _ in range(rng.integers(n_faults[0], n_faults[1] + 1)):
        strike = rng.uniform(0, np.pi)
        dip = np.deg2rad(rng.uniform(55, 80))
        normal = np.array([np.sin(dip) * np.cos(strike), np.sin(dip) * np.sin(strike), np.cos(dip)], np.float32)
        p0 = rng.uniform(0.25, 0.75, 3) * size
        dist = normal[0] * (x - p0[0]) + normal[1] * (y - p0[1]) + normal[2] * (z - p0[2])
        throw = rng.uniform(3, 8) * rng.choice([-1, 1])
        # the hanging wall slides: its layers appear shifted in time by the throw
        depth = np.where(dist > 0, depth - throw, depth)
        label[np.abs(dist) < 0.85] = 1

    # layered reflectivity: a random series indexed by geologic time, sampled where each voxel sits
    n_layers = 4 * size
    series = rng.uniform(-1, 1, n_layers).astype(np.float32) * (rng.random(n_layers) < 0.6)
    coords = np.clip(depth + size, 0, n_layers - 1)
    reflect = np.interp(coords.ravel(), np.arange(n_layers), series).reshape(shape).astype(np.float32)
    wavelet = ricker(rng.uniform(25, 45))
    seis = ndimage.convolve1d(reflect, wavelet, axis=2, mode="reflect")
    seis = seis / (seis.std() + 1e-6)
    seis += rng.normal(0, rng.uniform(0.05, 0.3), shape).astype(np.float32)
    seis = (seis - seis.mean()) / (seis.std() + 1e-6)
    return seis[None].astype(np.float32), label


def shapes2d(rng: np.random.Generator, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """One 2D image (1, S, S) float32 and label (S, S) uint8: 0 background, 1 disc, 2 rectangle."""
    shape = (size, size)
    yy, xx = _grid(shape)
    label = np.zeros(shape, np.uint8)
    for _ in range(rng.integers(2, 6)):
        cy, cx = rng.uniform(0.1, 0.9, 2) * size
        r = rng.uniform(0.05, 0.14) * size
        if rng.random() < 0.5:
            label[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = 1
        else:
            h, w = r * rng.uniform(0.6, 1.4, 2)
            label[(np.abs(yy - cy) < h) & (np.abs(xx - cx) < w)] = 2
    means = np.array([0.0, 1.0, 1.6], np.float32)
    image = means[label] + 0.3 * smooth_field(rng, shape, cells=8)
    image = ndimage.gaussian_filter(image, 0.8) + rng.normal(0, 0.2, shape).astype(np.float32)
    return image[None].astype(np.float32), label


def cifar_like(rng: np.random.Generator, n: int, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (n, 32, 32, 3) uint8, as in the CIFAR batches, and their labels (n,) int64."""
    labels = rng.integers(0, num_classes, n)
    yy, xx = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    angle = labels[:, None, None] * np.pi / num_classes
    stripes = np.sin((np.cos(angle) * xx + np.sin(angle) * yy) * 0.6 + rng.uniform(0, 6.3, (n, 1, 1)))
    hue = np.stack([np.cos(angle + k * 2.1) for k in range(3)], -1) * 0.5 + 0.5  # (n, 1, 1, 3)
    img = 127 + 100 * stripes[..., None] * hue + rng.normal(0, 20, (n, 32, 32, 3))
    return np.clip(img, 0, 255).astype(np.uint8), labels.astype(np.int64)
