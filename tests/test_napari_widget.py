"""GUI tests: the dock widget in a real napari viewer (Xvfb), with the shipped phantom model."""

import json

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from napari_interactive_landmarks.napari import _widget as W  # noqa: E402
from napari_interactive_landmarks.napari._demo import wait_until_idle  # noqa: E402
from napari_interactive_landmarks.napari._sample_data import phantom_spine  # noqa: E402
from napari_interactive_landmarks.napari._widget import LandmarkWidget, simulate_drag  # noqa: E402

MODEL = "phantom-spine"


@pytest.fixture
def notes(monkeypatch):
    """Collect the widget's notifications instead of showing them; no modal dialog can block."""
    got = []
    monkeypatch.setattr(W, "show_warning", lambda msg: got.append(("show_warning", str(msg))))
    monkeypatch.setattr(W.QMessageBox, "question", lambda *a, **k: W.QMessageBox.Yes)
    return got


@pytest.fixture
def widget(make_napari_viewer_proxy, qtbot, notes):
    viewer = make_napari_viewer_proxy()
    data, kwargs, _ = phantom_spine()[0]
    viewer.add_image(data, **kwargs)
    w = LandmarkWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.model_combo.setCurrentText(MODEL)
    w.detect()
    wait_until_idle(w, 120)
    return w


def _layer_coords(w):
    lyr = w.points_layer
    order = np.argsort(lyr.features["index"].to_numpy())
    return np.asarray(lyr.data)[order]


def test_detect_creates_named_points(widget):
    lyr = widget.points_layer
    k = widget.session.num_landmarks
    assert len(lyr.data) == k == 24
    assert list(lyr.features["label"])[:2] == ["V1_top_left", "V1_top_right"]
    assert not lyr.features["pinned"].any()
    np.testing.assert_allclose(_layer_coords(widget), widget.session.coords)
    assert widget.skeleton_layer is not None and len(widget.skeleton_layer.data) == 24


def test_drag_pins_the_point_and_moves_others(widget):
    before = widget.session.coords
    lyr = widget.points_layer
    target = before[5] + np.array([25.0, -18.0])
    point = int(list(lyr.features["index"]).index(5))
    simulate_drag(lyr, point, target)
    wait_until_idle(widget, 60)
    after = widget.session.coords
    np.testing.assert_allclose(after[5], target)                 # stays exactly where it was put
    np.testing.assert_allclose(_layer_coords(widget)[5], target)
    assert widget.session.pinned[5] and widget.session.pinned.sum() == 1
    others = np.delete(np.arange(24), 5)
    # the model re-ran with the drag as its click, and its answer is what the other points show (how far a click
    # moves them is the model's property, not the widget's)
    pred = widget.session.last_prediction
    assert set(np.flatnonzero(pred.clicked)) == {5}
    np.testing.assert_allclose(after[others], pred.coords[others], atol=1e-6)
    np.testing.assert_allclose(_layer_coords(widget)[others], pred.coords[others], atol=1e-3)
    assert bool(lyr.features["pinned"].iloc[point])


def test_undo_redo(widget):
    before = widget.session.coords
    simulate_drag(widget.points_layer, 3, before[3] + 20)
    wait_until_idle(widget, 60)
    corrected = widget.session.coords
    from napari.utils.colormaps.standardize_color import transform_color

    from napari_interactive_landmarks.napari._layers import PINNED_COLOR, PREDICTED_COLOR

    pinned_rgba, predicted_rgba = transform_color(PINNED_COLOR)[0], transform_color(PREDICTED_COLOR)[0]
    row = int(list(widget.points_layer.features["index"]).index(3))
    np.testing.assert_allclose(widget.points_layer.face_color[row], pinned_rgba)   # colour follows 'pinned'
    widget.undo()
    np.testing.assert_allclose(widget.session.coords, before)
    np.testing.assert_allclose(_layer_coords(widget), before)
    assert not widget.session.pinned.any()
    np.testing.assert_allclose(widget.points_layer.face_color, np.tile(predicted_rgba, (24, 1)))
    widget.redo()
    np.testing.assert_allclose(_layer_coords(widget), corrected)
    assert widget.session.pinned.sum() == 1
    np.testing.assert_allclose(widget.points_layer.face_color[row], pinned_rgba)


