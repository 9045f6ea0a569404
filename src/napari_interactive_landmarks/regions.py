"""Conformal regions: an ellipse around every landmark that holds the true point with a stated probability.

The shape of each region is the model's own calibrated map (or, with the shape prior, the posterior map): its
second moment about the shown point, ``Σ`` (:func:`codecs.uncertainty.spread_covariance`, original pixels). The
nonconformity score of a true point ``y`` for a shown point ``x`` is its Mahalanobis radius under that spread,

    r = sqrt((y − x)ᵀ Σ⁻¹ (y − x)),

and split conformal prediction (Vovk et al.; Angelopoulos & Bates 2021, "A gentle introduction") turns the scores
of a calibration split into a radius ``q``: the ``⌈(n + 1) · level⌉``-th smallest of ``n`` scores. The region is
``{y : r(y) ≤ q}``, an ellipse with semi-axes ``q · sqrt(eigenvalues of Σ)``; for a new image exchangeable with the
calibration images, it contains the true point with probability at least ``level``.

The scores are collected on the click protocol (worst-first clicks at the ground truth, 0…N clicks; the unclicked
landmarks only), and one set of radii is fitted per click count (the last one serving every count above N): before
the first click the maps are wrong in ways a click then fixes (a run of vertebrae one level off), so a radius pooled
over click counts covers too little at 0 clicks and too much after. One radius per landmark where every landmark has
enough scores at that click count (``n ≥ 1 / (1 − level) − 1``), otherwise one pooled over the landmarks.

A clicked landmark has no region (a person placed it). The uncalibrated comparison is the map's own 95 % ellipse
under a Gaussian reading (``q² = χ²₂(level) = −2 ln(1 − level)``).

Core module: numpy only, no napari / Qt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "RegionError",
    "RegionCalibration",
    "mahalanobis_radius",
    "conformal_radius",
    "gaussian_radius",
    "fit_regions",
    "ellipses",
    "ellipse_polygon",
    "contains",
]


class RegionError(ValueError):
    """A calibration that cannot give the requested level (too few scores), or a stored one that is malformed."""


def gaussian_radius(level: float) -> float:
    """The Mahalanobis radius of a 2-D Gaussian's ``level`` ellipse: ``sqrt(χ²₂(level)) = sqrt(−2 ln(1 − level))``."""
    return math.sqrt(-2.0 * math.log1p(-float(level)))


def mahalanobis_radius(delta, cov) -> np.ndarray:
    """``(...,)`` radius ``sqrt(dᵀ Σ⁻¹ d)`` of ``delta`` ``(..., 2)`` under ``cov`` ``(..., 2, 2)``; NaN where either is
    not finite or ``cov`` is not positive definite."""
    d = np.asarray(delta, np.float64)
    c = np.asarray(cov, np.float64)
    a, b, e = c[..., 0, 0], c[..., 0, 1], c[..., 1, 1]
    det = a * e - b * b
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = (e * d[..., 0] ** 2 - 2 * b * d[..., 0] * d[..., 1] + a * d[..., 1] ** 2) / det
        good = (det > 0) & (a > 0) & np.isfinite(r2) & (r2 >= 0)
        return np.where(good, np.sqrt(np.where(good, r2, 0.0)), np.nan)


def min_scores(level: float) -> int:
    """Fewest scores for which the split-conformal radius at ``level`` is finite: ``⌈1 / (1 − level)⌉ − 1``."""
    return max(1, math.ceil(1.0 / (1.0 - float(level)) - 1e-9) - 1)


def conformal_radius(scores, level: float) -> float:
    """The split-conformal quantile: the ``⌈(n + 1) · level⌉``-th smallest finite score (finite-sample valid)."""
    s = np.sort(np.asarray(scores, np.float64)[np.isfinite(scores)])
    n = len(s)
    rank = math.ceil((n + 1) * float(level) - 1e-9)
    if rank > n:
        raise RegionError(f"{n} calibration scores are too few for a {level * 100:g} % region "
                          f"(at least {min_scores(level)} are needed)")
    return float(s[rank - 1])


