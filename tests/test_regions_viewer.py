"""Conformal regions seen and exported (issue 21): the regions layer in the viewer (one outline per unpinned point,
none for a pinned one, the toggle, the areas in the check-next list), the session's regions in the console API and
in the JSON / CSV files (the session's save and the napari writer), read back by the landmark readers; a model
without regions draws and writes none and says so."""

import json

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from napari_interactive_landmarks.inference.predictor import Predictor  # noqa: E402
from napari_interactive_landmarks.io.landmarks import read_landmarks_csv, read_landmarks_json  # noqa: E402
from napari_interactive_landmarks.napari import _widget as W  # noqa: E402
from napari_interactive_landmarks.napari._demo import wait_until_idle  # noqa: E402
from napari_interactive_landmarks.napari._layer_sync import REGION_VERTICES  # noqa: E402
from napari_interactive_landmarks.napari._sample_data import phantom_spine  # noqa: E402
from napari_interactive_landmarks.napari._widget import LandmarkWidget, simulate_drag  # noqa: E402
from napari_interactive_landmarks.napari._writer import write_landmarks  # noqa: E402
from napari_interactive_landmarks.regions import RegionCalibration, mahalanobis_radius  # noqa: E402

MODEL = "phantom-spine"
K = 24
RADII = np.linspace(2.0, 4.0, K)  # one radius per landmark, as a calibrated card holds them


@pytest.fixture
def notes(monkeypatch):
    got = []
    monkeypatch.setattr(W, "show_warning", lambda msg: got.append(str(msg)))
    monkeypatch.setattr(W.QMessageBox, "question", lambda *a, **k: W.QMessageBox.Yes)
    return got


def _widget(viewer, spacing=None):
    data, kwargs, _ = phantom_spine()[0]
    layer = viewer.add_image(data, **kwargs)
    if spacing is not None:
        layer.metadata["napari_interactive_landmarks"] = {**layer.metadata["napari_interactive_landmarks"],
                                                          "spacing_mm": [spacing, spacing]}
    w = LandmarkWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.model_combo.setCurrentText(MODEL)
    w.detect()
    wait_until_idle(w, 120)
    w.layers.flush()
    return w


@pytest.fixture
def with_regions(monkeypatch):
    """The shipped phantom model with regions in its card (what calibrate writes), as the widget loads it."""
    plain = Predictor.from_name.__func__

    def from_name(cls, name, *a, **k):
        p = plain(cls, name, *a, **k)
        p.regions = RegionCalibration(0.95, RADII.copy(), pooled=False)
        return p

    monkeypatch.setattr(Predictor, "from_name", classmethod(from_name))


@pytest.fixture
def widget(make_napari_viewer_proxy, qtbot, notes, with_regions):
    return _widget(make_napari_viewer_proxy(), spacing=0.5)


def _outlined_landmarks(w):
    """{landmark: how many of the regions layer's vertices lie on its own region's ellipse (at Mahalanobis radius q
    from its point)}: the landmarks that have an outline."""
    centres, spread, radius = w.session.region_geometry()
    starts = np.asarray(w.regions_layer.data)[:, 0]
    found = {}
    for k in np.flatnonzero(np.isfinite(radius)):
        on = np.isclose(mahalanobis_radius(starts - centres[k], spread[k]), radius[k], rtol=1e-4).sum()
        if on:
            found[int(k)] = int(on)
    return found


def test_by_default_only_the_points_in_doubt_have_a_region_and_every_outline_stays_on_the_film(widget):
    """Issue 34: the regions of the suggested point and of the points whose stated ERE exceeds the tolerance (2 mm
    here), not a thicket over the whole spine; the toggle draws all; every vertex is on the film."""
    s = widget.session
    doubt = s.in_doubt()
    assert doubt is not None and doubt[s.suggest_next()]
    free = ~s.pinned
    tolerance = max(2.0 / 0.5, 2 * np.median(s.ere[free]))  # 2 mm, or twice the film's median where larger
    assert s.doubt_tolerance_px == pytest.approx(tolerance)
    assert (doubt == (free & (s.ere > tolerance)) | (np.arange(K) == s.suggest_next())).all()
    assert 0 < doubt.sum() < K, doubt.sum()  # the phantom film has both (else this test shows nothing)
    areas = np.array([r["area_px2"] or np.nan for r in s.regions()])
    drawn = doubt & (areas <= 0.25 * np.prod(s.image_shape))  # a region over a quarter of the film: not drawn
    assert sorted(_outlined_landmarks(widget)) == list(np.flatnonzero(drawn))
    widget.all_regions.setChecked(True)
    widget.layers.flush()
    assert sorted(_outlined_landmarks(widget)) == list(range(K))
    h, w = s.image_shape
    v = np.asarray(widget.regions_layer.data)[:, 0]
    assert (v >= -0.5).all() and (v[:, 0] <= h - 0.5).all() and (v[:, 1] <= w - 0.5).all()


