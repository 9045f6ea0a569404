"""Landmark-detection metrics: radial error, MRE, SDR, NoC and FR (pure numpy).

Conventions
-----------
* Coordinates are ``(row, col)`` in original-image pixels (``(..., 2)`` arrays).
* A ground-truth landmark containing NaN is *missing*: its radial error is NaN and it is
  excluded from every mean / percentage (``mre`` uses ``nanmean``, ``sdr`` counts only finite
  errors).  An image whose landmarks are all missing has an MRE of NaN.
* ``spacing`` converts pixels to millimetres.  A scalar means isotropic pixels; a pair is
  ``(row_spacing, col_spacing)`` and scales each axis before taking the norm.

Interactive metrics (Kim et al., MICCAI 2022, borrowed from interactive segmentation)
------------------------------------------------------------------------------------
``mre_per_click`` is an ``(N, α+1)`` array: row ``i`` holds image ``i``'s MRE after
``0, 1, ..., α`` clicks (column 0 = the fully automatic prediction).

* ``NoC_α@β`` — mean over images of the smallest ``k`` in ``0..α`` with ``MRE_k <= β``;
  an image that never gets there counts ``α``.  **k = 0 counts**: an image already at or
  below the target without any click needs 0 clicks (the paper counts clicks *needed*).
  The comparison is inclusive (``<=``).
* ``FR_α@β`` — percentage of images with ``MRE_k > β`` for every ``k`` in ``0..α``
  (i.e. never reaching the target, the 0-click prediction included).

Note that an image reaching the target exactly at click ``α`` and one never reaching it both
contribute ``α`` to NoC; FR tells them apart.  Images whose MRE row is NaN everywhere (no
ground truth at all) are excluded from NoC and FR; an isolated NaN entry counts as "not
reached" at that step.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["radial_errors", "mre", "sdr", "noc", "failure_rate", "first_reached"]


def _spacing_array(spacing) -> np.ndarray | None:
    if spacing is None:
        return None
    s = np.asarray(spacing, dtype=np.float64)
    if s.ndim == 0:
        s = np.repeat(s, 2)
    if s.shape != (2,):
        raise ValueError(f"spacing must be a scalar or a (row, col) pair, got shape {s.shape}")
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"spacing must be positive and finite, got {spacing!r}")
    return s


def radial_errors(pred, gt, spacing=None) -> np.ndarray:
    """Euclidean distance between predicted and ground-truth landmarks.

    Parameters
    ----------
    pred, gt : array_like, shape ``(..., 2)``
        ``(row, col)`` coordinates in pixels; broadcastable against each other.
    spacing : float or (float, float) or None
        Millimetres per pixel (scalar, or ``(row, col)``).  ``None`` → errors in pixels.

    Returns
    -------
    ndarray, shape ``(...)``
        Radial errors (mm if ``spacing`` is given, else pixels); NaN where either point has NaN.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape[-1] != 2 or gt.shape[-1] != 2:
        raise ValueError(f"coordinates must have a trailing axis of 2, got {pred.shape} and {gt.shape}")
    d = pred - gt
    s = _spacing_array(spacing)
    if s is not None:
        d = d * s
    return np.sqrt(np.sum(d * d, axis=-1))