def test_five_rapid_edits_are_merged_and_end_in_one_consistent_state(widget):
    """No waiting between edits. There is no debounce delay (DEBOUNCE_MS = 0): edits made while the model runs are
    merged by the session into one follow-up run and stale results are dropped (LandmarkSession.begin/finish)."""
    start = widget.session.coords
    targets = {i: start[i] + np.array([10.0 + i, -8.0]) for i in (0, 5, 9, 14, 20)}
    for i, pos in targets.items():
        point = int(list(widget.points_layer.features["index"]).index(i))
        simulate_drag(widget.points_layer, point, pos)
    wait_until_idle(widget, 120)
    s = widget.session
    assert s.pinned.sum() == 5
    for i, pos in targets.items():
        np.testing.assert_allclose(s.coords[i], pos)
    np.testing.assert_allclose(_layer_coords(widget), s.coords)
    # the final state is the model's answer to all five clicks together (the last result applied had them all)
    assert set(s.request().clicks) == set(targets)
    pred = s.last_prediction
    assert set(np.flatnonzero(pred.clicked)) == set(targets)
    free = ~s.pinned
    np.testing.assert_allclose(s.coords[free], pred.coords[free], atol=1e-6)


def test_save_and_reload_gives_same_points_and_flags(widget, tmp_path):
    simulate_drag(widget.points_layer, 7, widget.session.coords[7] + 12)
    wait_until_idle(widget, 60)
    want_c, want_p = widget.session.coords, widget.session.pinned
    path = widget.save(tmp_path / "case.json")
    assert path is not None and not widget.session.dirty
    widget.reset()
    assert not widget.session.pinned.any()
    widget.load(str(path))
    wait_until_idle(widget, 60)
    np.testing.assert_allclose(widget.session.coords, want_c)
    np.testing.assert_array_equal(widget.session.pinned, want_p)
    np.testing.assert_allclose(_layer_coords(widget), want_c)
    doc = json.loads(path.read_text())
    assert doc["landmark_set"] == "phantom-spine24" and doc["model"] == MODEL


def test_deleting_and_adding_points_are_refused_with_a_message(widget):
    lyr = widget.points_layer
    lyr.selected_data = {2}
    lyr.remove_selected()
    assert len(lyr.data) == 24                               # restored
    assert "cannot be deleted" in widget.status.text()
    lyr.add(np.array([[10.0, 10.0]]))
    assert len(lyr.data) == 24
    assert "one point per landmark" in widget.status.text()


def test_loading_a_file_for_another_model_is_refused(widget, tmp_path):
    from napari_interactive_landmarks.io.landmarks import write_landmarks_json
    from napari_interactive_landmarks.schemas import load_schema

    names = list(load_schema("isbi-ceph19").landmarks)
    path = write_landmarks_json(tmp_path / "ceph.json", np.full((19, 2), 50.0), names, landmark_set="isbi-ceph19")
    before = widget.session.coords
    widget.load(str(path))
    wait_until_idle(widget, 60)
    assert widget.messages[-1][0] == "error" and "isbi-ceph19" in widget.messages[-1][1]
    np.testing.assert_allclose(widget.session.coords, before)


def test_3d_stack_is_refused_and_rgb_is_accepted(make_napari_viewer_proxy, notes):
    viewer = make_napari_viewer_proxy()
    viewer.add_image(np.random.default_rng(0).random((3, 128, 64)), name="stack")
    w = LandmarkWidget(viewer)
    w.model_combo.setCurrentText(MODEL)
    w.detect()
    assert "2-D" in w.status.text() and w.session is None
    data, _, _ = phantom_spine()[0]
    viewer.add_image(np.dstack([(data * 255).astype(np.uint8)] * 3), name="rgb", rgb=True)
    w.image_combo.setCurrentText("rgb")
    w.detect()
    wait_until_idle(w, 120)
    assert len(w.points_layer.data) == 24


