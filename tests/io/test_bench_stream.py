"""`leanseg bench stream` on a tiny cube: the prediction is written back as SEG-Y and the path is timed apart."""

from leanseg.bench.stream import run


def test_tiny_stream_bench(tmp_path):
    result = run(size_gb=0.002, xlines=64, samples=64, window=(8, 32, 32), slab=6, halo=1, workdir=str(tmp_path),
                 progress=False)
    assert result["cube"].startswith("64 x 64 x 64")  # ceil(2e6 / (64 * (64 * 4 + 240))) inlines
    assert result["network_s"] > 0 and result["predict_s"] > 0  # timings only: their ratio is the bench's to print
    assert result["labels_in_middle_trace"] and set(result["labels_in_middle_trace"]) <= {0, 1}
    assert list(tmp_path.iterdir()) == []  # the cube and the prediction are removed
