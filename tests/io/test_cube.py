"""Training cubes without geometry (FaultSeg3D .dat, .npy) read through leanseg.io."""

from pathlib import Path

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


def test_partial_files_of_killed_runs_are_removed(tmp_path):
    import os
    import subprocess
    import sys

    from leanseg.io import atomic_path

    # a writer that is killed mid-write (SIGKILL: no cleanup can run) leaves its temporary file behind
    code = ("import os, sys, time\nfrom leanseg.io import atomic_path\n"
            "with atomic_path(sys.argv[1]) as tmp:\n    tmp.write_bytes(b'half')\n    print(tmp, flush=True)\n"
            "    os.kill(os.getpid(), 9)\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out.nii.gz")], capture_output=True, text=True)
    left = Path(done.stdout.strip())
    assert done.returncode == -9 and left.exists()
    mine = tmp_path / f".out.partial-{os.getpid()}-0000.nii.gz"  # a live writer's file is left alone
    mine.write_bytes(b"")
    with atomic_path(tmp_path / "out.nii.gz") as tmp:
        tmp.write_bytes(b"whole")
    assert not left.exists() and mine.exists()
    assert (tmp_path / "out.nii.gz").read_bytes() == b"whole"
