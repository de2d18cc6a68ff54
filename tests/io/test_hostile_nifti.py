"""Hostile and careless NIfTI files: one line naming the file, exit 2, bounded memory; a seeded fuzz over the header."""

import gzip
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from leanseg.errors import LeanSegError
from leanseg.io import read_nifti, read_volume

DATA = Path(os.environ.get("LEANSEG_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))


def _header_only(path: Path, shape, dtype=np.float32) -> Path:
    """A gzipped NIfTI whose header claims ``shape`` but which holds (almost) no data: tens of bytes on disk."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_qform(np.eye(4), 1)
    with gzip.open(path, "wb") as f:
        f.write(header.binaryblock + b"\0" * 4)
    return path


def _bomb(path: Path, shape=(1024, 1024, 280)) -> Path:
    """An honest header over a highly compressible payload: a few hundred kB that inflate to the claimed size."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.uint8)
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(header.binaryblock + b"\0" * 4)
        block = bytes(1 << 24)
        for _ in range(int(np.prod(shape)) >> 24):
            f.write(block)
    return path


def _peak_mb(args) -> tuple[int, str, float]:
    """Run the CLI in a fresh interpreter: exit code, stderr and its own peak resident memory in MB (VmHWM: ru_maxrss
    would include the peak of the pytest process it was forked from)."""
    code = ("import sys\nfrom leanseg.cli.main import main\ncode = main(sys.argv[1:])\n"
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
            "print(int(hwm) / 1024)\nsys.exit(code)")
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=300)
    return done.returncode, done.stderr.strip(), float(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("make", ["huge_header", "gzip_bomb"])
def test_size_is_checked_before_reading(tmp_path, make):
    path = _header_only(tmp_path / "h.nii.gz", (1200, 1200, 1100)) if make == "huge_header" else _bomb(
        tmp_path / "b.nii.gz")
    assert path.stat().st_size < 1_000_000
    code, err, peak = _peak_mb(["evaluate", path, path])
    assert code == 2 and err.count("\n") == 0 and err.startswith(f"leanseg: error: {path}") and "limit" in err
    assert peak < 500, peak  # the interpreter with torch and MONAI imported is ~300 MB; nothing was allocated


def test_other_channels_grids_are_checked_before_any_data(tmp_path):
    small = tmp_path / "a.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), small)
    big = _header_only(tmp_path / "b.nii.gz", (900, 900, 900))
    with pytest.raises(LeanSegError, match="differs from a.nii.gz"):
        read_nifti([small, big])


def _save(path: Path, data, affine=None, sform_zero=False) -> Path:
    # (a zero pixdim is repaired to 1 by nibabel's loader, with a logged message, so it is not a case here)
    img = nib.Nifti1Image(data, np.eye(4) if affine is None else affine)
    if sform_zero:
        img.set_sform(np.zeros((4, 4)), 1)
        img.set_qform(None, 0)
    nib.save(img, path)
    return path


@pytest.mark.parametrize("case, message", [
    ("zero_sform", "singular"),
    ("nan_affine", "NaN"),
    ("complex", "complex"),
    ("four_d_among_files", "a 4D file among several inputs"),
    ("two_d", "expected a 3D or 4D volume"),
])
def test_bad_headers(tmp_path, case, message):
    data = np.ones((5, 6, 7), np.float32)
    inputs = [tmp_path / "x.nii.gz"]
    if case == "zero_sform":
        _save(inputs[0], data, sform_zero=True)
    elif case == "nan_affine":
        affine = np.eye(4)
        affine[0, 3] = np.nan
        _save(inputs[0], data, affine=affine)
    elif case == "complex":
        _save(inputs[0], data.astype(np.complex64))
    elif case == "four_d_among_files":
        _save(inputs[0], np.ones((5, 6, 7, 2), np.float32))
        inputs += [_save(tmp_path / "b.nii.gz", data), _save(tmp_path / "c.nii.gz", data)]
    elif case == "two_d":
        _save(inputs[0], np.ones((5, 6), np.float32))
    with pytest.raises(LeanSegError, match=message) as err:
        read_volume(inputs)
    assert str(inputs[0]) in str(err.value) and "\n" not in str(err.value)


def test_fuzzed_headers_fail_with_one_line_or_read(tmp_path):
    """Seeded random corruptions of the header fields of a real file: LeanSegError or a good read, nothing else."""
    source = DATA / "nifti/monai_tiny/anatomical.nii"
    if not source.is_file():
        pytest.skip(f"{source} (shared test data) is absent")
    raw = bytearray(source.read_bytes())
    rng = np.random.default_rng(2026)
    fields = [(40, 56), (70, 74), (76, 108), (108, 112), (252, 256), (256, 280), (280, 344)]  # dims, dtype, pixdim,
    outcomes = {"read": 0, "refused": 0}  # vox_offset, q/sform codes, quaternion, srow
    for i in range(150):
        data = bytearray(raw)
        for _ in range(int(rng.integers(1, 4))):
            lo, hi = fields[int(rng.integers(len(fields)))]
            at = int(rng.integers(lo, hi))
            data[at] = int(rng.integers(0, 256))
        path = tmp_path / f"f{i}.nii"
        path.write_bytes(bytes(data))
        try:
            array, _ = read_volume(path)
            assert np.isfinite(array).all()
            outcomes["read"] += 1
        except LeanSegError as err:
            assert "\n" not in str(err) and str(path) in str(err)
            outcomes["refused"] += 1
    assert outcomes["refused"] > 10, outcomes


def test_zero_voxel_size_is_repaired_by_nibabel_not_a_traceback(tmp_path):
    """A qform with a zero pixdim: nibabel's loader sets the size to 1 (logging it); leanseg reads the volume on
    that repaired grid rather than failing in the reorientation."""
    header = nib.Nifti1Header()
    data = np.ones((5, 6, 7), np.float32)
    header.set_data_shape(data.shape)
    header.set_data_dtype(data.dtype)
    header.set_qform(np.eye(4), 1)
    header["pixdim"][1:4] = (1.0, 0.0, 1.0)
    nib.save(nib.Nifti1Image(data, None, header=header), tmp_path / "z.nii.gz")
    array, geometry = read_volume(tmp_path / "z.nii.gz")
    assert array.shape == (1, 5, 6, 7) and geometry.spacing == (1.0, 1.0, 1.0)