def test_no_image_layer_gives_a_message(make_napari_viewer_proxy, notes):
    w = LandmarkWidget(make_napari_viewer_proxy())
    w.detect()
    assert "No image layer" in w.status.text()


def test_console_object_has_the_session_methods(widget):
    c = widget.console
    coords = c.correct(2, tuple(widget.session.coords[2] + 5))
    np.testing.assert_allclose(_layer_coords(widget), coords)
    assert c.points()[2]["pinned"] is True
    assert c.undo() is True and not widget.session.pinned.any()


def test_closing_with_unsaved_corrections_asks(widget, monkeypatch):
    simulate_drag(widget.points_layer, 1, widget.session.coords[1] + 9)
    wait_until_idle(widget, 60)
    asked = []
    monkeypatch.setattr(W.QMessageBox, "question", lambda *a, **k: asked.append(a) or W.QMessageBox.No)
    assert widget.close() is False        # the user said no: widget stays
    assert asked


def test_measurement_panel_and_overlay_follow_corrections(widget, qtbot):
    """A constructed landmark set — the sample phantom's true corners, every point placed by hand — with V4
    upside down: the Cobb angle is measured from the other vertebrae, the table names its end vertebrae and the
    line under it says V4 was left out and why. Dragging V4's corners to their places through the layer brings
    V4 back: the note goes and the angle is the phantom's true one, with its two end-vertebra lines drawn."""
    from napari_interactive_landmarks.data.phantom import make_phantom
    from napari_interactive_landmarks.measurements import compute_measurements

    _, gt = make_phantom(np.random.default_rng(2024), shape=(1024, 512), num_vertebrae=6)  # the sample's truth
    truth = compute_measurements(widget.session.schema, gt, image_shape=(1024, 512))["cobb_main"]
    flipped = gt.copy()
    flipped[12:16] = gt[[14, 15, 12, 13]]  # V4's top and bottom corners exchanged
    widget.session.correct_many({i: tuple(flipped[i]) for i in range(24)})
    wait_until_idle(widget, 60)
    why = "V4: upside down (top corners below bottom corners)"
    qtbot.waitUntil(lambda: why in widget.meas_doubts.text(), timeout=20000)  # the whole reason, not cut off
    assert widget.meas_table.rowCount() == 1 and widget.meas_table.item(0, 0).text() == "cobb_main"
    m = widget.measurements["cobb_main"]
    assert m.available and list(m.details["left_out"]) == ["V4"]
    ends = f"({m.details['upper_end']}–{m.details['lower_end']})"
    first = widget.meas_table.item(0, 1).text()
    assert first == m.shown() and ends in first and first.split(" ")[0].endswith("°")
    for k in range(12, 16):  # put V4's corners where they belong, as a clinician would
        point = int(list(widget.points_layer.features["index"]).index(k))
        simulate_drag(widget.points_layer, point, gt[k])
        wait_until_idle(widget, 60)
    qtbot.waitUntil(lambda: "V4" not in widget.meas_doubts.text(), timeout=20000)
    m = widget.measurements["cobb_main"]
    assert m.available and "left_out" not in m.details and m.note is None
    assert m.value == pytest.approx(truth.value)
    assert widget.meas_table.item(0, 1).text() == m.shown() == truth.shown().replace("°", "° ± 0.0°", 1)
    assert widget.measurement_layer is not None and len(widget.measurement_layer.data) == 2


def test_saved_file_carries_measurements(widget, tmp_path):
    path = widget.save(tmp_path / "m.json")
    doc = json.loads(path.read_text())
    assert doc["measurements"]["cobb_main"]["unit"] == "deg"
    widget.session.save(tmp_path / "m.csv")
    assert (tmp_path / "m.measurements.csv").read_text().startswith("name,value,unit")