@dataclass
class RegionCalibration:
    """The fitted radii, stored in the model card's ``regions`` field."""

    level: float
    radii: np.ndarray  # (C, K) Mahalanobis radius per click count 0…C-1 (the last for more) and landmark
    pooled: bool
    num_scores: list = field(default_factory=list)  # per landmark, the scores each radius came from
    clicks: list = field(default_factory=list)  # the click counts the scores were collected at
    fitted_on: str = ""
    kind: str = "ellipse-mahalanobis"
    # the same regions at a wider level (e.g. 0.99), fitted on the same scores: drawn on a film unlike the calibration
    # films (familiarity.py), where the stated level cannot be promised; None when not fitted
    wide_level: float | None = None
    wide_radii: np.ndarray | None = None

    def __post_init__(self):
        self.radii = np.atleast_2d(np.asarray(self.radii, np.float64))  # a (K,) calibration: one row for all counts
        if self.wide_radii is not None:
            self.wide_radii = np.atleast_2d(np.asarray(self.wide_radii, np.float64))

    def for_clicks(self, num_clicks: int, wide: bool = False) -> np.ndarray:
        """(K,) the radii of a prediction made with ``num_clicks`` clicks (``wide``: at :attr:`wide_level`, when
        fitted)."""
        radii = self.wide_radii if wide and self.wide_radii is not None else self.radii
        return radii[min(max(int(num_clicks), 0), len(radii) - 1)]

    def level_used(self, wide: bool = False) -> float:
        """The level of the radii :meth:`for_clicks` gives."""
        return float(self.wide_level) if wide and self.wide_radii is not None else float(self.level)

    def to_card(self) -> dict:
        out = {"kind": self.kind, "level": self.level, "radii": np.round(self.radii, 5).tolist(),
               "pooled": self.pooled, "num_scores": [int(n) for n in self.num_scores], "clicks": list(self.clicks),
               "fitted_on": self.fitted_on}
        if self.wide_radii is not None:
            out.update(wide_level=self.wide_level, wide_radii=np.round(self.wide_radii, 5).tolist())
        return out

    @classmethod
    def from_card(cls, data, num_landmarks: int, source: str = "model card") -> "RegionCalibration":
        try:
            level = float(data["level"])
            radii = np.asarray(data["radii"], np.float64)
        except (KeyError, TypeError, ValueError):
            raise RegionError(f"{source}: its 'regions' field is malformed (needs a level and radii)") from None
        if data.get("kind", "ellipse-mahalanobis") != "ellipse-mahalanobis":
            raise RegionError(f"{source}: regions of kind {data.get('kind')!r} are not known to this version")
        if not 0 < level < 1:
            raise RegionError(f"{source}: the regions' level must be in (0, 1), got {level}")
        if radii.ndim not in (1, 2) or radii.shape[-1] != num_landmarks or radii.size == 0:
            raise RegionError(f"{source}: region radii of shape {radii.shape} for {num_landmarks} landmarks")
        if not (np.isfinite(radii).all() and (radii > 0).all()):
            raise RegionError(f"{source}: region radii must be positive and finite")
        wide_level = wide_radii = None
        if data.get("wide_radii") is not None:
            try:
                wide_level = float(data["wide_level"])
                wide_radii = np.asarray(data["wide_radii"], np.float64)
            except (KeyError, TypeError, ValueError):
                raise RegionError(f"{source}: its wide regions are malformed (need wide_level and wide_radii)") from None
            if (not level < wide_level < 1 or wide_radii.ndim not in (1, 2) or wide_radii.shape[-1] != num_landmarks
                    or not (np.isfinite(wide_radii).all() and (wide_radii > 0).all())):
                raise RegionError(f"{source}: wide regions need a level in ({level}, 1) and positive finite radii "
                                  f"for {num_landmarks} landmarks")
        return cls(level, radii, bool(data.get("pooled", False)), list(data.get("num_scores", [])),
                   list(data.get("clicks", [])), str(data.get("fitted_on", "")), wide_level=wide_level,
                   wide_radii=wide_radii)


