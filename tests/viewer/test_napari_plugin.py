"""The napari plugin (leanseg.viewer, leanseg/napari.yaml): the manifest validates and is the package's entry point,
the reader opens shared NIfTI, SEG-Y and image files, and the dock widget segments a shared case in a worker
thread into a Labels layer equal to ``leanseg.segment``'s, headless (Qt's offscreen platform, a viewer model
without a canvas). The screenshot needs napari's canvas, so an OpenGL context: it runs under a display
(``xvfb-run``) and skips on the offscreen platform, which has no OpenGL."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

if not os.environ.get("DISPLAY"):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before Qt loads: no display on CI
napari = pytest.importorskip("napari", reason="napari is not installed (pip install 'leanseg[viewer]')")
pytest.importorskip("qtpy.QtWidgets", reason="napari has no Qt binding (pip install 'napari[pyqt5]')")
pytest.importorskip("pytestqt", reason="pytest-qt (napari's test fixtures) is not installed")

import leanseg  # noqa: E402
from leanseg import viewer  # noqa: E402

DATA = Path(os.environ.get("LEANSEG_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
F3 = DATA / "segy/segyio/f3.sgy"
EM = DATA / "images2d/isbi2012_em_membrane/image/0.png"
FLAIR = DATA / "nifti/brats2015_deepmedic/brats_2013_pat0006_1/Flair_subtrMeanDivStd.nii.gz"
ROOT = Path(leanseg.__file__).resolve().parent
SCREENSHOT = ROOT / "zoo" / "viewer_em_membrane.png"


def needs(path: Path):
    if not path.exists():
        pytest.skip(f"{path} (shared data) is absent")


def test_manifest_validates_and_is_the_entry_point():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(ROOT / "napari.yaml")
    commands = {c.id: c.python_name for c in manifest.contributions.commands}
    assert commands == {"leanseg.get_reader": "leanseg.viewer:napari_get_reader",
                        "leanseg.segment_widget": "leanseg.viewer:SegmentWidget"}
    for target in commands.values():  # each command names an attribute that exists
        module, _, attr = target.partition(":")
        assert callable(getattr(sys.modules[module], attr))
    patterns = manifest.contributions.readers[0].filename_patterns
    assert {f"*{s}" for s in viewer.READ_SUFFIXES} == set(patterns)
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml")
    pyproject = tomllib.loads((ROOT.parent / "pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"]["napari.manifest"] == {"leanseg": "leanseg:napari.yaml"}
    assert "napari.yaml" in pyproject["tool"]["setuptools"]["package-data"]["leanseg"]


@pytest.mark.parametrize("path, shape, scale", [
    (F3, (23, 18, 75), (1.0, 1.0, 1.0)),        # SEG-Y: inline, crossline, sample; steps unscaled
    (FLAIR, (240, 240, 155), (1.0, 1.0, 1.0)),  # NIfTI in RAS order, 1 mm
    (EM, (512, 512), (1.0, 1.0)),              # an 8-bit EM slice
])
def test_reader_opens_shared_files(path, shape, scale):
    needs(path)
    reader = viewer.napari_get_reader(str(path))
    assert reader is viewer.read_layers
    [(data, kwargs, kind)] = reader(str(path))
    assert kind == "image" and data.shape == shape and data.dtype == np.float32
    assert kwargs["scale"] == scale and kwargs["metadata"][viewer.GEOMETRY_KEY] is not None
    assert viewer.napari_get_reader("notes.txt") is None


def _segment_in_viewer(view, qtbot, path, model, dock=False):
    for data, kwargs, _ in viewer.read_layers(str(path)):
        view.add_image(data, **kwargs)
    widget = viewer.SegmentWidget(view)
    if dock:  # in the window, as napari's Plugins menu puts it
        view.window.add_dock_widget(widget, name="leanseg: Segment", area="right")
    assert widget.image.value is view.layers[0]  # the new layer was picked up
    widget.zoo.value = model
    worker = widget.run()
    with qtbot.waitSignal(worker.finished, timeout=300_000):
        pass
    qtbot.waitUntil(lambda: len(view.layers) == 2, timeout=10_000)  # the returned signal adds the layer
    return view.layers[1]


class RecordingBar:
    """Stands in for napari's progress bar: what the worker's ticks did to it."""

    made: list = []

    def __init__(self, total, desc):
        self.total, self.desc, self.n, self.closed = total, desc, 0, False
        self.made.append(self)

    def update(self, k):
        self.n += k

    def close(self):
        self.closed = True


def test_widget_segments_a_seismic_cube_into_labels(qtbot, monkeypatch):
    """The widget on napari's viewer model (what the window shows, without a GL canvas)."""
    needs(F3)
    from napari.components import ViewerModel

    monkeypatch.setattr(viewer, "progress", RecordingBar)
    RecordingBar.made.clear()
    view = ViewerModel()
    labels = _segment_in_viewer(view, qtbot, F3, "faults")
    [bar] = RecordingBar.made  # one bar, advanced window by window to its total, closed at the end
    assert bar.total >= 1 and bar.n == bar.total and bar.closed and "faults" in bar.desc
    assert isinstance(labels, napari.layers.Labels) and labels.name == "f3 faults"
    image = view.layers[0]
    expected = leanseg.segment(image.data[None], "faults", image.metadata[viewer.GEOMETRY_KEY])
    assert labels.data.shape == image.data.shape
    np.testing.assert_array_equal(labels.data, expected)  # what the Python API gives, through the worker
    assert set(np.unique(labels.data)) <= {0, 1}


