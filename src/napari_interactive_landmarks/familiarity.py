"""Is this film like the films the doubt was calibrated on? A check made once per film, before any correction.

The stated errors and the conformal regions hold on films exchangeable with the calibration films. On films of
another hospital they do not (``isbi-ceph``'s 95 % regions held 85 % of the truths on ``hamedan-dev``): the pixels
are exposed differently and the network's maps are broader there. Three features of a film are compared with the
calibration films', each against a limit a calibration film exceeds with probability at most 2 %:

- **size**: the film's rows and columns, against the calibration films' range (± 10 %);
- **contrast**: the network input's grey-level spread and quantiles (5, 25, 50, 75, 95 %) — its Mahalanobis distance
  from the calibration films' mean (covariance shrunk towards its diagonal);
- **map breadth**: the median over landmarks of ``log(ERE_k / median ERE_k)`` before any correction, the ERE read
  from the doubt maps (uncalibrated) in units of the film's diagonal — maps broader than the calibration films'.

The contrast and breadth limits are split-conformal: the ``⌈(n + 1) · level⌉``-th smallest calibration score
(``level`` 0.98 by default, which 49 calibration films allow), so a film exchangeable with the calibration films is
flagged by each with probability at most 2 %. A flagged film keeps its points and its stated errors, and the panel and the exports say why; its
regions are drawn at the wider level fitted alongside the 95 % ones (:class:`regions.RegionCalibration`'s
``wide_radii``), which is honest about what is not known: how the films differ.

Core module: numpy only, no napari / Qt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["FamiliarityError", "FilmFeatures", "FilmShift", "FamiliarityCheck", "film_features", "fit_familiarity"]

QUANTILES = (5, 25, 50, 75, 95)
SIZE_MARGIN = 0.10
SHRINK = 0.2  # the contrast covariance: (1 − SHRINK) · Σ + SHRINK · diag(Σ)


class FamiliarityError(ValueError):
    """Too few calibration films for the check, or a stored check that is malformed."""


@dataclass
class FilmFeatures:
    """What the check reads of one film: its size (rows, cols), its contrast (the network input's standard deviation
    and quantiles) and the doubt maps' uncalibrated ERE per landmark before any correction, over the film's
    diagonal (NaN where unknown)."""

    size: tuple[int, int]
    contrast: np.ndarray  # (1 + len(QUANTILES),)
    relative_ere: np.ndarray  # (K,)


@dataclass
class FilmShift:
    """The check's answer for one film: ``unfamiliar`` when any feature is beyond its limit, with one plain reason
    per feature that is."""

    unfamiliar: bool
    reasons: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"unfamiliar": bool(self.unfamiliar), "reasons": list(self.reasons)}


def film_features(network_input, original_shape, ere_raw) -> FilmFeatures:
    """The features of a film from its network input (any shape, the preprocessed grey levels), its original
    ``(rows, cols)`` and the doubt maps' uncalibrated ERE ``(K,)`` (original pixels) before any correction."""
    x = np.asarray(network_input, np.float64).ravel()
    x = x[np.isfinite(x)]
    contrast = np.concatenate([[x.std()], np.percentile(x, QUANTILES)]) if x.size else np.full(1 + len(QUANTILES), np.nan)
    h, w = (int(v) for v in original_shape[:2])
    rel = np.asarray(ere_raw, np.float64) / math.hypot(h, w)
    return FilmFeatures((h, w), contrast, rel)


def _conformal_limit(scores, level: float) -> float:
    s = np.sort(np.asarray(scores, np.float64)[np.isfinite(scores)])
    rank = math.ceil((len(s) + 1) * level - 1e-9)
    if rank > len(s):
        raise FamiliarityError(f"{len(s)} calibration films are too few for a {level:.0%} limit "
                               f"(at least {math.ceil(1 / (1 - level) - 1e-9) - 1} are needed)")
    return float(s[rank - 1])


