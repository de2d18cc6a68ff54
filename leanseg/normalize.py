"""Per-channel z-score from robust statistics, the same in training and prediction.

MONAI's NormalizeIntensity takes the mean and standard deviation of every voxel, so one absurd value (a 1e20 voxel in
a scan, a 3e38 sample in a SEG-Y cube) sets the statistics of the whole volume and every label goes wrong. Here the
statistics come from the values clipped to the (0.05, 99.95) percentiles, and the volume is clipped to the same
range before it is scaled (nnU-Net clips CT intensities likewise). For ordinary data this moves one voxel in 2000 by
a small amount; for data with outliers it keeps the rest of the volume where the network expects it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CLIP_PERCENTILES = (0.05, 99.95)
_SAMPLE = 2_000_000  # percentiles from at most this many voxels per channel: 30 ms instead of a sort of the volume


@dataclass(frozen=True)
class ChannelStats:
    low: float
    high: float
    mean: float
    std: float


def channel_stats(values: np.ndarray, clip: Sequence[float] = CLIP_PERCENTILES) -> ChannelStats:
    """Clip range and mean/std of the clipped ``values`` (1D); std 1 for a constant channel, all 0 when empty."""
    if values.size == 0:
        return ChannelStats(0.0, 0.0, 0.0, 1.0)
    sample = values[:: max(1, values.size // _SAMPLE)].astype(np.float64)
    low, high = np.percentile(sample, clip)
    clipped = np.clip(sample, low, high)
    return ChannelStats(float(low), float(high), float(clipped.mean()), float(clipped.std()) or 1.0)


def _values(channel: np.ndarray, nonzero: bool) -> np.ndarray:
    return channel[channel != 0] if nonzero else channel.ravel()


def volume_stats(image: np.ndarray, nonzero: bool) -> list[ChannelStats]:
    """``channel_stats`` of each channel of ``image`` ``(C, ...)`` (over its non-zero voxels with ``nonzero``)."""
    return [channel_stats(_values(np.asarray(c), nonzero)) for c in image]


class ZScore:
    """``(C, ...)`` array -> float32 z-scored per channel (background kept at 0 with ``nonzero``).

    ``stats``: fixed statistics (from a sample of a streamed cube); by default each volume's own. ``keys``: work on
    those entries of a dict (MONAI's dictionary transforms), for training pipelines.
    """

    def __init__(self, nonzero: bool = False, stats: Sequence[ChannelStats] | None = None,
                 keys: str | Sequence[str] | None = None):
        self.nonzero = nonzero
        self.stats = list(stats) if stats is not None else None
        self.keys = [keys] if isinstance(keys, str) else list(keys) if keys is not None else None

    def normalize(self, image):
        import torch

        is_torch = isinstance(image, torch.Tensor)
        array = image.detach().cpu().numpy() if is_torch else np.asarray(image)
        stats = self.stats if self.stats is not None else volume_stats(array, self.nonzero)
        out = np.empty(array.shape, np.float32)
        for c, s in enumerate(stats):  # clip, shift and scale in place: one output buffer, no temporaries
            np.clip(array[c], s.low, s.high, out=out[c])
            out[c] -= s.mean
            out[c] /= s.std
            if self.nonzero:
                out[c][array[c] == 0] = 0
        return torch.from_numpy(out) if is_torch else out

    def __call__(self, data):
        if self.keys is None:
            return self.normalize(data)
        data = dict(data)
        for key in self.keys:
            data[key] = self.normalize(data[key])
        return data