def mre(errors, axis=-1):
    """Mean radial error over ``axis`` (the landmark axis by default), ignoring NaN (missing
    ground truth).  All-NaN slices give NaN (without a RuntimeWarning)."""
    e = np.asarray(errors, dtype=np.float64)
    valid = np.isfinite(e)
    count = valid.sum(axis=axis)
    total = np.where(valid, e, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return float(out) if np.ndim(out) == 0 else out


def sdr(errors, radii: Sequence[float] | float) -> np.ndarray:
    """Successful detection rate: percentage of (finite) errors ``<=`` each radius.

    ``errors`` of any shape is pooled (flattened); NaN entries (missing ground truth) are
    excluded from numerator and denominator.  Returns an array of shape ``(len(radii),)``
    (NaN when there is no finite error).  Units of ``radii`` must match ``errors``.
    """
    e = np.asarray(errors, dtype=np.float64).ravel()
    e = e[np.isfinite(e)]
    r = np.atleast_1d(np.asarray(radii, dtype=np.float64))
    if e.size == 0:
        return np.full(r.shape, np.nan)
    return 100.0 * (e[None, :] <= r[:, None]).mean(axis=1)


def _prepare_curves(mre_per_click, max_clicks: int | None) -> tuple[np.ndarray, int]:
    m = np.asarray(mre_per_click, dtype=np.float64)
    if m.ndim == 1:
        m = m[None, :]
    if m.ndim != 2 or m.shape[1] < 1:
        raise ValueError(f"mre_per_click must be (N, alpha+1), got shape {m.shape}")
    available = m.shape[1] - 1
    if max_clicks is None:
        max_clicks = available
    max_clicks = int(max_clicks)
    if max_clicks < 0 or max_clicks > available:
        raise ValueError(f"max_clicks={max_clicks} outside 0..{available} (array has {m.shape[1]} columns)")
    m = m[:, : max_clicks + 1]
    # images without any ground truth (all NaN) carry no information: drop them
    m = m[~np.all(np.isnan(m), axis=1)]
    return m, max_clicks


def first_reached(mre_per_click, target: float, max_clicks: int | None = None) -> np.ndarray:
    """Per image, the smallest ``k`` in ``0..max_clicks`` with ``MRE_k <= target``, or ``-1``
    when never reached.  All-NaN rows are dropped (as in :func:`noc`)."""
    m, _ = _prepare_curves(mre_per_click, max_clicks)
    with np.errstate(invalid="ignore"):
        ok = m <= float(target)  # NaN compares False → "not reached"
    return np.where(ok.any(axis=1), ok.argmax(axis=1), -1)


def noc(mre_per_click, target: float, max_clicks: int | None = None) -> float:
    """``NoC_α@β``: mean over images of the clicks needed to reach ``MRE <= target``.

    ``mre_per_click`` is ``(N, α+1)`` (column ``k`` = after ``k`` clicks); ``max_clicks``
    (α) defaults to ``N_columns - 1`` and may be smaller to truncate the curves.  ``k = 0``
    counts (0 clicks needed when the automatic prediction already meets the target); images
    that never reach it count ``α``.  Returns NaN when no image is usable.
    """
    k = first_reached(mre_per_click, target, max_clicks)
    if k.size == 0:
        return float("nan")
    alpha = _prepare_curves(mre_per_click, max_clicks)[1]
    return float(np.where(k < 0, alpha, k).mean())


def failure_rate(mre_per_click, target: float, max_clicks: int | None = None) -> float:
    """``FR_α@β``: percentage of images whose MRE stays ``> target`` for all ``k`` in
    ``0..α`` (see :func:`noc` for the array layout).  Returns NaN when no image is usable."""
    k = first_reached(mre_per_click, target, max_clicks)
    if k.size == 0:
        return float("nan")
    return float(100.0 * np.mean(k < 0))


# --------------------------------------------------------------------------- does a click help the others?


def others_delta(errors, clicked: Sequence[int]) -> np.ndarray:
    """(α,) for one image: after click ``n`` (1..α), the mean change of the error of the landmarks not clicked
    so far (clicks 1..n), from step ``n − 1`` to step ``n``. Negative = the click helped the other landmarks;
    positive = it harmed them. ``errors`` (α + 1, K); NaN where no click was made (candidates ran out) or no
    other landmark has a finite error."""
    errors = np.asarray(errors, dtype=np.float64)
    steps, k = errors.shape
    out = np.full(steps - 1, np.nan)
    done = np.zeros(k, bool)
    for n, idx in enumerate(list(clicked)[: steps - 1], start=1):
        done[int(idx)] = True
        d = errors[n, ~done] - errors[n - 1, ~done]
        d = d[np.isfinite(d)]
        if d.size:
            out[n - 1] = float(d.mean())
    return out


def damaged_by_click(errors, clicked: Sequence[int], good: float, bad: float) -> np.ndarray:
    """(α,) bool for one image: after click ``n``, did some landmark not clicked so far that was placed well before
    the click (error ≤ ``good``) end badly placed (error > ``bad``)? The harm a clinician notices: a point they had
    checked and left alone is now wrong. ``errors`` (α + 1, K) in one unit (pixels or mm); False where no click was
    made."""
    errors = np.asarray(errors, dtype=np.float64)
    steps, k = errors.shape
    out = np.zeros(steps - 1, bool)
    done = np.zeros(k, bool)
    for n, idx in enumerate(list(clicked)[: steps - 1], start=1):
        done[int(idx)] = True
        with np.errstate(invalid="ignore"):
            hit = (~done) & (errors[n - 1] <= good) & (errors[n] > bad)
        out[n - 1] = bool(np.any(hit))
    return out


def collapsed_onto_click(coords, gt, clicked: Sequence[int], ratio: float = 0.5) -> np.ndarray:
    """(α,) bool for one image: after click ``n``, did some other, unclicked landmark move onto the click —
    closer to the clicked position than ``ratio`` × its ground-truth distance from it, having not been that
    close before the click? (Neighbouring vertebra corners piling up on a correction.) ``coords`` (α + 1, K, 2),
    ``gt`` (K, 2); False where no click was made."""
    coords = np.asarray(coords, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    steps, k, _ = coords.shape
    out = np.zeros(steps - 1, bool)
    done = np.zeros(k, bool)
    for n, idx in enumerate(list(clicked)[: steps - 1], start=1):
        idx = int(idx)
        done[idx] = True
        at = gt[idx]
        limit = ratio * np.linalg.norm(gt - at, axis=-1)
        now = np.linalg.norm(coords[n] - at, axis=-1)
        before = np.linalg.norm(coords[n - 1] - at, axis=-1)
        with np.errstate(invalid="ignore"):
            hit = (~done) & (now < limit) & (before >= limit)
        out[n - 1] = bool(np.any(hit))
    return out
