"""The dock widget: pick an image and a model, Detect, then drag wrong points — the model re-runs in a
background thread on each release and moves the other unpinned points. The widget adapts the headless
:class:`~napari_interactive_landmarks.inference.session.LandmarkSession`; in napari's console the same
methods are reachable as ``landmarks`` (``landmarks.detect()``, ``landmarks.correct(5, (812, 301))``,
``landmarks.undo()``, ``landmarks.points()``, ``landmarks.save("x.json")``).
"""

from __future__ import annotations

import time
from contextlib import nullcontext as _nullcontext
from pathlib import Path

import numpy as np
from napari.layers import Image, Points
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtGui import QBrush, QColor, QFont
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..inference.session import LandmarkSession, SessionError
from ._layers import META_KEY, layer_to_landmarks, points_layer_kwargs, skeleton_shapes

WEIGHTS_FILE_ITEM = "Weights file…"
# Edits arriving in one event-loop pass are merged; edits made while an inference runs are merged into a
# single follow-up run on the newest state (no fixed delay on a lone drag release).
DEBOUNCE_MS = 0

SHORTCUTS = [
    ("Shift-D", "detect", "Detect (or refine with the pinned points)"),
    ("Alt-Z", "undo", "Undo the last correction"),
    ("Alt-Shift-Z", "redo", "Redo"),
    ("Alt-U", "unpin_selected", "Unpin the selected point(s): hand them back to the model"),
    ("Alt-R", "reset", "Reset to the automatic prediction"),
    ("Alt-N", "go_to_suggested", "Go to the suggested next point (highest uncertainty)"),
]


def _action(event) -> str:
    a = getattr(event, "action", None)
    return str(getattr(a, "value", a))


def _as_vectors(lines) -> np.ndarray:
    """Line segments [(p, q), ...] → napari Vectors data (N, 2, 2): start point and projection q − p."""
    if not len(lines):
        return np.zeros((0, 2, 2))
    seg = np.asarray(lines, dtype=float).reshape(-1, 2, 2)
    return np.stack([seg[:, 0], seg[:, 1] - seg[:, 0]], axis=1)


def simulate_drag(layer: Points, point: int, position) -> None:
    """Move one point of ``layer`` exactly as a mouse drag does: CHANGING, the move, one CHANGED on release
    with the moved index (napari 0.9's event sequence). Used by the demo and by tests."""
    layer.events.data(value=layer.data, action="changing", data_indices=(point,), vertex_indices=((),))
    with layer.events.data.blocker():
        data = layer.data.copy()
        data[point, -2:] = position
        layer.data = data
    layer.events.data(value=layer.data, action="changed", data_indices=(point,), vertex_indices=((),))


