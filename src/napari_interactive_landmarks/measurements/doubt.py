"""Doubt scales: what a measurement's ± promises, and the factor per measurement that makes the promise hold.

Unscaled, a measurement's ``expected_error`` is the Monte Carlo *mean* absolute deviation under the landmarks' ERE
(core.py): even with a perfectly calibrated ERE and Gaussian errors it covers the true value only ~58 % of the
time, and a model's ERE is over-confident on top (issue 20 item 7: porion 5.4 mm off with an ERE of 1.6 mm; FMA,
facial angle and Y-axis 2.2–2.8° off while shown as ± 1.2–1.4° without ⚠).

The promise, with scales: **the true value lies within the shown ± with probability** ``level`` (default 90 %),
over images like the calibration images and after 0…N worst-first corrections. Why 90 %: the ⚠ compares the ± with
the clinical tolerance, so with a 90 % ± it reads "more than a 1-in-10 chance of being off by more than the
tolerance" — the tolerances themselves are inter-observer ranges (Cobb 5°: 95 % limits of ±5–7°), so a stricter
level would flag nearly every measurement of a CPU-trained model and a looser one would hide doubts like those
above; and a 90 % quantile needs only 9 calibration samples per measurement and is stable with the 25–64
calibration images the shipped models have (a 95 % one needs 19 and rests on the few largest errors).

How (split conformal, Angelopoulos & Bates 2021): on a calibration split disjoint from the reported one, the
nonconformity score of a measurement is ``|true − measured| / expected_error`` (the true value computed by the same
:func:`~.core.compute_measurements` from the ground-truth landmarks; signed line angles the short way round), and
its scale is the ``⌈(n + 1) · level⌉``-th smallest of its ``n`` scores. A measurement with fewer than
``⌈1 / (1 − level)⌉ − 1`` scores takes the quantile pooled over all measurements' scores; when even the pool is too
small, :class:`DoubtScaleError` says so in one line. The scaled ± is ``scale · expected_error``; the ``uncertain``
flag then compares the scaled ± with the tolerance.

The scales live in the model card (``doubt_scales``: ``{kind, level, scales: {name: s}, pooled: [names],
num_samples: {name: n}, fitted_on}``), fitted by ``napari-landmarks calibrate`` (``--measurement-level``). A model
without them keeps today's unscaled ± (the mean error), and a measurement shows its level in ``error_level``
(None when unscaled).

Core module: numpy only, no napari / Qt.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .scales import DEFAULT_LEVEL, KIND, DoubtScaleError, DoubtScales, _quantile, as_doubt_scales, min_samples  # noqa: F401

__all__ = ["DEFAULT_LEVEL", "DoubtScaleError", "DoubtScales", "fit_doubt_scales", "measurement_records",
           "trace_scores", "coverage_table", "landmark_coverage", "min_samples"]


# ---------------------------------------------------------------------------------------------- scores
def measurement_records(schema, coords, gt, ere, spacing=None, image_shape=None, scales=None) -> dict:
    """``{name: (error, expected_error, uncertain)}`` for every measurement that is available on both ``coords``
    (with ``ere``; ``scales`` applied when given) and the ground truth ``gt``: ``error`` = |true − measured| in the
    measurement's unit (signed line angles the short way round), ``expected_error`` the stated ±."""
    from .core import compute_measurements, period_of, validate_definitions

    defs = {d.name: d for d in validate_definitions(schema)}
    pred = compute_measurements(schema, coords, spacing, image_shape=image_shape, ere=ere, doubt_scales=scales)
    true = compute_measurements(schema, gt, spacing, image_shape=image_shape)
    out = {}
    for name, m in pred.items():
        t = true[name]
        if not (m.available and t.available) or m.expected_error is None or not np.isfinite(m.expected_error):
            continue
        dev = t.value - m.value
        period = period_of(defs[name])
        if period is not None:
            dev = (dev + period / 2) % period - period / 2
        out[name] = (abs(float(dev)), float(m.expected_error), bool(m.uncertain))
    return out


def trace_scores(schema, trace: Mapping, scales=None) -> list[dict]:
    """:func:`measurement_records` for every step of one image's click protocol (``trace``: ``gt`` (K, 2),
    ``coords`` (S, K, 2), ``ere`` (S, K), ``spacing``, ``image_shape``): a list of S record dicts."""
    gt = np.asarray(trace["gt"], np.float64)
    coords, ere = np.asarray(trace["coords"], np.float64), np.asarray(trace["ere"], np.float64)
    shape = trace.get("image_shape")
    return [measurement_records(schema, coords[s], gt, ere[s], trace.get("spacing"),
                                None if shape is None else tuple(shape), scales) for s in range(len(coords))]


def _flatten(records) -> list[dict]:
    """Records of images (lists of steps) or of steps, as one flat list of step dicts."""
    out = []
    for r in records:
        out.extend(_flatten(r) if isinstance(r, (list, tuple)) else [r])
    return out