def test_detect_draws_one_region_outline_per_landmark_and_the_suggested_one_stands_out(widget):
    widget.all_regions.setChecked(True)
    widget.layers.flush()
    lyr = widget.regions_layer
    assert lyr is not None and lyr in widget.viewer.layers
    assert lyr.name == f"regions ({MODEL})" and lyr.visible and not lyr.editable
    found = _outlined_landmarks(widget)
    assert sorted(found) == list(range(K))
    assert all(n <= REGION_VERTICES for n in found.values())  # one outline each (less where it leaves the film)
    # the suggested next point's region: red, and doubled (a second ring just outside); the others not red
    nxt = widget.session.suggest_next()
    assert nxt is not None
    centres, spread, radius = widget.session.region_geometry()
    red = np.isclose(np.asarray(lyr.edge_color), [1.0, 0x52 / 255, 0x52 / 255, 1.0], atol=0.01).all(1)
    starts = np.asarray(lyr.data)[red, 0]
    h, w = widget.session.image_shape
    clipped = np.isclose(starts, -0.5).any(1) | np.isclose(starts[:, 0], h - 0.5) | np.isclose(starts[:, 1], w - 0.5)
    starts = starts[~clipped]  # (a vertex off the film is drawn on its edge)
    r = mahalanobis_radius(starts - centres[nxt], spread[nxt])
    on, outside = np.isclose(r, radius[nxt], rtol=1e-4), r > radius[nxt] * (1 + 1e-4)
    assert on.sum() == found[nxt] and outside.sum() >= found[nxt] - 2 and (on | outside).all()
    # the regions lie between the film and the points (the points stay on top)
    layers = list(widget.viewer.layers)
    assert layers.index(lyr) < layers.index(widget.points_layer)


def test_a_drag_removes_the_pinned_points_region_and_the_others_follow_the_model(widget):
    widget.all_regions.setChecked(True)
    s = widget.session
    before = s.region_geometry()[1]
    lyr = widget.points_layer
    point = int(list(lyr.features["index"]).index(5))
    simulate_drag(lyr, point, s.coords[5] + np.array([12.0, -9.0]))
    wait_until_idle(widget, 60)
    widget.layers.flush()
    found = _outlined_landmarks(widget)
    assert 5 not in found and sorted(found) == [k for k in range(K) if k != 5]
    # an update of the layer is cheap (its creation, like any layer's, is not counted)
    assert widget.layers.region_sync_ms and max(widget.layers.region_sync_ms) < 300
    assert s.regions()[5]["area_px2"] is None and s.regions()[4]["area_px2"] > 0
    others = np.delete(np.arange(K), 5)  # the model's answer reshaped the others' regions
    assert np.abs(s.region_geometry()[1][others] - before[others]).max() > 1e-3
    assert np.isnan(widget.points_layer.features["region_area_px2"].iloc[point])
    # unpin: the point's region comes back with the model's answer
    widget.points_layer.selected_data = {point}
    widget.unpin_selected()
    wait_until_idle(widget, 60)
    widget.layers.flush()
    assert 5 in _outlined_landmarks(widget)


def test_the_toggle_hides_and_shows_the_regions(widget):
    box = widget.show_regions
    assert box.isChecked() and box.isEnabled() and box.text() == "Show 95 % regions"
    box.setChecked(False)
    assert not widget.regions_layer.visible
    box.setChecked(True)
    assert widget.regions_layer.visible


