"""Everyday viewer flows in a *shown* napari window (the canvas really paints, unlike the in-process widget tests),
run by tests/test_viewer_flows.py in a subprocess so that a crash of the GL driver is an exit code, not a dead
test session. Prints FLOW OK and exits 0 when the flow survived.

    python tests/scripts/viewer_flows.py remove-image | switch-model | delete-landmarks

- remove-image: detect, drag a point, remove the film's image layer, add it again, Detect.
- switch-model: detect, drag a point, choose another model in the widget, Detect.
- delete-landmarks: detect, drag a point, delete the landmark layer, undo (which draws the points again).

Each of these died with SIGSEGV inside glDrawArrays on Mesa llvmpipe under Xvfb (2026-12-03) until the widget kept
its old layers until the new points were in the viewer. The models are given conformal regions here (as a calibrated
card holds them), so that the regions layer is drawn, retired and removed in every flow too.
"""

import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

import napari  # noqa: E402
from qtpy.QtWidgets import QApplication, QMessageBox  # noqa: E402

from napari_interactive_landmarks.napari._demo import wait_until_idle  # noqa: E402
from napari_interactive_landmarks.napari._sample_data import phantom_spine  # noqa: E402
from napari_interactive_landmarks.napari._widget import LandmarkWidget, simulate_drag  # noqa: E402

QMessageBox.question = staticmethod(lambda *a, **k: QMessageBox.Yes)  # "discard the corrections?" → yes


def _with_regions():
    """Every model the widget loads gets 95 % regions (radius 3 for each landmark), as calibrate writes them."""
    from napari_interactive_landmarks.inference.predictor import Predictor
    from napari_interactive_landmarks.regions import RegionCalibration

    plain = Predictor.from_name.__func__

    def from_name(cls, name, *a, **k):
        p = plain(cls, name, *a, **k)
        p.regions = RegionCalibration(0.95, np.full(p.schema.num_landmarks, 3.0), pooled=True)
        return p

    Predictor.from_name = classmethod(from_name)


def pump(ms):
    """Let the canvas paint for a while (the crash happened on a paint)."""
    t = time.time()
    while (time.time() - t) * 1000 < ms:
        QApplication.processEvents()
        time.sleep(0.002)


def main(flow: str) -> int:
    _with_regions()
    viewer = napari.Viewer(show=True)
    data, kwargs, _ = phantom_spine()[0]
    film = viewer.add_image(data, **kwargs)
    w = LandmarkWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.model_combo.setCurrentText("phantom-spine")
    w.detect()
    wait_until_idle(w, 300)
    pump(300)
    simulate_drag(w.points_layer, 3, np.asarray(w.session.coords[3]) + 15.0)
    wait_until_idle(w, 300)
    pump(300)
    if flow == "remove-image":
        viewer.layers.remove(film)
        pump(500)
        viewer.add_image(data, **kwargs)
        pump(200)
        w.image_combo.setCurrentText(kwargs["name"])
        w.detect()
    elif flow == "switch-model":
        w.model_combo.setCurrentText("aasce-spine")
        w.detect()
    elif flow == "delete-landmarks":
        viewer.layers.remove(w.points_layer)
        pump(500)
        w.undo()
    else:
        print(f"unknown flow {flow}", file=sys.stderr)
        return 2
    wait_until_idle(w, 300)
    pump(1500)
    names = [lyr.name for lyr in viewer.layers]
    print("layers:", names, flush=True)
    assert w.points_layer is not None and w.points_layer in viewer.layers and w.points_layer.visible, names
    assert not any("(replaced)" in n for n in names), names  # the old layers are gone once the new ones are drawn
    w.layers.flush()
    assert w.regions_layer is not None and w.regions_layer in viewer.layers and len(w.regions_layer.data), names
    w.session._dirty = False  # no "unsaved corrections" question on close
    viewer.close()
    print("FLOW OK", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