def test_uncertainty_layer_ere_list_and_suggestion_follow_an_edit(widget):
    s = widget.session
    assert s.ere is not None and widget.uncertainty_layer is not None
    before_map = np.asarray(widget.uncertainty_layer.data).copy()
    nxt = s.suggest_next()
    assert nxt == int(np.argmax(s.ere))
    assert widget.ere_table.rowCount() == 24 and widget.ere_table.item(0, 0).text() == s.schema.full_name(nxt)
    assert "ere" in widget.points_layer.features.columns
    # the uncertainty map sits on the image: its cells cover the whole image extent
    (sy, sx), _ = s.uncertainty_geometry()
    assert before_map.shape[0] * sy == pytest.approx(s.image_shape[0])
    # correct the suggested point: it leaves the list, ERE of a pinned point is 0, the map changes
    point = int(list(widget.points_layer.features["index"]).index(nxt))
    simulate_drag(widget.points_layer, point, s.coords[nxt] + 7.0)
    wait_until_idle(widget, 60)
    assert widget.ere_table.rowCount() == 23
    assert s.ere[nxt] == 0.0 and s.suggest_next() != nxt
    assert not np.allclose(np.asarray(widget.uncertainty_layer.data), before_map)
    # the cue follows: the corrected point lost its red border, the new suggestion has it, and the list's
    # first row is the new suggestion, in bold
    red = np.array([1.0, 0.32, 0.32, 1.0])
    new = s.suggest_next()
    order = list(widget.points_layer.features["index"])
    assert not np.allclose(widget.points_layer.border_color[point], red)
    assert np.allclose(widget.points_layer.border_color[order.index(new)], red)
    assert widget.points_layer.border_width[order.index(new)] > widget.points_layer.border_width[point]
    assert widget.ere_table.item(0, 0).text() == s.schema.full_name(new) and widget.ere_table.item(0, 0).font().bold()
    assert not widget.ere_table.item(1, 0).font().bold()
    widget.go_to_suggested()
    assert widget.points_layer.selected_data == {int(list(widget.points_layer.features["index"]).index(s.suggest_next()))}


# ---------------------------------------------------------------------------------------------------------------
# issue 11: traps in the widget (item 4) and errors that escape (item 5)


def _viewer_with(make_napari_viewer_proxy, image, name="film", **kwargs):
    viewer = make_napari_viewer_proxy()
    viewer.add_image(image, name=name, **kwargs)
    return viewer


def test_default_model_fits_the_image(make_napari_viewer_proxy):
    """Real films never get the phantom model by default: a tall spine film gets the spine model, a
    cephalogram-shaped film the cephalometric one, the synthetic sample its phantom model."""
    spine = np.zeros((2400, 900), np.uint8)
    w = LandmarkWidget(_viewer_with(make_napari_viewer_proxy, spine))
    assert w.model_combo.currentText() == "aasce-spine"
    ceph = np.zeros((2400, 1935), np.uint8)
    w = LandmarkWidget(_viewer_with(make_napari_viewer_proxy, ceph))
    assert w.model_combo.currentText() == "isbi-ceph"
    viewer = make_napari_viewer_proxy()
    data, kwargs, _ = phantom_spine()[0]
    viewer.add_image(data, **kwargs)
    assert LandmarkWidget(viewer).model_combo.currentText() == MODEL


def test_a_model_chosen_by_the_user_stays_and_a_misfit_is_warned(make_napari_viewer_proxy):
    rng = np.random.default_rng(0)
    w = LandmarkWidget(_viewer_with(make_napari_viewer_proxy, rng.integers(0, 255, (1024, 512)).astype(np.uint8)))
    w.model_combo.setCurrentText(MODEL)  # the toy model, on a "real" image
    w.viewer.add_image(np.zeros((300, 300), np.uint8), name="other")
    assert w.model_combo.currentText() == MODEL  # a new layer does not overrule the user's choice
    w.detect()
    wait_until_idle(w, 120)
    assert w.messages[-1][0] == "warning" and "toy model" in w.messages[-1][1]


def test_console_detect_works_before_the_detect_button(make_napari_viewer_proxy):
    viewer = make_napari_viewer_proxy()
    data, kwargs, _ = phantom_spine()[0]
    viewer.add_image(data, **kwargs)
    w = LandmarkWidget(viewer)
    coords = w.console.detect()  # no Detect pressed, no model loaded yet
    assert coords.shape == (24, 2) and np.isfinite(coords).all()
    np.testing.assert_allclose(_layer_coords(w), coords)


