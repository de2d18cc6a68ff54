import os
from pathlib import Path

import numpy as np
import pytest
import skimage.io

from leanseg.io import read_image, read_volume, write_volume

DATA = (
    Path(os.environ.get("LEANSEG_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
    / "images2d/isbi2012_em_membrane"
)


@pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} (shared test data) is absent")
def test_png_round_trip(tmp_path):
    image, geometry = read_image(DATA / "image/0.png")
    assert image.shape == (1, 512, 512) and geometry.shape == (512, 512)
    label, _ = read_volume(DATA / "label/0.png")
    write_volume(tmp_path / "l.png", (label[0] > 0).astype(np.int64), geometry)
    np.testing.assert_array_equal(skimage.io.imread(tmp_path / "l.png"), label[0] > 0)


def test_rgb_is_channel_first(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (7, 9, 3), dtype=np.uint8)
    skimage.io.imsave(tmp_path / "rgb.png", rgb, check_contrast=False)
    image, _ = read_image(tmp_path / "rgb.png")
    np.testing.assert_array_equal(image, np.moveaxis(rgb, -1, 0))
