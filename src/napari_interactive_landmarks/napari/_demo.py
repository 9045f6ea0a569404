"""``napari-landmarks demo``: the whole interactive loop in a real viewer, scriptable for headless machines."""

from __future__ import annotations

import sys
import time
from pathlib import Path

DEFAULT_PHANTOM_MODEL = "phantom-spine"


def wait_until_idle(widget, timeout: float = 300.0) -> None:
    """Process Qt events until the widget has no pending edit, debounce or inference."""
    from qtpy.QtWidgets import QApplication

    t0 = time.time()
    while True:
        QApplication.processEvents()
        if widget.idle and widget.session is not None and widget.session.detected:
            return
        if time.time() - t0 > timeout:
            raise TimeoutError(f"the model did not finish within {timeout:.0f} s")
        time.sleep(0.005)


def run_demo(image=None, model=None, corrections=(), screenshot=None, json_out=None, keep_open=True,
             timeout=300.0, shape_prior=True, weights=None) -> int:
    import napari

    from ._reader import get_reader
    from ._sample_data import phantom_spine
    from ._widget import LandmarkWidget, simulate_drag

    if not keep_open:  # a scripted run: no kept corrections of an earlier session to offer (a dialog would block it)
        import os
        import tempfile

        os.environ["NAPARI_LANDMARKS_RECOVERY_DIR"] = tempfile.mkdtemp(prefix="napari-landmarks-demo-")
    viewer = napari.Viewer(title="napari-interactive-landmarks demo", show=True)
    try:
        viewer.window.resize(1500, 1000)
    except Exception:  # older napari
        pass
    if image:
        reader = get_reader(str(image))
        if reader is None:
            print(f"demo: cannot read {image} (PNG/JPEG/TIFF/BMP/DICOM expected)", file=sys.stderr)
            return 2
        layers = reader(str(image))
    else:
        layers = phantom_spine()
    for data, kwargs, kind in layers:
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = LandmarkWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Landmark detection", area="right")
    widget.shape_prior_box.setChecked(bool(shape_prior))
    if weights is not None:  # a model file of one's own (napari-landmarks build)
        if not Path(weights).is_file():
            print(f"demo: no weights file at {weights}", file=sys.stderr)
            return 2
        widget.use_weights_file(weights)
        model = None
    elif model is None and not image:
        model = DEFAULT_PHANTOM_MODEL
    if model is not None:  # otherwise the widget has picked the shipped model that fits the image
        if widget.model_combo.findText(model) < 0:
            print(f"demo: unknown model '{model}'; available: "
                  f"{[widget.model_combo.itemText(i) for i in range(widget.model_combo.count() - 1)]}", file=sys.stderr)
            return 2
        widget.model_combo.setCurrentText(model)
    widget.detect()
    wait_until_idle(widget, timeout)
    schema = widget.session.schema
    for key, (row, col) in corrections:
        k = schema.index(key)
        layer = widget.points_layer
        point = int(list(layer.features["index"]).index(k))
        simulate_drag(layer, point, (row, col))
        wait_until_idle(widget, timeout)
    viewer.reset_view()
    from qtpy.QtWidgets import QApplication

    for _ in range(10):  # let the panel's layout settle before anything is drawn to a file
        QApplication.processEvents()
    if screenshot:
        Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
        viewer.screenshot(str(screenshot), canvas_only=False, flash=False)
        print(f"wrote {screenshot}", file=sys.stderr)
    if json_out:
        # what the viewer's Save writes: each point with its expected error and region, the measurements
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        widget.session.save(Path(json_out).with_suffix(".json"), overwrite=True)
        print(f"wrote {json_out}", file=sys.stderr)
    if keep_open:
        napari.run()
    else:
        widget.session._dirty = False  # outputs written; nothing to ask about
        viewer.close()
    return 0
