"""Simulated user clicks for training (Kim et al.; reference code's distribution)."""

from __future__ import annotations

import numpy as np
import torch


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


def worst_unclicked(errors: np.ndarray, clicked: np.ndarray) -> int:
    """Index of the not-yet-clicked landmark with the largest error (NaN errors never chosen); -1 if none."""
    e = np.where(clicked | ~np.isfinite(errors), -np.inf, errors)
    i = int(np.argmax(e))
    return -1 if not np.isfinite(e[i]) else i


def worst_unclicked_mask(pred, gt, clicked, errors=None):
    """(B, K) bool: the one not-yet-clicked landmark with the largest error per image (none where every valid
    landmark is clicked). ``errors`` (B, K) may be given directly; else the radial error of ``pred`` against
    ``gt``. NaN errors (no ground truth) never count. All on ``clicked``'s device."""
    if errors is None:
        errors = torch.linalg.vector_norm(pred - gt, dim=-1)
    err = torch.where(clicked | ~torch.isfinite(errors), torch.full_like(errors, -1.0), errors)
    worst = err.argmax(-1, keepdim=True)
    has = err.max(-1, keepdim=True).values >= 0
    return torch.zeros_like(clicked).scatter(-1, worst, has)