@pytest.fixture
def excepthook_calls(monkeypatch):
    import sys

    calls = []
    monkeypatch.setattr(sys, "excepthook", lambda *a: calls.append(a))
    return calls


def test_a_failing_inference_is_reported_once_in_the_message_line(widget, excepthook_calls, monkeypatch):
    """A worker failure ends in the widget's message line — not in sys.excepthook (which aborts a script that
    does not run napari's event loop) — and the user's corrected points stay where they are."""
    simulate_drag(widget.points_layer, 4, widget.session.coords[4] + 11)
    wait_until_idle(widget, 60)
    pinned_before = widget.session.coords[widget.session.pinned]

    def boom(*a, **k):
        raise RuntimeError("the accelerator went away")

    monkeypatch.setattr(widget.session.predictor, "predict", boom)
    simulate_drag(widget.points_layer, 9, widget.session.coords[9] + 13)
    wait_until_idle(widget, 60)
    assert excepthook_calls == []
    errors = [m for lvl, m in widget.messages if lvl == "error"]
    assert len(errors) == 1 and "the accelerator went away" in errors[0]
    s = widget.session
    np.testing.assert_allclose(s.coords[4], pinned_before[0])
    assert s.pinned[4] and s.pinned[9]  # the new correction is kept too
    assert not s.running


@pytest.mark.parametrize("kind", ["constant", "nan"])
def test_an_unusable_image_layer_is_reported_not_raised(make_napari_viewer_proxy, excepthook_calls, kind):
    image = np.full((512, 256), 7.0, np.float32)
    if kind == "nan":
        image[:] = np.nan
    w = LandmarkWidget(_viewer_with(make_napari_viewer_proxy, image))
    w.model_combo.setCurrentText(MODEL)
    w.detect()
    wait_for_an_error(w)
    assert excepthook_calls == []
    errors = [m for lvl, m in w.messages if lvl == "error"]
    assert len(errors) == 1
    assert ("constant" in errors[0]) if kind == "constant" else ("NaN" in errors[0] or "finite" in errors[0])


def test_a_corrupt_weights_file_is_reported_not_raised(make_napari_viewer_proxy, excepthook_calls, tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\": 1}garbage")
    data, kwargs, _ = phantom_spine()[0]
    w = LandmarkWidget(_viewer_with(make_napari_viewer_proxy, data, **{k: v for k, v in kwargs.items() if k != "name"}))
    w._weights_file = str(bad)
    w.model_combo.setItemText(w.model_combo.count() - 1, "broken.safetensors (file)")
    w.model_combo.setCurrentIndex(w.model_combo.count() - 1)
    w.detect()
    wait_for_an_error(w)
    assert excepthook_calls == []
    errors = [m for lvl, m in w.messages if lvl == "error"]
    assert len(errors) == 1 and "broken.safetensors" in errors[0]
    assert w.session is None


def wait_for_an_error(w, timeout=60.0):
    """Process Qt events until the widget reports an error (or ``timeout`` seconds pass)."""
    import time

    from qtpy.QtWidgets import QApplication

    t0 = time.time()
    while not any(lvl == "error" for lvl, _ in w.messages):
        if time.time() - t0 > timeout:
            pytest.fail(f"the widget reported no error within {timeout:.0f} s; its messages: {w.messages}")
        QApplication.processEvents()
        time.sleep(0.01)


# ---------------------------------------------------------------------------------------------------------------
# issue 11: loading and saving never lose work (items 7-8), in the widget


def _partial_file(widget, tmp_path, keep=(0, 1, 2)):
    from napari_interactive_landmarks.io.landmarks import write_landmarks_json

    s = widget.session
    coords = np.full((s.num_landmarks, 2), np.nan)
    coords[list(keep)] = s.coords[list(keep)] + 3.0
    return write_landmarks_json(tmp_path / "partial.json", coords, list(s.schema.landmarks),
                                landmark_set=s.schema.name, image_shape=list(s.image_shape))


