"""The widget's dataset mode (issue 36): a study's films in a table, Next / Previous / Reviewed, every drag in the
store at once, and a second viewer on the same study told that it is read-only."""

from __future__ import annotations

import json

import numpy as np
import pytest
from skimage.io import imsave

from napari_interactive_landmarks.data.phantom import make_phantom
from napari_interactive_landmarks.napari import _widget as W
from napari_interactive_landmarks.napari._demo import wait_until_idle
from napari_interactive_landmarks.napari._widget import LandmarkWidget, simulate_drag
from napari_interactive_landmarks.study import STORE_DIR

MODEL = "phantom-spine"


@pytest.fixture
def films(tmp_path):
    root = tmp_path / "study"
    root.mkdir()
    for i in range(3):
        img, _ = make_phantom(np.random.default_rng(i), shape=(512, 256), num_vertebrae=6)
        imsave(root / f"film{i}.png", (img * 255).astype(np.uint8), check_contrast=False)
    return root


@pytest.fixture
def notes(monkeypatch):
    got = []
    monkeypatch.setattr(W, "show_warning", lambda msg: got.append(str(msg)))
    monkeypatch.setattr(W.QMessageBox, "question", lambda *a, **k: W.QMessageBox.Yes)
    return got


def _widget(viewer):
    w = LandmarkWidget(viewer)
    viewer.window.add_dock_widget(w)
    return w


def _wait_for_film(w, qtbot, i):
    qtbot.waitUntil(lambda: w.study is not None and w.study.current == i and w.idle and w.session is not None
                    and w.session.detected and w.points_layer is not None, timeout=120_000)


def test_the_widget_steps_through_a_study_and_saves_each_drag_at_once(make_napari_viewer_proxy, qtbot, notes, films):
    viewer = make_napari_viewer_proxy()
    w = _widget(viewer)
    assert not w.study_box.table.isVisible()
    w.open_study(films, model=MODEL)
    _wait_for_film(w, qtbot, 0)
    assert w.study_box.table.rowCount() == 3
    assert w.image_layer.name == "film0.png" and w.image_combo.currentText() == "film0.png"
    s = w.session
    target = tuple(s.coords[4] + [12.0, -9.0])
    simulate_drag(w.points_layer, int(list(w.points_layer.features["index"]).index(4)), target)
    wait_until_idle(w, 120)
    saved = json.loads(w.study.annotation_path(0).read_text())
    assert saved["points"][4]["pinned"] and saved["points"][4]["row"] == pytest.approx(target[0])
    assert w.study_box.table.item(0, 1).text() == "in progress: 1 point corrected"
    w.toggle_reviewed()
    assert w.study_box.reviewed_btn.isChecked() and w.study.films[0].status == "reviewed"
    w.study_next()
    _wait_for_film(w, qtbot, 1)
    assert w.image_layer.name == "film1.png"
    assert "film0.png" not in [lyr.name for lyr in viewer.layers]  # one film on screen at a time
    assert w.study_box.table.item(0, 1).text() == "reviewed (1 corrected)"
    w.study_previous()
    _wait_for_film(w, qtbot, 0)
    assert w.session.pinned[4] and tuple(w.session.coords[4]) == pytest.approx(target)
    index = json.loads((films / STORE_DIR / "study.json").read_text())
    assert index["current"] == 0 and [f["status"] for f in index["films"]] == ["reviewed", "in progress", "not opened"]
    w.close_study()
    from napari_interactive_landmarks.study import Study

    with Study.open(films, model=MODEL) as again:  # the lock went with the closed study
        assert not again.read_only and again.resume_index() == 0


