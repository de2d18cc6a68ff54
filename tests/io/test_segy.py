"""SEG-Y: round trips of every post-stack file in ../shared/data/segy, irregular surveys, lazy slabs, bad files."""

import os
from pathlib import Path

import numpy as np
import pytest
import segyio

from leanseg.errors import LeanSegError
from leanseg.io import SegyReader, read_segy, write_segy

DATA = Path(os.environ.get("LEANSEG_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")) / "segy"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} (shared test data) is absent")

POST_STACK = [  # every file here that segyio opens and that is a post-stack cube
    "segyio/f3.sgy",
    "segyio/Format1msb.sgy",
    "segyio/Format5msb.sgy",
    "segyio/small.sgy",
    "segyio/acute-small.sgy",
    "segyio/tiny.sgy",
    "segyio/little_endian/f3-lsb.sgy",
    "segyio/little_endian/Format5lsb.sgy",
    "segyio/little_endian/small-lsb.sgy",
    "segysak_f3/f3-ebcidctest.sgy",
    "segysak_f3/f3-withdead.sgy",
    "volve_equinor_licence/volve10-migvel-depth-sub3d.sgy",
    "segyio/edge_cases/long.sgy",  # 3 traces with junk inline/crossline numbers: binned as 3 live of 3x3
]
NOT_A_CUBE = {  # segyio opens these, but they are gathers, not cubes: a clear error
    "segyio/prestack/small-ps.sgy": "only post-stack",
    "segyio/prestack/small-ps-dec-il-xl-off.sgy": "only post-stack",
    "segyio/prestack/1x1.sgy": "only post-stack",
    "segyio/prestack/1xN.sgy": "only post-stack",
    "segyio/prestack/Mx1.sgy": "only post-stack",
    "segyio/edge_cases/shot-gather.sgy": "only post-stack",
    "segyio/edge_cases/text.sgy": "no traces",
    "segyio/edge_cases/small.su": "not a SEG-Y file",
    "segyio/edge_cases/rotated-small-rev2.sgy": "not a readable SEG-Y file",  # rev 2 extensions: segyio 1.9 fails
}


def _headers(f):
    return [{int(k): v for k, v in h.items()} for h in f.header]


@needs_data
@pytest.mark.parametrize("name", POST_STACK)
def test_round_trip_keeps_headers_and_samples(name, tmp_path):
    cube, geometry = read_segy(DATA / name)
    out = write_segy(tmp_path / "out.sgy", cube[0], geometry)
    with (
        segyio.open(DATA / name, ignore_geometry=True, endian=geometry.endian) as src,
        segyio.open(out, ignore_geometry=True, endian=geometry.endian) as dst,
    ):
        assert dst.bin[segyio.BinField.Format] == 5  # IEEE float samples
        assert dst.tracecount == src.tracecount
        np.testing.assert_array_equal(dst.samples, src.samples)
        assert dst.text[0] == src.text[0]
        src_bin, dst_bin = {int(k): v for k, v in src.bin.items()}, {int(k): v for k, v in dst.bin.items()}
        src_bin.pop(int(segyio.BinField.Format)), dst_bin.pop(int(segyio.BinField.Format))
        assert dst_bin == src_bin
        assert _headers(dst) == _headers(src)
        np.testing.assert_array_equal(dst.trace.raw[:], src.trace.raw[:].astype(np.float32))


@needs_data
def test_geometry_of_f3_matches_segyio():
    cube, geometry = read_segy(DATA / "segyio/f3.sgy")
    with segyio.open(DATA / "segyio/f3.sgy") as f:
        np.testing.assert_array_equal(geometry.ilines, f.ilines)
        np.testing.assert_array_equal(geometry.xlines, f.xlines)
        np.testing.assert_array_equal(cube[0], segyio.tools.cube(f).astype(np.float32))
    assert geometry.live.all() and geometry.spacing == (1.0, 1.0, 4.0)


@needs_data
def test_little_endian_reads_as_big():
    big, _ = read_segy(DATA / "segyio/f3.sgy")
    little, geometry = read_segy(DATA / "segyio/little_endian/f3-lsb.sgy")
    assert geometry.endian == "little"
    np.testing.assert_array_equal(big, little)


@needs_data
def test_withdead_is_binned_with_live_mask():
    full, _ = read_segy(DATA / "segyio/f3.sgy")
    cube, geometry = read_segy(DATA / "segysak_f3/f3-withdead.sgy")
    assert geometry.shape == (23, 18, 75)
    assert int(geometry.live.sum()) == 239
    assert int(geometry.live[0].sum()) == 18 and int(geometry.live[-1].sum()) == 1  # inline 111 full, 133 one trace
    np.testing.assert_array_equal(cube[0][geometry.live], full[0][geometry.live])
    assert not cube[0][~geometry.live].any()


@needs_data
def test_volve_step_four():
    _, geometry = read_segy(DATA / "volve_equinor_licence/volve10-migvel-depth-sub3d.sgy")
    assert geometry.shape == (18, 52, 226)
    assert geometry.ilines[0] == 10087 and geometry.ilines[-1] == 10155 and geometry.spacing == (4.0, 4.0, 20.0)


