"""Seeded synthetic data for every task, generated on the fly (nothing is downloaded).

- ``brats_phantom``: four MRI-like modalities (t1, t1ce, t2, flair) of a brain-shaped head with a tumour made of a
  necrotic core, an enhancing rim and surrounding edema, in BraTS 2021 labels (1 NCR, 2 ED, 4 ET). Easy by default
  (the demo's); ``hard=True`` draws from ``BratsGeology``: grey/white matter, CSF, vessels and choroid plexus,
  multifocal lobulated lesions, intensities that overlap between tissues, bias fields, thick slices and per-case
  scanner contrast (0.4 s for a 64^3 case), which is what ``leanseg bench brats`` ranks networks on.
- ``fault_cube``: what the faults task trains on, FaultSeg3D's recipe (Wu et al. 2019) widened (``FaultGeology``):
  layers of random impedance, folds growing with depth, planar shear, 0-6 normal or reverse faults of random strike
  and 60-85 degree dip, planar or listric, straight or curved in map view, with throws tapering to zero at their
  tips; a Ricker wavelet of random period, white or band-limited and trace-correlated noise up to 1.5 times the
  signal, a smooth amplitude gain; labels one voxel thick. A 128^3 cube takes about half a second.
- ``seismic_faults``: the first, narrower generator (planar faults of constant throw), kept for old scripts.
- ``shapes2d``: a noisy 2D image of discs (label 1) and rectangles (label 2) on a textured background.
- ``cifar_like``: 32x32 colour images whose class is an oriented, coloured stripe pattern (a smoke test only).

All take a ``numpy.random.Generator`` so a data set is a pure function of its seed. numpy and scipy only, vectorised:
a 64^3 phantom or fault cube takes a few tens of milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def brats_phantom(rng: np.random.Generator, size: int = 64, hard: bool = False,
                  geology: BratsGeology | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One case: image (4, S, S, S) float32 (t1, t1ce, t2, flair) and label (S, S, S) uint8 in {0, 1, 2, 4}.

    The default phantoms are easy (a uniform ball, a concentric tumour, well-separated intensities: every network
    scores 0.97-0.99 Dice): for the demo. ``hard=True`` (or a ``geology``) draws a case that separates networks:
    grey/white matter, CSF, vessels; multifocal, lobulated lesions; overlapping intensities; bias fields, thick
    slices and scanner contrast (see ``BratsGeology``)."""
    if hard or geology is not None:
        return _hard_brats_phantom(rng, size, geology or BratsGeology())
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


# Mean intensity of each tissue of the hard phantoms, rows BRATS_MODALITIES, relative to white matter on t1/t1ce.
# Chosen so that every region has a look-alike somewhere in the brain, as in real scans: edema against grey matter
# on flair (its own contrast is drawn per case, BratsGeology.edema_flair), the enhancing rim against vessels and
# choroid plexus on t1ce, necrosis against CSF on t1ce and t2, the non-enhancing core against edema on t2/flair.
# Vessels are flow voids (dark) on t2/flair, as in real scans: context, not one contrast, tells them from tumour.
_HARD_TISSUES = ("wm", "gm", "csf", "vessel", "edema", "enhancing", "necrosis", "nonenhancing")
_HARD_CONTRAST = np.array([
    # wm    gm    csf  vessel edema  enh  necr  non-enh
    [1.00, 0.78, 0.30, 0.90, 0.70, 0.80, 0.35, 0.64],  # t1
    [1.00, 0.80, 0.30, 1.55, 0.72, 1.55, 0.35, 0.70],  # t1ce (vessel and enhancing set per case together)
    [0.60, 0.85, 1.80, 0.35, 1.25, 1.00, 1.60, 1.30],  # t2
    [0.70, 0.88, 0.25, 0.50, 1.05, 1.05, 0.80, 1.10],  # flair (edema set per case from grey matter's)
], dtype=np.float32)
_WM, _GM, _CSF, _VESSEL, _EDEMA, _ENH, _NECR, _NONENH = range(len(_HARD_TISSUES))