def test_a_second_viewer_on_the_same_study_is_told_it_is_read_only(make_napari_viewer_proxy, qtbot, notes, films):
    first = _widget(make_napari_viewer_proxy())
    first.open_study(films, model=MODEL)
    _wait_for_film(first, qtbot, 0)
    second = _widget(make_napari_viewer_proxy())
    second.open_study(films, model=MODEL)
    _wait_for_film(second, qtbot, 0)
    assert second.study.read_only
    assert any("read-only" in text for level, text in second.messages if level == "warning")
    assert "Read-only" in second.study_box.summary.text() and not second.study_box.reviewed_btn.isEnabled()
    before = first.study.annotation_path(0).read_bytes()
    s = second.session
    simulate_drag(second.points_layer, 0, tuple(s.coords[0] + 10))
    wait_until_idle(second, 120)
    assert first.study.annotation_path(0).read_bytes() == before  # the read-only viewer wrote nothing
    second.close_study()
    first.close_study()


def test_adapting_the_model_to_a_study_runs_in_the_background_and_switches(make_napari_viewer_proxy, qtbot, notes,
                                                                           tmp_path):
    root = tmp_path / "site"
    root.mkdir()
    for i in range(6):
        img, _ = make_phantom(np.random.default_rng(10 + i), shape=(512, 256), num_vertebrae=6)
        imsave(root / f"film{i}.png", (img * 255).astype(np.uint8), check_contrast=False)
    w = _widget(make_napari_viewer_proxy())
    w.open_study(root, model=MODEL)
    _wait_for_film(w, qtbot, 0)
    w.adapt_to_study(confirm=False, epochs=1)  # too few reviewed films: said, nothing runs
    qtbot.waitUntil(lambda: not w._adapting, timeout=60_000)
    assert any("at least 5 reviewed films; 0 are reviewed" in text for _, text in w.messages)
    for i in range(5):
        w.toggle_reviewed()
        if i < 4:
            w.study_next()
            _wait_for_film(w, qtbot, i + 1)
    w.adapt_to_study(epochs=1, threads=1)  # the dialog with base vs adapted is answered yes (notes fixture)
    assert not w.study_box.adapt_progress.isHidden()
    qtbot.waitUntil(lambda: not w._adapting, timeout=300_000)
    report = w.adapt_report
    assert report is not None and len(report.trained_on) == 4 and len(report.held_aside) == 1
    assert report.out.is_file() and report.out.parent == w.study.store / "models"
    assert any("held-aside films (1)" in text for _, text in w.messages)  # base vs adapted, said
    assert w.study.model == str(report.out)
    _wait_for_film(w, qtbot, 4)
    assert w.session.predictor.name == report.out.stem  # the open film now answered by the adapted model
    assert w.session.pinned.sum() == 0 and w.study.films[4].status == "reviewed"
    w.close_study()


def test_killing_napari_mid_study_loses_nothing_and_the_viewer_resumes_there(make_napari_viewer_proxy, qtbot, notes,
                                                                              films):
    """A napari process with the widget's study open is killed (SIGKILL) right after a drag on the second film; a new
    viewer opening the same folder resumes on that film, with the drag, the first film still reviewed."""
    import os
    import signal
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import os, signal
        import napari
        from napari_interactive_landmarks.napari._demo import wait_until_idle
        from napari_interactive_landmarks.napari._widget import LandmarkWidget, simulate_drag
        viewer = napari.Viewer(show=False)
        w = LandmarkWidget(viewer)
        viewer.window.add_dock_widget(w)
        w.open_study({str(films)!r}, model={MODEL!r})
        wait_until_idle(w, 120)
        w.toggle_reviewed()
        w.study_next()
        wait_until_idle(w, 120)
        from qtpy.QtWidgets import QApplication
        import time
        while w.study.current != 1 or not w.idle:
            QApplication.processEvents(); time.sleep(0.02)
        s = w.session
        simulate_drag(w.points_layer, w.layers.layer_point(6), (200.0, 100.0))
        wait_until_idle(w, 120)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    w = _widget(make_napari_viewer_proxy())
    w.open_study(films, model=MODEL)
    _wait_for_film(w, qtbot, 1)  # resumed on the film it was on
    assert w.session.pinned[6] and tuple(w.session.coords[6]) == (200.0, 100.0)
    assert w.study.films[0].status == "reviewed" and not w.study.read_only
    w.close_study()
