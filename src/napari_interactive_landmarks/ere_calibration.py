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
* a **scale** ``s[c, k]``: the scale at which the landmark's mean stated value (caps included) equals its mean true
  error, shrunk toward the click count's pooled scale with ``SHRINK`` pseudo-films, so that the stated ERE matches
  the real error on average for every landmark and click count, not only pooled;
* a **film term** ``A[c] · (F / F_ref[c]) ** g[c]`` (pixels, added to every uncorrected point of the film): F is the
  film's mean ``ere ** b`` over its uncorrected landmarks, ``F_ref`` its median over the calibration films. On the
  spine the worst errors are joint — a whole chain placed a vertebra off — and a film where the model doubts many
  points is the film where its points are off together, while within a film the shifted block states little more
  than the rest (before any click, the films' mean stated error tells the films with a run of shifted vertebrae with
  AUROC 0.86–0.89; the corners' own stated errors rank the corners only at 0.74–0.77). ``A`` and ``g`` are chosen per
  click count by the likelihood of the true errors under an exponential law whose mean is the stated value, caps
  included (a proper score: it pays only where the term ranks large errors above small ones), the landmarks' scales
  multiplied by one number for each pair so that the pooled mean stated value, caps included, stays the pooled mean
  error; adopted only where it gains more than ``FILM_MIN_GAIN`` nats per landmark over no term. The term is one
  constant per film and the scales keep their ratios, so it re-ranks films, never one film's points ("check next"
  reads that order). Added, not multiplied: a factor would multiply most the landmarks whose scale is largest (the
  chain's ends), so a correct L5 corner on a doubtful film stated up to 315 px (added: 176 px;
  experiments/benchmarks/ere_film_term.py). A model whose errors
  are independent between landmarks gets no term;
