"""The dock widget: pick an image and a model, Detect, then drag wrong points — the model re-runs in a
background thread on each release and moves the other unpinned points.

Three parts, each with one job:

* the headless :class:`~napari_interactive_landmarks.inference.session.LandmarkSession` owns the points, the
  edits, undo/redo and the scheduling of inference (one run at a time, edits made meanwhile merged into one
  follow-up) and announces every change;
* :class:`~napari_interactive_landmarks.napari._layer_sync.LandmarkLayers` (the layer-sync adapter) listens to
  the session and writes the layers, and turns drags in the Points layer into ``session.pin``;
* :class:`LandmarkWidget` (this panel) holds the buttons, the tables and the message line, listens to the
  session for them, and runs what the session hands out in a worker thread.

In napari's console the same methods are reachable as ``landmarks`` (``landmarks.detect()``,
``landmarks.correct(5, (812, 301))``, ``landmarks.undo()``, ``landmarks.points()``, ``landmarks.save("x.json")``).
"""

from __future__ import annotations

import time
import sys
from pathlib import Path

import numpy as np
from napari.layers import Image, Points
from napari.qt.threading import create_worker
from napari.utils.notifications import show_warning
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from ..inference.session import LandmarkSession, PartialFileError, SessionError
from ..model_choice import choose_model_for_image, misfit_reason
from ._layer_sync import LandmarkLayers
from ._layers import META_KEY
from ._panels import CheckNextPanel, MeasurementsPanel
from ._pacs import PacsPanel
from ._study import StudyPanel

WEIGHTS_FILE_ITEM = "Weights file…"
# unpinning several points re-runs once, from the event loop's next pass; a drag re-runs at once (edits made
# while an inference runs are merged by the session into a single follow-up run)
DEBOUNCE_MS = 0
PROGRESS_AFTER_MS = 400

SHORTCUTS = [
    ("Shift-D", "detect", "Detect (or refine with the pinned points)"),
    ("Alt-Z", "undo", "Undo the last correction"),
    ("Alt-Shift-Z", "redo", "Redo"),
    ("Alt-U", "unpin_selected", "Unpin the selected point(s): hand them back to the model"),
    ("Alt-R", "reset", "Reset to the automatic prediction"),
    ("Alt-N", "go_to_suggested", "Go to the suggested next point (highest uncertainty)"),
    ("Alt-Right", "study_next", "Study: the next film"),
    ("Alt-Left", "study_previous", "Study: the previous film"),
    ("Alt-V", "toggle_reviewed", "Study: mark this film reviewed (or not)"),
]
_MESSAGE_STYLE = {"info": "", "warning": "color: #ffb74d;", "error": "color: #ff5252; font-weight: bold;"}


def simulate_drag(layer: Points, point: int, position) -> None:
    """Move one point of ``layer`` exactly as a mouse drag does: CHANGING, the move, one CHANGED on release
    with the moved index (napari 0.9's event sequence). Used by the demo and by tests."""
    layer.events.data(value=layer.data, action="changing", data_indices=(point,), vertex_indices=((),))
    with layer.events.data.blocker():
        data = layer.data.copy()
        data[point, -2:] = position
        layer.data = data
    layer.events.data(value=layer.data, action="changed", data_indices=(point,), vertex_indices=((),))


def _never_raises(fn, *args):
    """Run ``fn(*args)`` in a worker and hand back ``(result, None)`` or ``(None, exception)``: a failure is
    a value the panel reports in its message line, never an exception for napari's error relay (which sends
    it to ``sys.excepthook`` and, in a script without ``napari.run()``, aborts the process)."""
    try:
        return fn(*args), None
    except Exception as exc:  # noqa: BLE001 — every failure is reported to the user
        return None, exc