@dataclass(frozen=True)
class BratsGeology:
    """Ranges that the hard BraTS phantoms (``brats_phantom(..., hard=True)``) are drawn from; every (low, high) is
    drawn uniformly per case. Lengths are fractions of the volume's edge unless marked; contrasts are ratios."""

    foci: tuple[float, ...] = (0.6, 0.25, 0.15)  # probability of 1, 2, 3 lesions: multifocal gliomas are common
    core_radius: tuple[float, float] = (0.07, 0.15)  # of the edge: 3-7 voxels at 48^3, from a nodule to a bulk
    lobes: tuple[int, int] = (1, 4)  # blobs united into one lobulated core
    wobble: tuple[float, float] = (0.15, 0.4)  # noise displacement of the lesion surfaces, relative to their radius
    necrosis: tuple[float, float] = (0.0, 0.75)  # radius of the necrotic core relative to the tumour core's
    no_necrosis: float = 0.25  # probability of a solid core (no necrosis at all)
    enhancing_patchy: tuple[float, float] = (0.0, 0.6)  # share of the rim that does not enhance (non-enhancing core)
    no_enhancement: float = 0.15  # probability that a case has no ET at all (low grade): the Dice of ET is 0 or 1
    edema_extent: tuple[float, float] = (1.1, 1.9)  # edema radius relative to the core's
    # edema's flair relative to grey matter's: below ~1.15 only t2 (where CSF is brighter) separates them
    edema_flair: tuple[float, float] = (1.05, 1.4)
    enhancement: tuple[float, float] = (1.25, 1.8)  # ET (and vessels, choroid plexus) on t1ce relative to WM
    tumour_contrast: float = 0.15  # +- jitter of every tumour tissue's mean, per case and modality
    vessels: tuple[float, float] = (0.06, 0.1)  # half-width of the level sets whose crossings are the vessels
    texture: tuple[float, float] = (0.03, 0.08)  # std of the fine multiplicative texture inside tissues
    bias: tuple[float, float] = (0.1, 0.3)  # std of the log bias field per modality: up to ~2x across the brain
    gain: tuple[float, float] = (0.6, 1.6)  # scanner gain per modality
    gamma: tuple[float, float] = (0.75, 1.35)  # scanner's non-linear contrast per modality (z-score cannot undo it)
    noise: tuple[float, float] = (0.02, 0.07)  # Rician noise std relative to white matter's t1
    slices_thin: tuple[int, int] = (1, 2)  # slice thickness in voxels of t1/t1ce (3D acquisitions)
    slices_thick: tuple[int, int] = (2, 5)  # of t2/flair (2D acquisitions), along the same random axis


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], cells: int) -> np.ndarray:
    """A smooth random field of unit std with about ``cells`` bumps per axis: Gaussian noise on a coarse grid,
    spread to every voxel by Gaussian weights one axis at a time (a few small matrix products: ``smooth_field``'s
    scipy zoom costs 0.1 s per 64^3 field, and a hard phantom draws twenty)."""
    field = rng.standard_normal((cells + 3,) * len(shape)).astype(np.float32)
    for axis, n in enumerate(shape):
        step = n / cells
        nodes = (np.arange(cells + 3) - 1.5) * step  # one node beyond each end: no edge effects
        x = np.arange(n) + 0.5
        weights = np.exp(-0.5 * ((x[:, None] - nodes[None]) / (0.7 * step)) ** 2).astype(np.float32)
        field = np.moveaxis(np.tensordot(weights, field, axes=([1], [axis])), 0, axis)
    return field / (field.std() + 1e-6)


