"""Seeded synthetic data for every task, generated on the fly (nothing is downloaded).

- ``brats_phantom``: four MRI-like modalities (t1, t1ce, t2, flair) of a brain-shaped head with a tumour made of a
  necrotic core, an enhancing rim and surrounding edema, in BraTS 2021 labels (1 NCR, 2 ED, 4 ET).
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