def _describe(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__  # e.g. a bare MemoryError


def _full_resolution(layer):
    """An image layer's data (the full-resolution level of a multiscale one), not loaded."""
    return layer.data[0] if layer.multiscale else layer.data


class LandmarkWidget(QWidget):
    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.session: LandmarkSession | None = None
        self.predictor = None
        self.layers: LandmarkLayers | None = None
        self.image_layer: Image | None = None
        # layers of a previous adapter, hidden, removed once the current adapter's points are in the viewer (see
        # _retire_layers: removing them first crashes software OpenGL)
        self._retired: list = []
        self._manifest: dict = {}
        self._busy = 0
        self._unsubscribe = None  # from the current session's change events
        self._load_generation = 0
        self._model_chosen_by_user = False  # once the user picks a model, images no longer choose one
        self._auto_picking = False
        self._pending_warning: str | None = None
        self._fitted = False
        self.timings: list[dict] = []  # drag release → layer updated (for the benchmark)
        self._release_t: float | None = None
        self.messages: list[tuple[str, str]] = []  # (level, text) of every message shown, newest last
        self.study = None  # a study.Study when a folder of films is open (dataset mode)
        self._adapting = False
        self.adapt_report = None  # the last finetune.FinetuneReport of "Adapt the model to this study"
        self.pacs_sent = None  # the last report sent to the PACS
        self._study_layer = None  # the image layer this widget added for the study's current film
        self._build_ui()
        self._refresh_model_choices()
        self._refresh_image_choices()
        for ev in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            ev.connect(self._refresh_image_choices)
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(self._start_inference)
        # the viewer closed (this widget destroyed) with unsaved corrections: they go to the session's recovery file;
        # the callback holds this dict, not the widget, whose Qt parts are gone by then
        self._recovery_holder = {"session": None}
        self.destroyed.connect(lambda *_a, held=self._recovery_holder: _keep_on_destroy(held))
        self._progress_delay = QTimer(self)
        self._progress_delay.setSingleShot(True)
        self._progress_delay.setInterval(PROGRESS_AFTER_MS)
        self._progress_delay.timeout.connect(self._show_progress)
        self._panel_refill = QTimer(self)
        self._panel_refill.setSingleShot(True)
        self._panel_refill.setInterval(0)
        self._panel_refill.timeout.connect(self._fill_panel)
        self._bind_keys()
        self.console = ViewerSession(self)
        try:
            self.viewer.update_console({"landmarks": self.console})
        except Exception:  # the console is optional (napari-console may be absent)
            pass

    # ------------------------------------------------------------------ the layers (the adapter's)
    @property
    def points_layer(self):
        return None if self.layers is None else self.layers.points

    @property
    def skeleton_layer(self):
        return None if self.layers is None else self.layers.outline

    @property
    def measurement_layer(self):
        return None if self.layers is None else self.layers.measurement_lines

    @property
    def uncertainty_layer(self):
        return None if self.layers is None else self.layers.uncertainty

    @property
    def regions_layer(self):
        return None if self.layers is None else self.layers.regions

    @property
    def labels_layer(self):
        return None if self.layers is None else self.layers.labels

    @property
    def measurements(self) -> dict:
        return {} if self.layers is None else self.layers.measurements

    # ------------------------------------------------------------------ UI
    def _build_ui(self):
        self.setMaximumWidth(440)
        # the panel scrolls as a whole: on a short screen nothing is cut off (the ERE list keeps its own scroll)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)  # the content wraps to the dock's width
        outer.addWidget(scroll)
        content = QWidget()
        scroll.setWidget(content)
        lay = QVBoxLayout(content)
        grid = QGridLayout()
        grid.addWidget(QLabel("Image"), 0, 0)
        self.image_combo = QComboBox()
        self.image_combo.currentTextChanged.connect(self._on_image_chosen)
        grid.addWidget(self.image_combo, 0, 1)
        grid.addWidget(QLabel("Model"), 1, 0)
        self.model_combo = QComboBox()
        self.model_combo.activated.connect(self._on_model_chosen)
        self.model_combo.currentIndexChanged.connect(self._on_model_index_changed)
        grid.addWidget(self.model_combo, 1, 1)
        grid.addWidget(QLabel("Pixel size"), 2, 0)
        self.spacing_box = QDoubleSpinBox()
        self.spacing_box.setRange(0.0, 10.0)
        self.spacing_box.setDecimals(4)
        self.spacing_box.setSingleStep(0.01)
        self.spacing_box.setSuffix(" mm")
        self.spacing_box.setSpecialValueText("unknown (px)")  # 0 = not known: measurements in pixels
        self.spacing_box.setToolTip("Millimetres per pixel (from the DICOM header when there is one; 0.1 for the "
                                    "ISBI cephalograms). Distances and ERE are in mm when it is known.")
        self.spacing_box.editingFinished.connect(self._on_spacing_edited)
        grid.addWidget(self.spacing_box, 2, 1)
        lay.addLayout(grid)
        self.study_box = StudyPanel(self._open_study_dialog, self.open_study_film, self.study_previous,
                                    self.study_next, self.toggle_reviewed, self.adapt_to_study)
        lay.addWidget(self.study_box)
        self.pacs_box = PacsPanel(self.pacs_search, self.open_pacs_row, self.send_report_to_pacs)
        lay.addWidget(self.pacs_box)
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
        # the message line: progress, results and every error, in one place
        self.progress = QProgressBar()
        self.progress.setRange(0, 0)
        self.progress.setVisible(False)
        lay.addWidget(self.progress)
        self.status = QLabel("Open a radiograph, choose a model, press Detect.")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        lay.addWidget(self.status)
        self.ere_box = CheckNextPanel(self.go_to, self.go_to_suggested, self._toggle_uncertainty, self._toggle_regions,
                                      self._toggle_all_regions)
        # the panel's parts under the names the adapter, the demo and the tests use
        self.suggest_label, self.ere_table = self.ere_box.suggest_label, self.ere_box.table
        self.show_uncertainty, self.show_regions = self.ere_box.show_uncertainty, self.ere_box.show_regions
        self.all_regions, self.regions_note = self.ere_box.all_regions, self.ere_box.regions_note
        lay.addWidget(self.ere_box)
        self.show_labels = QCheckBox("Show labels")
        self.show_labels.setChecked(True)
        self.show_labels.setToolTip("One label per vertebra (T1…L5) or each landmark's abbreviation (S, N, Go…); "
                                    "hover a point for its full name")
        self.show_labels.toggled.connect(self._toggle_labels)
        lay.addWidget(self.show_labels)
        self.shape_prior_box = QCheckBox("Use the anatomy (shape prior)")
        self.shape_prior_box.setChecked(True)
        self.shape_prior_box.setToolTip(
            "After a correction, place the other points where both the network's map and a statistical model of "
            "the anatomy (learned from the training labels) expect them; untick to see the network alone")
        self.shape_prior_box.toggled.connect(self._toggle_shape_prior)
        lay.addWidget(self.shape_prior_box)
        self.meas_box = MeasurementsPanel()
        self.meas_table, self.meas_doubts = self.meas_box.table, self.meas_box.doubts
        lay.addWidget(self.meas_box)
        box = QGroupBox("How to correct")
        bl = QVBoxLayout(box)
        keys = QLabel("Drag a wrong point where it belongs: it is pinned (the model never moves it) and the "
                      "model moves the others. Hover a point for its full name.<br>"
                      + "<br>".join(f"<b>{k}</b> — {d}" for k, _, d in SHORTCUTS))
        keys.setWordWrap(True)
        bl.addWidget(keys)
        lay.addWidget(box)
        lay.addStretch(1)
        self._update_buttons()

    def say(self, text: str, level: str = "info") -> None:
        """The message line: one place for progress, results, warnings and errors."""
        self.messages.append((level, str(text)))
        self.status.setStyleSheet(_MESSAGE_STYLE.get(level, ""))
        self.status.setText(str(text))

    def _notify(self, level: str, text: str) -> None:  # the adapter's voice
        self.say(text, level)

    def _update_buttons(self):
        has = self.session is not None and self.session.detected
        self.undo_btn.setEnabled(has and self.session.can_undo)
        self.redo_btn.setEnabled(has and self.session.can_redo)
        for b in (self.unpin_btn, self.reset_btn, self.save_btn):
            b.setEnabled(has)

    def _set_busy(self, on: bool, text: str | None = None):
        """Count running jobs. The (animated) progress bar appears only for a job that takes longer than
        PROGRESS_AFTER_MS — loading a model, a first detection: during a drag's ~100 ms update its animation and
        the panel's relayout would take CPU from the model."""
        self._busy = max(0, self._busy + (1 if on else -1))
        if self._busy > 0 and not self.progress.isVisible() and not self._progress_delay.isActive():
            self._progress_delay.start()
        elif self._busy == 0:
            self._progress_delay.stop()
            if self.progress.isVisible():
                self.progress.setVisible(False)
        if text:
            self.say(text)

    def _show_progress(self):
        if self._busy > 0:
            self.progress.setVisible(True)

    def _refresh_image_choices(self, event=None):
        current = self.image_combo.currentText()
        names = [lyr.name for lyr in self.viewer.layers if isinstance(lyr, Image) and not self._owned(lyr)]
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        self.image_combo.addItems(names)
        if current in names:
            self.image_combo.setCurrentText(current)
        self.image_combo.blockSignals(False)
        if self.image_combo.currentText() != current:
            self._on_image_chosen(self.image_combo.currentText())
        if self.layers is not None and self.layers.points is not None and self.layers.points not in self.viewer.layers:
            # the user deleted the landmark layer: its outline, labels, lines and map go with it (hidden now,
            # removed when Detect, undo, redo… draw the points again); the session stays
            self._drop_layers()

    def _retire_layers(self, layers) -> None:
        """Hide a previous adapter's layers now and remove them once the current adapter has put its points layer
        in the viewer (:meth:`_remove_retired`).

        Removing them first crashes the viewer on software OpenGL (Mesa llvmpipe / softpipe, what Xvfb and many
        remote desktops use): when the overlay layers are removed and the film is the only layer left, the first
        layer added afterwards makes the next paint die in ``glDrawArrays`` (SIGSEGV). Reproduced with napari
        alone (an image, a points layer with text; remove it, add points: exit 139), and not when the new layer is
        added before the old ones are removed — which is the order kept here."""
        for lyr in layers:
            if lyr is not None and lyr in self.viewer.layers and lyr not in self._retired:
                lyr.visible = False
                lyr.name = f"{lyr.name} (replaced)"  # the new layers keep the plain names
                self._retired.append(lyr)

    def _remove_retired(self) -> None:
        """Remove the retired layers, once the current adapter's points layer is in the viewer."""
        if not self._retired or self.layers is None or not self.layers._alive(self.layers.points):
            return
        layers, self._retired = self._retired, []
        for lyr in layers:
            if lyr in self.viewer.layers:
                self.viewer.layers.remove(lyr)

    def _owned(self, layer) -> bool:
        return (self.layers is not None and layer is self.layers.uncertainty) or any(layer is r for r in self._retired)

    def _refresh_model_choices(self):
        from ..weights import load_manifest

        self._auto_picking = True
        self.model_combo.clear()
        try:
            self._manifest = load_manifest()
        except Exception as exc:  # a broken manifest must not break the widget
            self._manifest = {}
            self.say(f"The weights manifest is unreadable: {exc}", "warning")
        for name, entry in self._manifest.items():
            self.model_combo.addItem(name)
            self.model_combo.setItemData(self.model_combo.count() - 1, entry.get("description", ""), 3)  # tooltip
        self.model_combo.addItem(WEIGHTS_FILE_ITEM)
        self._weights_file = None
        self._auto_picking = False

    def _on_model_index_changed(self, index):
        if not self._auto_picking:  # set by the user, a script or the demo: images no longer choose
            self._model_chosen_by_user = True

    def _on_model_chosen(self, index):
        if self.model_combo.itemText(index) == WEIGHTS_FILE_ITEM:
            path, _ = QFileDialog.getOpenFileName(self, "Model weights", "", "safetensors (*.safetensors)")
            if path:
                self._weights_file = path
                self.model_combo.setItemText(index, f"{Path(path).name} (file)")

    def use_weights_file(self, path) -> None:
        """Choose a model by its weights file (what 'Weights file…' does after its dialog), e.g. one that
        ``napari-landmarks build`` wrote."""
        path = str(path)
        self._weights_file = path
        index = self.model_combo.count() - 1  # the 'Weights file…' item, last
        self.model_combo.setItemText(index, f"{Path(path).name} (file)")
        self.model_combo.setCurrentIndex(index)

    def _on_image_chosen(self, name: str):
        """Pick the model that fits the image, unless the user chose one: the phantom model only for the
        synthetic sample, otherwise the shipped model whose input shape is closest to the image's."""
        if self._model_chosen_by_user or not name:
            return
        layer = self._current_image_layer()
        if layer is None:
            return
        shape = np.shape(_full_resolution(layer))[:2]
        pick = choose_model_for_image(self._manifest, shape, self._synthetic(layer))
        if pick is not None and self.model_combo.findText(pick) >= 0:
            self._auto_picking = True
            try:
                self.model_combo.setCurrentText(pick)
            finally:
                self._auto_picking = False

    @staticmethod
    def _synthetic(layer) -> bool:
        return bool(((layer.metadata or {}).get(META_KEY) or {}).get("synthetic"))

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
        arr = np.asarray(_full_resolution(layer))
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

    def _confirm(self, title: str, text: str) -> bool:
        ans = QMessageBox.question(self, title, text, QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
        return ans == QMessageBox.Yes

    def _confirm_discard(self, what: str) -> bool:
        if self.session is None or not self.session.dirty:
            return True
        return self._confirm("Unsaved corrections", f"There are unsaved landmark corrections. {what} anyway?")

    def _mismatch_warning(self, name: str, layer: Image) -> str | None:
        """Why the model's landmark set looks wrong for the image (None when it looks right)."""
        return misfit_reason(name, self._manifest.get(name) or {}, np.shape(_full_resolution(layer))[:2],
                             image_name=layer.name, synthetic=self._synthetic(layer))

    def _plan(self):
        """(layer, model name, weights path, need_model, need_image) for the current choices, or a message."""
        layer = self._current_image_layer()
        if layer is None:
            return "No image layer: open a radiograph first (File › Open, or drag and drop)."
        name, path = self.selected_model()
        if name == WEIGHTS_FILE_ITEM or not name:
            return "Choose a model first (or a weights file)."
        need_model = self.predictor is None or self.predictor.name != name
        need_image = need_model or self.session is None or self.image_layer is not layer
        return layer, name, path, need_model, need_image

    def _build_session(self, layer, name, path, need_model, image):
        from ..inference import Predictor

        pred = self.predictor
        if need_model:
            pred = Predictor.from_file(path) if path else Predictor.from_name(name)
            # bf16 where this CPU computes it natively: 1.3-1.7x faster updates, the same points to noise
            # (docs/history.md, "bf16 inference")
            pred.set_precision("auto")
        meta = (layer.metadata or {}).get(META_KEY, {}) or {}
        session = LandmarkSession(pred, image, spacing=self._spacing(layer),
                                  image_path=meta.get("image_path") or getattr(layer.source, "path", None))
        return pred, session

    def _adopt(self, layer, pred, session):
        """Make a freshly built session the current one: the adapter draws it, the panel listens."""
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._drop_layers()
        self.predictor, self.session, self.image_layer = pred, session, layer
        self._recovery_holder["session"] = session
        self._ensure_layers()
        self._unsubscribe = session.subscribe(self._on_session_changed)  # after the adapter: its state is fresh
        self._fitted = False
        self._show_spacing()
        self._show_shape_prior()

    def _show_spacing(self):
        sp = None if self.session is None else self.session.spacing
        self.spacing_box.blockSignals(True)
        self.spacing_box.setValue(0.0 if sp is None else float(np.mean(sp)))
        self.spacing_box.blockSignals(False)

    def _on_spacing_edited(self):
        if self.session is None:
            return
        value = float(self.spacing_box.value())
        current = None if self.session.spacing is None else float(np.mean(self.session.spacing))
        if (value or None) == current:
            return
        try:
            self.session.set_spacing(value if value > 0 else None)
        except SessionError as exc:
            self.say(str(exc), "error")
            self._show_spacing()
            return
        self.say(f"Pixel size {value:g} mm: measurements and ERE in mm." if value > 0
                 else "Pixel size unknown: measurements and ERE in pixels.")

    def _ensure_layers(self) -> None:
        """An adapter for the current session (again, after the user deleted the landmark layer): it draws the
        session's points, and a detected session's state is drawn at once."""
        if self.layers is not None or self.session is None:
            return
        self.layers = LandmarkLayers(self.viewer, self.session, self.image_layer, on_edit=self._on_edit,
                                     notify=self._notify, show_uncertainty=self.show_uncertainty.isChecked(),
                                     show_labels=self.show_labels.isChecked(),
                                     show_regions=self.show_regions.isChecked(),
                                     all_regions=self.all_regions.isChecked())
        if self.session.detected:
            self.layers.sync()
            self._remove_retired()

    def _ensure_session(self, on_ready):
        """Load the model (worker) and prepare the image if needed, then call on_ready()."""
        plan = self._plan()
        if isinstance(plan, str):
            self.say(plan, "warning")
            return
        layer, name, path, need_model, need_image = plan
        if (need_model or need_image) and self.session is not None and self.session.detected:
            if not self._confirm_discard("Start over on a new image/model"):
                return
        if not need_model and not need_image:
            self._ensure_layers()
            on_ready()
            return
        try:
            image = self._image_array(layer)
        except SessionError as exc:
            self.say(str(exc), "error")
            return
        self._load_generation += 1
        gen = self._load_generation
        self._set_busy(True, f"Loading model '{name}'…" if need_model else "Preparing the image…")

        def done(out):
            self._set_busy(False)
            result, exc = out
            if gen != self._load_generation:
                return
            if exc is not None:
                self.say(f"Could not start: {_describe(exc)}", "error")
                return
            self._adopt(layer, *result)
            warning = self._mismatch_warning(name, layer)
            on_ready()
            if warning:
                self._pending_warning = warning

        self._pending_warning = None
        self._run_worker(self._build_session, (layer, name, path, need_model, image), done)

    def ensure_session_now(self) -> LandmarkSession:
        """The console's path: build the session for the current image and model on this thread (blocking)."""
        plan = self._plan()
        if isinstance(plan, str):
            raise SessionError(plan)
        layer, name, path, need_model, need_image = plan
        if need_model or need_image:
            self._adopt(layer, *self._build_session(layer, name, path, need_model, self._image_array(layer)))
            warning = self._mismatch_warning(name, layer)
            if warning:
                self.say(warning, "warning")
        return self.session

    def _run_worker(self, fn, args, on_done):
        worker = create_worker(_never_raises, fn, *args, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(on_done)
        worker.start()
        self._worker = worker

    # ------------------------------------------------------------------ actions
    def detect(self):
        def go():
            if self._offer_recovery():
                return
            self.say("Detecting…")
            self._start_inference()

        self._ensure_session(go)

    # the session announces every change it makes; the adapter and the panel follow
    def undo(self):
        if self.session:
            self._ensure_layers()
            self.session.undo()

    def redo(self):
        if self.session:
            self._ensure_layers()
            self.session.redo()

    def reset(self):
        if self.session and self.session.detected:
            self._ensure_layers()
            self.session.reset()

    def unpin_selected(self):
        if not (self.session and self.session.detected and self.layers is not None):
            return
        idx = self.layers.selected_landmarks(pinned_only=True)
        if not idx:
            self.say("Select one or more corrected (pinned) points to unpin.")
            return
        for i in idx:
            self.session.unpin_only(i)
        self.say("Re-running without the unpinned points…")
        self._debounce.start()

    def go_to(self, index: int):
        if self.session and self.session.detected and self.layers is not None:
            self.layers.go_to(index)

    def _toggle_all_regions(self, on: bool):
        if self.layers is not None:
            self.layers.set_all_regions(on)

    def go_to_suggested(self):
        if self.session and self.session.detected:
            nxt = self.session.suggest_next()
            if nxt is not None:
                self.go_to(nxt)

    def _toggle_uncertainty(self, on):
        if self.layers is not None:
            self.layers.set_uncertainty_visible(on)

    def _toggle_regions(self, on):
        if self.layers is not None:
            self.layers.set_regions_visible(on)

    def _toggle_shape_prior(self, on):
        """Switch the shape prior and re-run with the same corrections (the points follow)."""
        pred = self.predictor
        if pred is None or pred.shape_model is None:
            return
        pred.use_shape_prior = bool(on)
        if on and not pred.shape_model.settings.enabled:  # off in the model's card: the user asks for it anyway
            pred.shape_model.settings.enabled = True
        if self.session is None or not self.session.detected:
            return
        # before any correction the answer depends on the prior too where the model applies it at zero clicks
        if self.session.pinned.any() or pred.shape_model.settings.zero_click:
            self.say("Shape prior " + ("on" if on else "off") + ": re-running…")
            self._start_inference()
        else:
            self.say("Shape prior " + ("on" if on else "off") + ": this model applies it only after a correction; "
                     "the points shown are the same either way")

    def _show_shape_prior(self):
        """The checkbox follows the current model: enabled when it carries a shape model, ticked when it is in use."""
        pred = self.predictor
        has = pred is not None and pred.shape_model is not None
        self.shape_prior_box.blockSignals(True)
        if has:
            pred.use_shape_prior = pred.use_shape_prior and self.shape_prior_box.isChecked()
            self.shape_prior_box.setChecked(pred.shape_prior_active)
        self.shape_prior_box.setEnabled(has)
        self.shape_prior_box.blockSignals(False)
        if pred is not None and pred.shape_prior_problem:
            self.say(pred.shape_prior_problem, "warning")

    def _toggle_labels(self, on):
        if self.layers is not None:
            self.layers.set_labels_visible(on)

    # ------------------------------------------------------------------ inference scheduling
    def _on_edit(self, moved: dict):
        """A drag was pinned in the session (by the adapter): re-run now, before the viewer repaints (started from
        the next event-loop pass, the run waited ~50 ms for the canvas). Edits that arrive while it runs are merged
        by the session into one follow-up run."""
        self._release_t = time.perf_counter()
        self.say(f"Correcting {len(moved)} point(s)…")
        self._start_inference()

    @property
    def _inflight(self) -> bool:
        return self.session is not None and self.session.running

    @property
    def idle(self) -> bool:
        """No model load, pending re-run or inference."""
        return (self._busy == 0 and not self._inflight and not self._debounce.isActive()
                and not self._panel_refill.isActive() and not (self.layers is not None and self.layers.pending))

    def _start_inference(self, req=None):
        """Run the session's next inference in a worker (the session decides: one at a time, edits made while it
        runs merged into one follow-up run)."""
        if self.session is None:
            return
        try:
            req = req or self.session.begin()
        except SessionError as exc:
            self.say(str(exc), "error")
            return
        if req is None:
            return  # one is running; the session hands out the follow-up when it returns
        self._set_busy(True)
        session = self.session
        self._run_worker(session.compute, (req,), lambda out: self._on_result(session, out))

    def _on_result(self, session, out):
        result, exc = out
        try:
            self._set_busy(False)
        except RuntimeError:  # the viewer was closed while the model ran: its Qt parts are gone
            if exc is None:
                session.apply(result)  # the answer, with the user's corrections, into the recovery file
            self._keep_for_recovery(session)
            return
        if session is not self.session:
            return  # a result for a session the user has since left
        if exc is not None:  # (non-finite coordinates are the predictor's PredictionError)
            session.cancel()
            self._release_t = None
            self.say(f"Inference failed: {_describe(exc)}. Your corrected points are unchanged.", "error")
            return
        applied_before = session.generation == result[0].generation
        nxt = session.finish(result)  # the layers follow through the session's change event
        if applied_before:
            if self._release_t is not None:
                self.timings.append({"release_to_layer_ms": (time.perf_counter() - self._release_t) * 1000})
                self._release_t = None
            if not self._fitted and self.image_layer in self.viewer.layers:
                self._fitted = True
                self.viewer.reset_view()  # the film fills the canvas (the layers all lie on it)
            warning, self._pending_warning = self._pending_warning, None
            if warning:
                self.say(warning, "warning")
            else:
                n = int(session.pinned.sum())
                self.say(f"{session.num_landmarks} landmarks · {n} corrected by hand")
        if nxt is not None:
            self._start_inference(nxt)

    # ------------------------------------------------------------------ the panel follows the session
    def _on_session_changed(self, change: str):
        if change == "image":
            return
        if self.study is not None and self.study.current is not None and self.study.session is self.session:
            self.study_box.update_row(self.study, self.study.current)  # the store has it already (subscribed first)
        self._remove_retired()  # the adapter (subscribed first) has drawn the new points
        self._update_buttons()
        if change == "pinned":
            return  # the model's answer follows as "result"
        if self.session.detected:
            self._panel_refill.start()  # after the layers (next event-loop passes): the canvas first

    def _fill_panel(self):
        if self.session is not None and self.session.detected:
            if self.layers is not None:
                self.layers.flush()  # the panel names what the layers found (twisted vertebrae)
            self._fill_ere_panel()
            self._fill_measurements()

    def _fill_ere_panel(self):
        self.ere_box.fill(self.session, self.layers.corner_problems if self.layers is not None else {},
                          self.predictor.name if self.predictor is not None else None)

    def _fill_measurements(self):
        self.meas_box.fill(self.measurements)

    @property
    def _ere_rows(self) -> list[int]:
        return self.ere_box.rows

    def _region_level_text(self) -> str:
        return CheckNextPanel.level_text(self.session)

    # ------------------------------------------------------------------ layers
    def _drop_layers(self):
        """Detach the current adapter (it stops listening at once) and retire its layers."""
        adapter, self.layers = self.layers, None
        if adapter is not None:
            layers = [adapter.points, adapter.outline, adapter.labels, adapter.label_lines, adapter.measurement_lines,
                      adapter.uncertainty, adapter.regions]
            adapter.close(remove=False)
            self._retire_layers(layers)

    # ------------------------------------------------------------------ files
    def _save_dialog(self):
        if not (self.session and self.session.detected):
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save landmarks", "landmarks.json", "Landmarks (*.json *.csv *.dcm)")
        if path:
            self.save(path, overwrite=True)  # the dialog has already asked about overwriting

    def save(self, path, overwrite=False):
        if not (self.session and self.session.detected):
            self.say("Nothing to save yet: press Detect first.", "warning")
            return None
        try:
            out = self.session.save(path, overwrite=overwrite)
        except (OSError, ValueError, SessionError) as exc:
            self.say(f"Not saved: {_describe(exc)}", "error")
            return None
        self.say(f"Saved {out}")
        return out

    def _load_dialog(self):
        path, _ = QFileDialog.getOpenFileName(self, "Load landmarks", "", "Landmarks (*.json *.csv *.dcm)")
        if path:
            self.load(path)

    def load(self, path):
        """Load a landmark file into the session. A file lacking some landmarks is merged only if the user agrees
        (their corrections not in the file stay); any other problem changes nothing and is said in the message
        line."""
        def go():
            name = Path(path).name
            try:
                self.session.load(path)
            except PartialFileError as partial:
                pinned = int(self.session.pinned.sum()) if self.session.detected else 0
                keep = f", your {pinned} corrected point(s) included," if pinned else ""
                if not self._confirm("Partial landmark file",
                                     f"{name} holds {partial.present} of {partial.total} landmarks. Take its "
                                     f"{partial.present} points and keep every other point{keep} where it is?"):
                    self.say(f"{name} not loaded: it holds {partial.present} of {partial.total} landmarks.", "warning")
                    return
                try:
                    self.session.load(path, merge_partial=True)
                except (ValueError, SessionError, OSError) as exc:
                    self.say(f"Cannot load {name}: {_describe(exc)}", "error")
                    return
                self.say(f"Merged {partial.present} landmarks from {name}.")
                return
            except (ValueError, SessionError, OSError) as exc:
                self.say(f"Cannot load {name}: {_describe(exc)}", "error")
                return
            self.say(f"Loaded {name}.")

        self._ensure_session(go)

    # ------------------------------------------------------------------ a study (dataset mode)
    def _open_study_dialog(self):
        folder = QFileDialog.getExistingDirectory(self, "Open a folder of films as a study")
        if folder:
            self.open_study(folder)

    def open_study(self, folder, store=None, model=None, recover: bool = False):
        """Open a folder of films as a study (``study.Study``) and its film to resume at. Returns the Study, or None
        with the reason in the message line."""
        from ..study import Study, StudyError

        if not self._confirm_discard("Open a study"):
            return None
        try:
            study = Study.open(folder, store=store, model=model, recover=recover)
        except (StudyError, OSError) as exc:
            self.say(f"Cannot open the study: {_describe(exc)}", "error")
            return None
        self.close_study()
        self.study = study
        self.study_box.refresh(study)
        for note in study.notes:
            self.say(note, "warning")
        if study.read_only:
            self.say(f"Study opened read-only: {study.read_only_reason}", "warning")
        start = study.resume_index()
        if start is None:
            self.say(f"Study opened: {study.describe()}; nothing left to review.")
        else:
            self.open_study_film(start)
        return study

    def close_study(self) -> None:
        """Write what is open and release the study (its lock); the film stays on screen."""
        study, self.study = self.study, None
        if study is not None:
            study.close()
        self.study_box.refresh(None)

    def open_study_film(self, i: int) -> None:
        """Open film ``i`` of the study (its saved points, or the model's), in a worker; the film after it is then
        detected in the background."""
        study = self.study
        if study is None:
            return
        if self._busy or self._inflight:
            self.say("Wait for the model to finish, then change film.", "warning")
            return
        entry = study.films[i]
        self._load_generation += 1
        gen = self._load_generation
        self._set_busy(True, f"Opening {entry.path}…")

        def done(out):
            self._set_busy(False)
            result, exc = out
            if gen != self._load_generation or study is not self.study:
                return
            if exc is not None:
                self.say(f"{_describe(exc)}", "error")
                self.study_box.refresh(study)
                return
            self._show_study_film(study, i, result)

        self._run_worker(study.open_film, (i,), done)

    def _show_study_film(self, study, i: int, session) -> None:
        entry = study.films[i]
        meta = {META_KEY: {"image_path": str(study.film_path(i)), "spacing_mm": None if session.spacing is None else
                           [float(v) for v in np.broadcast_to(session.spacing, 2)], "synthetic": False}}
        old = self._study_layer
        layer = self.viewer.add_image(study.image, name=entry.path, colormap="gray", metadata=meta)
        self._study_layer = layer
        self.viewer.layers.move(self.viewer.layers.index(layer), 0)  # under everything the widget draws
        self._adopt(layer, session.predictor, session)
        for combo, text in ((self.image_combo, layer.name), (self.model_combo, session.predictor.name)):
            combo.blockSignals(True)
            if combo.findText(text) >= 0:
                combo.setCurrentText(text)
            combo.blockSignals(False)
        if old is not None and old in self.viewer.layers:
            self._retire_layers([old])
        self._remove_retired()
        self.viewer.reset_view()
        self._fitted = True
        self.study_box.refresh(study)
        self._update_buttons()
        n = int(session.pinned.sum())
        self.say(f"{entry.path} ({i + 1} of {len(study.films)}): {entry.describe()}" +
                 (f" · {n} corrected" if n and entry.reviewed else ""))
        study.prefetch(study.next_index(1))

    def study_next(self):
        self._study_step(1)

    def study_previous(self):
        self._study_step(-1)

    def _study_step(self, step: int):
        if self.study is None:
            return
        i = self.study.next_index(step)
        if i is None:
            self.say("This is the " + ("last" if step > 0 else "first") + " film of the study.")
            return
        self.open_study_film(i)

    def toggle_reviewed(self):
        """Mark the open film reviewed (or back in progress)."""
        from ..study import StudyError

        study = self.study
        if study is None or study.current is None:
            return
        try:
            study.mark_reviewed(not study.films[study.current].reviewed)
        except StudyError as exc:
            self.say(str(exc), "error")
        self.study_box.refresh(study)

    def adapt_to_study(self, confirm: bool = True, **finetune_args):
        """Fine-tune the model on the study's reviewed films in the background (a progress bar in the study panel);
        when done, show base vs adapted on the films held aside and offer to switch (``confirm=False``: switch
        without asking, for scripts). Returns nothing; the result arrives in the message line."""
        from ..study import StudyError

        study = self.study
        if study is None:
            return
        if self._adapting:
            self.say("The model is being adapted already.", "warning")
            return
        state = {"fraction": 0.0, "text": "starting"}

        def on_progress(fraction, text):  # the worker thread: read by the timer below on the main thread
            state.update(fraction=fraction, text=text)

        def poll():
            self.study_box.adapt_progress.setValue(int(100 * state["fraction"]))
            self.study_box.adapt_progress.setFormat(f"%p % — {state['text']}")

        timer = QTimer(self)
        timer.setInterval(250)
        timer.timeout.connect(poll)
        timer.start()
        self._adapting = True
        self.study_box.adapt_progress.setVisible(True)
        self.study_box.adapt_btn.setEnabled(False)
        self.say("Adapting the model to this study's reviewed films in the background; keep working.")

        def done(out):
            report, exc = out
            try:
                timer.stop()
                self._adapting = False
                self.study_box.adapt_progress.setVisible(False)
                self.study_box.adapt_btn.setEnabled(True)
            except RuntimeError:  # the viewer was closed while the model was adapted: its Qt parts are gone
                print("napari-interactive-landmarks: " + ("; ".join(report.lines()) if exc is None else
                                                          f"the model was not adapted: {exc}"), file=sys.stderr)
                return
            if exc is not None:
                self.say(f"Not adapted: {_describe(exc)}", "error" if not isinstance(exc, StudyError) else "warning")
                return
            self.adapt_report = report
            text = "\n".join(report.lines())
            self.say(text.replace("\n", " · "))
            if study is not self.study:
                return
            if not report.better and not confirm:
                return  # a script does not switch to a model that measured worse
            if confirm and not self._confirm("Adapted model", text + "\n\nUse the adapted model for this study?"):
                return
            try:
                study.use_model(report.out)
            except Exception as exc:  # a file that does not load: said, the study keeps its model
                self.say(f"Cannot use {report.out}: {_describe(exc)}", "error")
                return
            self.use_weights_file(report.out)
            if study.current is not None:
                self.open_study_film(study.current)  # its saved points, answered by the adapted model from now on
            self.say(f"The study now uses {Path(report.out).name}.")

        worker = create_worker(_never_raises, lambda: study.adapt(on_progress=on_progress, **finetune_args),
                               _start_thread=False, _ignore_errors=True)
        worker.returned.connect(done)
        # held until it ends, even when the viewer closes meanwhile (its signals must outlive the widget: the
        # adapted model is still written, and said on stderr)
        _BACKGROUND_WORKERS.add(worker)
        worker.finished.connect(lambda: _BACKGROUND_WORKERS.discard(worker))
        worker.start()
        self._adapt_worker = worker

    # ------------------------------------------------------------------ the PACS (DICOMweb)
    def _pacs_worker(self, fn, done, busy: str):
        worker = create_worker(_never_raises, fn, _start_thread=False, _ignore_errors=True)

        def finished(out):
            try:
                self._set_busy(False)
            except RuntimeError:  # the viewer closed meanwhile
                return
            done(out)

        worker.returned.connect(finished)
        _BACKGROUND_WORKERS.add(worker)
        worker.finished.connect(lambda: _BACKGROUND_WORKERS.discard(worker))
        self._set_busy(True, busy)
        worker.start()

    def pacs_search(self, url: str | None = None, **filters):
        """Search the PACS (the panel's fields, or these) for series; they fill the panel's table."""
        from ..io.dicomweb import search_series

        url = url or self.pacs_box.url.text().strip()
        if not url:
            self.say("Give the PACS's DICOMweb address first.", "warning")
            return
        self.pacs_box.url.setText(url)
        filters = filters or {"patient_id": self.pacs_box.patient_id.text().strip() or None,
                              "accession": self.pacs_box.accession.text().strip() or None,
                              "date": self.pacs_box.date.text().strip() or None}

        def done(out):
            rows, exc = out
            if exc is not None:
                self.say(_describe(exc), "error")
                return
            self.pacs_box.show_rows(rows)
            self.say(f"{len(rows)} series found." if rows else "No series matches.")

        self._pacs_worker(lambda: search_series(url, **filters), done, "Searching the PACS…")

    def open_pacs_row(self, row: int):
        rows = self.pacs_box.rows
        if not 0 <= row < len(rows):
            self.say("Choose a series first.", "warning")
            return
        self.open_from_pacs(self.pacs_box.url.text().strip(), rows[row]["study"], rows[row]["series"])

    def open_from_pacs(self, url: str, study: str, series: str | None = None):
        """Fetch a series (or a whole study) and open its films as image layers; each remembers where it came
        from, for *Send report to PACS*."""
        import tempfile

        from ..io.dicomweb import fetch_study
        from ..io.images import read_image

        dest = tempfile.mkdtemp(prefix="napari-landmarks-pacs-")

        def fetch():
            got = fetch_study(url, study, dest, series_uid=series)
            return got, [(p, read_image(p)) for p in got.files]

        def done(out):
            result, exc = out
            if exc is not None:
                self.say(_describe(exc), "error")
                return
            got, films = result
            for _, why in got.skipped:
                self.say(f"Skipped {why}.", "warning")
            for path, film in films:
                meta = {META_KEY: {"image_path": str(path), "synthetic": False,
                                   "spacing_mm": None if film.spacing is None else list(film.spacing),
                                   "dicomweb": {"url": url, "study": study}}}
                self.viewer.add_image(film.array, name=path.stem, colormap="gray", metadata=meta)
            self.say(f"Opened {len(films)} film(s) of study {study} from the PACS; press Detect.")

        self._pacs_worker(fetch, done, "Fetching the films from the PACS…")

    def send_report_to_pacs(self):
        """Store the open film's landmarks as a DICOM structured report in the study it came from."""
        import tempfile

        from ..io.dicomweb import store_instances

        if not (self.session and self.session.detected) or self.image_layer is None:
            self.say("Nothing to send yet: detect the landmarks first.", "warning")
            return
        origin = ((self.image_layer.metadata or {}).get(META_KEY) or {}).get("dicomweb")
        if not origin:
            self.say("This film did not come from a PACS: save the report as a .dcm file instead.", "warning")
            return
        try:
            path = self.session.save(Path(tempfile.mkdtemp(prefix="napari-landmarks-sr-")) / "report.sr.dcm")
        except (OSError, ValueError, SessionError) as exc:
            self.say(f"No report: {_describe(exc)}", "error")
            return

        def done(out):
            _, exc = out
            if exc is not None:
                self.say(f"Not sent: {_describe(exc)} (your points are unchanged)", "error")
                return
            self.say(f"Report stored in study {origin['study']}.")
            self.pacs_sent = path

        self._pacs_worker(lambda: store_instances(origin["url"], [path]), done, "Sending the report to the PACS…")

    # ------------------------------------------------------------------ closing
    def closeEvent(self, event):  # noqa: N802 (Qt API)
        if not self._confirm_discard("Close the landmark widget"):
            event.ignore()
            return
        super().closeEvent(event)

    def hideEvent(self, event):  # noqa: N802 — closing the dock (or the viewer) hides the widget first
        if self.study is not None and self.isVisible() is False:
            self.close_study()  # everything is saved already; the lock goes
        if self.session is not None and self.session.dirty and self.isVisible() is False:
            path = self._keep_for_recovery(self.session)
            if path is not None:
                show_warning(f"The landmark widget was closed with unsaved corrections; they are kept in {path}: "
                             "open this image again and press Detect to have them back.")
        super().hideEvent(event)

    @staticmethod
    def _keep_for_recovery(session) -> Path | None:
        """Write ``session``'s unsaved corrections to its recovery file (nothing raised: the viewer may be going)."""
        try:
            return session.save_recovery()
        except Exception as exc:  # a full disk, a read-only cache: said on stderr, nothing else to do while closing
            print(f"napari-interactive-landmarks: could not keep the unsaved corrections: {exc}", file=sys.stderr)
            return None

    def _offer_recovery(self) -> bool:
        """When this image's corrections were kept by a viewer closed with unsaved work, offer them back; True when
        they were restored (nothing to detect)."""
        path = self.session.recovered() if self.session is not None else None
        if path is None:
            return False
        import datetime

        when = datetime.datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
        if not self._confirm("Unsaved corrections", f"Corrections of this image were kept when the viewer closed "
                                                     f"({when}). Restore them?"):
            path.unlink(missing_ok=True)
            self.say("The kept corrections were discarded.")
            return False
        try:
            self._ensure_layers()
            self.session.load(path)
            self.session.mark_unsaved()
        except (ValueError, SessionError, OSError) as exc:
            self.say(f"Cannot restore the kept corrections ({path}): {_describe(exc)}", "error")
            return False
        path.unlink(missing_ok=True)
        self.say(f"Restored {int(self.session.pinned.sum())} corrected points kept when the viewer closed.")
        return True


_BACKGROUND_WORKERS: set = set()  # long workers (adapting a model) kept alive until they end


def _keep_on_destroy(held: dict) -> None:
    """The widget is gone (its viewer closed): keep its session's unsaved corrections in the recovery file."""
    session = held.get("session")
    if session is None or not session.dirty:
        return
    path = LandmarkWidget._keep_for_recovery(session)
    if path is not None:
        print(f"napari-interactive-landmarks: the viewer closed with unsaved corrections; they are kept in {path} "
              "(open the image again and press Detect to have them back)", file=sys.stderr)


class ViewerSession:
    """The console face of the widget: the headless session's methods, each reflected in the viewer.

    In napari's console: ``landmarks.detect()``, ``landmarks.correct(index, (row, col))``, ``landmarks.unpin(i)``,
    ``landmarks.undo()``, ``landmarks.redo()``, ``landmarks.reset()``, ``landmarks.points()``,
    ``landmarks.regions()`` (each point's conformal region, None without regions), ``landmarks.save(path)``;
    ``landmarks.session`` is the headless LandmarkSession itself. A study: ``landmarks.open_study(folder)``,
    ``landmarks.next_film()``, ``landmarks.previous_film()``, ``landmarks.study`` (the headless ``Study``).
    """

    def __init__(self, widget: LandmarkWidget):
        self._w = widget

    @property
    def session(self) -> LandmarkSession | None:
        return self._w.session

    @property
    def study(self):
        """The open study (``study.Study``: ``films``, ``current``, ``mark_reviewed()``, ``export(out)``…), or None."""
        return self._w.study

    def open_study(self, folder, model=None):
        """Open a folder of films as a study in the viewer (as *Open study folder…* does)."""
        return self._w.open_study(folder, model=model)

    def next_film(self):
        self._w.study_next()

    def previous_film(self):
        self._w.study_previous()

    def _need(self):
        if self._w.session is None or not self._w.session.detected:
            raise SessionError("no landmarks yet: call landmarks.detect() (or press Detect in the widget)")
        return self._w.session

    # the viewer follows the session's change events: the console calls the session directly
    def detect(self):
        """Detect with the widget's selected image and model (loading the model if needed)."""
        return self._w.ensure_session_now().detect()

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

    def regions(self):
        """Each landmark's conformal region (see ``LandmarkSession.regions``); None when the model has none."""
        return self._need().regions()

    def save(self, path, overwrite=False):
        return self._need().save(path, overwrite=overwrite)

    def __repr__(self):
        s = self._w.session
        if s is None:
            return "<landmarks: no session yet — call landmarks.detect() or press Detect>"
        return f"<landmarks: model {s.predictor.name}, {s.num_landmarks} points, {int(s.pinned.sum()) if s.detected else 0} pinned>"


__all__ = ["LandmarkWidget", "ViewerSession", "simulate_drag", "choose_model_for_image"]