@dataclass
class FamiliarityCheck:
    """The calibration films' features and the limits a film is checked against (the model card's
    ``familiarity`` field, fitted by ``napari-landmarks calibrate``)."""

    size_min: np.ndarray  # (2,) rows, cols
    size_max: np.ndarray
    contrast_mean: np.ndarray  # (F,)
    contrast_icov: np.ndarray  # (F, F)
    contrast_limit: float
    ere_median: np.ndarray  # (K,) median relative ERE per landmark before any correction
    breadth_limit: float
    level: float = 0.98
    num_films: int = 0
    fitted_on: str = ""

    def contrast_distance(self, f: FilmFeatures) -> float:
        d = np.asarray(f.contrast, np.float64) - self.contrast_mean
        return float(np.sqrt(max(d @ self.contrast_icov @ d, 0.0))) if np.isfinite(d).all() else float("nan")

    def breadth(self, f: FilmFeatures) -> float:
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.log(np.asarray(f.relative_ere, np.float64) / self.ere_median)
        r = r[np.isfinite(r)]
        return float(np.median(r)) if r.size else float("nan")

    def check(self, f: FilmFeatures) -> FilmShift:
        reasons = []
        lo, hi = self.size_min * (1 - SIZE_MARGIN), self.size_max * (1 + SIZE_MARGIN)
        if np.any(np.asarray(f.size) < lo) or np.any(np.asarray(f.size) > hi):
            same = np.allclose(self.size_min, self.size_max)
            ref = (f"{int(self.size_min[0])} × {int(self.size_min[1])}" if same else
                   f"{int(self.size_min[0])}–{int(self.size_max[0])} × {int(self.size_min[1])}–{int(self.size_max[1])}")
            reasons.append(f"size {f.size[0]} × {f.size[1]} px (calibration films: {ref} px)")
        c = self.contrast_distance(f)
        if not np.isfinite(c) or c > self.contrast_limit:
            reasons.append(f"grey levels unlike the calibration films' (distance {c:.1f}, limit {self.contrast_limit:.1f})")
        b = self.breadth(f)
        if np.isfinite(b) and b > self.breadth_limit:
            reasons.append(f"the model's maps are {math.exp(b):.2f}× as broad as on a typical calibration film "
                           f"(limit {math.exp(self.breadth_limit):.2f}×)")
        return FilmShift(bool(reasons), reasons)

    def to_card(self) -> dict:
        r = lambda a, n=6: np.round(np.asarray(a, np.float64), n).tolist()  # noqa: E731
        return {"size_min": r(self.size_min, 0), "size_max": r(self.size_max, 0), "contrast_mean": r(self.contrast_mean),
                "contrast_icov": r(self.contrast_icov, 4), "contrast_limit": round(self.contrast_limit, 5),
                "ere_median": r(self.ere_median, 8), "breadth_limit": round(self.breadth_limit, 5), "level": self.level,
                "num_films": int(self.num_films), "fitted_on": self.fitted_on}

    @classmethod
    def from_card(cls, data, num_landmarks: int, source: str = "model card") -> "FamiliarityCheck":
        try:
            out = cls(np.asarray(data["size_min"], np.float64), np.asarray(data["size_max"], np.float64),
                      np.asarray(data["contrast_mean"], np.float64), np.asarray(data["contrast_icov"], np.float64),
                      float(data["contrast_limit"]), np.asarray(data["ere_median"], np.float64),
                      float(data["breadth_limit"]), float(data.get("level", 0.98)), int(data.get("num_films", 0)),
                      str(data.get("fitted_on", "")))
        except (KeyError, TypeError, ValueError):
            raise FamiliarityError(f"{source}: its 'familiarity' field is malformed (needs size_min, size_max, "
                                   "contrast_mean, contrast_icov, contrast_limit, ere_median, breadth_limit)") from None
        f = len(out.contrast_mean)
        if (out.size_min.shape != (2,) or out.size_max.shape != (2,) or out.contrast_icov.shape != (f, f)
                or out.ere_median.shape != (num_landmarks,)):
            raise FamiliarityError(f"{source}: the 'familiarity' field's arrays do not fit {num_landmarks} landmarks")
        if not all(np.isfinite(a).all() for a in (out.size_min, out.size_max, out.contrast_mean, out.contrast_icov,
                                                  out.ere_median, [out.contrast_limit, out.breadth_limit])):
            raise FamiliarityError(f"{source}: the 'familiarity' field holds non-finite values")
        if (out.ere_median <= 0).any() or not 0 < out.level < 1:
            raise FamiliarityError(f"{source}: the 'familiarity' field's ERE medians must be positive, its level in (0, 1)")
        return out


def fit_familiarity(features: list[FilmFeatures], level: float = 0.98, fitted_on: str = "") -> FamiliarityCheck:
    """The check from the calibration films' features. The limits are split-conformal: each film's contrast and
    breadth scores are computed with the mean, covariance and medians of the *other* films (leave one out), so a new
    exchangeable film's score is exchangeable with them. Raises :class:`FamiliarityError` with too few films."""
    n = len(features)
    need = math.ceil(1 / (1 - level) - 1e-9) - 1
    if n < need:
        raise FamiliarityError(f"{n} calibration films are too few for a {level:.0%} familiarity check "
                               f"(at least {need} are needed)")
    sizes = np.array([f.size for f in features], np.float64)
    con = np.array([f.contrast for f in features], np.float64)
    rel = np.array([f.relative_ere for f in features], np.float64)

    def stats(idx):
        c = con[idx]
        mean = c.mean(0)
        cov = np.cov(c, rowvar=False)
        cov = (1 - SHRINK) * cov + SHRINK * np.diag(np.diag(cov))
        icov = np.linalg.pinv(cov + 1e-9 * np.eye(len(mean)))
        with np.errstate(invalid="ignore"):
            med = np.nanmedian(rel[idx], axis=0)
        return mean, icov, med

    c_scores, b_scores = [], []
    for i in range(n):
        mean, icov, med = stats(np.array([j for j in range(n) if j != i]))
        probe = FamiliarityCheck(sizes.min(0), sizes.max(0), mean, icov, 0.0, med, 0.0, level)
        c_scores.append(probe.contrast_distance(features[i]))
        b_scores.append(probe.breadth(features[i]))
    mean, icov, med = stats(np.arange(n))
    if not (np.isfinite(med).all() and (med > 0).all()):
        raise FamiliarityError("a landmark has no usable expected error on the calibration films")
    return FamiliarityCheck(sizes.min(0), sizes.max(0), mean, icov, _conformal_limit(c_scores, level), med,
                            _conformal_limit(b_scores, level), float(level), n, fitted_on)
