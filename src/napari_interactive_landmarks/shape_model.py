"""The anatomy as a second channel for a correction: a statistical shape model (point distribution model) of the
landmarks' joint positions, conditioned on the points a user has placed, multiplied into the network's calibrated
probability maps (``../shared/docs/shape-prior.md``; Cootes et al.'s point distribution model, conditioned on
partial observations as in Blanc, Syrkina & Székely).

All coordinates here are **normalised image coordinates** u = ((row + 0.5) / H, (col + 0.5) / W) of an H × W image,
so shapes of films of different sizes share one model; a shape is the (K, 2) array of its landmarks' u, flattened
row-major into x ∈ R^{2K} = (r0, c0, r1, c1, …).

- Fit: mean μ and covariance Σ from the training labels, pairwise-complete where some landmarks are unannotated
  (NaN), stored raw; at use Σ is shrunk toward its diagonal, Σ_λ = (1 − λ) Σ + λ diag Σ, and floored to a
  positive-definite matrix.
- Conditioning on placed landmarks o at y: m = μ + Σ_·o Σ_oo⁻¹ (y − μ_o), C = Σ − Σ_·o Σ_oo⁻¹ Σ_o·; landmark j's
  prior is N(m_j, τ C_j) (its 2 × 2 block), for all landmarks at once.
- Each landmark given all the others (no click): from the precision Λ = Σ⁻¹, C_j = (Λ_jj)⁻¹ and
  m_j = u_j − C_j (Λ (u − μ))_j. Used before any click (iterated from the network's points) and, with
  ``click_rounds``, after a click too: the first round is conditioned on the clicks alone, the next ones on all the
  other landmarks (the clicked ones at the user's points), so what the first round got right is not thrown away.
- The prior on a map's grid is made robust: log(w · N(cell; m_j, τ C_j) + (1 − w) · U), U = 1 the uniform density
  over the (unit) normalised image, so that an implausible click can never drag a point off its map (w = 1 let one
  film go from 227 to 863 px after one click).

Nothing here imports torch, napari or Qt; :mod:`..inference.predictor` applies it to the maps.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = ["ShapeModel", "ShapePriorSettings", "ShapeModelError", "normalise", "TENSOR_PREFIX"]

TENSOR_PREFIX = "shape_model."  # the shape model's tensors in a weights file (float32, beside the network's)
DIAGONAL_FLOOR = 1e-6  # variance floor in normalised units² (0.1 % of the image side): keeps Σ positive-definite


class ShapeModelError(ValueError):
    """A shape model that cannot be fitted or used, said in one line."""


def normalise(coords, shape) -> np.ndarray:
    """(…, K, 2) (row, col) pixels of an image of ``shape`` (H, W) → normalised u."""
    h, w = float(shape[0]), float(shape[1])
    return (np.asarray(coords, np.float64) + 0.5) / np.array([h, w])


@dataclass
class ShapePriorSettings:
    """How the prior is applied, chosen per model on its validation split and kept in its model card."""

    enabled: bool = True
    tau: float = 1.0  # prior inflation: the conditional covariance is multiplied by tau
    weight: float = 0.9  # robustness: w · N + (1 − w) · uniform; must be < 1
    shrinkage: float = 0.05  # λ of the covariance's shrinkage toward its diagonal
    zero_click: bool = False  # also before any click (each landmark given all the others, iterated)
    zero_click_rounds: int = 2
    # after a click: rounds of each unclicked landmark given all the others (the clicked ones at the user's points,
    # the rest where the previous round put them), after the round conditioned on the clicks alone; 0 = clicks alone
    click_rounds: int = 0
    # after a click, an unclicked landmark whose new place is less than ``hold`` map cells (the network's stride-4
    # grid, in original pixels per cell) from where it was shown stays where it was: moves that small are the
    # network's jitter between updates, not the correction's doing; 0 = every landmark takes its new place
    hold: float = 0.0

    def __post_init__(self):
        self.enabled = bool(self.enabled)
        self.zero_click = bool(self.zero_click)
        for name in ("tau", "weight", "shrinkage", "hold"):
            v = getattr(self, name)
            try:
                v = float(v)
            except (TypeError, ValueError):
                raise ShapeModelError(f"shape prior: {name} must be a number, got {v!r}") from None
            setattr(self, name, v)
        if not (math.isfinite(self.tau) and self.tau > 0):
            raise ShapeModelError(f"shape prior: tau must be positive and finite, got {self.tau}")
        if not (0.0 <= self.weight < 1.0):
            raise ShapeModelError(f"shape prior: weight must be in [0, 1) (1 would let an implausible click drag "
                                  f"points off their maps), got {self.weight}")
        if not (math.isfinite(self.hold) and self.hold >= 0):
            raise ShapeModelError(f"shape prior: hold must be a non-negative number of map cells, got {self.hold}")
        if not (0.0 <= self.shrinkage <= 1.0):
            raise ShapeModelError(f"shape prior: shrinkage must be in [0, 1], got {self.shrinkage}")
        self.zero_click_rounds = int(self.zero_click_rounds)
        self.click_rounds = int(self.click_rounds)
        if self.click_rounds < 0 or self.zero_click_rounds < 0:
            raise ShapeModelError("shape prior: the number of rounds cannot be negative")


@dataclass
class ShapeModel:
    """A Gaussian model of the joint landmark positions (normalised coordinates), with its prior settings."""

    mean: np.ndarray  # (2K,)
    cov_raw: np.ndarray  # (2K, 2K) pairwise-complete sample covariance, before shrinkage
    num_shapes: int
    settings: ShapePriorSettings = field(default_factory=ShapePriorSettings)
    schema: str | None = None  # the landmark set it was fitted for (name)
    fitted_on: str = ""  # what it was fitted from (dataset / split), for the model card

    def __post_init__(self):
        self.mean = np.asarray(self.mean, np.float64).reshape(-1)
        self.cov_raw = np.asarray(self.cov_raw, np.float64)
        d = self.mean.size
        if d == 0 or d % 2:
            raise ShapeModelError(f"shape model: its mean has {d} values, not 2 per landmark")
        if self.cov_raw.shape != (d, d):
            raise ShapeModelError(f"shape model: covariance of shape {self.cov_raw.shape} for {d // 2} landmarks")
        if not (np.isfinite(self.mean).all() and np.isfinite(self.cov_raw).all()):
            raise ShapeModelError("shape model: its mean or covariance holds NaN or infinite values")
        self._set_cov()
        # the last few conditionals and informativeness matrices asked for (an update asks for the same ones in its
        # prior, its envelope and its "check next"; a drag of a point already corrected asks for the last ones again)
        self._memo: dict = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def fit(cls, shapes, settings: ShapePriorSettings | None = None, schema: str | None = None,
            fitted_on: str = "") -> "ShapeModel":
        """From (N, K, 2) normalised shapes (NaN = unannotated): mean and pairwise-complete covariance."""
        x = np.asarray(shapes, np.float64)
        if x.ndim != 3 or x.shape[-1] != 2:
            raise ShapeModelError(f"shape model: shapes must be (N, K, 2), got {x.shape}")
        n, k, _ = x.shape
        x = x.reshape(n, 2 * k)
        seen = np.isfinite(x)
        per_landmark = seen.reshape(n, k, 2).all(-1).sum(0)
        empty = np.flatnonzero(per_landmark < 2)
        if len(empty):
            raise ShapeModelError(f"shape model: landmark(s) {empty[:5].tolist()} are annotated in fewer than 2 of the "
                                  f"{n} training shapes")
        if n < max(10, k):
            raise ShapeModelError(f"shape model: {n} training shapes are too few for {k} landmarks (at least "
                                  f"{max(10, k)} needed)")
        mean = np.nanmean(x, axis=0)
        xc = np.where(seen, x - mean, 0.0)
        m = seen.astype(np.float64)
        count = m.T @ m
        cov = (xc.T @ xc) / np.maximum(count - 1.0, 1.0)
        cov[count < 2] = 0.0
        return cls(mean, cov, n, settings or ShapePriorSettings(), schema, fitted_on)

    def with_settings(self, **changes) -> "ShapeModel":
        """The same fit with other prior settings (sharing what is remembered of its conditionals when the shrinkage,
        the one setting they depend on, is the same)."""
        other = ShapeModel(self.mean, self.cov_raw, self.num_shapes,
                           ShapePriorSettings(**{**asdict(self.settings), **changes}), self.schema, self.fitted_on)
        if other.settings.shrinkage == self.settings.shrinkage:
            other._memo = self._memo
        return other

    MEMO_SIZE = 8

    def _remember(self, key, value):
        memo = self._memo
        memo[key] = value
        while len(memo) > self.MEMO_SIZE:
            memo.pop(next(iter(memo)))
        return value

    def _set_cov(self):
        lam = self.settings.shrinkage
        cov = (1.0 - lam) * self.cov_raw + lam * np.diag(np.diag(self.cov_raw))
        cov = 0.5 * (cov + cov.T)
        vals, vecs = np.linalg.eigh(cov)
        floor = max(DIAGONAL_FLOOR, 1e-9 * float(vals.max(initial=0.0)))
        if not np.isfinite(vals).all():
            raise ShapeModelError("shape model: its covariance is not finite after shrinkage")
        self.cov = (vecs * np.maximum(vals, floor)) @ vecs.T
        self.precision = (vecs / np.maximum(vals, floor)) @ vecs.T

    @property
    def num_landmarks(self) -> int:
        return self.mean.size // 2

    # ------------------------------------------------------------------ conditionals
    def condition(self, indices, points) -> tuple[np.ndarray, np.ndarray]:
        """Every landmark's Gaussian given landmarks ``indices`` at normalised ``points`` (n, 2): means (K, 2) and
        2 × 2 covariances (K, 2, 2) (the given landmarks' own come out at their points with ~0 covariance)."""
        idx = np.asarray(list(indices), int)
        k = self.num_landmarks
        if len(idx) == 0:
            return self.mean.reshape(k, 2).copy(), _blocks(self.cov, k)
        y = np.asarray(points, np.float64).reshape(-1)
        key = ("condition", idx.tobytes(), y.tobytes())
        if key in self._memo:
            m, c = self._memo[key]
            return m.copy(), c.copy()
        o = np.stack([2 * idx, 2 * idx + 1], 1).reshape(-1)
        s_oo = self.cov[np.ix_(o, o)]
        s_ao = self.cov[:, o]
        gain = np.linalg.solve(s_oo, s_ao.T).T  # Σ_·o Σ_oo⁻¹, (2K, 2n)
        m = self.mean + gain @ (y - self.mean[o])
        c = self.cov - gain @ s_ao.T
        m, c = self._remember(key, (m.reshape(k, 2), _blocks(0.5 * (c + c.T), k)))
        return m.copy(), c.copy()

    def informativeness(self, indices=()) -> np.ndarray:
        """(K, K) ``r[j, k]``: the share of landmark j's positional variance (the trace of its 2 × 2 covariance, given
        landmarks ``indices``) that knowing landmark k as well removes, in [0, 1] (0 on the diagonal, and for the given
        landmarks) — how much a correction of k tells about j under this anatomy; what "check next" weighs the
        others' expected errors with (their expected gain)."""
        k = self.num_landmarks
        idx = np.asarray(list(indices), int)
        key = ("informativeness", np.sort(idx).tobytes())
        if key in self._memo:
            return self._memo[key].copy()
        cov = self.cov
        if len(idx):
            o = np.stack([2 * idx, 2 * idx + 1], 1).reshape(-1)
            cov = cov - cov[:, o] @ np.linalg.solve(cov[np.ix_(o, o)], cov[o, :])
            cov = 0.5 * (cov + cov.T)
        b = cov.reshape(k, 2, k, 2)
        kk = b[np.arange(k), :, np.arange(k), :]  # (K, 2, 2) each landmark's own block
        inv = np.linalg.pinv(kk, hermitian=True)
        # tr(Σ_jk Σ_kk⁻¹ Σ_kj) = Σ_a,b,c Σ_jk[a,b] inv_k[b,c] Σ_jk[a,c], written out over the 2 × 2 blocks
        b0, b1 = b[:, :, :, 0], b[:, :, :, 1]  # (j, a, k)
        reduced = (inv[:, 0, 0] * (b0 * b0).sum(1) + (inv[:, 0, 1] + inv[:, 1, 0]) * (b0 * b1).sum(1)
                   + inv[:, 1, 1] * (b1 * b1).sum(1))
        total = np.trace(kk, axis1=1, axis2=2)  # (K,) tr Σ_jj
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.clip(reduced / total[:, None], 0.0, 1.0)
        r = np.where(np.isfinite(r), r, 0.0)
        np.fill_diagonal(r, 0.0)
        if len(idx):
            r[idx, :] = 0.0
            r[:, idx] = 0.0
        return self._remember(key, r).copy()

    def leave_one_out(self, points) -> tuple[np.ndarray, np.ndarray]:
        """Each landmark's Gaussian given all the others at normalised ``points`` (K, 2)."""
        k = self.num_landmarks
        u = np.asarray(points, np.float64).reshape(-1)
        lam_blocks = _blocks(self.precision, k)
        c = np.linalg.inv(lam_blocks)
        r = (self.precision @ (u - self.mean)).reshape(k, 2)
        m = u.reshape(k, 2) - np.einsum("kij,kj->ki", c, r)
        return m, c

    def log_prior_on_grid(self, means, covs, grid, rows=None) -> np.ndarray:
        """log(w · N(cell; m_j, τ C_j) + (1 − w)) at the centres of an (h, w) grid over the image, (K, h, w)
        float32 — the robust prior the predictor adds to each landmark's log-probability map (``rows``: only these
        landmarks, the others get the flat log(1 − w)).

        Written as log(1 − w) + log1p(w N / (1 − w)) and evaluated only inside each landmark's box where the
        Gaussian term exceeds e⁻¹² of the uniform one (elsewhere it adds less than 10⁻⁵ to a log-probability), which keeps all
        68 landmarks of a 128 × 64 map at about a millisecond on a CPU."""
        h, w = int(grid[0]), int(grid[1])
        means = np.asarray(means, np.float64)
        k = len(means)
        floor, inv, log_c, cov = self.grid_terms(covs)
        out = np.full((k, h, w), np.float32(floor), np.float32)
        if inv is None:
            return out
        radius2 = 2.0 * (log_c + 12.0)  # Mahalanobis² inside which the term matters (> e⁻¹² of the floor)
        centres_r, centres_c = (np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w
        for j in range(k) if rows is None else rows:
            if radius2[j] <= 0:
                continue
            half_r, half_c = np.sqrt(radius2[j] * cov[j, 0, 0]), np.sqrt(radius2[j] * cov[j, 1, 1])
            r0, r1 = np.searchsorted(centres_r, [means[j, 0] - half_r, means[j, 0] + half_r])
            c0, c1 = np.searchsorted(centres_c, [means[j, 1] - half_c, means[j, 1] + half_c])
            if r0 >= r1 or c0 >= c1:
                continue
            dr = (centres_r[r0:r1] - means[j, 0]).astype(np.float32)[:, None]
            dc = (centres_c[c0:c1] - means[j, 1]).astype(np.float32)[None, :]
            z = (np.float32(log_c[j]) - np.float32(0.5 * inv[j, 0]) * dr * dr) - np.float32(0.5 * inv[j, 1]) * dc * dc
            z -= np.float32(inv[j, 2]) * dr * dc
            out[j, r0:r1, c0:c1] += np.logaddexp(np.float32(0.0), z)
        return out

    def grid_terms(self, covs):
        """What the robust prior on a grid is made of, for ``covs`` (K, 2, 2): (log(1 − w) the flat floor,
        (K, 3) inverse-covariance terms i00, i11, i01 of τ C_j, (K,) log(w N / (1 − w)) at each mean, (K, 2, 2)
        τ C_j); the prior of cell x is floor + log1p(exp(log_c − ½ (x − m)ᵀ (τ C)⁻¹ (x − m))). The middle three are
        None when w = 0 (the prior is flat)."""
        tau, wt = self.settings.tau, self.settings.weight
        floor = float(np.log1p(-wt))
        if wt <= 0:
            return floor, None, None, None
        cov = tau * np.asarray(covs, np.float64) + DIAGONAL_FLOOR * np.eye(2)
        det = cov[:, 0, 0] * cov[:, 1, 1] - cov[:, 0, 1] * cov[:, 1, 0]
        inv = np.stack([cov[:, 1, 1], cov[:, 0, 0], -cov[:, 0, 1]], 1) / det[:, None]  # i00, i11, i01
        log_c = np.log(wt) - np.log1p(-wt) - np.log(2 * np.pi * np.sqrt(det))  # log(w N / (1 − w)) at the mean
        return floor, inv, log_c, cov

    # ------------------------------------------------------------------ storage
    def tensors(self) -> dict[str, np.ndarray]:
        """The arrays a weights file stores (float32), under :data:`TENSOR_PREFIX`."""
        return {TENSOR_PREFIX + "mean": self.mean.astype(np.float32),
                TENSOR_PREFIX + "cov": self.cov_raw.astype(np.float32)}

    def card_field(self) -> dict:
        """The model card's ``shape_prior`` field (settings and provenance; the arrays are tensors)."""
        return {**asdict(self.settings), "num_shapes": int(self.num_shapes), "schema": self.schema,
                "fitted_on": self.fitted_on}

    @classmethod
    def from_stored(cls, tensors: dict, card_field: dict | None, num_landmarks: int | None = None,
                    schema: str | None = None) -> "ShapeModel | None":
        """From a weights file's tensors and card field; None when the file has none. A stored model that cannot be
        used (another landmark set, non-finite numbers, bad settings) is a :class:`ShapeModelError`."""
        mean, cov = tensors.get(TENSOR_PREFIX + "mean"), tensors.get(TENSOR_PREFIX + "cov")
        if mean is None and cov is None:
            return None
        if mean is None or cov is None:
            raise ShapeModelError("the weights file holds half a shape model (its mean or its covariance is missing)")
        meta = dict(card_field or {})
        settings = ShapePriorSettings(**{k: meta[k] for k in ShapePriorSettings.__dataclass_fields__ if k in meta})
        cov = np.asarray(cov, np.float64)
        _check_covariance(cov)
        sm = cls(np.asarray(mean, np.float64), cov, int(meta.get("num_shapes", 0)), settings,
                 meta.get("schema"), str(meta.get("fitted_on", "")))
        if num_landmarks is not None and sm.num_landmarks != num_landmarks:
            raise ShapeModelError(f"its shape model is for {sm.num_landmarks} landmarks, the model predicts "
                                  f"{num_landmarks}")
        if schema is not None and sm.schema not in (None, schema):
            raise ShapeModelError(f"its shape model is for the landmark set '{sm.schema}', not '{schema}'")
        return sm


class CorruptShapeModelError(ShapeModelError):
    """A stored shape model whose covariance is no covariance (asymmetric, negative or indefinite): the file is
    damaged or was written by something else, and is refused rather than used with its eigenvalues floored."""


def _check_covariance(cov: np.ndarray) -> None:
    """A :class:`CorruptShapeModelError` unless ``cov`` is a finite, symmetric, positive semi-definite matrix (up to
    rounding: an asymmetry or a negative eigenvalue within 1e-6 of its largest eigenvalue's size is rounding)."""
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
        raise CorruptShapeModelError(f"its shape model's covariance has shape {cov.shape}, not square")
    if not np.isfinite(cov).all():
        raise CorruptShapeModelError("its shape model's covariance holds NaN or infinite values")
    size = float(np.abs(cov).max(initial=0.0))
    if size == 0:
        raise CorruptShapeModelError("its shape model's covariance is all zero")
    if float(np.abs(cov - cov.T).max()) > 1e-6 * size:
        raise CorruptShapeModelError("its shape model's covariance is not symmetric: the file is damaged")
    vals = np.linalg.eigvalsh(0.5 * (cov + cov.T))
    if vals.min() < -1e-6 * max(abs(vals.max()), abs(vals.min())):
        kind = "negative definite" if vals.max() <= 0 else "indefinite"
        raise CorruptShapeModelError(f"its shape model's covariance is {kind} (smallest eigenvalue {vals.min():.3g}, "
                                     f"largest {vals.max():.3g}): no covariance, the file is damaged")


def _blocks(mat: np.ndarray, k: int) -> np.ndarray:
    """The K diagonal 2 × 2 blocks of a (2K, 2K) matrix, (K, 2, 2)."""
    r = mat.reshape(k, 2, k, 2)
    i = np.arange(k)
    return r[i, :, i, :].copy()


# ---------------------------------------------------------------------- fitting from a dataset, writing into weights
def fit_from_samples(samples, schema_name: str | None, settings: ShapePriorSettings | None = None,
                     fitted_on: str = "") -> tuple["ShapeModel", dict]:
    """A shape model from dataset samples (``name``, ``coords`` in pixels, ``image_shape``); see
    :func:`fit_from_labels`."""
    return fit_from_labels([(s.name, s.coords, s.image_shape) for s in samples], schema_name, settings, fitted_on)


def fit_from_labels(labels, schema_name: str | None, settings: ShapePriorSettings | None = None,
                    fitted_on: str = "") -> tuple["ShapeModel", dict]:
    """A shape model from ``(name, coords (K, 2) pixels, image shape (H, W))`` triples, leaving out labels with known
    defects: on the AASCE spine set, images whose annotated vertebrae are out of order or upside down (the check the
    Cobb-angle code makes). Returns the model and ``{image name: why left out}``."""
    check = None
    if schema_name == "aasce-spine68":
        from .measurements.cobb import check_spine

        check = check_spine
    shapes, left_out = [], {}
    for name, coords, shape in labels:
        coords = np.asarray(coords, np.float64)
        problem = check(coords) if check is not None and np.isfinite(coords).all() else None
        if problem:
            left_out[str(name)] = str(problem)
            continue
        shapes.append(normalise(coords, shape))
    if not shapes:
        raise ShapeModelError("shape model: no usable training shapes")
    sm = ShapeModel.fit(np.stack(shapes), settings, schema_name, fitted_on)
    return sm, left_out


def write_into_weights(shape_model: ShapeModel, weights_in, weights_out) -> None:
    """Copy a weights file with ``shape_model`` stored in it: its arrays as float32 tensors beside the network's
    (which are kept bit for bit) and its settings as the model card's ``shape_prior`` field."""
    import json

    from safetensors.numpy import load_file, save_file
    from safetensors import safe_open

    from .io.files import replaced_atomically

    with safe_open(str(weights_in), framework="np") as f:
        meta = dict(f.metadata() or {})
    tensors = {k: v for k, v in load_file(str(weights_in)).items() if not k.startswith(TENSOR_PREFIX)}
    tensors.update(shape_model.tensors())
    meta["shape_prior"] = json.dumps(shape_model.card_field())
    with replaced_atomically(weights_out) as tmp:
        save_file(tensors, tmp, metadata=meta)