def fit_doubt_scales(records, level: float = DEFAULT_LEVEL, fitted_on: str = "") -> DoubtScales:
    """The scales from calibration ``records`` (:func:`measurement_records` / :func:`trace_scores` output, unscaled,
    nested in lists as you like). Raises :class:`DoubtScaleError` (one line) when even the pooled scores are too
    few for ``level``."""
    if not 0 < float(level) < 1:
        raise DoubtScaleError(f"level must be in (0, 1), got {level}")
    per: dict[str, list] = {}
    for step in _flatten(records):
        for name, (err, ee, _) in step.items():
            if ee > 0 and np.isfinite(err) and np.isfinite(ee):
                per.setdefault(name, []).append(err / ee)
    need = min_samples(level)
    pool = [s for v in per.values() for s in v]
    if len(pool) < need:
        raise DoubtScaleError(f"{len(pool)} calibration samples of the measurements are too few for a "
                              f"{float(level) * 100:g} % ± (at least {need} are needed): calibrate on more images")
    pooled_scale = _quantile(pool, level)
    scales, pooled = {}, []
    for name, v in per.items():
        if len(v) >= need:
            scales[name] = _quantile(v, level)
        else:
            scales[name] = pooled_scale
            pooled.append(name)
    scales = {k: max(v, 1e-6) for k, v in scales.items()}  # a zero quantile (all exact) would erase the ±
    return DoubtScales(float(level), scales, pooled, {k: len(v) for k, v in per.items()}, fitted_on)


# -------------------------------------------------------------------------------------------- coverage
def coverage_table(records_before, scales: DoubtScales, records_after=None) -> list[dict]:
    """Per measurement: samples, scale, coverage of the ± before and after scaling (%), median ± before / after,
    the share flagged ⚠ before / after and the share truly off by more than … (not known here: left None).
    ``records_after`` (the same steps with ``scales`` applied in :func:`measurement_records`) gives the flags
    after; without it they are not reported."""
    before = _flatten(records_before)
    after = _flatten(records_after) if records_after is not None else None
    names = list(dict.fromkeys(n for r in before for n in r))
    rows = []
    for name in names:
        idx = [i for i, r in enumerate(before) if name in r]
        err = np.array([before[i][name][0] for i in idx])
        ee = np.array([before[i][name][1] for i in idx])
        s = scales.scale(name) or 1.0
        row = {"name": name, "n": len(idx), "scale": s, "pooled": name in scales.pooled,
               "coverage_before": 100.0 * float(np.mean(err <= ee)),
               "coverage_after": 100.0 * float(np.mean(err <= s * ee)),
               "median_before": float(np.median(ee)), "median_after": float(np.median(s * ee)),
               "median_error": float(np.median(err)),
               "flag_before": 100.0 * float(np.mean([before[i][name][2] for i in idx]))}
        if after is not None:
            row["flag_after"] = 100.0 * float(np.mean([after[i][name][2] for i in idx if name in after[i]]))
        rows.append(row)
    return rows


def landmark_coverage(traces, regions=None) -> dict:
    """How often an unclicked landmark's true radial error is ≤ its ERE, and (with ``regions``, a
    :class:`~napari_interactive_landmarks.regions.RegionCalibration`, and traces holding ``spread``) how often the
    true point is inside its conformal region; over all steps and at 0 clicks (%)."""
    from ..regions import mahalanobis_radius

    hit_ere, hit_reg = [], []
    for t in traces:
        gt = np.asarray(t["gt"], np.float64)
        coords, ere = np.asarray(t["coords"], np.float64), np.asarray(t["ere"], np.float64)
        err = np.hypot(*(coords - gt[None]).transpose(2, 0, 1))  # (S, K)
        ok = np.isfinite(err) & np.isfinite(ere) & (ere > 0)  # clicked points have ERE 0
        hit_ere.append(np.where(ok, err <= ere, np.nan))
        if regions is not None and t.get("spread") is not None:
            r = mahalanobis_radius(gt[None] - coords, np.asarray(t["spread"], np.float64))
            good = ok & np.isfinite(r)
            radii = np.stack([regions.for_clicks(j) for j in range(len(r))])  # (S, K): step j made with j clicks
            hit_reg.append(np.where(good, r <= radii, np.nan))

    def share(rows, first=False):
        if not rows:
            return None, 0
        a = np.concatenate([x[:1] if first else x for x in rows], axis=0)
        n = int(np.isfinite(a).sum())
        return (100.0 * float(np.nansum(a)) / n if n else None), n

    (ere_all, n), (ere0, n0) = share(hit_ere), share(hit_ere, True)
    reg_all, _ = share(hit_reg)
    reg0, _ = share(hit_reg, True)
    return {"n": n, "n0": n0, "ere": ere_all, "ere0": ere0, "region": reg_all, "region0": reg0,
            "region_level": None if regions is None else float(regions.level)}