@needs_data
@pytest.mark.parametrize("name, message", sorted(NOT_A_CUBE.items()))
def test_unsupported_files_fail_clearly(name, message):
    with pytest.raises(LeanSegError, match=message) as err:
        read_segy(DATA / name)
    assert str(DATA / name) in str(err.value) and "\n" not in str(err.value)


def _crossline_sorted(path, ilines=(5, 6, 7), xlines=(10, 12, 14, 16), n=8):
    spec = segyio.spec()
    spec.samples, spec.format, spec.tracecount = list(range(n)), 5, len(ilines) * len(xlines)
    values = {}
    with segyio.create(path, spec) as f:
        for t, (xl, il) in enumerate((x, i) for x in xlines for i in ilines):
            f.header[t] = {segyio.TraceField.INLINE_3D: il, segyio.TraceField.CROSSLINE_3D: xl}
            values[il, xl] = np.arange(n, dtype=np.float32) + il * 100 + xl
            f.trace[t] = values[il, xl]
    return values


def test_crossline_sorted_and_slabs(tmp_path):
    values = _crossline_sorted(tmp_path / "xl.sgy")
    with SegyReader(tmp_path / "xl.sgy") as reader:
        assert reader.shape == (3, 4, 8)
        whole = reader.read()
        np.testing.assert_array_equal(whole[1, 2], values[6, 14])
        np.testing.assert_array_equal(reader.read(1, 3), whole[1:3])
    write_segy(tmp_path / "out.sgy", whole * 2, reader.geometry)
    with segyio.open(tmp_path / "out.sgy", ignore_geometry=True) as f:
        np.testing.assert_array_equal(f.trace[1], 2 * values[6, 10])  # trace order kept: crossline-sorted


def test_not_segy(tmp_path):
    (tmp_path / "junk.sgy").write_bytes(b"hello" * 1000)
    with pytest.raises(LeanSegError, match="junk.sgy: not a SEG-Y file"):
        read_segy(tmp_path / "junk.sgy")


@needs_data
@pytest.mark.parametrize("name", POST_STACK)
def test_header_words_read_through_numpy_equal_segyio(name):
    """The mapped read of inline/crossline numbers gives segyio's values (and segyio's where it falls back)."""
    with SegyReader(DATA / name) as reader:
        il, xl = reader._inline_crossline(reader.geometry.endian)
        np.testing.assert_array_equal(il, reader.file.attributes(segyio.TraceField.INLINE_3D)[:])
        np.testing.assert_array_equal(xl, reader.file.attributes(segyio.TraceField.CROSSLINE_3D)[:])


def test_header_words_read_in_several_maps(tmp_path, monkeypatch):
    import leanseg.io.segy as segy

    values = _crossline_sorted(tmp_path / "xl.sgy")
    monkeypatch.setattr(segy, "_MAP_BYTES", 1)  # one trace per map: chunk edges everywhere
    with SegyReader(tmp_path / "xl.sgy") as reader:
        assert reader.shape == (3, 4, 8)
        np.testing.assert_array_equal(reader.read()[1, 2], values[6, 14])


def test_fuzzed_headers_fail_with_one_line_or_read(tmp_path):
    """Seeded random corruptions of binary- and trace-header fields of the real F3 crop: a LeanSegError naming the
    file, or a cube read with finite samples; never another exception."""
    from leanseg.errors import LeanSegError
    from leanseg.io import read_segy

    source = DATA / "segyio/f3.sgy"
    if not source.is_file():
        pytest.skip(f"{source} (shared test data) is absent")
    raw = bytearray(source.read_bytes())
    trace = 240 + 75 * 2  # int16 samples
    fields = [(3212, 3214), (3216, 3218), (3220, 3222), (3224, 3226), (3500, 3502), (3504, 3506)]  # ntraces, dt, ns,
    for t in (0, 1, 200, 413):  # format, revision, ext. headers; then inline, crossline, ns, dt of some traces
        base = 3600 + t * trace
        fields += [(base + 188, base + 196), (base + 114, base + 118)]
    rng = np.random.default_rng(7)
    outcomes = {"read": 0, "refused": 0}
    for i in range(120):
        data = bytearray(raw)
        for _ in range(int(rng.integers(1, 4))):
            lo, hi = fields[int(rng.integers(len(fields)))]
            data[int(rng.integers(lo, hi))] = int(rng.integers(0, 256))
        path = tmp_path / f"f{i}.sgy"
        path.write_bytes(bytes(data))
        try:
            cube, _ = read_segy(path)
            assert np.isfinite(cube).all()
            outcomes["read"] += 1
        except LeanSegError as err:
            assert "\n" not in str(err) and str(path) in str(err)
            outcomes["refused"] += 1
        path.unlink()
    assert outcomes["refused"] > 5 and outcomes["read"] > 5, outcomes
