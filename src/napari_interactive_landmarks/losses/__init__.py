"""Losses: heatmap BCE (both heads) and the morphology-aware loss of Kim et al. (MICCAI 2022); the Exponential
Weighted Center loss of FARNet (Ao & Wu 2022); the 2-D softmax NLL of McCouat & Voiculescu (CVPR 2022)."""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F

from ..codecs.heatmaps import decoding_input, gaussian_heatmaps, local_soft_argmax


def exponential_weight(target: torch.Tensor, alpha: float) -> torch.Tensor:
    """α^y: the pixel weight of FARNet's Exponential Weighted Center loss (Ao & Wu 2022, Eq. 3) — α at a
    landmark (y = 1), falling to 1 far from it (y → 0). One implementation for ``heatmap_ewc`` and the
    ``fg_weight`` of ``heatmap_bce``."""
    return torch.pow(torch.as_tensor(float(alpha), device=target.device), target)


def heatmap_bce(logits: torch.Tensor, target: torch.Tensor, fg_weight: float = 1.0) -> torch.Tensor:
    """Pixel-wise BCE on Gaussian targets (Kim et al.). ``fg_weight`` α > 1 weights each pixel by α^y (the
    exponential weighting of FARNet's EWC loss, ``exponential_weight``), so the few pixels near a landmark are
    not drowned by the background — 1.0 is the paper's plain BCE."""
    if fg_weight == 1.0:
        return F.binary_cross_entropy_with_logits(logits, target)
    return F.binary_cross_entropy_with_logits(logits, target, weight=exponential_weight(target, fg_weight))


def heatmap_ewc(logits: torch.Tensor, target: torch.Tensor, alpha: float = 40.0) -> torch.Tensor:
    """Exponential Weighted Center loss (Ao & Wu 2022, Eq. 3): mean over pixels of (ŷ − y)² · α^y, α = 40 in the
    paper. ŷ = sigmoid(logits): the heatmap in [0, 1] like its Gaussian target, so an EWC-trained model decodes,
    displays and calibrates like a BCE-trained one (``heatmap: sigmoid``); the reference regresses ŷ with a linear
    output instead."""
    err = torch.sigmoid(logits) - target
    return (err * err * exponential_weight(target, alpha)).mean()


def heatmap_softmax_nll(logits: torch.Tensor, coords: torch.Tensor, sigma: float) -> torch.Tensor:
    """Cross-entropy of each landmark's 2-D softmax against a Gaussian-smoothed target distribution
    (McCouat & Voiculescu 2022 train with NLL against a one-hot target; a narrow Gaussian — ``sigma`` in
    the logits' pixels, ≈ 0.5 — is its sub-pixel version). ``sigma = 0`` is the paper's one-hot target, the
    σ → 0 limit: a 1 at the pixel nearest to the landmark (−log softmax there). ``coords`` (B, K, 2) in the
    logits' grid pixels; landmarks with NaN coordinates or a target entirely outside the grid do not count."""
    b, k, h, w = logits.shape
    if sigma <= 0:
        return _one_hot_softmax_nll(logits, coords)
    target = gaussian_heatmaps(coords, (h, w), sigma).flatten(-2)
    mass = target.sum(-1, keepdim=True)
    valid = mass[..., 0] > 1e-6
    target = target / mass.clamp_min(1e-12)
    nll = -(target * torch.log_softmax(logits.flatten(-2).float(), dim=-1)).sum(-1)
    if not bool(valid.any()):
        return logits.sum() * 0.0
    return nll[valid].mean()


