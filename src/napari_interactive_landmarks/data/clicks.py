"""Simulated user clicks for training (Kim et al.; reference code's distribution)."""

from __future__ import annotations

import numpy as np


def initial_click_probabilities(max_clicks: int = 12) -> np.ndarray:
    """P(k) for k = 0..max_clicks: 1/8, 1/2, 1/4, then halving (1/16, 1/32, …) with the last two equal."""
    if max_clicks < 2:
        raise ValueError("max_clicks must be at least 2")
    p = [1 / 8, 1 / 2, 1 / 4]
    v = 1 / 16
    while len(p) < max_clicks + 1:
        p.append(v)
        v /= 2
    p[-1] = p[-2]
    p = np.array(p[: max_clicks + 1])
    return p / p.sum()


def sample_initial_clicks(rng: np.random.Generator, num_landmarks: int, max_clicks: int = 12,
                          valid: np.ndarray | None = None) -> np.ndarray:
    """Indices of the initially clicked landmarks: k ~ initial_click_probabilities, drawn without
    replacement among the valid (annotated) landmarks."""
    k = int(rng.choice(max_clicks + 1, p=initial_click_probabilities(max_clicks)))
    pool = np.arange(num_landmarks) if valid is None else np.flatnonzero(valid)
    k = min(k, len(pool))
    return np.sort(rng.choice(pool, size=k, replace=False)) if k else np.zeros(0, dtype=np.int64)


ORDERS = ("worst", "ere", "suggested", "random")


class Clicker:
    """The simulated user: which landmark they correct next, and where they put it. One object serves training
    (iterative click rounds), validation and the evaluation protocol.

    ``order``: ``"worst"`` — the largest current error (the paper's oracle: "the clearly wrong point first");
    ``"ere"`` — the highest predicted expected radial error (what the plugin suggests); ``"random"`` — uniform.
    Candidates are the landmarks not clicked yet with a finite error (a landmark without ground truth cannot be
    clicked); NaN ERE ranks last; ties go to the lowest index. ``noise_px``: the standard deviation of the user's
    placement error per axis (original pixels; 0 = exactly at the ground truth).
    """

    def __init__(self, order: str = "worst", noise_px: float = 0.0, rng=None):
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
        if not (noise_px >= 0):
            raise ValueError(f"noise_px must be >= 0, got {noise_px!r}")
        self.order, self.noise_px = order, float(noise_px)
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)

    # ---- one image (numpy)
    def choose(self, errors, clicked, ere=None, clickable=None) -> int | None:
        """Index of the next landmark to correct, or None when no candidate is left. ``clickable`` (K,) bool:
        the landmarks that have a ground truth to click (default: those with a finite error)."""
        errors = np.asarray(errors, dtype=np.float64)
        able = np.isfinite(errors) if clickable is None else np.asarray(clickable, bool)
        cand = ~np.asarray(clicked, bool) & able
        if not cand.any():
            return None
        if self.order == "random":
            idx = np.flatnonzero(cand)
            return int(idx[self.rng.integers(idx.size)])
        if self.order in ("ere", "suggested"):  # (suggested: the tool's own ranking, passed as ``ere``)
            if ere is None:
                raise ValueError(f"order='{self.order}' needs the tool's ranking of the landmarks (ere=...)")
            key = np.asarray(ere, dtype=np.float64)
        else:
            key = errors
        key = np.where(cand, np.where(np.isfinite(key), key, -np.inf), np.nan)  # unknown error/ERE: ranks last
        best = np.nanmax(key)
        return int(np.flatnonzero(key == best)[0])

    def position(self, gt_point, shape=None) -> tuple[float, float]:
        """Where the user puts the landmark: the ground truth, plus Gaussian noise of ``noise_px``, kept inside
        an image of ``shape`` (H, W) when given."""
        r, c = (float(v) for v in gt_point)
        if self.noise_px > 0:
            r, c = r + self.rng.normal(0, self.noise_px), c + self.rng.normal(0, self.noise_px)
            if shape is not None:
                r = min(max(r, -0.5), shape[0] - 0.5)
                c = min(max(c, -0.5), shape[1] - 0.5)
        return r, c

    # ---- a batch (torch, on the tensors' device)
    def choose_batch(self, errors, clicked, ere=None):
        """(B, K) bool mask with the next landmark of each image (none where no candidate is left)."""
        import torch

        cand = ~clicked & torch.isfinite(errors)
        if self.order == "random":
            key = torch.rand(errors.shape, device=errors.device)
        elif self.order == "ere":
            if ere is None:
                raise ValueError("order='ere' needs the predicted expected radial error (ere=...)")
            key = torch.nan_to_num(ere.to(errors.dtype), nan=-1.0, posinf=-1.0).clamp_min(0.0)
        else:
            key = errors
        key = torch.where(cand, key, torch.full_like(key, -1.0))
        worst = key.argmax(-1, keepdim=True)
        has = cand.any(-1, keepdim=True)
        return torch.zeros_like(clicked).scatter(-1, worst, has)


def worst_unclicked(errors: np.ndarray, clicked: np.ndarray) -> int:
    """Index of the not-yet-clicked landmark with the largest error (NaN errors never chosen); -1 if none."""
    i = Clicker("worst").choose(errors, clicked)
    return -1 if i is None else i