def _rotated_radius(rng: np.random.Generator, grid, centre, radii) -> np.ndarray:
    """Ellipsoidal radius field (< 1 inside) of a randomly rotated ellipsoid, on sparse ``grid`` coordinates."""
    axes = np.linalg.qr(rng.standard_normal((3, 3)))[0].astype(np.float32)
    d = [g - np.float32(c) for g, c in zip(grid, centre, strict=True)]
    inv = 1 / np.asarray(radii, np.float32)
    return np.sqrt(sum(((d[0] * axes[0, k] + d[1] * axes[1, k] + d[2] * axes[2, k]) * inv[k]) ** 2
                       for k in range(3)))


def _thick_slices(volume: np.ndarray, axis: int, k: int, acquire=None) -> np.ndarray:
    """``volume`` as a scan of ``k``-voxel-thick slices along ``axis``, resampled back to the grid: each slice is
    the mean of its k planes (the slice profile), ``acquire`` (if given) maps the slices (k = 1 too: noise is added
    there, so that the resampling smooths it along the axis as a scanner's would), and the planes between slice
    centres are linearly interpolated."""
    n = volume.shape[axis]
    m = -(-n // k)
    v = np.moveaxis(volume, axis, 0)
    padded = np.concatenate([v, np.repeat(v[-1:], m * k - n, 0)]) if m * k > n else v
    slabs = padded.reshape(m, k, *v.shape[1:]).mean(1)  # (m, ...) slice means
    if acquire is not None:
        slabs = acquire(slabs)
    if k == 1:
        return np.moveaxis(slabs, 0, axis)
    pos = np.clip((np.arange(n) + 0.5) / k - 0.5, 0, m - 1)  # each plane's place among slice centres
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, m - 1)
    w = (pos - lo).astype(np.float32).reshape(-1, *([1] * (v.ndim - 1)))
    return np.moveaxis(slabs[lo] * (1 - w) + slabs[hi] * w, 0, axis)


def _hard_brats_phantom(rng: np.random.Generator, size: int, geo: BratsGeology) -> tuple[np.ndarray, np.ndarray]:
    """The hard case behind ``brats_phantom(..., hard=True)``: an anatomy, then its scan."""
    tissue, label, brain = _hard_brats_anatomy(rng, size, geo)
    return _hard_brats_scan(rng, tissue, brain, geo), label