@pytest.mark.parametrize("answer", ["no", "yes"])
def test_a_partial_file_merges_only_with_consent(widget, tmp_path, monkeypatch, answer):
    simulate_drag(widget.points_layer, 10, widget.session.coords[10] + 9)
    wait_until_idle(widget, 60)
    s = widget.session
    before, pinned_before = s.coords, s.pinned
    path = _partial_file(widget, tmp_path)
    asked = []
    monkeypatch.setattr(W.QMessageBox, "question", lambda *a, **k: asked.append(a[2]) or (
        W.QMessageBox.Yes if answer == "yes" else W.QMessageBox.No))
    widget.load(str(path))
    wait_until_idle(widget, 60)
    assert asked and "3 of 24" in asked[0] and "1 corrected point" in asked[0]
    if answer == "no":
        np.testing.assert_allclose(s.coords, before)
        np.testing.assert_array_equal(s.pinned, pinned_before)
        assert "not loaded" in widget.status.text()
    else:
        np.testing.assert_allclose(s.coords[:3], before[:3] + 3.0)
        np.testing.assert_allclose(s.coords[10], before[10])  # the user's correction, not in the file, stays
        assert s.pinned[10]
        np.testing.assert_allclose(s.coords[3:10], before[3:10])
    np.testing.assert_allclose(_layer_coords(widget), s.coords)


def test_a_failed_save_says_which_file_and_keeps_working(widget, tmp_path):
    simulate_drag(widget.points_layer, 4, widget.session.coords[4] + 9)
    wait_until_idle(widget, 60)
    assert widget.session.dirty
    target = tmp_path / "case.csv"
    (tmp_path / "case.measurements.csv").write_text("someone else's file")
    assert widget.save(target) is None
    level, text = widget.messages[-1]
    assert level == "error" and "case.measurements.csv" in text
    assert not target.exists()  # all or nothing: the landmark CSV was not written either
    assert widget.session.dirty  # the correction made below is still unsaved


def test_deleting_the_landmark_layer_keeps_the_session_and_detect_draws_it_again(widget):
    simulate_drag(widget.points_layer, 6, widget.session.coords[6] + 10)
    wait_until_idle(widget, 60)
    corrected = widget.session.coords
    widget.viewer.layers.remove(widget.points_layer)
    wait_until_idle(widget, 10)
    # its outline, labels and map are hidden at once (and removed once the points are drawn again: removing them
    # first crashes software OpenGL, tests/test_viewer_flows.py)
    ours = [lyr for lyr in widget.viewer.layers if lyr.name.startswith(("outline", "labels", "uncertainty"))]
    assert ours and not any(lyr.visible for lyr in ours)
    assert all(widget.image_combo.findText(lyr.name) < 0 for lyr in ours)  # the old map is not offered as a film
    assert widget.session.pinned[6]                                      # the work is still in the session
    widget.undo()                                                        # any action draws it again
    wait_until_idle(widget, 60)
    assert widget.points_layer is not None and widget.points_layer in widget.viewer.layers
    assert not any(lyr in widget.viewer.layers for lyr in ours)           # the hidden ones are gone now
    assert not any("(replaced)" in lyr.name for lyr in widget.viewer.layers)
    np.testing.assert_allclose(_layer_coords(widget), widget.session.coords)
    widget.redo()
    wait_until_idle(widget, 60)
    np.testing.assert_allclose(_layer_coords(widget), corrected)
    assert sum(n.startswith("outline") for n in (lyr.name for lyr in widget.viewer.layers)) == 1


def test_pixel_size_box_sets_the_spacing_and_the_units_follow(widget):
    assert widget.spacing_box.value() == 0.0 and widget.ere_table.item(0, 1).text().endswith("px")
    widget.spacing_box.setValue(0.1)
    widget.spacing_box.editingFinished.emit()
    wait_until_idle(widget, 30)
    assert widget.session.spacing == (0.1, 0.1) and widget.session.dirty
    assert widget.ere_table.item(0, 1).text().endswith("mm")
    px = widget.session.ere[widget._ere_rows[0]]
    assert float(widget.ere_table.item(0, 1).text().split()[0]) == pytest.approx(px * 0.1, abs=0.06)
    assert widget.points_layer.metadata[W.META_KEY]["spacing_mm"] == [0.1, 0.1]