class LandmarkWidget(QWidget):
    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.session: LandmarkSession | None = None
        self.predictor = None
        self.points_layer: Points | None = None
        self.skeleton_layer = None
        self.measurement_layer = None
        self.uncertainty_layer = None
        self.measurements: dict = {}
        self.image_layer: Image | None = None
        self._busy = 0
        self._pending_pins: dict = {}
        self._unsubscribe = None  # from the current session's change events
        self._load_generation = 0
        self.timings: list[dict] = []  # drag release → layer updated (for the benchmark)
        self._release_t: float | None = None
        self._build_ui()
        self._refresh_image_choices()
        self._refresh_model_choices()
        for ev in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            ev.connect(self._refresh_image_choices)
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(self._flush_pins)
        self._bind_keys()
        self.console = ViewerSession(self)
        try:
            self.viewer.update_console({"landmarks": self.console})
        except Exception:  # the console is optional (napari-console may be absent)
            pass

    # ------------------------------------------------------------------ UI
    def _build_ui(self):
        self.setMaximumWidth(380)
        lay = QVBoxLayout(self)
        grid = QGridLayout()
        grid.addWidget(QLabel("Image"), 0, 0)
        self.image_combo = QComboBox()
        grid.addWidget(self.image_combo, 0, 1)
        grid.addWidget(QLabel("Model"), 1, 0)
        self.model_combo = QComboBox()
        self.model_combo.activated.connect(self._on_model_chosen)
        grid.addWidget(self.model_combo, 1, 1)
        lay.addLayout(grid)
        self.detect_btn = QPushButton("Detect")
        self.detect_btn.setToolTip("Predict all landmarks (Shift-D); after corrections it refines with them")
        self.detect_btn.clicked.connect(self.detect)
        lay.addWidget(self.detect_btn)
        row = QHBoxLayout()
        self.undo_btn = QPushButton("Undo")
        self.redo_btn = QPushButton("Redo")
        self.unpin_btn = QPushButton("Unpin selected")
        self.reset_btn = QPushButton("Reset")
        for b, f in ((self.undo_btn, self.undo), (self.redo_btn, self.redo), (self.unpin_btn, self.unpin_selected),
                     (self.reset_btn, self.reset)):
            b.clicked.connect(f)
            row.addWidget(b)
        lay.addLayout(row)
        row2 = QHBoxLayout()
        self.save_btn = QPushButton("Save landmarks…")
        self.save_btn.clicked.connect(self._save_dialog)
        self.load_btn = QPushButton("Load landmarks…")
        self.load_btn.clicked.connect(self._load_dialog)
        row2.addWidget(self.save_btn)
        row2.addWidget(self.load_btn)
        lay.addLayout(row2)
        self.ere_box = QGroupBox("Check next (expected radial error)")
        el = QVBoxLayout(self.ere_box)
        self.suggest_label = QLabel("")
        self.suggest_label.setWordWrap(True)
        el.addWidget(self.suggest_label)
        self.ere_table = QTableWidget(0, 2)
        self.ere_table.setHorizontalHeaderLabels(["landmark", "ERE"])
        self.ere_table.horizontalHeader().setStretchLastSection(True)
        self.ere_table.verticalHeader().setVisible(False)
        self.ere_table.setEditTriggers(QTableWidget.NoEditTriggers)
        self.ere_table.setSelectionBehavior(QTableWidget.SelectRows)
        self.ere_table.cellDoubleClicked.connect(lambda row, col: self.go_to(self._ere_rows[row]))
        self.ere_table.setMaximumHeight(180)
        el.addWidget(self.ere_table)
        goto = QPushButton("Go to suggested point")
        goto.setToolTip("Centre the view on the unpinned landmark with the highest ERE and select it (Alt-N)")
        goto.clicked.connect(self.go_to_suggested)
        el.addWidget(goto)
        self.show_uncertainty = QCheckBox("Show uncertainty map")
        self.show_uncertainty.setChecked(True)
        self.show_uncertainty.toggled.connect(self._toggle_uncertainty)
        el.addWidget(self.show_uncertainty)
        lay.addWidget(self.ere_box)
        self._ere_rows: list[int] = []
        self.meas_box = QGroupBox("Measurements")
        ml = QVBoxLayout(self.meas_box)
        self.meas_table = QTableWidget(0, 2)
        self.meas_table.setHorizontalHeaderLabels(["measurement", "value"])
        self.meas_table.horizontalHeader().setStretchLastSection(True)
        self.meas_table.verticalHeader().setVisible(False)
        self.meas_table.setEditTriggers(QTableWidget.NoEditTriggers)
        ml.addWidget(self.meas_table)
        lay.addWidget(self.meas_box)
        self.progress = QProgressBar()
        self.progress.setRange(0, 0)
        self.progress.setVisible(False)
        lay.addWidget(self.progress)
        self.status = QLabel("Open a radiograph, choose a model, press Detect.")
        self.status.setWordWrap(True)
        lay.addWidget(self.status)
        box = QGroupBox("Shortcuts")
        bl = QVBoxLayout(box)
        keys = QLabel("<br>".join(f"<b>{k}</b> — {d}" for k, _, d in SHORTCUTS)
                      + "<br>Drag a point to correct it (it is pinned: the model never moves it).")
        keys.setWordWrap(True)
        bl.addWidget(keys)
        lay.addWidget(box)
        lay.addStretch(1)
        self._update_buttons()

    def _update_buttons(self):
        has = self.session is not None and self.session.detected
        self.undo_btn.setEnabled(has and self.session.can_undo)
        self.redo_btn.setEnabled(has and self.session.can_redo)
        for b in (self.unpin_btn, self.reset_btn, self.save_btn):
            b.setEnabled(has)

    def _set_busy(self, on: bool, text: str | None = None):
        self._busy = max(0, self._busy + (1 if on else -1))
        self.progress.setVisible(self._busy > 0)
        if text:
            self.status.setText(text)

    def _refresh_image_choices(self, event=None):
        current = self.image_combo.currentText()
        names = [lyr.name for lyr in self.viewer.layers if isinstance(lyr, Image)]
        self.image_combo.clear()
        self.image_combo.addItems(names)
        if current in names:
            self.image_combo.setCurrentText(current)
        if self.points_layer is not None and self.points_layer not in self.viewer.layers:
            self._forget_points_layer()

    def _refresh_model_choices(self):
        from ..weights import load_manifest

        self.model_combo.clear()
        try:
            manifest = load_manifest()
        except Exception as exc:  # a broken manifest must not break the widget
            manifest = {}
            show_warning(f"weights manifest unreadable: {exc}")
        for name, entry in manifest.items():
            self.model_combo.addItem(name)
            self.model_combo.setItemData(self.model_combo.count() - 1, entry.get("description", ""), 3)  # tooltip
        self.model_combo.addItem(WEIGHTS_FILE_ITEM)
        self._weights_file = None

    def _on_model_chosen(self, index):
        if self.model_combo.itemText(index) == WEIGHTS_FILE_ITEM:
            path, _ = QFileDialog.getOpenFileName(self, "Model weights", "", "safetensors (*.safetensors)")
            if path:
                self._weights_file = path
                self.model_combo.setItemText(index, f"{Path(path).name} (file)")

    def _bind_keys(self):
        for key, method, _ in SHORTCUTS:
            fn = getattr(self, method)

            def handler(viewer, fn=fn):
                fn()

            try:
                self.viewer.bind_key(key, handler, overwrite=False)
            except (ValueError, TypeError):
                pass  # already bound by napari or another plugin: the button still works

    # ------------------------------------------------------------------ model and image
    def selected_model(self) -> tuple[str, str | None]:
        text = self.model_combo.currentText()
        if text.endswith("(file)") and self._weights_file:
            return Path(self._weights_file).stem, self._weights_file
        return text, None

    def _current_image_layer(self) -> Image | None:
        name = self.image_combo.currentText()
        for lyr in self.viewer.layers:
            if isinstance(lyr, Image) and lyr.name == name:
                return lyr
        return None

    def _image_array(self, layer: Image) -> np.ndarray:
        data = layer.data
        if isinstance(data, (list, tuple)):  # multiscale: full resolution
            data = data[0]
        arr = np.asarray(data)
        if layer.rgb:
            return arr
        if arr.ndim > 2:
            raise SessionError(
                f"'{layer.name}' is a {arr.ndim}-D image {tuple(arr.shape)}; landmark detection works on one 2-D "
                "radiograph: open a single slice or frame")
        return arr

    def _spacing(self, layer: Image):
        meta = (layer.metadata or {}).get(META_KEY, {})
        if meta.get("spacing_mm"):
            return tuple(meta["spacing_mm"])
        sc = tuple(float(s) for s in layer.scale[-2:])
        return None if sc == (1.0, 1.0) else sc

    def _confirm_discard(self, what: str) -> bool:
        if self.session is None or not self.session.dirty:
            return True
        ans = QMessageBox.question(self, "Unsaved corrections",
                                   f"There are unsaved landmark corrections. {what} anyway?",
                                   QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
        return ans == QMessageBox.Yes

    def _ensure_session(self, on_ready):
        """Load the model (worker) and prepare the image if needed, then call on_ready()."""
        layer = self._current_image_layer()
        if layer is None:
            show_warning("No image layer: open a radiograph first (File › Open, or drag and drop).")
            return
        name, path = self.selected_model()
        if name == WEIGHTS_FILE_ITEM or not name:
            show_warning("Choose a model first (or a weights file).")
            return
        need_model = self.predictor is None or self.predictor.name != name
        need_image = need_model or self.session is None or self.image_layer is not layer
        if (need_model or need_image) and self.session is not None and self.session.detected:
            if not self._confirm_discard("Start over on a new image/model"):
                return
        if not need_model and not need_image:
            on_ready()
            return
        try:
            image = self._image_array(layer)
        except SessionError as exc:
            show_error(str(exc))
            return

        def load():
            from ..inference import Predictor

            pred = self.predictor
            if need_model:
                pred = Predictor.from_file(path) if path else Predictor.from_name(name)
            session = LandmarkSession(pred, image, spacing=self._spacing(layer),
                                      image_path=((layer.metadata or {}).get(META_KEY, {}) or {}).get("image_path")
                                      or getattr(layer.source, "path", None))
            return pred, session

        self._load_generation += 1
        gen = self._load_generation
        self._set_busy(True, f"Loading model '{name}'…" if need_model else "Preparing the image…")
        worker = create_worker(load, _start_thread=False)

        def done(result):
            self._set_busy(False)
            if gen != self._load_generation:
                return
            if self._unsubscribe is not None:
                self._unsubscribe()
            self.predictor, self.session = result
            self._unsubscribe = self.session.subscribe(self._on_session_changed)
            self.image_layer = layer
            self._forget_points_layer(remove=True)
            on_ready()

        def failed(exc):
            self._set_busy(False, f"Could not start: {exc}")
            show_error(f"Could not start: {exc}")

        worker.returned.connect(done)
        worker.errored.connect(failed)
        worker.start()
        self._worker = worker

    # ------------------------------------------------------------------ actions
    def detect(self):
        def go():
            self._schedule(immediate=True, text="Detecting…")

        self._ensure_session(go)

    # the session announces every change it makes; the layers follow in _on_session_changed
    def undo(self):
        if self.session and self.session.undo():
            self._pending_pins.clear()  # a drag not yet sent belonged to the state undone

    def redo(self):
        if self.session and self.session.redo():
            self._pending_pins.clear()

    def reset(self):
        if self.session and self.session.detected:
            self.session.reset()

    def unpin_selected(self):
        if not (self.session and self.session.detected and self.points_layer is not None):
            return
        feats = self.points_layer.features
        sel = sorted(self.points_layer.selected_data)
        idx = [int(feats["index"].iloc[i]) for i in sel if bool(feats["pinned"].iloc[i])]
        if not idx:
            show_info("Select one or more corrected (pinned) points to unpin.")
            return
        for i in idx:
            self.session.unpin_only(i)
        self._schedule(text="Re-running without the unpinned points…")

    # ------------------------------------------------------------------ inference scheduling
    def _schedule(self, immediate=False, text="Updating…"):
        self.status.setText(text)
        if immediate:
            self._start_inference()
        else:
            self._debounce.start()

    @property
    def _inflight(self) -> bool:
        return self.session is not None and self.session.running

    def _flush_pins(self):
        if self._pending_pins and self.session is not None:
            pins, self._pending_pins = self._pending_pins, {}
            try:
                self.session.pin(pins)
            except (ValueError, SessionError) as exc:
                show_warning(str(exc))
                self._sync_layer()
                return
            self._update_buttons()
        self._start_inference()

    def _start_inference(self, req=None):
        """Run the session's next inference in a worker (the session decides: one at a time, edits made while it
        runs merged into one follow-up run)."""
        if self.session is None:
            return
        req = req or self.session.begin()
        if req is None:
            return  # one is running; the session hands out the follow-up when it returns
        self._set_busy(True)
        worker = create_worker(self.session.compute, req, _start_thread=False)
        worker.returned.connect(self._on_result)
        worker.errored.connect(self._on_error)
        worker.start()
        self._worker = worker

    def _on_result(self, result):
        self._set_busy(False)
        applied_before = self.session.generation == result[0].generation
        nxt = self.session.finish(result)  # the layers follow through _on_session_changed
        if applied_before:
            n = int(self.session.pinned.sum())
            self.status.setText(f"{self.session.num_landmarks} landmarks · {n} corrected by hand")
            if self._release_t is not None:
                self.timings.append({"release_to_layer_ms": (time.perf_counter() - self._release_t) * 1000})
                self._release_t = None
        if nxt is not None and self._pending_pins:
            self.session.cancel()  # a drag is still being debounced: its flush asks for the run
        elif nxt is not None:
            self._start_inference(nxt)

    def _on_error(self, exc):
        if self.session is not None:
            self.session.cancel()
        self._set_busy(False, f"Inference failed: {exc}")
        show_error(f"Inference failed: {exc}")

    # ------------------------------------------------------------------ layers
    def _forget_points_layer(self, remove=False):
        for attr in ("points_layer", "skeleton_layer", "measurement_layer", "uncertainty_layer"):
            lyr = getattr(self, attr)
            if lyr is not None:
                if attr == "points_layer":
                    try:
                        lyr.events.data.disconnect(self._on_points_data)
                    except Exception:
                        pass
                if remove and lyr in self.viewer.layers:
                    self.viewer.layers.remove(lyr)
            setattr(self, attr, None)

    def _layer_kwargs(self):
        s = self.session
        return points_layer_kwargs(
            s.coords, list(s.schema.landmarks), pinned=s.pinned, scores=s.scores, landmark_set=s.schema.name,
            model=s.predictor.name, image_path=s.image_path, image_shape=list(s.image_shape),
            spacing=None if s.spacing is None else list(np.broadcast_to(s.spacing, 2)),
            name=f"landmarks ({s.predictor.name})")

    def _sync_layer(self):
        """Write the session's state into the Points layer (and skeleton) without triggering ourselves."""
        s = self.session
        if s is None or not s.detected:
            return
        data, kwargs = self._layer_kwargs()
        ere = s.ere
        idx = kwargs["features"]["index"].to_numpy()
        if ere is not None:  # per-point ERE goes into the same features write (one layer update per result)
            kwargs["features"]["ere"] = ere[idx]
            kwargs["feature_defaults"] = {**kwargs["feature_defaults"], "ere": np.nan}
        cue = self._ere_cue(ere, idx)
        scale = self.image_layer.scale[-2:] if self.image_layer is not None else (1, 1)
        translate = self.image_layer.translate[-2:] if self.image_layer is not None else (0, 0)
        if self.points_layer is None or self.points_layer not in self.viewer.layers:
            kwargs.update(scale=scale, translate=translate)
            if cue is not None:
                kwargs.update(border_width=cue[0], border_color=cue[1])
            self.points_layer = self.viewer.add_points(data, **kwargs)
            self.points_layer.events.data.connect(self._on_points_data)
            self.points_layer.mode = "select"
        else:
            lyr = self.points_layer
            # every property below would refresh the layer (re-slice, re-render 68 labels) on its own: hold the
            # refreshes and do one at the end (napari's own batching; plain sequential updates without it)
            # (only when the point count is unchanged: after a refused add/delete the view indices must be
            # recomputed before the labels are, so that restore goes the plain way)
            batch = getattr(lyr, "_block_refresh", None) if len(lyr.data) == len(data) else None
            with lyr.events.data.blocker(self._on_points_data), (batch() if batch else _nullcontext()):
                selected = set(lyr.selected_data)
                lyr.data = data
                lyr.features = kwargs["features"]
                lyr.size = kwargs["size"]
                if cue is not None:
                    lyr.border_width = cue[0]
                    lyr.border_color = cue[1]
                lyr.selected_data = {i for i in selected if i < len(data)}
                lyr.refresh_colors(update_color_mapping=False)
            if batch:
                lyr.refresh()
        self._sync_skeleton(scale, translate)
        self._sync_measurements(scale, translate)
        self._sync_uncertainty(scale, translate)
        self._update_buttons()

    # ------------------------------------------------------------------ uncertainty
    def _ere_cue(self, ere, idx):
        """(border widths, border colours) for the points in layer order: red and thicker for the most
        uncertain unpinned points (top 20 % by ERE, or the highest when few are left); None without ERE."""
        if ere is None:
            return None
        s = self.session
        e_pts = ere[idx]
        free = ~s.pinned[idx]
        top = np.zeros(len(idx), bool)
        if free.any() and np.isfinite(e_pts[free]).any():
            cut = np.nanpercentile(np.where(free, e_pts, np.nan), 80) if free.sum() > 4 else np.nanmax(e_pts[free])
            top = free & (e_pts >= cut)
        colors = np.tile(np.array([0.0, 0.0, 0.0, 1.0]), (len(idx), 1))
        colors[top] = [1.0, 0.32, 0.32, 1.0]
        return np.where(top, 0.3, 0.1), colors

    def _sync_uncertainty(self, scale, translate):
        """Uncertainty map layer, the ERE-sorted list and the suggested next correction (the ERE cue on the
        points is written with the points, in ``_sync_layer``)."""
        s = self.session
        ere = s.ere
        self.ere_box.setVisible(ere is not None)
        if ere is None:
            return
        unit, factor = ("mm", float(np.mean(s.spacing))) if s.spacing is not None else ("px", 1.0)
        nxt = s.suggest_next()
        # list: unpinned landmarks by decreasing ERE; rows are reused (text and style set in place)
        order = [int(i) for i in np.argsort(-np.nan_to_num(ere, nan=-1.0)) if not s.pinned[i]]
        self._ere_rows = order
        t = self.ere_table
        t.setUpdatesEnabled(False)
        try:
            if t.rowCount() != len(order):
                t.setRowCount(len(order))
            plain, bold = QFont(), QFont()
            bold.setBold(True)
            red, normal = QBrush(QColor("#ff5252")), QBrush()
            for row, i in enumerate(order):
                texts = (s.schema.landmarks[i], "–" if not np.isfinite(ere[i]) else f"{ere[i] * factor:.1f} {unit}")
                for col, text in enumerate(texts):
                    it = t.item(row, col)
                    if it is None:
                        it = QTableWidgetItem()
                        t.setItem(row, col, it)
                    it.setText(text)
                    it.setFont(bold if i == nxt else plain)
                    it.setForeground(red if i == nxt else normal)
        finally:
            t.setUpdatesEnabled(True)
        if nxt is None:
            self.suggest_label.setText("All landmarks are corrected by hand.")
        else:
            calibrated = s.predictor.temperatures is not None
            self.suggest_label.setText(
                f"Suggested next: <b>{s.schema.landmarks[nxt]}</b> (ERE {ere[nxt] * factor:.1f} {unit})"
                + ("" if calibrated else "<br><i>uncalibrated model: ERE ranks points but is not a calibrated error</i>"))
        # the map
        umap = s.uncertainty_map
        if umap is None:
            return
        (sy, sx), (ty, tx) = s.uncertainty_geometry()
        u_scale = (sy * float(scale[0]), sx * float(scale[1]))
        u_translate = (float(translate[0]) + ty * float(scale[0]), float(translate[1]) + tx * float(scale[1]))
        lyr = self.uncertainty_layer
        if lyr is None or lyr not in self.viewer.layers:
            self.uncertainty_layer = self.viewer.add_image(
                umap, name=f"uncertainty ({s.predictor.name})", colormap="inferno", blending="additive",
                opacity=0.55, contrast_limits=(0.0, 1.0), scale=u_scale, translate=u_translate,
                visible=self.show_uncertainty.isChecked(), interpolation2d="linear")
            # under the outlines and points
            self.viewer.layers.move(self.viewer.layers.index(self.uncertainty_layer),
                                    self.viewer.layers.index(self.image_layer) + 1 if self.image_layer in self.viewer.layers else 0)
            self.viewer.layers.selection.active = self.points_layer
        else:
            # placement changes only with the image: setting it anyway would recompute the viewer's extent twice
            if not np.allclose(lyr.scale[-2:], u_scale) or not np.allclose(lyr.translate[-2:], u_translate):
                lyr.scale = u_scale
                lyr.translate = u_translate
            lyr.data = umap

    def _toggle_uncertainty(self, on):
        if self.uncertainty_layer is not None and self.uncertainty_layer in self.viewer.layers:
            self.uncertainty_layer.visible = bool(on)

    def go_to(self, index: int):
        """Centre the view on a landmark and select its point."""
        if not (self.session and self.session.detected and self.points_layer is not None):
            return
        feats = self.points_layer.features
        point = int(list(feats["index"]).index(int(index)))
        world = self.points_layer.data_to_world(self.points_layer.data[point])
        self.viewer.camera.center = tuple(world)
        self.points_layer.selected_data = {point}
        self.viewer.layers.selection.active = self.points_layer

    def go_to_suggested(self):
        if self.session and self.session.detected:
            nxt = self.session.suggest_next()
            if nxt is not None:
                self.go_to(nxt)

    def _sync_measurements(self, scale, translate):
        """Recompute the clinical measurements, fill the panel and draw the lines they are measured between."""
        from ..measurements.core import format_value

        self.measurements = self.session.measurements()
        t = self.meas_table
        t.setRowCount(len(self.measurements))
        lines = []
        for row, m in enumerate(self.measurements.values()):
            name = QTableWidgetItem(m.name)
            name.setToolTip(m.definition)
            val = QTableWidgetItem(format_value(m.value, m.unit) if m.available else f"unavailable: {m.reason}")
            val.setToolTip(m.definition if m.available else f"unavailable: {m.reason}")
            t.setItem(row, 0, name)
            t.setItem(row, 1, val)
            if m.available:
                lines += [np.asarray(seg, float) for seg in (m.details or {}).get("lines", [])]
        self.meas_box.setVisible(bool(self.measurements))
        t.resizeColumnsToContents()
        t.setMaximumHeight(32 + 30 * min(len(self.measurements), 10))
        vectors = _as_vectors(lines)
        if self.measurement_layer is None or self.measurement_layer not in self.viewer.layers:
            if not lines:
                return
            self.measurement_layer = self.viewer.add_vectors(
                vectors, edge_color="#ff4081", edge_width=max(1.5, max(self.session.image_shape) / 400), length=1.0,
                vector_style="line", name=f"measurement lines ({self.session.predictor.name})", scale=scale,
                translate=translate, opacity=0.9)
            self.viewer.layers.move(self.viewer.layers.index(self.measurement_layer),
                                    self.viewer.layers.index(self.points_layer))
            self.viewer.layers.selection.active = self.points_layer
        else:
            self.measurement_layer.data = vectors

    def _sync_skeleton(self, scale, translate):
        edges = self.session.schema.edges
        if not edges:
            return
        vectors = _as_vectors(skeleton_shapes(self.session.coords, edges))
        if self.skeleton_layer is None or self.skeleton_layer not in self.viewer.layers:
            # a Vectors layer, not Shapes: updating 68 line shapes re-triangulates them (hundreds of ms on the
            # main thread); vectors update in a few ms
            self.skeleton_layer = self.viewer.add_vectors(
                vectors, edge_color="#ffd54f", edge_width=max(1.0, max(self.session.image_shape) / 600), length=1.0,
                vector_style="line", name=f"outline ({self.session.predictor.name})", scale=scale, translate=translate,
                opacity=0.7)
            # keep the points on top and active
            self.viewer.layers.move(self.viewer.layers.index(self.skeleton_layer),
                                    self.viewer.layers.index(self.points_layer))
            self.viewer.layers.selection.active = self.points_layer
        else:
            self.skeleton_layer.data = vectors

    def _on_session_changed(self, change: str):
        """The session changed its points: bring the layers up to date. A hand-placed point ('pinned', from a
        drag) is already where the layer shows it; the model's answer follows as 'result'."""
        if change == "image":
            return
        if change == "pinned":
            self._update_buttons()
            return
        self._sync_layer()

    def _on_points_data(self, event):
        action = _action(event)
        lyr = self.points_layer
        if self.session is None or not self.session.detected or lyr is None:
            return
        if action in ("added", "removed"):
            # one point per landmark: undo the structural edit, say what to do instead
            self._sync_layer()
            if action == "added":
                show_warning("Landmark layers hold exactly one point per landmark: drag a point to correct it "
                             "(extra points are not kept).")
            else:
                show_warning("Landmarks cannot be deleted: drag the point where it belongs, or 'Unpin selected' "
                             "to hand it back to the model.")
            return
        if action != "changed":
            return
        # Which points moved? Compare every point with the session (robust to any edit that reports
        # 'changed': a drag release, a scripted layer.data assignment, a paste).
        feats = lyr.features
        cur = self.session.coords
        moved = {}
        for i in range(len(lyr.data)):
            k = int(feats["index"].iloc[i])
            pos = tuple(float(v) for v in lyr.data[i][-2:])
            want = self._pending_pins.get(k, cur[k])
            if not np.allclose(pos, want, atol=1e-6):
                moved[k] = pos
        if not moved:
            return
        self._pending_pins.update(moved)
        self._release_t = time.perf_counter()
        self._schedule(text=f"Correcting {len(moved)} point(s)…")

    # ------------------------------------------------------------------ files
    def _save_dialog(self):
        if not (self.session and self.session.detected):
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save landmarks", "landmarks.json", "Landmarks (*.json *.csv)")
        if path:
            self.save(path, overwrite=True)  # the dialog has already asked about overwriting

    def save(self, path, overwrite=False):
        try:
            out = self.session.save(path, overwrite=overwrite)
        except FileExistsError as exc:
            show_warning(f"{exc}")
            return None
        show_info(f"Saved {out}")
        return out

    def _load_dialog(self):
        path, _ = QFileDialog.getOpenFileName(self, "Load landmarks", "", "Landmarks (*.json *.csv)")
        if path:
            self.load(path)

    def load(self, path):
        def go():
            try:
                self.session.load(path)
            except (ValueError, SessionError, OSError) as exc:
                show_error(f"Cannot load {Path(path).name}: {exc}")
                return
            self.status.setText(f"Loaded {Path(path).name}.")

        self._ensure_session(go)

    # ------------------------------------------------------------------ closing
    def closeEvent(self, event):  # noqa: N802 (Qt API)
        if not self._confirm_discard("Close the landmark widget"):
            event.ignore()
            return
        super().closeEvent(event)

    def hideEvent(self, event):  # noqa: N802 — closing the dock hides the widget first
        if self.session is not None and self.session.dirty and self.isVisible() is False:
            show_warning("The landmark widget was closed with unsaved corrections; they are kept in the "
                         "points layer — save it with File › Save Selected Layers.")
        super().hideEvent(event)


class ViewerSession:
    """The console face of the widget: the headless session's methods, each reflected in the viewer.

    In napari's console: ``landmarks.detect()``, ``landmarks.correct(index, (row, col))``, ``landmarks.unpin(i)``,
    ``landmarks.undo()``, ``landmarks.redo()``, ``landmarks.reset()``, ``landmarks.points()``,
    ``landmarks.save(path)``; ``landmarks.session`` is the headless LandmarkSession itself.
    """

    def __init__(self, widget: LandmarkWidget):
        self._w = widget

    @property
    def session(self) -> LandmarkSession | None:
        return self._w.session

    def _need(self):
        if self._w.session is None:
            raise SessionError("press Detect in the widget first (or call detect() once a model is loaded)")
        return self._w.session

    # the viewer follows the session's change events: the console calls the session directly
    def detect(self):
        return self._need().detect()

    def correct(self, index, position):
        return self._need().correct(index, position)

    def unpin(self, index):
        return self._need().unpin(index)

    def undo(self):
        return self._need().undo()

    def redo(self):
        return self._need().redo()

    def reset(self):
        return self._need().reset()

    def points(self):
        return self._need().points()

    def save(self, path, overwrite=False):
        return self._need().save(path, overwrite=overwrite)

    def __repr__(self):
        s = self._w.session
        if s is None:
            return "<landmarks: no session yet — press Detect>"
        return f"<landmarks: model {s.predictor.name}, {s.num_landmarks} points, {int(s.pinned.sum()) if s.detected else 0} pinned>"
