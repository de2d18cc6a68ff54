"""Property-based fuzzing (Hypothesis) of the readers and the option parsers: whatever the bytes or the values, the
outcome is a good read or a LeanSegError with one line, never another exception. Bounded: a fixed number of
examples per property and no deadline (the 2-core CI machine is shared), derandomized so CI runs are repeatable;
the seeded fuzz tests in test_hostile_nifti.py and test_segy.py cover the real shared files."""

import json
import struct

import nibabel as nib
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed (pip install -e '.[dev]')")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from leanseg.errors import LeanSegError  # noqa: E402

pytestmark = pytest.mark.slow  # about a minute in all: CI runs it, the fast local loop does not
FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def one_line_or_ok(fn, *args, **kwargs):
    """Call ``fn``; a LeanSegError must be one line; anything else fails the property."""
    try:
        return fn(*args, **kwargs)
    except LeanSegError as err:
        assert "\n" not in str(err), str(err)
        return None


def _nifti_bytes() -> bytes:
    img = nib.Nifti1Image(np.arange(6 * 5 * 4, dtype=np.float32).reshape(6, 5, 4), np.diag([1.0, 2.0, 3.0, 1.0]))
    return img.to_bytes()


NIFTI = _nifti_bytes()
# byte ranges of the NIfTI-1 header that readers trust: dim, datatype/bitpix, pixdim, vox_offset, scl, codes,
# quaternion and srow
NIFTI_FIELDS = [(40, 56), (70, 74), (76, 112), (112, 120), (252, 256), (256, 348)]


@FUZZ
@given(edits=st.lists(st.tuples(st.sampled_from(NIFTI_FIELDS), st.integers(0, 10_000), st.integers(0, 255)),
                      min_size=1, max_size=6))
def test_nifti_headers(tmp_path_factory, edits):
    from leanseg.io import read_volume

    data = bytearray(NIFTI)
    for (lo, hi), at, value in edits:
        data[lo + at % (hi - lo)] = value
    path = tmp_path_factory.mktemp("nii") / "x.nii"
    path.write_bytes(bytes(data))
    result = one_line_or_ok(read_volume, [path])
    if result is not None:
        array, _ = result
        assert np.isfinite(array).all()


@FUZZ
@given(data=st.binary(min_size=0, max_size=400))
def test_nifti_any_bytes(tmp_path_factory, data):
    from leanseg.io import read_volume

    path = tmp_path_factory.mktemp("nii") / "x.nii"
    path.write_bytes(NIFTI[:348] + data if len(data) % 2 else data)
    one_line_or_ok(read_volume, [path])


def _segy_bytes() -> bytes:
    """A 3 x 4 cube of 8 IEEE-float samples, written by segyio."""
    import tempfile

    segyio = pytest.importorskip("segyio")
    spec = segyio.spec()
    spec.format, spec.samples, spec.ilines, spec.xlines = 5, list(range(8)), [1, 2, 3], [10, 11, 12, 13]
    with tempfile.TemporaryDirectory() as d:
        path = f"{d}/c.sgy"
        with segyio.create(path, spec) as f:
            for k, (i, x) in enumerate((i, x) for i in spec.ilines for x in spec.xlines):
                f.header[k] = {segyio.su.iline: i, segyio.su.xline: x}
                f.trace[k] = np.full(8, k, np.float32)
        return open(path, "rb").read()


SEGY_FIELDS = [(3212, 3214), (3216, 3218), (3220, 3222), (3224, 3226), (3500, 3506)]
for _t in range(12):
    _base = 3600 + _t * (240 + 8 * 4)
    SEGY_FIELDS += [(_base + 188, _base + 196), (_base + 114, _base + 118), (_base + 240, _base + 272)]


@FUZZ
@given(edits=st.lists(st.tuples(st.sampled_from(SEGY_FIELDS), st.integers(0, 10_000), st.integers(0, 255)),
                      min_size=1, max_size=6))
def test_segy_headers(tmp_path_factory, edits):
    from leanseg.io import read_segy

    data = bytearray(_segy_bytes())
    for (lo, hi), at, value in edits:
        data[lo + at % (hi - lo)] = value
    path = tmp_path_factory.mktemp("sgy") / "x.sgy"
    path.write_bytes(bytes(data))
    result = one_line_or_ok(read_segy, path)
    if result is not None:
        assert np.isfinite(result[0]).all()


@FUZZ
@given(data=st.binary(min_size=0, max_size=2000))
def test_images_any_bytes(tmp_path_factory, data):
    from leanseg.io import read_image

    folder = tmp_path_factory.mktemp("img")
    for name, head in (("x.png", b"\x89PNG\r\n\x1a\n"), ("x.tif", b"II*\x00")):
        (folder / name).write_bytes(head + data)
        one_line_or_ok(read_image, folder / name)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


@FUZZ
@given(changes=st.dictionaries(st.sampled_from(["model", "model_kwargs", "labels", "regions", "channels", "window",
                                                "normalization", "postprocess", "spacing", "task", "format"]),
                               JSON_VALUES, min_size=1, max_size=4))
def test_safetensors_configs(tmp_path_factory, changes):
    """A real checkpoint whose JSON config is replaced field by field with arbitrary JSON values."""
    import torch
    from safetensors.torch import save_file

    from leanseg import load_model

    torch.manual_seed(0)
    weights = {"conv.weight": torch.zeros(2, 1, 1, 1, 1)}
    config = {"format": "leanseg", "version": 1, "model": "lean_unet",
              "model_kwargs": {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "features": [4, 8]}}
    config.update(changes)
    path = tmp_path_factory.mktemp("st") / "m.safetensors"
    save_file(weights, str(path), metadata={"leanseg": json.dumps(config)})
    one_line_or_ok(load_model, path)


@FUZZ
@given(header=st.binary(max_size=200), length=st.integers(0, 2**64 - 1))
def test_safetensors_raw_headers(tmp_path_factory, header, length):
    from leanseg import load_model

    path = tmp_path_factory.mktemp("st") / "m.safetensors"
    path.write_bytes(struct.pack("<Q", length) + header)
    one_line_or_ok(load_model, path)


TEXT_OR_VALUE = st.text(max_size=12) | st.integers(-5, 10**7) | st.floats() | st.lists(
    st.integers(-5, 10**6) | st.floats(), max_size=4) | st.none() | st.booleans()


@FUZZ
@given(value=TEXT_OR_VALUE, ndim=st.sampled_from([None, 2, 3]))
def test_option_parsers(value, ndim):
    from leanseg.inference import check_options
    from leanseg.options import parse_ints, parse_window, resolve_device
    from leanseg.postprocess import Postprocess
    from leanseg.spacing import parse_spacing

    one_line_or_ok(parse_window, value, ndim or 3, what="--window")
    one_line_or_ok(parse_spacing, value, ndim, what="--spacing")
    one_line_or_ok(parse_ints, value, "--features")
    one_line_or_ok(resolve_device, value)
    one_line_or_ok(check_options, overlap=value)
    one_line_or_ok(check_options, batch_size=value)
    one_line_or_ok(Postprocess.parse, value)


@FUZZ
@given(value=JSON_VALUES)
def test_json_option_parsers(value):
    from leanseg.checkpoint import Normalization
    from leanseg.labels import LabelManager
    from leanseg.postprocess import Postprocess

    one_line_or_ok(Normalization.parse, value)
    one_line_or_ok(Postprocess.parse, value)
    if isinstance(value, dict):
        one_line_or_ok(LabelManager, labels=value)
        one_line_or_ok(LabelManager, regions=value)