def test_set_spacing_refuses_nonsense_and_changes_nothing(widget):
    from napari_interactive_landmarks.inference.session import SessionError

    before = widget.session.coords
    for bad in (-1.0, 0.0, float("nan"), (0.1, float("inf"))):
        with pytest.raises(SessionError, match="positive and finite"):
            widget.session.set_spacing(bad)
    assert widget.session.spacing is None
    np.testing.assert_allclose(widget.session.coords, before)


def test_shape_prior_checkbox_reruns_with_the_same_corrections(widget):
    from napari_interactive_landmarks.data.phantom import make_phantom, phantom_set
    from napari_interactive_landmarks.shape_model import fit_from_labels

    assert not widget.shape_prior_box.isEnabled()  # the phantom model ships no shape model
    _, cs = phantom_set(60, 11, shape=(1024, 512), num_vertebrae=6)
    sm, _ = fit_from_labels([(str(i), c, (1024, 512)) for i, c in enumerate(cs)], widget.predictor.schema.name)
    widget.predictor.set_shape_model(sm)
    widget._show_shape_prior()
    assert widget.shape_prior_box.isEnabled() and widget.shape_prior_box.isChecked()
    _, gt = make_phantom(np.random.default_rng(2024), shape=(1024, 512), num_vertebrae=6)
    simulate_drag(widget.points_layer, 0, gt[0] + np.array([60.0, 0.0]))  # a vertebra corner moved down by hand
    wait_until_idle(widget, 60)
    assert widget.session.last_prediction.shape_prior
    with_prior = widget.session.coords
    widget.shape_prior_box.setChecked(False)                             # the network alone, same correction
    wait_until_idle(widget, 60)
    assert not widget.predictor.use_shape_prior and not widget.session.last_prediction.shape_prior
    alone = widget.session.coords
    np.testing.assert_array_equal(alone[0], with_prior[0])               # the user's point never moves
    assert np.abs(alone - with_prior).max() > 2.0                        # the others follow the switch
    np.testing.assert_allclose(_layer_coords(widget), alone)
    widget.shape_prior_box.setChecked(True)
    wait_until_idle(widget, 60)
    # back where they were: "previous" differs a little, and where the CPU computes bf16 natively the viewer runs
    # the network in bf16 (set_precision("auto")), whose logits move a re-run's points by up to ~0.3 px here
    np.testing.assert_allclose(widget.session.coords, with_prior, atol=0.5)


def test_unticking_the_anatomy_before_any_correction_reruns_when_it_changes_the_answer(widget):
    """Issue 35: before any correction, a model that applies its prior at zero clicks (aasce-spine does) gives other
    points with the box unticked; unticking it re-runs at once, and ticking it back restores the points. A model
    that applies it only after a correction says so instead (nothing to re-run)."""
    from napari_interactive_landmarks.data.phantom import phantom_set
    from napari_interactive_landmarks.shape_model import fit_from_labels

    _, cs = phantom_set(60, 11, shape=(1024, 512), num_vertebrae=6)
    sm, _ = fit_from_labels([(str(i), c, (1024, 512)) for i, c in enumerate(cs)], widget.predictor.schema.name)
    widget.predictor.set_shape_model(sm.with_settings(zero_click=True, zero_click_rounds=2, weight=0.9, tau=0.5))
    widget._show_shape_prior()
    widget.detect()
    wait_until_idle(widget, 60)
    assert not widget.session.pinned.any() and widget.session.last_prediction.shape_prior
    with_prior = widget.session.coords
    widget.shape_prior_box.setChecked(False)
    wait_until_idle(widget, 60)
    assert not widget.session.last_prediction.shape_prior  # re-run: the box and the screen agree
    assert np.abs(widget.session.coords - with_prior).max() > 0.5
    np.testing.assert_allclose(_layer_coords(widget), widget.session.coords)
    widget.shape_prior_box.setChecked(True)
    wait_until_idle(widget, 60)
    assert widget.session.last_prediction.shape_prior
    np.testing.assert_allclose(widget.session.coords, with_prior, atol=0.5)
    # a prior that applies only after a correction: nothing to re-run, and the panel says why
    widget.predictor.set_shape_model(sm.with_settings(zero_click=False))
    widget._show_shape_prior()
    before = widget.session.last_prediction
    widget.shape_prior_box.setChecked(False)
    wait_until_idle(widget, 60)
    assert widget.session.last_prediction is before
    assert "only after a correction" in widget.status.text()


