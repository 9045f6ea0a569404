"""The stated expected error of each landmark: calibrated per landmark and per number of corrections, and bounded.

The raw Expected Radial Error (``codecs/uncertainty.expected_radial_error``) is read from each landmark's *doubt map*:
the network's temperature-scaled 2-D softmax map times the anatomy's envelope — the shape model's Gaussian for that
landmark given the user's corrections only (before any correction: where the landmark lies on any film), as a robust
mixture ``w · N + (1 − w) · uniform`` (``envelope`` below). Without the envelope a chain's end (L5, T1) gets an
absurd ERE: its map keeps a few per cent of its mass at the *other* end of the film (the two ends of the spine look
alike to a network that sees a 4-pixel-per-cell map), and that mass, 1 500–2 500 px away, dominates the expected
distance (benchmarks/ere_doubt.py: ERE > 300 px on 14 % of the calibration films before any correction, 3 % with
the envelope, all of them films whose points really are hundreds of pixels off).

Two per-landmark corrections are then fitted on a calibration split (the click protocol, worst-first clicks,
``napari-landmarks calibrate``), one row per click count 0…C (the last serving every count above):

* an **exponent** ``b[c]`` per click count: the raw ERE's large values overstate (a map spread over two vertebrae
  does not make the point that far off on average), so the stated value is ``s · ere ** b`` with ``b`` chosen (0.3 to
  1.5) to make the pooled deciles of the stated value match their mean true error;
* a **scale** ``s[c, k]``: the ratio of the landmark's mean true error to its mean ``ere ** b`` (ratio of means,
  shrunk toward the click count's pooled ratio with ``SHRINK`` pseudo-films), so that the stated ERE matches the
  real error on average for every landmark and click count, not only pooled;
* a **cap** ``q[c, k]``: the 99th percentile of that landmark's true errors at that click count. The stated ERE
  ``min(s · ere ** b, max(q, ere))``: never above what the landmark's real errors reached, unless its own map really
  is spread that wide (then the raw, unscaled ERE is stated and the point is marked *spread*).

Core module: numpy only, no napari / Qt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["EreCalibration", "EreCalibrationError", "fit_ere_calibration", "ENVELOPE_WEIGHT", "SHRINK"]

ENVELOPE_WEIGHT = 0.9  # the envelope's Gaussian weight (the rest uniform over the film)
SHRINK = 16.0  # pseudo-films pulling a landmark's scale toward its click count's pooled scale
CAP_PERCENTILE = 99.0
MIN_FILMS = 10  # per landmark and click count, for a scale and a cap of its own (else the pooled ones)


class EreCalibrationError(ValueError):
    """A stored ERE calibration that is malformed, or too few calibration errors to fit one."""


@dataclass
class EreCalibration:
    """The card's ``ere_calibration`` field."""

    scales: np.ndarray  # (C, K)
    caps: np.ndarray  # (C, K), in original pixels
    clicks: list = field(default_factory=list)
    envelope_weight: float = ENVELOPE_WEIGHT
    num_films: list = field(default_factory=list)  # per click count, the films the row was fitted on
    fitted_on: str = ""
    kind: str = "power law per click count, ratio-of-means per landmark, capped at the 99th percentile"
    exponents: np.ndarray | None = None  # (C,) b per click count (None: 1)

    def __post_init__(self):
        self.scales = np.atleast_2d(np.asarray(self.scales, np.float64))
        self.caps = np.atleast_2d(np.asarray(self.caps, np.float64))
        self.exponents = (np.ones(len(self.scales)) if self.exponents is None
                          else np.asarray(self.exponents, np.float64).reshape(-1))

    def row(self, num_clicks: int) -> int:
        return min(max(int(num_clicks), 0), len(self.scales) - 1)

    def apply(self, raw, num_clicks: int) -> tuple[np.ndarray, np.ndarray]:
        """``(stated (K,), spread (K,) bool)``: the stated ERE of raw EREs ``raw`` (original pixels) after
        ``num_clicks`` corrections, and where the raw ERE itself exceeds the landmark's cap (its map really is spread
        wider than its real errors ever were: stated unscaled). NaN stays NaN."""
        raw = np.asarray(raw, np.float64)
        r = self.row(num_clicks)
        s, q, b = self.scales[r], self.caps[r], self.exponents[r]
        with np.errstate(invalid="ignore"):
            stated = np.minimum(s * np.power(raw, b), np.maximum(q, raw))
            spread = raw > q
        return stated, spread

    def to_card(self) -> dict:
        return {"kind": self.kind, "envelope_weight": self.envelope_weight,
                "exponents": np.round(self.exponents, 4).tolist(),
                "scales": np.round(self.scales, 5).tolist(), "caps": np.round(self.caps, 3).tolist(),
                "clicks": list(self.clicks), "num_films": [int(n) for n in self.num_films], "fitted_on": self.fitted_on}

    @classmethod
    def from_card(cls, data, num_landmarks: int, source: str = "model card") -> "EreCalibration":
        try:
            scales = np.asarray(data["scales"], np.float64)
            caps = np.asarray(data["caps"], np.float64)
            weight = float(data.get("envelope_weight", ENVELOPE_WEIGHT))
            exponents = np.asarray(data.get("exponents", np.ones(len(scales))), np.float64).reshape(-1)
        except (KeyError, TypeError, ValueError):
            raise EreCalibrationError(f"{source}: its 'ere_calibration' field is malformed (needs scales and caps "
                                      "per click count and landmark)") from None
        if scales.ndim != 2 or scales.shape != caps.shape or scales.shape[1] != num_landmarks:
            raise EreCalibrationError(f"{source}: 'ere_calibration' scales {scales.shape} and caps {caps.shape} do not "
                                      f"fit {num_landmarks} landmarks")
        if not (np.isfinite(scales).all() and (scales > 0).all() and np.isfinite(caps).all() and (caps > 0).all()):
            raise EreCalibrationError(f"{source}: 'ere_calibration' scales and caps must be positive and finite")
        if len(exponents) != len(scales) or not (np.isfinite(exponents).all() and (exponents > 0).all()):
            raise EreCalibrationError(f"{source}: 'ere_calibration' needs one positive exponent per click count")
        if not 0.0 <= weight < 1.0:
            raise EreCalibrationError(f"{source}: 'ere_calibration.envelope_weight' must be in [0, 1), got {weight}")
        return cls(scales, caps, list(data.get("clicks", [])), weight, list(data.get("num_films", [])),
                   str(data.get("fitted_on", "")), exponents=exponents)


