"""Simulated-click evaluation protocol (Kim et al., MICCAI 2022) and the manual-revision baseline.

Protocol (:func:`run_click_protocol`)
-------------------------------------
Step 0 is the automatic prediction (no clicks).  For ``k = 1..max_clicks`` the next landmark
is chosen among the not-yet-clicked ones, a click is placed **at its ground-truth position**,
and the predictor is re-run with *all* clicks so far and ``previous`` = the coordinates of
step ``k-1`` (the predictor itself pins clicked landmarks and uses ``previous`` only in clicked
channels).  Selection rules (``order``):

* ``"worst"`` — largest current radial error against the ground truth (oracle; the paper's
  "a doctor corrects the clearly wrong point first").
* ``"ere"`` — highest predicted expected radial error ``pred.ere`` of the current step
  (``ValueError`` when the predictor returns none).  NaN ERE ranks last.
* ``"random"`` — uniform over the candidates, drawn from the given ``numpy.random.Generator``.

Decisions
---------
* **Ties** go to the lowest landmark index (``argmax`` semantics).
* **Missing ground truth** (NaN in ``sample.coords``): such a landmark cannot be clicked (there
  is no position to click), so it is never a candidate; its error is NaN and it is left out of
  the image's MRE (see :mod:`.metrics`).
* **Running out of candidates** (``max_clicks`` larger than the number of clickable
  landmarks): the remaining steps repeat the last state (coords, errors, ERE carried forward,
  no predictor call), so every trace has exactly ``max_clicks + 1`` steps; ``clicked`` only
  lists the clicks really made.
* Selection and the stored errors are in **pixels**; :func:`evaluate_dataset` converts to mm.

Manual-revision baseline (:func:`manual_revision`)
--------------------------------------------------
No model re-run: starting from the step-0 prediction, each click replaces one not-yet-clicked
landmark by its ground truth.  With ``"worst"`` it is the current worst one (of the manual
state).  For comparability the other orders mirror the model run: ``"ere"`` ranks by the
step-0 ERE (the manual state never changes elsewhere, so its ERE is the step-0 one) and
``"random"`` replays exactly the model run's click sequence.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..data.clicks import Clicker
from ..io.images import ImageError
from .metrics import collapsed_onto_click, damaged_by_click, failure_rate, mre, noc, others_delta, radial_errors, sdr

__all__ = [
    "ORDERS",
    "ImageTrace",
    "run_click_protocol",
    "manual_revision",
    "evaluate_dataset",
    "format_report",
]

ORDERS = ("worst", "ere", "suggested", "random")


@dataclass
class ImageTrace:
    """Everything recorded for one image.  ``S = max_clicks + 1`` steps, ``K`` landmarks;
    errors in original-image pixels."""

    name: str
    order: str
    gt: np.ndarray  # (K, 2)
    coords: np.ndarray  # (S, K, 2) model run
    errors: np.ndarray  # (S, K)
    clicked: list[int]  # landmark index of click 1, 2, ... (model run)
    manual_coords: np.ndarray  # (S, K, 2)
    manual_errors: np.ndarray  # (S, K)
    manual_clicked: list[int]
    ere: np.ndarray | None = None  # (S, K) predicted ERE per step (pixels), when available
    scores: np.ndarray | None = None  # (S, K)
    spread: np.ndarray | None = None  # (S, K, 2, 2) each point's map spread (the conformal regions' shape), px²
    # (S, K) each point's region radius as the session drew it (NaN where none; the wider level on an unfamiliar film)
    radius: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    @property
    def max_clicks(self) -> int:
        return self.coords.shape[0] - 1

    @property
    def mre_model(self) -> np.ndarray:
        """(S,) MRE in pixels after 0..max_clicks clicks, model run."""
        return mre(self.errors, axis=-1)

    @property
    def mre_manual(self) -> np.ndarray:
        """(S,) MRE in pixels after 0..max_clicks clicks, manual revision."""
        return mre(self.manual_errors, axis=-1)


def _check_order(order: str) -> None:
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")


def _as_rng(rng) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _coords_of(pred, k: int) -> np.ndarray:
    c = np.array(pred.coords, dtype=np.float64)
    if c.shape != (k, 2):
        raise ValueError(f"predictor returned coords of shape {c.shape}, expected ({k}, 2)")
    return c


def _session_state(session, k: int):
    """(coords, ERE or None, scores or None) of a session after an update, shape-checked against the model's
    raw prediction (a person's points: ERE 0, score NaN)."""
    pred = session.last_prediction
    _coords_of(pred, k)
    _optional(pred, "ere", k)
    _optional(pred, "scores", k)
    return session.coords.astype(np.float64), session.ere, session.scores.astype(np.float64)


def _optional(pred, attr: str, k: int) -> np.ndarray | None:
    v = getattr(pred, attr, None)
    if v is None:
        return None
    v = np.array(v, dtype=np.float64).reshape(-1)
    if v.shape != (k,):
        raise ValueError(f"predictor returned {attr} of shape {v.shape}, expected ({k},)")
    return v


def manual_revision(
    initial_coords,
    gt,
    max_clicks: int = 10,
    order: str = "worst",
    *,
    ere=None,
    click_sequence: Sequence[int] | None = None,
    rng=None,
    click_noise_px: float = 0.0,
    image_shape=None,
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Manual-revision baseline: replace one landmark per click by its ground truth, no re-run.

    Parameters
    ----------
    initial_coords, gt : (K, 2) arrays (pixels); NaN rows in ``gt`` are never clicked.
    order : ``"worst"`` (current largest error), ``"ere"`` (highest ``ere``, which must be given),
        or ``"random"`` (replays ``click_sequence`` when given, else draws with ``rng``).
    click_sequence : explicit clicks to replay (overrides ``order``'s selection).

    Returns
    -------
    coords (S, K, 2), errors (S, K) in pixels, and the list of clicked indices
    (``S = max_clicks + 1``; steps after the candidates run out repeat the last state).
    """
    _check_order(order)
    cur = np.array(initial_coords, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    k = gt.shape[0]
    if order in ("ere", "suggested") and click_sequence is None and ere is None:
        raise ValueError("manual_revision(order='ere') needs the step-0 ERE (ere=...)")
    clicker = Clicker(order, noise_px=click_noise_px, rng=_as_rng(rng))
    clickable = np.all(np.isfinite(gt), axis=1)
    done = np.zeros(k, dtype=bool)
    errs = radial_errors(cur, gt)
    coords_steps, err_steps, clicked = [cur.copy()], [errs.copy()], []
    seq = list(click_sequence) if click_sequence is not None else None
    for step in range(1, max_clicks + 1):
        if seq is not None:
            idx = int(seq[step - 1]) if step - 1 < len(seq) else None
        else:
            idx = clicker.choose(errs, done, ere, clickable)
        if idx is not None:
            cur[idx] = clicker.position(gt[idx], image_shape)
            done[idx] = True
            clicked.append(idx)
            errs = radial_errors(cur, gt)
        coords_steps.append(cur.copy())
        err_steps.append(errs.copy())
    return np.stack(coords_steps), np.stack(err_steps), clicked


def run_click_protocol(predictor, sample, max_clicks: int = 10, order: str = "worst", rng=None,
                       click_noise_px: float = 0.0) -> ImageTrace:
    """Run the simulated-click protocol on one sample (see the module docstring).

    ``predictor`` follows the inference interface (``num_landmarks``, ``prepare(image)``,
    ``predict(prepared, clicks={idx: (row, col)}, previous=coords_or_None)`` → object with
    ``coords`` (K, 2), ``scores`` (K,), optional ``ere`` (K,)).  ``sample`` has ``name``,
    ``coords`` (K, 2 ground truth), ``load_image()``.  ``rng`` (Generator or seed) is used only
    by ``order="random"``.  Returns an :class:`ImageTrace` holding the model run and the
    manual-revision baseline.
    """
    _check_order(order)
    max_clicks = int(max_clicks)
    if max_clicks < 0:
        raise ValueError(f"max_clicks must be >= 0, got {max_clicks}")
    clicker = Clicker(order, noise_px=click_noise_px, rng=_as_rng(rng))
    gt = np.asarray(sample.coords, dtype=np.float64)
    k = int(predictor.num_landmarks)
    if gt.shape != (k, 2):
        raise ValueError(f"sample {sample.name!r}: ground truth shape {gt.shape} != ({k}, 2)")

    from ..inference.session import LandmarkSession

    # the user's path: the session prepares the image once, pins every correction, re-runs the model with all
    # of them as clicks and the points as the model last left them as 'previous', and merges the result into
    # the unpinned points
    session = LandmarkSession(predictor, sample.load_image())
    image_shape = session.image_shape or getattr(sample, "image_shape", None)
    session.detect()
    cur, cur_ere, cur_scores = _session_state(session, k)
    # (suggested: what "check next" ranks by — each point's expected gain where the model has a shape model)
    key0 = session.suggestion_scores() if order == "suggested" else cur_ere
    if order in ("ere", "suggested") and cur_ere is None:
        raise ValueError(
            "order='ere' needs a predictor that returns an expected radial error (pred.ere); "
            f"{type(predictor).__name__} returned pred.ere=None"
        )
    errs = radial_errors(cur, gt)
    spread_steps = [_spread_of(session, k)]
    radius_steps = [_radius_of(session)]

    coords_steps, err_steps = [cur], [errs]
    ere_steps = [cur_ere] if cur_ere is not None else None
    score_steps = [cur_scores] if cur_scores is not None else None
    clickable = np.all(np.isfinite(gt), axis=1)
    done = np.zeros(k, dtype=bool)
    clicked: list[int] = []

    for _ in range(max_clicks):
        if order == "ere" and cur_ere is None and (clickable & ~done).any():
            raise ValueError("order='ere': the predictor stopped returning pred.ere after a click")
        key = session.suggestion_scores() if order == "suggested" else cur_ere
        idx = clicker.choose(errs, done, key, clickable)
        if idx is not None:
            done[idx] = True
            clicked.append(idx)
            session.correct(idx, clicker.position(gt[idx], image_shape))
            cur, cur_ere, cur_scores = _session_state(session, k)
            errs = radial_errors(cur, gt)
        spread_steps.append(_spread_of(session, k))
        radius_steps.append(_radius_of(session))
        coords_steps.append(cur)
        err_steps.append(errs)
        if ere_steps is not None:
            ere_steps.append(cur_ere if cur_ere is not None else np.full(k, np.nan))
        if score_steps is not None:
            score_steps.append(cur_scores if cur_scores is not None else np.full(k, np.nan))

    m_coords, m_errs, m_clicked = manual_revision(
        coords_steps[0],
        gt,
        max_clicks,
        order,
        ere=key0,
        click_sequence=clicked if order == "random" else None,
        rng=np.random.default_rng(clicker.rng.integers(2**63)) if click_noise_px > 0 else None,
        click_noise_px=click_noise_px,
        image_shape=image_shape,
    )
    return ImageTrace(
        name=str(sample.name),
        order=order,
        gt=gt,
        coords=np.stack(coords_steps),
        errors=np.stack(err_steps),
        clicked=clicked,
        manual_coords=m_coords,
        manual_errors=m_errs,
        manual_clicked=m_clicked,
        ere=np.stack(ere_steps) if ere_steps is not None else None,
        scores=np.stack(score_steps) if score_steps is not None else None,
        spread=None if any(v is None for v in spread_steps) else np.stack(spread_steps),
        radius=None if any(v is None for v in radius_steps) else np.stack(radius_steps),
        extra={} if session.film_shift is None else {"film_check": session.film_check()},
    )


def _radius_of(session) -> np.ndarray | None:
    """(K,) the region radius of each point as the session draws it (NaN where none), or None without regions."""
    geo = session.region_geometry() if getattr(session.predictor, "regions", None) is not None else None
    return None if geo is None else np.asarray(geo[2], np.float64)


def _spread_of(session, k: int) -> np.ndarray | None:
    """(K, 2, 2) the map spread of the session's last prediction (NaN for pinned points), or None."""
    v = getattr(session.last_prediction, "spread", None)
    if v is None:
        return None
    v = np.array(v, dtype=np.float64)
    if v.shape != (k, 2, 2):
        raise ValueError(f"predictor returned spread of shape {v.shape}, expected ({k}, 2, 2)")
    v[np.asarray(session.pinned, bool)] = np.nan  # a person's point has no region
    return v


def region_scores(trace: ImageTrace) -> np.ndarray | None:
    """(S, K) Mahalanobis radius of each true point under its map spread about the shown point (NaN for clicked
    or unannotated landmarks): the conformal regions' nonconformity scores."""
    from ..regions import mahalanobis_radius

    if trace.spread is None:
        return None
    return mahalanobis_radius(trace.gt[None] - trace.coords, trace.spread)


def _region_summary(scores, areas_cal, areas_gauss, radii, level: float, unit: str) -> dict:
    """Coverage and median area of the conformal regions (when the model has them) and of the map's own Gaussian
    ellipse at the same level, per click count and per landmark. ``scores`` (N, S, K); areas (N, S, K); ``radii``
    (S, K), the radius of each step's regions."""
    from ..regions import gaussian_radius

    out = {"level": level, "area_unit": f"{unit}^2"}
    tracks = [("heatmap_gaussian", np.full(scores.shape[1:], gaussian_radius(level)), areas_gauss)]
    if radii is not None:
        tracks.insert(0, ("conformal", radii, areas_cal))
    for name, r, areas in tracks:
        valid = np.isfinite(scores)
        hit = np.where(valid, scores <= r, False)
        with np.errstate(invalid="ignore"):
            cov_click = [_json_float(100.0 * hit[:, j].sum() / valid[:, j].sum()) if valid[:, j].any() else None
                         for j in range(scores.shape[1])]
            per_lm = [_json_float(100.0 * hit[:, :, k].sum() / valid[:, :, k].sum()) if valid[:, :, k].any()
                      else None for k in range(scores.shape[2])]
            per_lm0 = [_json_float(100.0 * hit[:, 0, k].sum() / valid[:, 0, k].sum()) if valid[:, 0, k].any()
                       else None for k in range(scores.shape[2])]
        area_click = [_json_float(np.nanmedian(np.where(valid[:, j], areas[:, j], np.nan)))
                      if valid[:, j].any() else None for j in range(scores.shape[1])]
        out[name] = {"coverage_per_click": cov_click, "median_area_per_click": area_click,
                     "coverage_per_landmark": per_lm, "coverage_per_landmark_0": per_lm0,
                     "coverage_all": _json_float(100.0 * hit.sum() / max(valid.sum(), 1))}
    return out


# --------------------------------------------------------------------------- dataset level


def _key(x: float) -> str:
    """Stable dict key for a target / radius: 20 → "20", 2.5 → "2.5"."""
    return f"{float(x):g}"


def _json_list(a) -> list:
    """ndarray → nested list of Python floats, non-finite values → None (strict JSON)."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 0:
        v = float(a)
        return v if math.isfinite(v) else None  # type: ignore[return-value]
    return [_json_list(x) for x in a]


def _json_float(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def evaluate_dataset(
    predictor,
    samples: Iterable,
    *,
    max_clicks: int = 10,
    order: str = "worst",
    targets: Sequence[float] = (20, 30, 40, 50),
    sdr_radii: Sequence[float] | None = None,
    unit: str = "px",
    seed: int = 0,
    progress: bool = True,
    on_trace=None,
    click_noise_px: float = 0.0,
    damage: tuple[float, float] | None = None,
) -> dict:
    """Run :func:`run_click_protocol` on every sample and aggregate (JSON-ready dict).

    ``damage`` ``(good, bad)`` in ``unit`` (default 10 / 20 px, 1 / 2 mm): a click *damages* when a landmark not
    clicked so far that was within ``good`` of its truth ends more than ``bad`` from it (``damage_rate``).

    ``on_trace(sample, trace)``, when given, is called with each image's :class:`ImageTrace` (e.g. to
    derive clinical measurements from the per-click coordinates).

    ``unit="px"``: errors in original-image pixels; ``unit="mm"``: each sample's ``spacing``
    converts pixels to mm (``ValueError`` if a sample has none).  ``targets`` (NoC/FR) and
    ``sdr_radii`` are in ``unit``.  ``seed`` drives ``order="random"``: one independent
    generator per image, spawned from ``numpy.random.SeedSequence(seed)`` (reproducible and
    independent of other images).

    Keys: ``unit, order, num_images, max_clicks, mre_model, mre_manual`` (lists indexed by the
    number of clicks: mean over images of the per-image MRE), ``noc, fr, noc_manual, fr_manual``
    (keyed by ``str(target)``), ``sdr, sdr_manual`` (only with ``sdr_radii``: keyed by radius →
    list over clicks, percent, pooled over all landmarks of all images), ``per_image`` (list of
    ``{name, mre_model, mre_manual, clicked, clicked_manual}``), ``num_skipped`` and ``skipped`` (images that
    could not be read or used — ``ImageError`` — each ``{name, reason}``; they are left out, the others
    evaluated; ``num_images`` counts the evaluated ones), ``errors_0`` (K-wise errors at
    0 clicks, one list per image) and ``ere_0`` (same shape, in ``unit``: pixel ERE times the
    mean spacing for mm; ``None`` when the predictor gives no ERE).  Non-finite numbers (missing ground truth) become ``None``.
    """
    _check_order(order)
    if unit not in ("px", "mm"):
        raise ValueError(f"unit must be 'px' or 'mm', got {unit!r}")
    samples = list(samples)
    if unit == "mm":
        missing = [s.name for s in samples if getattr(s, "spacing", None) is None]
        if missing:
            raise ValueError(f"unit='mm' but {len(missing)} sample(s) have no spacing, e.g. {missing[:3]}")
    seeds = np.random.SeedSequence(seed).spawn(len(samples))

    iterator = samples
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(samples, desc=f"evaluate ({order})", unit="img", file=sys.stderr)

    mre_m, mre_h, err_m, err_h, errors_0, ere_0, per_image = [], [], [], [], [], [], []
    region_s, region_a, gauss_a = [], [], []  # per image (S, K): region scores, conformal / Gaussian areas
    regions = getattr(predictor, "regions", None)
    if damage is None:
        damage = (1.0, 2.0) if unit == "mm" else (10.0, 20.0)
    good, bad = (float(v) for v in damage)
    if not 0 < good <= bad:
        raise ValueError(f"damage thresholds must be 0 < good <= bad, got {damage}")
    damages = []  # per image: (α,) whether a well-placed unclicked landmark ended badly placed after click n
    deltas, collapses = [], []  # per image: (α,) change of the unclicked landmarks' error; collapse onto the click
    skipped = []  # images that cannot be read or used: reported, the others evaluated
    has_ere = True
    for sample, ss in zip(iterator, seeds):
        try:
            tr = run_click_protocol(predictor, sample, max_clicks=max_clicks, order=order,
                                    rng=np.random.default_rng(ss), click_noise_px=click_noise_px)
        except ImageError as exc:  # reading or preparing the image (unreadable, corrupt, constant…)
            skipped.append({"name": str(sample.name), "reason": str(exc)})
            continue
        if on_trace is not None:
            on_trace(sample, tr)
        spacing = sample.spacing if unit == "mm" else None
        e_model = radial_errors(tr.coords, tr.gt, spacing)  # (S, K)
        e_manual = radial_errors(tr.manual_coords, tr.gt, spacing)
        err_m.append(e_model)
        err_h.append(e_manual)
        mre_m.append(mre(e_model, axis=-1))
        mre_h.append(mre(e_manual, axis=-1))
        errors_0.append(e_model[0])
        deltas.append(others_delta(e_model, tr.clicked))
        rs = region_scores(tr)
        if rs is not None:
            from ..regions import gaussian_radius, region_area

            # mm² per px²: a scalar spacing is the pixel's side (ISBI's 0.1 mm: 0.01 mm² per px², not 0.1)
            a2 = 1.0 if spacing is None else float(np.prod(np.broadcast_to(np.asarray(spacing, np.float64), 2)))
            region_s.append(rs)
            gauss_a.append(region_area(tr.spread, gaussian_radius(regions.level if regions else 0.95)) * a2)
            if regions is not None:
                steps = np.arange(tr.spread.shape[0])
                region_a.append(region_area(tr.spread, np.stack([regions.for_clicks(j) for j in steps])) * a2)
        collapses.append(collapsed_onto_click(tr.coords, tr.gt, tr.clicked))
        damages.append(damaged_by_click(e_model, tr.clicked, good, bad))
        if tr.ere is None:
            has_ere = False
        else:
            scale = 1.0 if spacing is None else float(np.mean(np.asarray(spacing, dtype=np.float64)))
            ere_0.append(tr.ere[0] * scale)
        per_image.append(
            {
                "name": tr.name,
                "mre_model": _json_list(mre_m[-1]),
                "mre_manual": _json_list(mre_h[-1]),
                "clicked": [int(i) for i in tr.clicked],
                "clicked_manual": [int(i) for i in tr.manual_clicked],
            }
        )

    if samples and not per_image:
        raise ImageError(f"none of the {len(samples)} images could be used, e.g. {skipped[0]['reason']}")
    s = max_clicks + 1
    mre_m_arr = np.array(mre_m).reshape(-1, s)
    mre_h_arr = np.array(mre_h).reshape(-1, s)

    def curve(arr):
        return [_json_float(mre(arr[:, j], axis=0)) for j in range(s)]

    result: dict = {
        "unit": unit,
        "order": order,
        "num_images": len(per_image),
        "num_skipped": len(skipped),
        "skipped": skipped,
        "max_clicks": int(max_clicks),
        "click_noise_px": float(click_noise_px),
        "mre_model": curve(mre_m_arr),
        "mre_manual": curve(mre_h_arr),
        "noc": {_key(t): _json_float(noc(mre_m_arr, t, max_clicks)) for t in targets},
        "fr": {_key(t): _json_float(failure_rate(mre_m_arr, t, max_clicks)) for t in targets},
        "noc_manual": {_key(t): _json_float(noc(mre_h_arr, t, max_clicks)) for t in targets},
        "fr_manual": {_key(t): _json_float(failure_rate(mre_h_arr, t, max_clicks)) for t in targets},
    }
    result.update(_harm_summary(deltas, collapses, [len(tr_c["clicked"]) for tr_c in per_image], max_clicks,
                                damages))
    result["damage_thresholds"] = [good, bad]
    if sdr_radii is not None:
        radii = list(sdr_radii)
        for key, errs in (("sdr", err_m), ("sdr_manual", err_h)):
            stacked = np.stack(errs, axis=0) if errs else np.empty((0, s, 0))  # (N, S, K)
            per_step = [sdr(stacked[:, j], radii) for j in range(s)]  # S x (R,)
            result[key] = {_key(r): [_json_float(p[i]) for p in per_step] for i, r in enumerate(radii)}
    if region_s and len(region_s) == len(per_image):
        result["regions"] = _region_summary(np.stack(region_s), np.stack(region_a) if region_a else None,
                                            np.stack(gauss_a),
                                            None if regions is None else np.stack([regions.for_clicks(j) for j in
                                                                                   range(max_clicks + 1)]),
                                            regions.level if regions is not None else 0.95, unit)
    result["per_image"] = per_image
    result["errors_0"] = [_json_list(e) for e in errors_0]
    result["ere_0"] = [_json_list(e) for e in ere_0] if (has_ere and samples) else None
    return result


def _harm_summary(deltas, collapses, num_clicked, max_clicks, damages=None) -> dict:
    """``others_delta`` (α,): mean over images of the change of the unclicked landmarks' mean error caused by
    click n (in the result's unit; negative = the click helped them); ``harm_rate`` (α,): % of images whose
    unclicked landmarks got worse on average after click n; ``harm_rate_all``: the same over every click made;
    ``collapse_rate`` (α,) / ``collapse_rate_all``: % of clicks after which another landmark moved onto the
    clicked position (closer than half its true distance from it); ``damage_rate`` (α,) / ``damage_rate_all``: % of
    clicks after which a well-placed unclicked landmark ended badly placed (:func:`damaged_by_click`). Clicks not
    made (candidates ran out) do not count."""
    if not deltas:
        return {"others_delta": [], "harm_rate": [], "harm_rate_all": None, "collapse_rate": [],
                "collapse_rate_all": None, "damage_rate": [], "damage_rate_all": None}
    d = np.array(deltas, dtype=np.float64).reshape(len(deltas), max_clicks)
    made = np.arange(max_clicks)[None, :] < np.asarray(num_clicked)[:, None]
    col = np.array(collapses, dtype=bool).reshape(len(deltas), max_clicks)

    def pct(mask, among):
        n = among.sum()
        return float(100.0 * (mask & among).sum() / n) if n else float("nan")

    fin = np.isfinite(d) & made
    with np.errstate(invalid="ignore"):
        harmed = np.where(fin, d > 0, False)
    out = {
        "others_delta": [_json_float(np.nanmean(d[fin[:, j], j]) if fin[:, j].any() else np.nan) for j in range(max_clicks)],
        "harm_rate": [_json_float(pct(harmed[:, j], fin[:, j])) for j in range(max_clicks)],
        "harm_rate_all": _json_float(pct(harmed, fin)),
        "collapse_rate": [_json_float(pct(col[:, j], made[:, j])) for j in range(max_clicks)],
        "collapse_rate_all": _json_float(pct(col, made)),
    }
    if damages is not None:
        dam = np.array(damages, dtype=bool).reshape(len(deltas), max_clicks)
        out["damage_rate"] = [_json_float(pct(dam[:, j], made[:, j])) for j in range(max_clicks)]
        out["damage_rate_all"] = _json_float(pct(dam, made))
    return out


def _fmt(x, width: int = 8, prec: int = 2) -> str:
    return f"{'-':>{width}}" if x is None else f"{x:>{width}.{prec}f}"


def format_report(result: dict) -> str:
    """Readable plain-text summary of an :func:`evaluate_dataset` result."""
    u = result["unit"]
    lines = [
        f"Click protocol: order={result['order']}, images={result['num_images']}, "
        f"max clicks={result['max_clicks']}, unit={u}",
        "",
        f"{'clicks':>6} {'MRE model':>10} {'MRE manual':>11}",
    ]
    for k, (a, b) in enumerate(zip(result["mre_model"], result["mre_manual"])):
        lines.append(f"{k:>6} {_fmt(a, 10)} {_fmt(b, 11)}")
    if result["noc"]:
        a = result["max_clicks"]
        lines += ["", f"{'target':>8} {'NoC model':>10} {'NoC manual':>11} {'FR model %':>11} {'FR manual %':>12}"]
        for t in result["noc"]:
            lines.append(
                f"{t + ' ' + u:>8} {_fmt(result['noc'][t], 10)} {_fmt(result['noc_manual'][t], 11)} "
                f"{_fmt(result['fr'][t], 11)} {_fmt(result['fr_manual'][t], 12)}"
            )
        lines.append(f"(NoC_{a}@target: clicks needed, 0 if the automatic prediction meets it; {a} if never)")
    if result.get("others_delta"):
        dmg = result.get("damage_rate") or [None] * len(result["others_delta"])
        lines += ["", f"{'click':>6} {'others Δ ' + u:>12} {'harm %':>8} {'collapse %':>11} {'damage %':>9}"]
        for k, (dl, hr, cr, dr) in enumerate(zip(result["others_delta"], result["harm_rate"], result["collapse_rate"],
                                                 dmg), 1):
            lines.append(f"{k:>6} {_fmt(dl, 12)} {_fmt(hr, 8, 1)} {_fmt(cr, 11, 1)} {_fmt(dr, 9, 1)}")
        good, bad = result.get("damage_thresholds") or (float("nan"), float("nan"))
        lines.append(f"(others Δ: change of the unclicked landmarks' mean error caused by the click; harm: share of "
                     f"images where it was > 0 — {_fmt(result['harm_rate_all'], 0, 1).strip()} % of all clicks; "
                     f"collapse: another landmark moved onto the click; damage: a landmark within {good:g} {u} of its "
                     f"truth before the click ended more than {bad:g} {u} from it — "
                     f"{_fmt(result.get('damage_rate_all'), 0, 1).strip()} % of all clicks)")
    if result.get("sdr"):
        radii = list(result["sdr"])
        lines += ["", "SDR % (model / manual) by clicks", f"{'clicks':>6} " + " ".join(f"{r + ' ' + u:>15}" for r in radii)]
        for k in range(result["max_clicks"] + 1):
            cells = [
                f"{_fmt(result['sdr'][r][k], 6, 1)} / {_fmt(result['sdr_manual'][r][k], 6, 1)}" for r in radii
            ]
            lines.append(f"{k:>6} " + " ".join(f"{c:>15}" for c in cells))
    reg = result.get("regions")
    if reg:
        lvl = f"{reg['level']:.0%}"
        lines += ["", f"{lvl} regions of the unclicked landmarks: coverage % / median area {reg['area_unit']}",
                  f"{'clicks':>6} {'conformal':>22} {'map ellipse (uncalibrated)':>28}"]
        con, gau = reg.get("conformal"), reg["heatmap_gaussian"]
        for k in range(len(gau["coverage_per_click"])):
            c = (f"{_fmt(con['coverage_per_click'][k], 6, 1)} / {_fmt(con['median_area_per_click'][k], 9, 0)}"
                 if con else "—")
            g = f"{_fmt(gau['coverage_per_click'][k], 6, 1)} / {_fmt(gau['median_area_per_click'][k], 9, 0)}"
            lines.append(f"{k:>6} {c:>22} {g:>28}")
        if con is None:
            lines.append("(the model has no conformal regions: napari-landmarks calibrate fits them)")
    return "\n".join(lines)


def _protocol_traces(predictor, samples, max_clicks: int, progress: bool, desc: str):
    """The click protocol's :class:`ImageTrace` of each sample (worst-first clicks at the ground truth,
    0…max_clicks), images that cannot be read left out — what `calibrate` fits on."""
    iterator = samples
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(samples, desc=desc, unit="img", file=sys.stderr)
    for sample in iterator:
        try:
            yield run_click_protocol(predictor, sample, max_clicks=max_clicks, order="worst")
        except ImageError:
            continue


def collect_region_scores(predictor, samples, max_clicks: int = 3, progress: bool = True) -> np.ndarray:
    """(N, max_clicks + 1, K) region scores of ``samples`` on the click protocol (worst-first clicks at the
    ground truth, 0…max_clicks; NaN for clicked and unannotated landmarks): what `calibrate` fits the conformal
    radii on, so that the regions hold after corrections too. Images that cannot be read are left out."""
    rows = []
    for tr in _protocol_traces(predictor, samples, max_clicks, progress, "region scores"):
        rs = region_scores(tr)
        if rs is None:
            raise ValueError("the predictor gives no map spread (an ERE-less model): it cannot have regions")
        rows.append(rs)
    return np.stack(rows) if rows else np.empty((0, max_clicks + 1, int(predictor.num_landmarks)))


def collect_ere_and_errors(predictor, samples, max_clicks: int = 3, progress: bool = True):
    """``(ere, errors)``, each (N, max_clicks + 1, K), original pixels: the ERE the predictor states and the true
    radial error of every landmark on the click protocol (worst-first clicks at the ground truth; NaN for clicked and
    unannotated landmarks) — what `calibrate` fits the expected error's scales and caps on (with the predictor's own
    calibration switched off, the doubt maps' raw ERE). Images that cannot be read are left out."""
    eres, errs = [], []
    for tr in _protocol_traces(predictor, samples, max_clicks, progress, "expected error"):
        if tr.ere is None:
            raise ValueError("the predictor gives no ERE: there is no expected error to calibrate")
        e, r = tr.ere.astype(np.float64).copy(), tr.errors.astype(np.float64).copy()
        for step in range(e.shape[0]):
            e[step, tr.clicked[:step]] = np.nan
            r[step, tr.clicked[:step]] = np.nan
        eres.append(e)
        errs.append(r)
    k = int(predictor.num_landmarks)
    if not eres:
        return np.empty((0, max_clicks + 1, k)), np.empty((0, max_clicks + 1, k))
    return np.stack(eres), np.stack(errs)