def test_closing_the_viewer_while_the_model_runs_keeps_the_corrections_and_raises_nothing(
        make_napari_viewer_proxy, qtbot, notes, tmp_path, monkeypatch, capsys):
    """Issue 35: closing the viewer while an update ran raised RuntimeError (a deleted QTimer) from the result's
    callback and lost the unsaved corrections. Now nothing is raised (pytest-qt fails a test on an exception in a
    Qt callback), the corrections and the model's answer go to a recovery file, and the next Detect on the same
    image offers them back."""
    import time as _time

    monkeypatch.setenv("NAPARI_LANDMARKS_RECOVERY_DIR", str(tmp_path))
    viewer = make_napari_viewer_proxy()
    data, kwargs, _ = phantom_spine()[0]
    viewer.add_image(data, **kwargs)
    w = LandmarkWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.model_combo.setCurrentText(MODEL)
    w.detect()
    wait_until_idle(w, 120)
    session = w.session
    real = session.compute

    def slow(req):  # an update still running when the viewer closes
        _time.sleep(1.0)
        return real(req)

    session.compute = slow
    target = session.coords[0] + np.array([25.0, -10.0])
    simulate_drag(w.points_layer, w.layers.layer_point(0), target)
    qtbot.waitUntil(lambda: w._worker is not None and w._worker.is_running, timeout=5000)
    worker = w._worker
    viewer.close()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=20000)
    qtbot.wait(200)  # the result's callback, delivered after the viewer has gone
    kept = list(tmp_path.glob("*.landmarks.json"))
    assert len(kept) == 1
    from napari_interactive_landmarks.io.landmarks import read_landmarks_json

    lf = read_landmarks_json(kept[0])
    assert lf.pinned[0] and np.allclose(lf.coords[0], target, atol=1e-6)
    assert f"kept in {kept[0]}" in capsys.readouterr().err  # said where (the viewer is gone: on stderr)
    # the same image in a new viewer: Detect offers the kept corrections back (the dialog answered yes)
    viewer2 = make_napari_viewer_proxy()
    viewer2.add_image(data, **kwargs)
    w2 = LandmarkWidget(viewer2)
    viewer2.window.add_dock_widget(w2)
    w2.model_combo.setCurrentText(MODEL)
    w2.detect()
    qtbot.waitUntil(lambda: w2.session is not None and w2.session.detected, timeout=30000)
    assert w2.session.pinned[0] and np.allclose(w2.session.coords[0], target, atol=1e-6)
    assert w2.session.dirty and not kept[0].exists() and "Restored" in w2.status.text()


def test_a_sync_with_nothing_changed_rewrites_no_layer(widget):
    """Issue 39 item 3: the layers are updated in place and only where their data changed — a second sync of the
    same state sends no data or colour event to the labels, their leader lines, the outline or the measurement
    lines (each such write re-renders its layer on the main thread)."""
    layers = widget.layers
    layers.sync()
    layers.flush()
    watched = {name: getattr(layers, name) for name in ("labels", "label_lines", "outline", "measurement_lines",
                                                        "regions")}
    watched = {name: lyr for name, lyr in watched.items() if lyr is not None}
    assert {"labels", "outline"} <= set(watched)
    seen = []
    for name, lyr in watched.items():  # set_data: every data write re-slices the layer (data events are held)
        lyr.events.set_data.connect(lambda e, n=name: seen.append((n, "data")))
        if hasattr(lyr.events, "edge_color"):
            lyr.events.edge_color.connect(lambda e, n=name: seen.append((n, "edge_color")))
    layers.sync()
    layers.flush()
    assert seen == []