def fit_ere_calibration(raw, errors, clicks=(), fitted_on: str = "",
                        envelope_weight: float = ENVELOPE_WEIGHT) -> EreCalibration:
    """Scales and caps from ``raw`` EREs and true ``errors`` ``(N, C, K)`` (films × click counts 0…C-1 × landmarks,
    original pixels; NaN where a landmark was clicked or is not annotated). A landmark with fewer than
    ``MIN_FILMS`` values at a click count takes the count's pooled scale and cap. Too few values in all:
    :class:`EreCalibrationError` (one line)."""
    raw = np.asarray(raw, np.float64)
    err = np.asarray(errors, np.float64)
    if raw.shape != err.shape or raw.ndim != 3:
        raise EreCalibrationError(f"raw ERE {raw.shape} and errors {err.shape} must both be (films, clicks, landmarks)")
    ok = np.isfinite(raw) & np.isfinite(err) & (raw > 0)
    n, c, k = raw.shape
    scales, caps, films, exps = np.ones((c, k)), np.ones((c, k)), [], np.ones(c)
    for j in range(c):
        m = ok[:, j]
        if m.sum() < MIN_FILMS:
            raise EreCalibrationError(f"{int(m.sum())} calibration errors after {j} clicks are too few to calibrate "
                                      f"the expected error (at least {MIN_FILMS}): calibrate on more images")
        films.append(int(m.any(axis=1).sum()))
        b = exps[j] = _decile_exponent(raw[:, j][m], err[:, j][m])
        x = np.where(ok[:, j], raw[:, j], np.nan) ** b  # (N, K)
        pooled_s = err[:, j][m].sum() / x[m].sum()
        pooled_q = float(np.percentile(err[:, j][m], CAP_PERCENTILE))
        for i in range(k):
            mi = m[:, i]
            if mi.sum() < MIN_FILMS:
                scales[j, i], caps[j, i] = pooled_s, pooled_q
                continue
            e, r = err[mi, j, i], x[mi, i]
            mean_raw = r.mean()
            scales[j, i] = (e.sum() + SHRINK * pooled_s * mean_raw) / (r.sum() + SHRINK * mean_raw)
            caps[j, i] = float(np.percentile(e, CAP_PERCENTILE))
    caps = np.maximum(caps, 1e-3)
    if not (np.isfinite(scales).all() and (scales > 0).all()):
        raise EreCalibrationError("the expected-error scales came out non-finite: the calibration errors are unusable")
    return EreCalibration(scales, caps, list(clicks) or list(range(c)), float(envelope_weight), films, fitted_on,
                          exponents=exps)


EXPONENTS = np.round(np.arange(0.3, 1.5001, 0.05), 2)


def _decile_exponent(raw: np.ndarray, err: np.ndarray) -> float:
    """The exponent b (``EXPONENTS``) for which ``a · raw ** b``, with ``a`` the ratio of means, best matches the mean
    true error within each decile of the raw ERE (mean absolute gap over the deciles, each weighted by its count)."""
    edges = np.percentile(raw, np.linspace(0, 100, 11))
    bins = np.clip(np.searchsorted(edges, raw, side="right") - 1, 0, 9)
    best, best_gap = 1.0, np.inf
    for b in EXPONENTS:
        x = raw ** b
        a = err.sum() / x.sum()
        gap = sum(abs(err[bins == i].mean() - a * x[bins == i].mean()) * (bins == i).sum()
                  for i in range(10) if (bins == i).any())
        if gap < best_gap - 1e-12:
            best, best_gap = float(b), gap
    return best
