"""One image's interactive state, headless: the automatic prediction, the user's pinned corrections, undo
and redo, save and load. The napari widget is a thin adapter over this class; the console and scripts use
the same methods (``detect``, ``correct``, ``unpin``, ``undo``, ``redo``, ``reset``, ``points``, ``regions``,
``save``). ``regions()`` gives each unpinned landmark's conformal region (the ellipse that holds the true point
with the model's stated probability, e.g. 95 %), when the model's card has them.

Invariant: a pinned point (placed by a person) is never moved by the model. Model results are merged only
into points that are unpinned *when the result arrives*, and stale results (the user changed something
since the request was made) are dropped.

Asynchronous use (the GUI): ``pin`` / ``unpin_only`` change the state at once (main thread); ``request()``
describes the inference to run; ``compute(request)`` runs the network (any thread); ``apply(result)`` merges
it (main thread) unless a newer change made it stale.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .predictor import Prediction, PredictionError, Predictor


@dataclass(frozen=True)
class _State:
    coords: np.ndarray
    pinned: np.ndarray
    scores: np.ndarray
    ere: np.ndarray | None = None  # (K,) expected radial error, original px; 0 for pinned points
    umap: np.ndarray | None = None  # (h/4, w/4) combined uncertainty map of the unpinned landmarks (float16)
    # the points as the model last left them (before the user's edits since): the 'previous prediction' the
    # model is given with the next clicks — for a point just corrected, where the model had put it, which is
    # what it saw in training (None: the current coordinates)
    basis: np.ndarray | None = None
    # the conformal regions of the shown points: (K, 2, 2) spread (original px²) and (K,) radius, NaN for a pinned
    # point (a person placed it); None when the model has no regions or the state is not a model's answer
    spread: np.ndarray | None = None
    radius: np.ndarray | None = None
    # (K,) the expected gain of correcting each point (the model's, NaN for a pinned point), what "check next" ranks
    # by; None when the model gives none (then the ERE ranks)
    gain: np.ndarray | None = None
    # (K,) bool: the point's doubt map is spread wider than its real errors ever were on the calibration films (a flat
    # map, two far-apart peaks): its expected error is stated unscaled; None when the model's answer says nothing
    wide: np.ndarray | None = None


@dataclass(frozen=True)
class InferenceRequest:
    generation: int
    clicks: dict
    previous: np.ndarray | None


class SessionError(RuntimeError):
    """The session cannot do what was asked (no image or landmarks yet, a file for another landmark set or image,
    a partial file without ``merge_partial``, points outside the image); nothing was changed."""


class PartialFileError(SessionError):
    """A landmark file lacks some of the landmarks: loading it needs the user's consent to merge
    (``load(path, merge_partial=True)``). ``present`` / ``total``: how many it holds of how many."""

    def __init__(self, message: str, present: int, total: int):
        super().__init__(message)
        self.present, self.total = present, total


def format_measurements_csv(measurements: dict) -> str:
    """Measurements as CSV text: name, value, unit, available, reason, expected_error (same unit; empty when
    unknown), uncertain, doubt, definition, end_vertebrae (a Cobb angle's, "T5–T11"), left_out (vertebrae the
    Cobb angles were computed without, "T9: upside down (…); L2: …")."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["name", "value", "unit", "available", "reason", "expected_error", "uncertain", "doubt", "definition",
                "end_vertebrae", "left_out"])
    for name, m in measurements.items():
        err = m.get("expected_error")
        det = m.get("details") or {}
        ends = f"{det['upper_end']}–{det['lower_end']}" if det.get("upper_end") and det.get("lower_end") else ""
        left_out = "; ".join(f"{v}: {why}" for v, why in (det.get("left_out") or {}).items())
        w.writerow([name, "" if m["value"] is None else f"{m['value']:.4f}", m["unit"], m["available"],
                    m.get("reason") or "", "" if err is None else f"{err:.4f}", bool(m.get("uncertain")),
                    m.get("doubt") or "", m.get("definition", ""), ends, left_out])
    return buf.getvalue()


def write_measurements_csv(path, measurements: dict, overwrite: bool = False):
    """Measurements next to a landmark CSV, written whole or not at all (errors: :class:`SaveError`)."""
    from ..io.files import write_texts

    return write_texts({Path(path): format_measurements_csv(measurements)}, overwrite=overwrite)[0]