def _one_hot_softmax_nll(logits: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    b, k, h, w = logits.shape
    c = torch.nan_to_num(coords.to(torch.float32), nan=-1.0)
    r, q = torch.round(c[..., 0]).long(), torch.round(c[..., 1]).long()
    valid = torch.isfinite(coords).all(-1) & (r >= 0) & (r < h) & (q >= 0) & (q < w)
    if not bool(valid.any()):
        return logits.sum() * 0.0
    idx = (r.clamp(0, h - 1) * w + q.clamp(0, w - 1))[..., None]
    nll = -torch.log_softmax(logits.flatten(-2).float(), dim=-1).gather(-1, idx)[..., 0]
    return nll[valid].mean()


def select_morphology_sets(coords: np.ndarray, num_pairs: int, num_triplets: int, max_triplet_candidates=None):
    """Pick the inter-landmark distances and angles that vary least over a training set (Kim et al. Eq. 2-3).

    ``coords`` (N, K, 2) normalised (row / H, col / W) coordinates of the training split. Distances: the
    ``num_pairs`` pairs (m, n), m < n, with the lowest standard deviation of the distance. Angles: the
    ``num_triplets`` triplets (a, v, b), a < b, v ∉ {a, b}, with the lowest circular variance of the angle of
    (b − v) minus the angle of (a − v). Rows with NaN are ignored per set. Returns (pairs, triplets) as lists.
    """
    coords = np.asarray(coords, dtype=np.float64)
    n, k, _ = coords.shape
    pairs = np.array(list(itertools.combinations(range(k), 2)))
    d = np.linalg.norm(coords[:, pairs[:, 0]] - coords[:, pairs[:, 1]], axis=-1)  # N, P
    std = np.nanstd(d, axis=0)
    order = np.lexsort((np.arange(len(std)), std))  # stable: ties broken by index
    chosen_pairs = [tuple(int(v) for v in pairs[i]) for i in order[:num_pairs]]

    trip = np.array([(a, v, b) for v in range(k) for a, b in itertools.combinations([i for i in range(k) if i != v], 2)])
    cvar = np.empty(len(trip))
    chunk = 20000
    for s in range(0, len(trip), chunk):
        t = trip[s : s + chunk]
        va = coords[:, t[:, 0]] - coords[:, t[:, 1]]
        vb = coords[:, t[:, 2]] - coords[:, t[:, 1]]
        theta = np.arctan2(vb[..., 0], vb[..., 1]) - np.arctan2(va[..., 0], va[..., 1])  # N, T
        z = np.exp(1j * theta)
        cvar[s : s + chunk] = 1.0 - np.abs(np.nanmean(z, axis=0))
    order = np.lexsort((np.arange(len(cvar)), cvar))
    chosen_trip = [tuple(int(v) for v in trip[i]) for i in order[:num_triplets]]
    return chosen_pairs, chosen_trip


def _angle_vectors(coords, triplets):
    a, v, b = coords[:, triplets[:, 0]], coords[:, triplets[:, 1]], coords[:, triplets[:, 2]]
    va, vb = a - v, b - v
    theta = torch.atan2(vb[..., 0], vb[..., 1]) - torch.atan2(va[..., 0], va[..., 1])
    return torch.stack([torch.cos(theta), torch.sin(theta)], dim=-1)


def morphology_loss(pred_norm: torch.Tensor, true_norm: torch.Tensor, pairs: torch.Tensor, triplets: torch.Tensor,
                    angle_weight: float = 1.0):
    """Distance L1 + angle (1 − cosine similarity) on normalised (B, K, 2) coordinates.

    Returns (distance_loss, angle_loss). Pairs/triplets whose ground truth has NaN are skipped.
    """
    zero = pred_norm.new_zeros(())
    ld = la = zero
    if len(pairs):
        dp = torch.linalg.vector_norm(pred_norm[:, pairs[:, 0]] - pred_norm[:, pairs[:, 1]], dim=-1)
        dt = torch.linalg.vector_norm(true_norm[:, pairs[:, 0]] - true_norm[:, pairs[:, 1]], dim=-1)
        ok = torch.isfinite(dt)
        if ok.any():
            ld = (dp[ok] - dt[ok]).abs().mean()
    if len(triplets):
        up = _angle_vectors(pred_norm, triplets)
        ut = _angle_vectors(true_norm, triplets)
        ok = torch.isfinite(ut).all(-1)
        if ok.any():
            cos = (up * ut).sum(-1)  # both unit vectors
            la = (1.0 - cos[ok]).mean()
    return ld, la * angle_weight


def soft_coords_normalised(logits: torch.Tensor, window: int = 15, heatmap: str = "sigmoid") -> torch.Tensor:
    """Local soft-argmax of the decoded logits (``codecs.heatmaps.decoding_input``), normalised per axis
    ((row + 0.5) / H, (col + 0.5) / W) so that the result does not depend on the map's resolution."""
    h, w = logits.shape[-2:]
    x, beta = decoding_input(logits, heatmap)
    c = local_soft_argmax(x, window=window, beta=beta)
    return (c + 0.5) / torch.tensor([h, w], dtype=c.dtype, device=c.device)