def _hard_brats_anatomy(rng: np.random.Generator, size: int, geo: BratsGeology
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tissue map (S, S, S) int64 (indices of _HARD_TISSUES), label (S, S, S) uint8 in {0, 1, 2, 4} and brain mask."""
    shape = (size,) * 3
    grid = _grid(shape)
    c = (size - 1) / 2
    s = float(size)

    # --- anatomy: a lumpy brain, cortex folded by noise, CSF in sulci and two ventricles, deep grey nuclei
    brain_r = _rotated_radius(rng, grid, (c, c, c), s * rng.uniform(0.36, 0.43, 3)) * (
        1 + 0.04 * _smooth_noise(rng, shape, cells=3))
    brain = brain_r < 1.0
    # gyri: grey matter reaches into the white matter where the fold field is high; sulci are CSF clefts along the
    # zero set of a second field, inside the cortex
    cortex_depth = 0.24 + 0.1 * _smooth_noise(rng, shape, cells=8)
    tissue = np.full(shape, _WM, np.int64)
    tissue[brain_r > 1 - cortex_depth] = _GM
    sulci = (brain_r > 0.96) | ((brain_r > 1 - 0.9 * cortex_depth) & (np.abs(_smooth_noise(rng, shape, 8)) < 0.15))
    tissue[sulci] = _CSF
    side = rng.uniform(0.05, 0.08) * s  # ventricles and nuclei sit either side of the midline (axis 0)
    for sign in (-1, 1):
        nucleus = _rotated_radius(rng, grid, (c + sign * 1.9 * side, c + rng.uniform(-0.03, 0.03) * s, c),
                                  s * rng.uniform(0.06, 0.09, 3))
        tissue[nucleus < 1] = _GM
        ventricle = _rotated_radius(rng, grid, (c + sign * side, c, c + 0.03 * s),
                                    s * np.array([rng.uniform(0.025, 0.05), rng.uniform(0.12, 0.18),
                                                  rng.uniform(0.04, 0.07)]))
        tissue[ventricle < 1] = _CSF
        tissue[(ventricle < 0.7) & (_smooth_noise(rng, shape, cells=5) > 0.6)] = _VESSEL  # choroid plexus
    # vessels: curves where two smooth fields both cross zero, thin tubes bright on t1ce
    half_width = rng.uniform(*geo.vessels)
    tubes = (np.abs(_smooth_noise(rng, shape, cells=4)) < half_width) & (
        np.abs(_smooth_noise(rng, shape, cells=4)) < half_width)
    tissue[tubes & brain] = _VESSEL

    # --- lesions: lobulated, noise-displaced cores with necrosis and a patchy rim, edema spreading in white matter
    label = np.zeros(shape, np.uint8)
    n_foci = 1 + int(rng.choice(len(geo.foci), p=np.asarray(geo.foci) / sum(geo.foci)))
    enhances = rng.random() >= geo.no_enhancement
    for focus in range(n_foci):
        radius = s * rng.uniform(*geo.core_radius) * (1.0 if focus == 0 else rng.uniform(0.5, 0.9))
        centre = c + rng.uniform(-1, 1, 3) * s * 0.2  # deep in the hemispheres, where gliomas grow
        core_r = np.full(shape, np.inf, np.float32)
        for _ in range(rng.integers(geo.lobes[0], geo.lobes[1] + 1)):
            lobe_c = centre + rng.uniform(-0.7, 0.7, 3) * radius
            core_r = np.minimum(core_r, _rotated_radius(rng, grid, lobe_c, radius * rng.uniform(0.6, 1.2, 3)))
        # displaced by noise: a log-normal factor keeps the radius positive, so no speck appears far away
        core_r *= np.exp(rng.uniform(*geo.wobble) * _smooth_noise(rng, shape, cells=5))
        edema_r = _rotated_radius(rng, grid, centre, radius * rng.uniform(*geo.edema_extent) * rng.uniform(0.8, 1.2, 3))
        edema_r *= np.exp(1.5 * rng.uniform(*geo.wobble) * _smooth_noise(rng, shape, cells=4))
        # edema follows white matter: it reaches into cortex only close to the core
        edema = ((edema_r < 1) | (core_r < 1.3)) & ((tissue != _GM) | (edema_r < 0.6)) & (tissue != _CSF)
        label[edema & (label == 0)] = 2
        core = core_r < 1
        necrosis = core_r < (0 if rng.random() < geo.no_necrosis else rng.uniform(*geo.necrosis))
        label[core] = 1
        if enhances:  # the rim around the necrosis, minus non-enhancing patches
            patches = _smooth_noise(rng, shape, cells=4)
            patchy = patches < np.quantile(patches[core], rng.uniform(*geo.enhancing_patchy)) if core.any() else core
            label[core & ~necrosis & ~patchy] = 4
        tissue[necrosis] = _NECR
        tissue[core & ~necrosis] = _NONENH
    label[~brain] = 0
    tissue[label == 2] = _EDEMA
    tissue[label == 4] = _ENH
    return tissue, label, brain


def _hard_brats_scan(rng: np.random.Generator, tissue: np.ndarray, brain: np.ndarray, geo: BratsGeology
                     ) -> np.ndarray:
    """The four modalities (4, S, S, S) float32 of a tissue map, zero outside ``brain``."""
    shape = tissue.shape
    size = shape[0]
    # --- per-case contrast: tumour tissues jittered, edema's flair from grey matter's, ET and vessels together
    contrast = _HARD_CONTRAST.copy()
    contrast[:, _EDEMA:] *= rng.uniform(1 - geo.tumour_contrast, 1 + geo.tumour_contrast, (4, 4))
    contrast[3, _EDEMA] = contrast[3, _GM] * rng.uniform(*geo.edema_flair)
    # vessels a little brighter than ET before partial volume: thin tubes lose more of their peak to it
    contrast[1, [_VESSEL, _ENH]] = rng.uniform(*geo.enhancement) * rng.uniform((1.0, 0.92), (1.4, 1.08))
    texture = 1 + rng.uniform(*geo.texture) * _smooth_noise(rng, shape, cells=max(4, size // 4))
    image = contrast[:, tissue] * texture  # (4, S, S, S)
    image = ndimage.gaussian_filter(image, sigma=(0, 0.6, 0.6, 0.6))  # partial volume at the boundaries

    # --- acquisition: thick slices, a strong bias field, Rician noise, then the scanner's gain and gamma
    axis = int(rng.integers(0, 3))
    shared = _smooth_noise(rng, shape, cells=2)  # the coil's part of the bias, common to all modalities
    noise = rng.uniform(*geo.noise)
    for m in range(4):
        k = int(rng.integers(*(geo.slices_thick if m >= 2 else geo.slices_thin), endpoint=True))
        bias = np.exp(rng.uniform(*geo.bias) * (0.6 * shared + 0.8 * _smooth_noise(rng, shape, cells=2)))

        def rician(slabs: np.ndarray) -> np.ndarray:  # magnitude images: Rician noise, never negative
            real = slabs + rng.normal(0, noise, slabs.shape).astype(np.float32)
            imag = rng.normal(0, noise, slabs.shape).astype(np.float32)
            return np.sqrt(real * real + imag * imag)

        vol = _thick_slices(image[m] * bias, axis, k, rician)
        image[m] = rng.uniform(*geo.gain) * vol ** rng.uniform(*geo.gamma)
    image *= brain  # skull-stripped: zero outside the brain, as in BraTS
    return image


def two_part_phantom(rng: np.random.Generator, size: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """A hippocampus-like case: a curved, tapering tube (label 1 its anterior head, 2 its posterior tail) in a
    textured grey background with a brighter neighbouring structure that is not labelled. Position, bend, length,
    thickness and contrast are random. Returns ``((1, X, Y, Z) float32, (X, Y, Z) uint8)`` on a grid of about
    ``size`` x 1.25 ``size`` x ``size`` voxels (MSD hippocampus crops are longer along y)."""
    shape = (size, int(round(size * 1.25)), size)
    x, y, z = _grid(shape)
    length = rng.uniform(0.55, 0.75) * shape[1]
    y0 = (shape[1] - length) / 2 + rng.uniform(-0.1, 0.1) * shape[1]
    t = np.clip((y - y0) / length, 0.0, 1.0)  # position along the tube, 0 head .. 1 tail
    bend = rng.uniform(-0.25, 0.25, size=2) * size
    cx = size / 2 + rng.uniform(-0.1, 0.1) * size + bend[0] * (t - 0.5) ** 2 * 4
    cz = size / 2 + rng.uniform(-0.1, 0.1) * size + bend[1] * np.sin(np.pi * t)
    radius = (rng.uniform(0.12, 0.18) * (1.0 - 0.5 * t) + 0.03) * size  # thick head, thin tail
    inside = ((x - cx) ** 2 + (z - cz) ** 2 <= radius**2) & (y >= y0) & (y <= y0 + length)
    split = rng.uniform(0.35, 0.55)
    label = np.zeros(shape, np.uint8)
    label[inside & (t < split)] = 1
    label[inside & (t >= split)] = 2
    # background texture, a brighter unlabelled neighbour (the ventricle's wall), the tube slightly darker than it
    image = 0.4 + 0.15 * smooth_field(rng, shape, cells=5)
    neighbour = ((x - cx - 1.6 * radius) ** 2 + (z - cz) ** 2 <= (0.6 * radius) ** 2) & (t > 0.1) & (t < 0.9)
    image[neighbour] = rng.uniform(0.8, 1.0)
    image[label > 0] = rng.uniform(0.6, 0.75) + 0.05 * smooth_field(rng, shape)[label > 0]
    image = ndimage.gaussian_filter(image, rng.uniform(0.6, 1.2))
    image = image * rng.uniform(50, 300) + rng.normal(0, rng.uniform(3, 12), shape)
    return image[None].astype(np.float32), label


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


@dataclass(frozen=True)
class FaultGeology:
    """Ranges that ``fault_cube`` draws its geology from (FaultSeg3D's recipe, Wu et al. 2019, widened). Lengths are
    in voxels of the cube (x, y, time); every range is (low, high) and drawn uniformly."""

    layer_thickness: tuple[float, float] = (1.0, 8.0)  # samples: thin beds to a wavelength, as in real logs
    impedance_step: float = 0.25  # std of the log-impedance jump between layers: reflection coefficients ~0.1
    fold_bumps: tuple[int, int] = (2, 8)  # Gaussian folds; their amplitude grows linearly with depth (Wu's model)
    fold_amplitude: tuple[float, float] = (0.0, 0.15)  # of the cube's side at its bottom
    fold_width: tuple[float, float] = (0.1, 0.4)  # Gaussian sigma, of the side
    shear: tuple[float, float] = (-0.2, 0.2)  # planar dip of the layers (time samples per trace), each axis
    n_faults: tuple[int, int] = (1, 6)  # per cube, when it is faulted at all
    unfaulted: float = 0.1  # probability of a cube with no fault: layers, folds and noise alone are not faults
    dip: tuple[float, float] = (60.0, 85.0)  # degrees from horizontal: the normal and reverse faults seen in seismic
    throw: tuple[float, float] = (2.0, 12.0)  # peak displacement along dip, voxels: 2 is barely visible
    reverse: float = 0.3  # probability that a fault is reverse (hanging wall up) rather than normal
    listric: float = 0.4  # probability that the surface flattens with depth instead of being planar
    curved: float = 0.4  # probability that the trace of the fault curves in map view (its strike turns)
    extent: tuple[float, float] = (0.5, 1.5)  # half-lengths of the elliptic displacement patch, of the side
    label_throw: float = 1.0  # voxels: where the local throw is smaller the fault is invisible, so not labelled
    period: tuple[float, float] = (5.0, 14.0)  # Ricker peak period in samples (18-50 Hz at 4 ms; F3 peaks ~23 Hz)
    # noise std relative to the signal's, drawn as low + (high - low) * u**2: most cubes are clean enough to show
    # their faults, a third are noisier than 0.55 and some as noisy as real shallow data (F3's neighbouring traces
    # correlate at ~0.5, which a coherent signal reaches at noise ~1)
    noise: tuple[float, float] = (0.0, 1.5)
    coloured_noise: float = 0.6  # probability that the noise is band-limited in time and correlated across traces
    gain: tuple[float, float] = (0.0, 0.5)  # std of the log of a smooth amplitude gain (processing, overburden)
    mute: float = 0.15  # probability of a top mute (zeroed shallow samples, as at the top of the F3 crop)
    mute_depth: tuple[float, float] = (0.05, 0.3)  # of the side; faults there are invisible, so not labelled


def _fault_surface(rng: np.random.Generator, geo: FaultGeology, size: int):
    """One fault's geometry as closures over coordinates: its level function g (zero on the surface, positive on
    the hanging wall), the largest component of g's gradient, the down-dip unit vector, and the local throw
    (tapering to zero at the edge of an elliptic patch). Scalars are Python floats so float32 arrays stay float32."""
    strike = float(rng.uniform(0, np.pi))
    hx, hy = -np.sin(strike), np.cos(strike)  # horizontal normal: the direction the fault dips towards
    sx, sy = np.cos(strike), np.sin(strike)  # along strike
    x0, y0, z0 = (float(v) for v in rng.uniform(0.15, 0.85, 3) * size)
    # map-view curvature: the surface's horizontal offset grows as (along-strike distance)^2, up to ~a tenth of
    # the side at the cube's edge (strongly curved surfaces would need a thicker label where they turn)
    curve = float(rng.uniform(-0.4, 0.4)) / size if rng.random() < geo.curved else 0.0
    slope = float(1 / np.tan(np.deg2rad(rng.uniform(*geo.dip))))  # horizontal run per unit of depth at z0
    # listric: the surface flattens with depth (run grows by up to 2 per side), planar otherwise
    bend = float(rng.uniform(0.2, 1.0)) / size if rng.random() < geo.listric else 0.0
    throw = float(rng.uniform(*geo.throw)) * (-1 if rng.random() < geo.reverse else 1)
    half_u, half_w = (float(v) for v in rng.uniform(*geo.extent, 2) * size)

    def level(x, y, z):
        w = z - z0
        g = hx * x + hy * y - slope * w
        if bend:
            g -= bend * w * np.abs(w)
        if curve:
            g -= curve * (sx * (x - x0) + sy * (y - y0)) ** 2
        return g - (hx * x0 + hy * y0)

    def run(z):  # d(horizontal position of the surface)/d(depth)
        return slope + 2 * bend * np.abs(z - z0)

    def gradient_max(z):  # |g| below half of this is one voxel thick along the axis of the largest component
        return np.maximum(max(abs(hx), abs(hy)), run(z))

    def down_dip(z):  # unit vector along the surface, straight down its dip
        r = run(z)
        norm = np.sqrt(1 + r**2)
        return hx * r / norm, hy * r / norm, 1 / norm

    def local_throw(x, y, z):  # sparse (S, S, 1) and (1, 1, S) coordinates: the throw is smooth
        taper = np.maximum(1 - ((sx * (x - x0) + sy * (y - y0)) / half_u) ** 2 - ((z - z0) / half_w) ** 2, 0)
        return throw * taper * taper * (3 - 2 * taper)  # zero with zero slope at the tips, flat near the centre

    return level, gradient_max, down_dip, local_throw


def fault_cube(rng: np.random.Generator, size: int = 128, geology: FaultGeology | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """One FaultSeg3D-style cube from a wide geology: amplitude (1, S, S, S) float32, z-scored as ``leanseg predict``
    normalises, and fault label (S, S, S) uint8, 1 voxel thick. Axes (x, y, time).

    Built backwards, as an image is sampled: every observed voxel is traced back through the faults (youngest
    first, so an older fault is itself offset by the younger ones) to its place before faulting, where the folded
    and sheared layering gives its relative geologic time; a random impedance log indexed by that time gives the
    reflectivity, which a Ricker wavelet turns into the seismic trace."""
    geo = geology or FaultGeology()
    shape = (size,) * 3
    ox, oy, oz = _grid(shape)  # observed coordinates, sparse
    x, y, z = ox, oy, oz  # where each voxel was before faulting: full arrays once a fault moves them
    label = np.zeros(shape, bool)
    faults = int(rng.integers(geo.n_faults[0], geo.n_faults[1] + 1))
    for _ in range(0 if rng.random() < geo.unfaulted else faults):
        level, gradient_max, down_dip, local_throw = _fault_surface(rng, geo, size)
        g = level(x, y, z)
        # the throw, the dip direction and the gradient are smooth: taken at the observed place (sparse arrays,
        # a few full-cube passes per fault instead of a dozen), while g, whose sign is the fault, is traced
        t = local_throw(ox, oy, oz)
        label |= (np.abs(g) < 0.5 * gradient_max(oz)) & (np.abs(t) >= geo.label_throw)
        # the hanging wall (g > 0) moved down-dip by t (up for reverse faults): it came from up-dip
        moved = np.where(g > 0, t, np.float32(0))
        dx, dy, dz = down_dip(oz)
        x, y, z = x - moved * dx, y - moved * dy, z - moved * dz

    # relative geologic time before faulting: depth, folds growing with depth, planar shear; the folds are smooth
    # in map view, so one (S, S, 1) field taken at the observed trace does
    fold = np.zeros((size, size, 1), np.float32)
    for _ in range(rng.integers(geo.fold_bumps[0], geo.fold_bumps[1] + 1)):
        cx, cy = (float(v) for v in rng.uniform(-0.2, 1.2, 2) * size)
        inv = float(-0.5 / (rng.uniform(*geo.fold_width) * size) ** 2)
        amp = float(rng.uniform(*geo.fold_amplitude) * rng.choice([-1, 1]))  # of the side, at depth = side
        fold += amp * np.exp(inv * ((ox - cx) ** 2 + (oy - cy) ** 2))
    rgt = np.broadcast_to(z * (1 + fold) + float(rng.uniform(*geo.shear)) * x + float(rng.uniform(*geo.shear)) * y,
                          shape)

    # an impedance log of layers of random thickness, indexed by geologic time; reflectivity is half the vertical
    # derivative of log impedance in the observed cube (so faults juxtaposing layers reflect, as they do)
    lo, hi = -float(size), 2.0 * size  # fixed, not the field's range: the log is a function of the seed alone
    tops = lo + np.cumsum(rng.uniform(*geo.layer_thickness, int((hi - lo) / geo.layer_thickness[0]) + 2))
    log_imp = np.cumsum(rng.normal(0, geo.impedance_step, tops.size)).astype(np.float32)
    imp = log_imp[np.minimum(np.searchsorted(tops, rgt), tops.size - 1)]  # blocked log: sharp interfaces
    reflect = np.zeros(shape, np.float32)
    reflect[..., 1:] = 0.5 * np.diff(imp, axis=2)

    period = float(rng.uniform(*geo.period))
    wavelet = ricker(1 / period, dt=1.0, half_len=int(np.ceil(1.5 * period)))
    seis = ndimage.convolve1d(reflect, wavelet, axis=2, mode="reflect")
    seis /= seis.std() + 1e-6
    level = geo.noise[0] + (geo.noise[1] - geo.noise[0]) * float(rng.random()) ** 2
    seis += level * _seismic_noise(rng, shape, period, geo.coloured_noise)
    seis *= np.exp(float(rng.uniform(*geo.gain)) * smooth_field(rng, shape, cells=3))
    if rng.random() < geo.mute:
        top = int(rng.uniform(*geo.mute_depth) * size)
        seis[..., :top] = 0
        seis[..., top:top + 4] *= np.linspace(0.2, 0.8, 4, dtype=np.float32)[: size - top]  # a short taper
        label[..., :top] = False
    seis = (seis - seis.mean()) / (seis.std() + 1e-6)
    return seis[None].astype(np.float32), label.astype(np.uint8)


def _seismic_noise(rng: np.random.Generator, shape: tuple[int, ...], period: float, coloured: float) -> np.ndarray:
    """Unit-std noise (x, y, time): white, or (with probability ``coloured``) band-limited in time by a Ricker
    wavelet near the signal's period, so that it rings like reflections, and smoothed across traces, so that
    neighbouring traces share part of it as in migrated data: incoherent events that a fault detector must ignore."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    if rng.random() < coloured:
        p = period * float(rng.uniform(0.5, 1.5))
        noise = ndimage.convolve1d(noise, ricker(1 / p, dt=1.0, half_len=int(np.ceil(1.5 * p))), axis=2)
        lateral = float(rng.uniform(0.0, 1.5))
        if lateral > 0.3:
            noise = ndimage.gaussian_filter(noise, (lateral, lateral, 0.0))
    return noise / (noise.std() + 1e-6)


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