def fit_regions(scores, level: float = 0.95, pooled: bool | None = None, clicks=(), fitted_on: str = "") \
        -> RegionCalibration:
    """Radii from ``scores`` (Mahalanobis radii of the true points; NaN where a landmark was clicked or not
    annotated): ``(N, K)`` for one set of radii, or ``(N, C, K)`` (images × click counts 0…C-1 × landmarks) for one
    set per click count. ``pooled`` None: per landmark when every landmark has at least :func:`min_scores` scores
    (at every click count), else one radius for all. Raises :class:`RegionError` (one line) when even the pool is
    too small."""
    s = np.asarray(scores, np.float64)
    if s.ndim == 3:
        n_per = np.isfinite(s).sum(axis=0)  # (C, K)
        # pooled None: per landmark where it has enough scores at that click count, pooled for the others
        rows = [fit_regions(s[:, c], level, pooled) for c in range(s.shape[1])]
        if pooled is None:
            pooled = bool(all(r.pooled for r in rows))
        return RegionCalibration(float(level), np.stack([r.radii[0] for r in rows]), pooled,
                                 n_per.min(axis=0).tolist(), list(clicks), fitted_on)
    if s.ndim != 2:
        raise RegionError(f"scores must be (samples, landmarks) or (samples, clicks, landmarks), got {s.shape}")
    if not 0 < level < 1:
        raise RegionError(f"level must be in (0, 1), got {level}")
    n_per = np.isfinite(s).sum(axis=0)
    need = min_scores(level)
    if pooled is None and n_per.size and n_per.sum() >= need and 0 < (n_per < need).sum() < len(n_per):
        # some landmarks have too few scores (clicked on most films after many clicks): those take the radius
        # pooled over all, the others their own
        shared = conformal_radius(s.ravel(), level)
        radii = np.array([conformal_radius(s[:, k], level) if n_per[k] >= need else shared
                          for k in range(s.shape[1])])
        return RegionCalibration(float(level), radii, False, n_per.tolist(), list(clicks), fitted_on)
    if pooled is None:
        pooled = bool(n_per.size == 0 or n_per.min() < need)
    if pooled:
        if n_per.sum() < need:
            raise RegionError(f"{int(n_per.sum())} calibration scores are too few for a {level * 100:g} % region "
                              f"(at least {need} are needed): calibrate on more images")
        radii = np.full(s.shape[1], conformal_radius(s.ravel(), level))
    else:
        short = np.flatnonzero(n_per < need)
        if len(short):
            raise RegionError(f"landmark {short[0]} has {n_per[short[0]]} calibration scores, too few for a "
                              f"{level * 100:g} % region of its own (at least {need}); pool them or use more images")
        radii = np.array([conformal_radius(s[:, k], level) for k in range(s.shape[1])])
    return RegionCalibration(float(level), radii, pooled, n_per.tolist(), list(clicks), fitted_on)


def ellipses(cov, radii) -> tuple[np.ndarray, np.ndarray]:
    """Semi-axes ``(..., 2)`` (major, minor; original pixels) and the major axis's angle ``(...,)`` in degrees
    (counter-clockwise from the column axis, towards decreasing rows — as on screen) of the regions
    ``{d : dᵀ Σ⁻¹ d ≤ q²}``. NaN where ``cov`` is not finite."""
    c = np.asarray(cov, np.float64)
    q = np.broadcast_to(np.asarray(radii, np.float64), c.shape[:-2])
    finite = np.isfinite(c).all(axis=(-2, -1))
    safe = np.where(finite[..., None, None], c, np.eye(2))
    vals, vecs = np.linalg.eigh(safe)  # ascending
    vals = np.clip(vals, 0.0, None)
    axes = q[..., None] * np.sqrt(vals[..., ::-1])
    major = vecs[..., :, 1]  # (row, col) direction of the largest eigenvalue
    angle = np.degrees(np.arctan2(-major[..., 0], major[..., 1]))
    angle = (angle + 90.0) % 180.0 - 90.0
    axes = np.where(finite[..., None], axes, np.nan)
    return axes, np.where(finite, angle, np.nan)


def region_area(cov, radii) -> np.ndarray:
    """``(...,)`` area of each region: ``π q² sqrt(det Σ)`` (original pixels²)."""
    c = np.asarray(cov, np.float64)
    det = c[..., 0, 0] * c[..., 1, 1] - c[..., 0, 1] ** 2
    with np.errstate(invalid="ignore"):
        return math.pi * np.asarray(radii, np.float64) ** 2 * np.sqrt(np.where(det > 0, det, np.nan))


def ellipse_polygon(centre, cov, radius: float, n: int = 48) -> np.ndarray:
    """``(n, 2)`` (row, col) vertices of one region's outline (for drawing or a polygon export)."""
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    vals, vecs = np.linalg.eigh(np.asarray(cov, np.float64))
    circle = np.stack([np.cos(t), np.sin(t)], axis=-1) * (radius * np.sqrt(np.clip(vals, 0.0, None)))
    return np.asarray(centre, np.float64) + circle @ vecs.T


def contains(point, centre, cov, radius) -> np.ndarray:
    """Whether each ``point`` lies in its region (NaN-safe: False where undefined)."""
    r = mahalanobis_radius(np.asarray(point, np.float64) - np.asarray(centre, np.float64), cov)
    return np.where(np.isfinite(r), r <= np.asarray(radius, np.float64), False)