class LandmarkSession:
    def __init__(self, predictor: Predictor, image=None, *, spacing=None, image_path=None, max_history: int = 200):
        self.predictor = predictor
        self.schema = predictor.schema
        self.max_history = max_history
        self._lock = threading.Lock()
        self.image_path = image_path
        self.spacing = spacing
        self._prepared = None
        self._state: _State | None = None
        self._auto: _State | None = None
        self._undo: list[_State] = []
        self._redo: list[_State] = []
        self.generation = 0
        self._dirty = False
        self.last_prediction: Prediction | None = None
        # whether this film is like the films the model's doubt was calibrated on (familiarity.FilmShift), checked at
        # the first detection and kept for the film; None when the model has no check
        self.film_shift = None
        self._listeners: list = []
        self._running = False  # an inference handed out by begin() has not come back through finish()
        self._rerun = False  # something asked for an inference while one was running
        if image is not None:
            self.set_image(image, spacing=spacing, image_path=image_path)

    # ------------------------------------------------------------------ change events
    def subscribe(self, callback):
        """Call ``callback(change)`` after every change of the points (on the thread that made it), with
        ``change`` one of ``"image"``, ``"result"`` (a model result merged), ``"pinned"`` (points placed by
        hand, no inference yet), ``"unpinned"``, ``"undo"``, ``"redo"``, ``"reset"``, ``"loaded"``,
        ``"spacing"`` (the pixel spacing changed). Returns a function that unsubscribes. A view (the napari
        layers) listens instead of re-syncing after each call."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    def _changed(self, change: str) -> None:
        for cb in list(self._listeners):
            cb(change)

    # ------------------------------------------------------------------ state
    @property
    def num_landmarks(self) -> int:
        return self.schema.num_landmarks

    @property
    def has_image(self) -> bool:
        return self._prepared is not None

    @property
    def detected(self) -> bool:
        return self._state is not None

    @property
    def coords(self) -> np.ndarray:
        self._need_state()
        return self._state.coords.copy()

    @property
    def pinned(self) -> np.ndarray:
        self._need_state()
        return self._state.pinned.copy()

    @property
    def scores(self) -> np.ndarray:
        self._need_state()
        return self._state.scores.copy()

    @property
    def ere(self) -> np.ndarray | None:
        """Expected radial error per landmark in original pixels (0 for pinned points; None without ERE)."""
        self._need_state()
        return None if self._state.ere is None else self._state.ere.copy()

    @property
    def ere_mm(self) -> np.ndarray | None:
        e = self.ere
        if e is None or self.spacing is None:
            return None
        return e * float(np.mean(self.spacing))

    @property
    def uncertainty_map(self) -> np.ndarray | None:
        """Combined calibrated probability map of the unpinned landmarks, (h/4, w/4) in [0, 1] (see
        ``uncertainty_geometry`` for its placement over the image)."""
        self._need_state()
        return None if self._state.umap is None else self._state.umap.astype(np.float32)

    def uncertainty_geometry(self):
        """(scale, translate) in original pixels that place the uncertainty map's cells over the image."""
        return self.predictor.codec.grid_placement(self.image_shape, self._state.umap.shape)

    # a stated ERE above this marks a point as in doubt (its region drawn by default): 2 mm with a pixel spacing, else
    # 20 px — the errors the click protocol's AUROC and the damage rate count as wrong — or twice the film's median
    # stated ERE where that is larger (before any correction every spine point states more than 20 px: the points
    # in doubt are those that stand out)
    DOUBT_TOLERANCE_MM = 2.0
    DOUBT_TOLERANCE_PX = 20.0
    DOUBT_OVER_MEDIAN = 2.0

    @property
    def doubt_tolerance_px(self) -> float:
        """The stated ERE (original pixels) above which a point is in doubt."""
        base = (self.DOUBT_TOLERANCE_PX if self.spacing is None
                else self.DOUBT_TOLERANCE_MM / float(np.mean(self.spacing)))
        e = self.ere
        if e is None:
            return base
        free = e[~self._state.pinned & np.isfinite(e)]
        return max(base, self.DOUBT_OVER_MEDIAN * float(np.median(free))) if len(free) else base

    def in_doubt(self) -> np.ndarray | None:
        """(K,) bool: the unpinned points in doubt — the suggested next one and every one whose stated ERE exceeds
        :attr:`doubt_tolerance_px`; None without ERE."""
        e = self.ere
        if e is None:
            return None
        with np.errstate(invalid="ignore"):
            out = ~self._state.pinned & ((e > self.doubt_tolerance_px) | ~np.isfinite(e))
        nxt = self.suggest_next()
        if nxt is not None:
            out[nxt] = True
        return out

    @property
    def expected_gain(self) -> np.ndarray | None:
        """(K,) the model's expected gain of correcting each point (original pixels; NaN for pinned points), or None
        when it gives none (no shape model, or a state that is not the model's answer)."""
        self._need_state()
        return None if self._state.gain is None else self._state.gain.copy()

    def suggestion_scores(self) -> np.ndarray | None:
        """(K,) what "check next" ranks the unpinned points by (NaN for pinned ones): the expected gain of correcting
        each — its own stated ERE plus the others' that its correction would inform under the anatomy (shape
        model) — or, for a model without a shape model, the stated ERE; None without ERE."""
        e = self.ere
        if e is None:
            return None
        g = self._state.gain
        key = (g if g is not None else e).astype(np.float64)
        return np.where(self._state.pinned, np.nan, key)

    def suggest_next(self) -> int | None:
        """The landmark to check next: the largest expected gain (:meth:`suggestion_scores`) among unpinned points
        (None when all are pinned or no ERE is available)."""
        e = self.suggestion_scores()
        if e is None:
            return None
        e = np.where(self._state.pinned | ~np.isfinite(e), -np.inf, e)
        i = int(np.argmax(e))
        return None if not np.isfinite(e[i]) else i

    @property
    def region_level(self) -> float | None:
        """The coverage level of the model's conformal regions (e.g. 0.95), or None when its card has none."""
        cal = getattr(self.predictor, "regions", None)
        return None if cal is None else cal.level_used(self.unfamiliar)

    def region_geometry(self):
        """``(centres (K, 2), spread (K, 2, 2), radius (K,))`` of the shown points' regions in original pixels — the
        ellipse ``{y : (y − c)ᵀ spread⁻¹ (y − c) ≤ radius²}`` — NaN where a point has none (pinned; or a state
        the model did not draw, e.g. a loaded file); None when the model has no regions."""
        self._need_state()
        if self.region_level is None:
            return None
        st, k = self._state, self.num_landmarks
        spread = st.spread if st.spread is not None else np.full((k, 2, 2), np.nan)
        radius = st.radius if st.radius is not None else np.full(k, np.nan)
        return st.coords.copy(), spread.copy(), radius.copy()

    def region_arrays(self) -> dict | None:
        """The regions as arrays (what the files store): ``level``, ``centre`` (K, 2) (row, col), ``semi_axes_px``
        (K, 2) (major, minor), ``angle_deg`` (K,) (the major axis, counter-clockwise from the column axis towards
        decreasing rows, as on screen; in (−90, 90]), ``area_px2`` (K,) and ``area_mm2`` (K,) (NaN without a
        spacing); NaN rows where a point has no region. None when the model has no regions."""
        from ..regions import ellipses, region_area

        geo = self.region_geometry()
        if geo is None:
            return None
        centre, spread, radius = geo
        has = np.isfinite(radius) & np.isfinite(spread).all(axis=(1, 2)) & np.isfinite(centre).all(1)
        axes, angle = ellipses(spread, np.where(has, radius, np.nan))
        area = region_area(spread, radius)
        has &= np.isfinite(axes).all(1) & np.isfinite(area)
        mm2 = np.full(len(area), np.nan) if self.spacing is None else area * float(np.prod(np.broadcast_to(self.spacing, 2)))
        nan = ~has
        centre[nan] = np.nan
        axes[nan] = np.nan
        return {"level": self.region_level, "centre": centre, "semi_axes_px": axes,
                "angle_deg": np.where(has, angle, np.nan), "area_px2": np.where(has, area, np.nan),
                "area_mm2": np.where(has, mm2, np.nan)}

    def regions(self) -> list[dict] | None:
        """Each landmark's conformal region, in landmark order: ``[{'index', 'label', 'level', 'centre': (row, col),
        'semi_axes_px': (major, minor), 'angle_deg', 'area_px2', 'area_mm2'}]`` — the ellipse around the shown point
        that holds the true point with probability ``level`` (calibrated on the click protocol, so also after
        corrections). Every value but index and label is None for a pinned point (a person placed it) and
        ``area_mm2`` without a pixel spacing. None when the model has no regions (its card has none:
        ``napari-landmarks calibrate`` fits them)."""
        arr = self.region_arrays()
        if arr is None:
            return None

        def num(v):
            return None if not np.isfinite(v) else float(v)

        out = []
        for i, name in enumerate(self.schema.landmarks):
            has = bool(np.isfinite(arr["area_px2"][i]))
            out.append({"index": i, "label": name, "level": arr["level"] if has else None,
                        "centre": tuple(float(v) for v in arr["centre"][i]) if has else None,
                        "semi_axes_px": tuple(float(v) for v in arr["semi_axes_px"][i]) if has else None,
                        "angle_deg": num(arr["angle_deg"][i]), "area_px2": num(arr["area_px2"][i]),
                        "area_mm2": num(arr["area_mm2"][i])})
        return out

    @property
    def image_shape(self):
        return None if self._prepared is None else tuple(self._prepared.original_shape)

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    @property
    def dirty(self) -> bool:
        """True when there are corrections not yet saved."""
        return self._dirty

    def _need_state(self):
        if self._state is None:
            raise SessionError("no landmarks yet: run detect() first")

    def _push_undo(self):
        if self._state is not None:
            self._undo.append(self._state)
            del self._undo[: -self.max_history]
        self._redo.clear()
        self.generation += 1
        self._dirty = True

    def set_image(self, image, *, spacing=None, image_path=None):
        """A new image: preprocessing is done once here; all landmarks, pins and history are cleared."""
        self._prepared = self.predictor.prepare(image)
        self.spacing, self.image_path = spacing, image_path
        self._state = self._auto = None
        self.film_shift = None
        self._undo.clear()
        self._redo.clear()
        self.generation += 1
        self._dirty = False
        self._changed("image")

    def set_spacing(self, spacing) -> None:
        """Set the pixel spacing in mm (a number, (row_mm, col_mm), or None for unknown): measurements and ERE
        are then reported in mm. Refuses a spacing that is not positive and finite; changes no point."""
        if spacing is not None:
            arr = np.broadcast_to(np.asarray(spacing, dtype=float), (2,))
            if not (np.isfinite(arr).all() and (arr > 0).all()):
                raise SessionError(f"pixel spacing must be positive and finite (mm per pixel), got {spacing!r}")
            spacing = (float(arr[0]), float(arr[1]))
        self.spacing = spacing
        self._dirty = self._dirty or self._state is not None
        self._changed("spacing")

    # ------------------------------------------------------------------ async building blocks
    def request(self) -> InferenceRequest:
        """What to run now: every pinned point as a click, and as 'previous' the points as the model last left
        them (a point corrected since keeps, as its previous, where the model had put it — as in training)."""
        if self._prepared is None:
            raise SessionError("no image: call set_image() first")
        if self._state is None:
            return InferenceRequest(self.generation, {}, None)
        idx = np.flatnonzero(self._state.pinned)
        clicks = {int(i): (float(self._state.coords[i, 0]), float(self._state.coords[i, 1])) for i in idx}
        basis = self._state.basis if self._state.basis is not None else self._state.coords
        return InferenceRequest(self.generation, clicks, basis.copy())

    def compute(self, req: InferenceRequest) -> tuple[InferenceRequest, Prediction]:
        """Run the network for ``req`` (thread-safe; one inference at a time)."""
        with self._lock:
            pred = self.predictor.predict(self._prepared, clicks=req.clicks or None,
                                          previous=req.previous if req.clicks else None)
        return req, pred

    # ------------------------------------------------------------------ one inference at a time (GUIs)
    @property
    def running(self) -> bool:
        return self._running

    def begin(self) -> InferenceRequest | None:
        """Ask for an inference on the newest state. Returns the request to ``compute`` (in any thread) and then
        hand to :meth:`finish`; or None when one is running already — :meth:`finish` will then return a request
        for the newest state. Edits made meanwhile (``pin``, ``unpin_only``, undo…) are thereby merged into
        one follow-up run, and the stale result is dropped."""
        if self._running:
            self._rerun = True
            return None
        req = self.request()
        self._running = True
        return req

    def finish(self, result: tuple[InferenceRequest, Prediction]) -> InferenceRequest | None:
        """Merge the result of the request :meth:`begin` handed out. Returns the next request to run when the
        state changed while it ran (the result was stale and dropped) or another run was asked for; else None."""
        self._running = False
        applied = self.apply(result)
        rerun, self._rerun = self._rerun or not applied, False
        return self.begin() if rerun else None

    def cancel(self) -> None:
        """Give back the request :meth:`begin` handed out without a result (it failed, or a newer edit will ask
        again)."""
        self._running = self._rerun = False

    def apply(self, result: tuple[InferenceRequest, Prediction]) -> bool:
        """Merge a result into the unpinned points. Returns False (and changes nothing) when stale."""
        req, pred = result
        if req.generation != self.generation:
            return False
        self.last_prediction = pred
        if self._state is None:  # first detection
            if self.film_shift is None and hasattr(self.predictor, "check_film"):
                self.film_shift = self.predictor.check_film(self._prepared, pred)
            free = np.ones(self.num_landmarks, bool)
            st = _State(pred.coords.copy(), ~free, pred.scores.copy(), *self._uncertainty(pred, free),
                        basis=pred.coords.copy(), gain=self._gain_of(pred, free), wide=self._wide_of(pred, free),
                        **self._regions_of(pred, free))
            self._auto = st
            self._state = st
            self._changed("result")
            return True
        free = ~self._state.pinned
        coords = self._state.coords.copy()
        scores = self._state.scores.copy()
        coords[free] = pred.coords[free]
        scores[free] = pred.scores[free]
        scores[~free] = np.nan  # a person's point has no model score
        self._state = _State(coords, self._state.pinned.copy(), scores, *self._uncertainty(pred, free),
                             basis=coords.copy(), gain=self._gain_of(pred, free), wide=self._wide_of(pred, free),
                             **self._regions_of(pred, free))
        self._changed("result")
        return True

    @staticmethod
    def _uncertainty(pred: Prediction, free: np.ndarray):
        if pred.ere is None:
            return None, None
        ere = np.where(free, pred.ere, 0.0)
        return ere, pred.uncertainty_map(include=free).astype(np.float16)

    @staticmethod
    def _wide_of(pred: Prediction, free: np.ndarray):
        wide = getattr(pred, "ere_wide", None)
        return None if wide is None else np.asarray(wide, bool) & free

    @property
    def spread_wide(self) -> np.ndarray | None:
        """(K,) bool: the points whose doubt map is spread wider than their real errors ever were on the model's
        calibration films (a flat map, or two far-apart peaks: a film cut off, a second spine-like structure) — the
        model cannot place them; None when unknown."""
        self._need_state()
        return None if self._state.wide is None else self._state.wide.copy()

    @staticmethod
    def _gain_of(pred: Prediction, free: np.ndarray):
        gain = getattr(pred, "gain", None)
        return None if gain is None else np.where(free, gain, np.nan)

    @property
    def unfamiliar(self) -> bool:
        """True when the film was found unlike the films the model's doubt was calibrated on (:attr:`film_shift`):
        its regions are drawn at the wider level and its stated errors are not validated."""
        return bool(self.film_shift is not None and self.film_shift.unfamiliar)

    def film_check(self) -> dict | None:
        """What the files and the panel say of the film's familiarity: ``{"unfamiliar", "reasons", "region_level"}``;
        None when the model has no check."""
        if self.film_shift is None:
            return None
        return {**self.film_shift.to_dict(), "region_level": self.region_level}

    def _regions_of(self, pred: Prediction, free: np.ndarray) -> dict:
        radius, spread = getattr(pred, "region_radius", None), getattr(pred, "spread", None)
        if radius is None or spread is None:
            return {}
        cal = getattr(self.predictor, "regions", None)
        if self.unfamiliar and cal is not None and cal.wide_radii is not None:  # the wider level on such a film
            radius = np.where(np.isfinite(radius), cal.for_clicks(int(np.sum(pred.clicked)), wide=True), np.nan)
        keep = free & np.isfinite(radius)
        return dict(spread=np.where(keep[:, None, None], spread, np.nan), radius=np.where(keep, radius, np.nan))

    def _regions_without(self, pinned: np.ndarray) -> dict:
        """The current state's regions with those of ``pinned`` points dropped (a point placed by hand has none; the
        other points have not moved, so their regions stay until the model's answer replaces them)."""
        st = self._state
        if st.radius is None or st.spread is None:
            return {}
        return dict(spread=np.where(pinned[:, None, None], np.nan, st.spread), radius=np.where(pinned, np.nan, st.radius))

    def pin(self, updates: dict) -> None:
        """Place or move points by hand (index or name → (row, col)); no inference. One undo step."""
        self._need_state()
        h, w = self.image_shape
        checked = self.predictor._check_clicks(updates, (h, w))
        self._push_undo()
        coords, pinned = self._state.coords.copy(), self._state.pinned.copy()
        scores = self._state.scores.copy()
        for i, (r, c) in checked.items():
            coords[i] = (r, c)
            pinned[i] = True
            scores[i] = np.nan
        self._state = _State(coords, pinned, scores, basis=self._state.basis, **self._regions_without(pinned))
        self._changed("pinned")

    def unpin_only(self, index) -> bool:
        """Hand a point back to the model without running it (one undo step). Returns False, changing nothing,
        when the point is not pinned."""
        self._need_state()
        try:
            i = self.schema.index(index)
        except (IndexError, KeyError) as exc:
            raise PredictionError(exc.args[0]) from None
        if not self._state.pinned[i]:
            return False
        self._push_undo()
        pinned = self._state.pinned.copy()
        pinned[i] = False
        # the handed-back point has no region until the model's answer (it was placed by hand)
        self._state = _State(self._state.coords.copy(), pinned, self._state.scores.copy(), basis=self._state.basis,
                             **self._regions_without(self._state.pinned))
        self._changed("unpinned")
        return True

    # ------------------------------------------------------------------ synchronous API (console, scripts)
    def _run(self) -> Prediction:
        res = self.compute(self.request())
        self.apply(res)
        return res[1]

    def detect(self) -> np.ndarray:
        """Automatic prediction; keeps any pinned points (run it again after pins to refine)."""
        if self._state is not None:
            self._push_undo()
        self._run()
        return self.coords

    def correct(self, index, position) -> np.ndarray:
        """Move one landmark to (row, col) (pinned), re-run the model, return all coordinates."""
        self.pin({index: position})
        self._run()
        return self.coords

    def correct_many(self, updates: dict) -> np.ndarray:
        self.pin(updates)
        self._run()
        return self.coords

    def unpin(self, index) -> np.ndarray:
        """Hand a point back to the model and re-run it. A point that is not pinned: nothing happens (no model
        run, no undo step)."""
        if self.unpin_only(index):
            self._run()
        return self.coords

    def reset(self) -> np.ndarray:
        """Back to the automatic prediction: all pins removed (one undo step)."""
        self._need_state()
        self._push_undo()
        self._state = self._auto
        self._changed("reset")
        return self.coords

    def undo(self) -> bool:
        if not self._undo:
            return False
        self._redo.append(self._state)
        self._state = self._undo.pop()
        self.generation += 1
        self._dirty = True
        self._changed("undo")
        return True

    def redo(self) -> bool:
        if not self._redo:
            return False
        self._undo.append(self._state)
        self._state = self._redo.pop()
        self.generation += 1
        self._dirty = True
        self._changed("redo")
        return True

    # ------------------------------------------------------------------ output
    def measurements(self) -> dict:
        """The landmark set's clinical measurements on the current points ({name: Measurement}); a
        measurement whose landmarks are missing or degenerate is returned unavailable, with the reason. Each
        carries its confidence from the current ERE (``expected_error``, ``uncertain``, ``doubt``; pinned
        points count as exact); with no ERE (a model without uncertainty) those stay None / False / None."""
        from ..measurements import compute_measurements

        self._need_state()
        return compute_measurements(self.schema, self._state.coords, self.spacing, image_shape=self.image_shape,
                                    ere=self._state.ere,  # a model card's doubt scales make the ± a level interval
                                    doubt_scales=getattr(getattr(self.predictor, "card", None), "doubt_scales", None))

    def points(self) -> list[dict]:
        """Landmark order: [{'index', 'label', 'row', 'col', 'pinned', 'score'}]."""
        self._need_state()
        st = self._state
        ere = st.ere if st.ere is not None else np.full(self.num_landmarks, np.nan)
        return [{"index": i, "label": n, "row": float(st.coords[i, 0]), "col": float(st.coords[i, 1]),
                 "pinned": bool(st.pinned[i]), "score": None if not np.isfinite(st.scores[i]) else float(st.scores[i]),
                 "ere_px": None if not np.isfinite(ere[i]) else float(ere[i])}
                for i, n in enumerate(self.schema.landmarks)]

    def save(self, path, overwrite: bool = False) -> Path:
        """Write the landmark JSON (or CSV by extension, plus ``<stem>.measurements.csv`` next to it), each point
        with its expected error and its conformal region (level, centre, semi-axes, angle, area; null / empty for a
        pinned point or a model without regions; see :meth:`regions`) and each measurement with its doubt, as the
        viewer shows them. Refuses to overwrite unless asked.

        All or nothing: every target is checked before anything is written (one that exists without
        ``overwrite``: ``SaveExistsError``, a ``FileExistsError``; a folder that is missing or not writable:
        ``SaveError``), all files are written to temporaries, and only then do they replace their targets. Any
        failure raises a ``SaveError`` (an ``OSError``, from ``io.files``) naming the target that could not be
        written, leaves no file and no temporary behind, and the session stays unsaved (``dirty``)."""
        from ..io.files import write_texts
        from ..io.landmarks import format_landmarks_csv, format_landmarks_json

        self._need_state()
        path = Path(path)
        st = self._state
        spacing = None if self.spacing is None else (list(self.spacing) if np.ndim(self.spacing) else [self.spacing] * 2)
        # each point's ERE and region as the viewer shows them (regions null throughout for a model without them)
        common = dict(pinned=st.pinned, scores=st.scores, ere=st.ere, regions=self.region_arrays() or {"level": None})
        film_check = self.film_check()
        measurements = {k: m.to_dict() for k, m in self.measurements().items()}
        if path.suffix.lower() == ".dcm":  # a DICOM structured report referencing the film (io/dicom_sr.py)
            from ..io.dicom_sr import write_landmarks_sr

            source, spacing_source = self._dicom_source()
            write_landmarks_sr(path, source, labels=list(self.schema.landmarks), coords=st.coords, pinned=st.pinned,
                               ere=st.ere, regions=self.region_arrays(), measurements=measurements,
                               spacing=self.spacing, spacing_source=spacing_source if self.spacing is not None else None,
                               model=str(self.predictor.name), landmark_set=self.schema.name, overwrite=overwrite)
            self._dirty = False
            return path
        if path.suffix.lower() == ".csv":
            texts = {path: format_landmarks_csv(st.coords, list(self.schema.landmarks), spacing=spacing, **common)}
            if measurements:
                texts[path.with_name(path.stem + ".measurements.csv")] = format_measurements_csv(measurements)
        else:
            texts = {path: format_landmarks_json(
                st.coords, list(self.schema.landmarks), landmark_set=self.schema.name, model=self.predictor.name,
                image_path=None if self.image_path is None else str(self.image_path),
                image_shape=list(self.image_shape), spacing=spacing, measurements=measurements, film_check=film_check,
                **common)}
        write_texts(texts, overwrite=overwrite)
        self._dirty = False
        return path

    def _dicom_source(self):
        """(the film's DICOM header, which spacing attribute it gives) for a structured report; a SessionError when
        the film is not a DICOM file (an SR must reference a DICOM image)."""
        from ..io.images import _dicom_spacing, sniff_format

        if self.image_path is None or sniff_format(self.image_path) != "dicom":
            raise SessionError("a DICOM structured report references its DICOM film; this film is "
                               + ("not from a file" if self.image_path is None else f"{Path(self.image_path).name}, "
                                  "not a DICOM file") + ": save as .json or .csv instead")
        import pydicom

        ds = pydicom.dcmread(str(self.image_path), stop_before_pixels=True)
        return ds, _dicom_spacing(ds)[1]

    # ------------------------------------------------------------------ recovery (a viewer closed with unsaved work)
    def recovery_path(self) -> Path | None:
        """Where :meth:`save_recovery` keeps this image's unsaved corrections: ``<recovery folder>/<image content
        hash>-<model>.landmarks.json``, the folder ``$NAPARI_LANDMARKS_RECOVERY_DIR`` or the user's cache folder
        (platformdirs); None without an image."""
        if self._prepared is None:
            return None
        import os

        folder = os.environ.get("NAPARI_LANDMARKS_RECOVERY_DIR")
        if not folder:
            from platformdirs import user_cache_dir

            folder = Path(user_cache_dir("napari-interactive-landmarks")) / "recovery"
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(self.predictor.name))
        return Path(folder) / f"{self._prepared.key}-{safe}.landmarks.json"

    def save_recovery(self) -> Path | None:
        """Keep unsaved corrections in the recovery file (overwriting an older one) and return its path; None when
        there is nothing unsaved. The session stays unsaved (``dirty``): a recovery file is not the user's save."""
        if self._state is None or not self._dirty or not self._state.pinned.any():
            return None
        path = self.recovery_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.save(path, overwrite=True)
        self._dirty = True
        return path

    def mark_unsaved(self) -> None:
        """Count the current points as not saved (e.g. restored from a recovery file, which is no save of the
        user's)."""
        self._dirty = True

    def recovered(self) -> Path | None:
        """The recovery file of this image and model, when one was left by a viewer closed with unsaved work."""
        path = self.recovery_path()
        return path if path is not None and path.is_file() else None

    def load(self, path, *, merge_partial: bool = False) -> np.ndarray:
        """Load a landmark file for this image (one undo step). Its landmark set must match the model's.

        Everything is checked before anything changes: an unreadable or truncated file, another landmark set or
        image size, or a point outside the image raises (``LandmarkFileError`` / ``SessionError``, naming the
        problem) and leaves the session exactly as it was. A file that lacks some landmarks is refused, saying
        how many, unless ``merge_partial=True``: then only the file's points are taken and every other point —
        the user's pinned corrections included — stays where it is (without landmarks yet, the model places the
        others first)."""
        from ..io.landmarks import LandmarkFileError, read_landmarks_csv, read_landmarks_json

        path = Path(path)
        reader = read_landmarks_csv if path.suffix.lower() == ".csv" else read_landmarks_json
        if path.suffix.lower() == ".dcm":
            reader = self._sr_reader
        try:
            head = reader(path)  # its own landmark set, to name it when it is not the model's
        except LandmarkFileError:
            head = None  # e.g. a partial file's indices: the read against the model's names below says what is wrong
        for lf in (head,) if head is not None else ():
            self._check_landmark_set(path, lf)
        lf = reader(path, landmark_names=list(self.schema.landmarks))
        self._check_landmark_set(path, lf)
        if self.image_shape and lf.image_shape and tuple(lf.image_shape) != tuple(self.image_shape):
            raise SessionError(f"{path.name} was made on a {lf.image_shape[0]} × {lf.image_shape[1]} image, this one is "
                               f"{self.image_shape[0]} × {self.image_shape[1]}")
        k = self.num_landmarks
        coords = np.asarray(lf.coords, float)
        present = np.isfinite(coords).all(1)
        missing = np.flatnonzero(~present)
        if not present.any():
            raise SessionError(f"{path.name} holds no landmark positions")
        if len(missing) and not merge_partial:
            raise PartialFileError(
                f"{path.name} lacks {len(missing)} of {k} landmarks ({self._names(missing)}); loading it would "
                f"replace them. Load it with merge_partial=True to take only its {k - len(missing)} points and keep "
                f"every other point, your corrections included, where it is", k - len(missing), k)
        if self.image_shape:
            h, w = self.image_shape
            r, c = coords[:, 0], coords[:, 1]
            with np.errstate(invalid="ignore"):
                outside = np.flatnonzero(present & ~((r >= -0.5) & (r <= h - 0.5) & (c >= -0.5) & (c <= w - 0.5)))
            if len(outside):
                where = ", ".join(f"{self.schema.landmarks[i]} at (row {r[i]:.1f}, col {c[i]:.1f})" for i in outside[:3])
                raise SessionError(
                    f"{path.name}: {len(outside)} point(s) lie outside the image ({h} × {w} px): {where}"
                    f"{', …' if len(outside) > 3 else ''}; is the file for another image?")
        pinned = np.asarray(lf.pinned, bool) & present
        scores = np.asarray(lf.scores, float)
        had_state = self._state is not None
        if len(missing) and not had_state:
            self._run()  # the model places the landmarks the file lacks
        if self._state is not None:
            base = self._state
            coords = np.where(present[:, None], coords, base.coords)
            pinned = np.where(present, pinned, base.pinned)
            scores = np.where(present, scores, base.scores)
        if had_state:
            self._push_undo()
        self._state = _State(coords, pinned, scores)
        if self._auto is None:
            self._auto = self._state
        self.generation += 1
        self._dirty = bool(len(missing))  # a merge is not what the file holds
        self._changed("loaded")
        return self.coords

    def _sr_reader(self, path, landmark_names=None):
        """A structured report written by :meth:`save` as a LandmarkFile (matched by the landmarks' names)."""
        from ..io.dicom_sr import SRError, read_landmarks_sr
        from ..io.landmarks import LandmarkFile, LandmarkFileError

        names = list(landmark_names or self.schema.landmarks)
        try:
            got = read_landmarks_sr(path, names)
        except SRError as exc:
            raise LandmarkFileError(str(exc)) from None
        if self.image_path is not None and got["referenced_sop_instance_uid"]:
            try:
                source, _ = self._dicom_source()
                if str(source.SOPInstanceUID) != got["referenced_sop_instance_uid"]:
                    raise SessionError(f"{Path(path).name} reports on another film (SOP Instance UID "
                                       f"{got['referenced_sop_instance_uid']}, this film's is {source.SOPInstanceUID})")
            except SessionError as exc:
                if "another film" in str(exc):
                    raise
        return LandmarkFile(labels=names, coords=got["coords"], pinned=got["pinned"])

    def _names(self, idx) -> str:
        return ", ".join(self.schema.landmarks[i] for i in idx[:3]) + (", …" if len(idx) > 3 else "")

    def _check_landmark_set(self, path: Path, lf) -> None:
        if lf.landmark_set and lf.landmark_set != self.schema.name:
            raise SessionError(f"{path.name} holds '{lf.landmark_set}' landmarks, but the model '{self.predictor.name}' "
                               f"uses '{self.schema.name}': choose the matching model before loading it")
