"""Training cubes without geometry (FaultSeg3D .dat, .npy) read through leanseg.io."""

import numpy as np
import pytest

from leanseg.errors import LeanSegError
from leanseg.io.cube import read_cube


def test_dat_and_npy_round_trip(tmp_path):
    cube = np.random.default_rng(0).normal(size=(5, 5, 5)).astype(np.float32)
    cube.astype("<f4").tofile(tmp_path / "a.dat")
    np.save(tmp_path / "a.npy", cube.astype(np.float64))
    np.testing.assert_array_equal(read_cube(tmp_path / "a.dat"), cube)
    got = read_cube(tmp_path / "a.npy")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, cube)


@pytest.mark.parametrize("case, message", [
    ("short.dat", "not a cube"),
    ("pickle.npy", "not a readable .npy"),
    ("flat.npy", "expected a 3D numeric array"),
    ("nan.npy", "NaN"),
    ("a.txt", "unknown cube format"),
])
def test_bad_cubes(tmp_path, case, message):
    path = tmp_path / case
    if case == "short.dat":
        path.write_bytes(b"\0" * 12)
    elif case == "pickle.npy":
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif case == "flat.npy":
        np.save(path, np.zeros((4, 4)))
    elif case == "nan.npy":
        np.save(path, np.full((2, 2, 2), np.nan))
    else:
        path.write_text("x")
    with pytest.raises(LeanSegError, match=message) as err:
        read_cube(path)
    assert str(path) in str(err.value)