def test_the_check_next_list_shows_each_points_region_area(widget):
    t = widget.ere_table
    assert t.horizontalHeaderItem(2).text() == "region" and not t.isColumnHidden(2)
    areas = widget.session.region_arrays()["area_mm2"]
    assert t.rowCount() == K
    for row, k in enumerate(widget._ere_rows):
        text = t.item(row, 2).text()
        assert text.endswith(" mm²")
        assert float(text.split()[0].replace(",", "")) == pytest.approx(areas[k], rel=0.01, abs=0.06)
    assert "95 % region" in widget.suggest_label.text() and "mm²" in widget.suggest_label.text()


def test_exports_carry_the_regions_and_read_back(widget, tmp_path):
    s = widget.session
    lyr = widget.points_layer
    simulate_drag(lyr, int(list(lyr.features["index"]).index(7)), s.coords[7] + 10)
    wait_until_idle(widget, 60)
    want = s.region_arrays()
    regions = widget.console.regions()  # the console API: per-landmark dicts
    assert regions[7]["centre"] is None and regions[0]["level"] == 0.95
    np.testing.assert_allclose(regions[0]["centre"], s.coords[0])
    np.testing.assert_allclose([r["area_px2"] or np.nan for r in regions], want["area_px2"])
    js, cs = widget.save(tmp_path / "case.json"), widget.save(tmp_path / "case.csv")
    raw = json.loads(js.read_text())["points"]
    assert raw[7]["region"] is None
    assert set(raw[0]["region"]) == {"level", "centre", "semi_axes_px", "angle_deg", "area_px2", "area_mm2"}
    # napari's File › Save of the points layer (the plugin's writer) writes the same regions
    wj = tmp_path / "layer.json"
    wc = tmp_path / "layer.csv"
    attrs = {"features": lyr.features, "metadata": lyr.metadata}
    write_landmarks(wj, lyr.data, attrs)
    write_landmarks(wc, lyr.data, attrs)
    for path, reader in ((js, read_landmarks_json), (cs, read_landmarks_csv), (wj, read_landmarks_json),
                         (wc, read_landmarks_csv)):
        got = reader(path, landmark_names=list(s.schema.landmarks)).regions
        assert got is not None and got["level"] == 0.95, path
        for key in ("centre", "semi_axes_px", "angle_deg", "area_px2", "area_mm2"):
            np.testing.assert_allclose(got[key], want[key], rtol=1e-4, err_msg=f"{path.name}: {key}")
        assert np.isnan(got["area_px2"][7])
    # the files still load into the session
    s.load(js)
    s.load(cs)


def test_a_model_without_regions_draws_none_writes_none_and_says_so(make_napari_viewer_proxy, qtbot, notes, tmp_path):
    w = _widget(make_napari_viewer_proxy())
    assert w.session.regions() is None and w.console.regions() is None
    assert w.regions_layer is None
    assert not any(lyr.name.startswith("regions") for lyr in w.viewer.layers)
    assert not w.show_regions.isEnabled() and w.ere_table.isColumnHidden(2)
    assert w.regions_note.isVisibleTo(w) and "has no calibrated regions" in w.regions_note.text()
    path = w.save(tmp_path / "plain.json")
    assert all(p["region"] is None for p in json.loads(path.read_text())["points"])
    assert np.isnan(read_landmarks_json(path).regions["area_px2"]).all()


def test_the_sessions_regions_follow_undo_and_a_pin_before_the_models_answer():
    """Headless: each state keeps its regions — a pin drops the pinned point's at once (the others stay until the
    model answers), undo brings it back, a loaded file (no model's answer) has none."""
    from napari_interactive_landmarks.inference.session import LandmarkSession

    p = Predictor.from_name(MODEL, device="cpu")
    p.regions = RegionCalibration(0.95, RADII.copy(), pooled=False)
    s = LandmarkSession(p, phantom_spine()[0][0])
    s.detect()
    first = s.region_arrays()
    assert np.isfinite(first["area_px2"]).all() and s.region_level == 0.95
    np.testing.assert_allclose(first["centre"], s.coords)
    s.pin({2: tuple(s.coords[2] + 5)})  # no model run yet
    now = s.region_arrays()
    assert np.isnan(now["area_px2"][2]) and np.allclose(np.delete(now["area_px2"], 2), np.delete(first["area_px2"], 2))
    s.undo()
    np.testing.assert_allclose(s.region_arrays()["area_px2"], first["area_px2"])