* a **cap** ``q[c, k]``: the 99th percentile of that landmark's true errors at that click count. The stated ERE
  ``min(s · ere ** b + film term, max(q, ere))``: never above what the landmark's real errors reached, unless its own map really
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
FILM_EXPONENTS = np.round(np.arange(0.25, 3.0001, 0.25), 2)
FILM_TERMS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)  # A, as a share of the click count's mean true error
FILM_MIN_GAIN = 1e-3  # nats per landmark: a film term that gains less is not used


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
    film_terms: np.ndarray | None = None  # (C,) A per click count, original pixels (None: 0, no film term)
    film_exponents: np.ndarray | None = None  # (C,) g per click count (None: 0)
    film_refs: np.ndarray | None = None  # (C,) F_ref per click count (None: 1)

    def __post_init__(self):
        self.scales = np.atleast_2d(np.asarray(self.scales, np.float64))
        self.caps = np.atleast_2d(np.asarray(self.caps, np.float64))
        self.exponents = (np.ones(len(self.scales)) if self.exponents is None
                          else np.asarray(self.exponents, np.float64).reshape(-1))
        self.film_terms = (np.zeros(len(self.scales)) if self.film_terms is None
                           else np.asarray(self.film_terms, np.float64).reshape(-1))
        self.film_exponents = (np.zeros(len(self.scales)) if self.film_exponents is None
                               else np.asarray(self.film_exponents, np.float64).reshape(-1))
        self.film_refs = (np.ones(len(self.scales)) if self.film_refs is None
                          else np.asarray(self.film_refs, np.float64).reshape(-1))

    def row(self, num_clicks: int) -> int:
        return min(max(int(num_clicks), 0), len(self.scales) - 1)

    def apply(self, raw, num_clicks: int, film: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """``(stated (K,), spread (K,) bool)``: the stated ERE of raw EREs ``raw`` (original pixels) after
        ``num_clicks`` corrections, and where the raw ERE itself exceeds the landmark's cap (its map really is spread
        wider than its real errors ever were: stated unscaled). NaN stays NaN. ``film=False``: without the film term
        (each point's own share — what tells one film's points apart, e.g. for "check next")."""
        raw = np.asarray(raw, np.float64)
        r = self.row(num_clicks)
        s, q, b = self.scales[r], self.caps[r], self.exponents[r]
        with np.errstate(invalid="ignore", divide="ignore"):
            powered = np.power(raw, b)
            stated = np.minimum(s * powered + (self.film_term(powered, r) if film else 0.0), np.maximum(q, raw))
            spread = raw > q
        return stated, spread

    def film_term(self, powered, row: int) -> float:
        """``A · (F / F_ref) ** g`` (pixels) of one film at click-count row ``row``: F the mean of its finite, positive
        values ``ere ** b`` (the uncorrected landmarks); 0 where there is no film term or no such value."""
        a = self.film_terms[row]
        if a == 0:
            return 0.0
        x = np.asarray(powered, np.float64)
        x = x[np.isfinite(x) & (x > 0)]
        if not len(x):
            return 0.0
        return float(a * (x.mean() / self.film_refs[row]) ** self.film_exponents[row])

    def to_card(self) -> dict:
        return {"kind": self.kind, "envelope_weight": self.envelope_weight,
                "exponents": np.round(self.exponents, 4).tolist(),
                "film_terms": np.round(self.film_terms, 4).tolist(),
                "film_exponents": np.round(self.film_exponents, 4).tolist(),
                "film_refs": np.round(self.film_refs, 4).tolist(),
                "scales": np.round(self.scales, 5).tolist(), "caps": np.round(self.caps, 3).tolist(),
                "clicks": list(self.clicks), "num_films": [int(n) for n in self.num_films], "fitted_on": self.fitted_on}

    @classmethod
    def from_card(cls, data, num_landmarks: int, source: str = "model card") -> "EreCalibration":
        try:
            scales = np.asarray(data["scales"], np.float64)
            caps = np.asarray(data["caps"], np.float64)
            weight = float(data.get("envelope_weight", ENVELOPE_WEIGHT))
            exponents = np.asarray(data.get("exponents", np.ones(len(scales))), np.float64).reshape(-1)
            film_terms = np.asarray(data.get("film_terms", np.zeros(len(scales))), np.float64).reshape(-1)
            film_exponents = np.asarray(data.get("film_exponents", np.zeros(len(scales))), np.float64).reshape(-1)
            film_refs = np.asarray(data.get("film_refs", np.ones(len(scales))), np.float64).reshape(-1)
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
        if (len(film_terms) != len(scales) or len(film_exponents) != len(scales) or len(film_refs) != len(scales)
                or not (np.isfinite(film_terms).all() and (film_terms >= 0).all()
                        and np.isfinite(film_exponents).all() and (film_exponents >= 0).all()
                        and np.isfinite(film_refs).all() and (film_refs > 0).all())):
            raise EreCalibrationError(f"{source}: 'ere_calibration' needs one non-negative film term and exponent and "
                                      "one positive film reference per click count")
        if not 0.0 <= weight < 1.0:
            raise EreCalibrationError(f"{source}: 'ere_calibration.envelope_weight' must be in [0, 1), got {weight}")
        return cls(scales, caps, list(data.get("clicks", [])), weight, list(data.get("num_films", [])),
                   str(data.get("fitted_on", "")), exponents=exponents, film_terms=film_terms,
                   film_exponents=film_exponents, film_refs=film_refs)


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
    film_terms, film_exps, film_refs = np.zeros(c), np.zeros(c), np.ones(c)
    for j in range(c):
        m = ok[:, j]
        if m.sum() < MIN_FILMS:
            raise EreCalibrationError(f"{int(m.sum())} calibration errors after {j} clicks are too few to calibrate "
                                      f"the expected error (at least {MIN_FILMS}): calibrate on more images")
        films.append(int(m.any(axis=1).sum()))
        b = exps[j] = _decile_exponent(raw[:, j][m], err[:, j][m])
        x = np.where(ok[:, j], raw[:, j], np.nan) ** b  # (N, K)
        scales[j], caps[j] = _scales_and_caps(x, err[:, j], m, raw[:, j])
        # the film term: each film's mean ERE ** b against the calibration films' median, to the power g, times A;
        # (A, g) by the likelihood of the true errors, the scales times one number (they keep their ratios: a film's
        # own points keep their order, which "check next" reads)
        with np.errstate(invalid="ignore"):
            film_mean = np.nanmean(np.where(m, x, np.nan), axis=1)  # (N,), NaN for a film with none
        has = np.isfinite(film_mean) & (film_mean > 0)
        if has.sum() >= MIN_FILMS:
            ref = float(np.median(film_mean[has]))
            rel = np.where(has, film_mean / ref, 1.0)[:, None] * np.ones_like(x)
            lim = np.maximum(caps[j], raw[:, j])[m]
            sx, e = (scales[j] * x)[m], err[:, j][m]
            best = (_exponential_nll(np.minimum(sx, lim), e) - FILM_MIN_GAIN, None)
            for g in FILM_EXPONENTS:
                for share in FILM_TERMS:
                    a = share * float(e.mean())
                    add = a * rel[m] ** g
                    mult = _matching_multiplier(sx, add, lim, e)
                    if mult is None:
                        continue
                    nll = _exponential_nll(np.minimum(mult * sx + add, lim), e)
                    if nll < best[0]:
                        best = (nll, (a, g, mult))
            if best[1] is not None:
                film_terms[j], film_exps[j], film_refs[j] = best[1][0], best[1][1], ref
                scales[j] = scales[j] * best[1][2]
    caps = np.maximum(caps, 1e-3)
    if not (np.isfinite(scales).all() and (scales > 0).all()):
        raise EreCalibrationError("the expected-error scales came out non-finite: the calibration errors are unusable")
    return EreCalibration(scales, caps, list(clicks) or list(range(c)), float(envelope_weight), films, fitted_on,
                          exponents=exps, film_terms=film_terms, film_exponents=film_exps, film_refs=film_refs)


def _scales_and_caps(x, err, m, raw):
    """Per landmark: the 99th percentile of ``err`` (the cap), and the scale of ``x`` (N, K) at which the mean of the
    values as stated, ``min(scale · x, max(cap, raw))``, equals the mean true error where ``m`` (a plain ratio of means
    would let a heavy-tailed ``x`` lose its largest values to the caps and state too little), shrunk toward the pooled
    scale with ``SHRINK`` pseudo-films. A landmark with fewer than MIN_FILMS values takes the pooled ones."""
    k = x.shape[1]
    caps = np.full(k, float(np.percentile(err[m], CAP_PERCENTILE)))
    for i in range(k):
        if m[:, i].sum() >= MIN_FILMS:
            caps[i] = float(np.percentile(err[m[:, i], i], CAP_PERCENTILE))
    lim = np.maximum(caps[None], raw)
    pooled_s = _matching_scale(x[m], err[m], lim[m])
    scales = np.full(k, pooled_s)
    for i in range(k):
        mi = m[:, i]
        n = int(mi.sum())
        if n >= MIN_FILMS:
            scales[i] = (n * _matching_scale(x[mi, i], err[mi, i], lim[mi, i]) + SHRINK * pooled_s) / (n + SHRINK)
    return scales, caps


def _matching_scale(x, err, limit) -> float:
    """The scale ``a`` with ``Σ min(a · x, limit) = Σ err``, by bisection on log a around the ratio of means; where the
    limits cannot reach the errors' sum, the scale at which they are all reached."""
    a = float(err.sum() / x.sum())
    if not np.isfinite(a) or a <= 0:
        return a
    lo, hi = np.log(a) - 14.0, np.log(a) + 14.0
    target = float(err.sum())
    if np.minimum(np.exp(hi) * x, limit).sum() < target:
        return float(np.exp(hi))
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        if np.minimum(np.exp(mid) * x, limit).sum() < target:
            lo = mid
        else:
            hi = mid
    return float(np.exp(0.5 * (lo + hi)))


def _matching_multiplier(sx, add, limit, err):
    """``m`` with ``Σ min(m · sx + add, limit) = Σ err`` (bisection), or None where even ``m = 0`` states more than the
    errors' sum (the added term alone is too large)."""
    target = float(err.sum())
    if np.minimum(add, limit).sum() > target:
        return None
    lo, hi = 0.0, 1.0
    while np.minimum(hi * sx + add, limit).sum() < target and hi < 1e6:
        hi *= 2.0
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        if np.minimum(mid * sx + add, limit).sum() < target:
            lo = mid
        else:
            hi = mid
    m = 0.5 * (lo + hi)
    return m if m > 0 else None


def _exponential_nll(stated, err) -> float:
    """Mean negative log-likelihood of ``err`` under exponential laws with means ``stated`` (a proper score for a
    stated mean error: lower where the stated values both match and rank the true errors)."""
    return float(np.mean(np.log(stated) + err / stated))


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