def test_a_wrong_model_is_a_notification_not_a_crash(qtbot, monkeypatch):
    needs(EM)
    from napari.components import ViewerModel

    shown = []
    monkeypatch.setattr(viewer, "show_error", shown.append)
    view = ViewerModel()
    for data, kwargs, _ in viewer.read_layers(str(EM)):
        view.add_image(data, **kwargs)
    worker = viewer.start(view, view.layers[0], "faults")  # a 3D model for a 2D slice
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    qtbot.waitUntil(lambda: bool(shown), timeout=10_000)
    assert len(view.layers) == 1 and shown[0].startswith("leanseg: ") and "2D input for a 3D model" in shown[0]


def test_screenshot_of_em_membranes(make_napari_viewer, qtbot, tmp_path):
    """The README's picture: the em-membrane zoo model on an ISBI 2012 slice. LEANSEG_UPDATE_SCREENSHOT=1 writes
    it into the package (leanseg/zoo), else to a temporary folder."""
    needs(EM)
    if os.environ.get("QT_QPA_PLATFORM") == "offscreen":
        pytest.skip("Qt's offscreen platform has no OpenGL for napari's canvas; run under xvfb-run")
    view = make_napari_viewer(show=True)
    view.window.resize(1100, 700)
    labels = _segment_in_viewer(view, qtbot, EM, "em-membrane", dock=True)
    assert set(np.unique(labels.data)) == {0, 255}  # membrane and cell interior
    labels.opacity = 0.35
    labels.colormap = napari.utils.DirectLabelColormap(color_dict={None: "transparent", 0: "magenta",
                                                                   255: "transparent"})
    view.reset_view()
    qtbot.wait(200)
    shot = view.screenshot(canvas_only=False, flash=False)  # the window: layer list and the leanseg dock too
    assert shot.ndim == 3 and shot.shape[2] == 4 and shot[..., :3].std() > 10  # an image, not a blank window
    magenta = (shot[..., 0] > shot[..., 1] + 40) & (shot[..., 2] > shot[..., 1] + 40)
    assert 0.03 < magenta.mean() < 0.5  # membranes tinted, cells not
    from PIL import Image

    out = SCREENSHOT if os.environ.get("LEANSEG_UPDATE_SCREENSHOT") == "1" else tmp_path / SCREENSHOT.name
    Image.fromarray(shot[..., :3]).save(out, optimize=True)
