"""Calibrated probability maps and the Expected Radial Error — what inference computes for each landmark.
(Fitting temperatures and the calibration statistics that judge them are in ``evaluation/calibration_stats.py``.)

Core numerics of the Contour-Hugging Heatmaps method (McCouat & Voiculescu, CVPR 2022): a 2-D
softmax over each landmark channel turns logits into a probability map over the pixel grid;
temperature scaling (one temperature per landmark, fitted by NLL with everything else frozen)
calibrates it; the Expected Radial Error (ERE) summarises its spread around the prediction.

Conventions
-----------
* Maps are ``(..., K, h, w)``; coordinates are ``(row, col)`` in the *map grid's* pixels with the
  pixel-centre convention of :mod:`.geometry` (pixel ``i`` is centred on coordinate ``i``).  A
  stride-4 logit grid of an ``(H, W) = (4h, 4w)`` network input maps network coordinates to grid
  coordinates with ``geometry.to_network(coords, (H, W), (h, w))``; grid distances become original
  pixels with ``scale = grid_scale(orig_shape, (h, w))`` (rows and columns scaled separately, like
  ``geometry.to_original``, whose offset cancels in differences).  Multiply the scale by the
  ``(row, col)`` spacing to get millimetres.

Bad input (all functions return a defined value, never raise on data)
---------------------------------------------------------------------
* :func:`softmax_maps`: a channel containing NaN → an all-NaN channel; a channel whose logits are
  all ``-inf`` → all-NaN (no mass anywhere); ``+inf`` logits → the mass is shared equally by the
  ``+inf`` pixels (the limit of the softmax); ``-inf`` pixels → probability 0; all-equal logits →
  uniform.  NaN therefore means **"no usable probability mass"** throughout this module.
* :func:`expected_radial_error`: a map that contains NaN/inf, is all zero (or has no positive
  value), or whose prediction is NaN → ERE = NaN ("no usable probability mass").  Negative values
  are treated as 0.  A prediction outside the grid is fine (ERE = expected distance to it); the
  2-D softmax never puts mass outside the grid, so mass "outside the image" cannot occur.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "softmax_maps",
    "tempered_logits",
    "grid_scale",
    "hottest_points",
    "max_confidence",
    "expected_radial_error",
    "spread_covariance",
]

T_MIN, T_MAX = 1e-3, 1e3


def _np(x, dtype=np.float64) -> np.ndarray:
    if torch.is_tensor(x):
        x = x.detach().cpu()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        x = x.numpy()
    return np.asarray(x, dtype=dtype)


# --------------------------------------------------------------------------------------------------
# probability maps
# --------------------------------------------------------------------------------------------------


def _temperatures(temperatures, k: int, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(_np(temperatures), dtype=like.dtype, device=like.device)
    if t.ndim == 0:
        t = t.expand(k)
    if t.shape != (k,):
        raise ValueError(f"temperatures must be a scalar or have shape ({k},), got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()) or bool((t <= 0).any()):
        raise ValueError(f"temperatures must be positive and finite, got {temperatures!r}")
    return t


def tempered_logits(logits: torch.Tensor, temperatures=None) -> torch.Tensor:
    """``logits / T`` per landmark channel of ``(..., K, h, w)`` torch logits (``temperatures`` None: as they are);
    the log of the calibrated maps up to each channel's constant."""
    if temperatures is None:
        return logits
    return logits / _temperatures(temperatures, logits.shape[-3], logits)[:, None, None]


def softmax_maps(logits, temperatures=None):
    """2-D softmax of ``logits / T`` over each ``(h, w)`` channel.

    Parameters
    ----------
    logits : torch.Tensor or array_like, shape ``(..., K, h, w)``
    temperatures : None, scalar or ``(K,)``
        One temperature per landmark (``None`` → ``T = 1``, i.e. an uncalibrated model).

    Returns
    -------
    Same type as ``logits`` (torch in → torch out on the same device; numpy in → numpy out),
    floating, each channel summing to 1.  Non-finite logits follow the module's policy: a
    channel with NaN, or with only ``-inf``, comes back all-NaN; ``+inf`` pixels share the mass.
    """
    is_tensor = torch.is_tensor(logits)
    x = logits if is_tensor else torch.from_numpy(np.asarray(logits))
    if not torch.is_floating_point(x) or x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    if x.ndim < 3:
        raise ValueError(f"logits must be (..., K, h, w), got shape {tuple(x.shape)}")
    x = tempered_logits(x, temperatures)
    flat = x.flatten(-2)
    # the usual case: one read, one softmax (a finite sum means every value is finite: NaN and ±inf propagate;
    # a sum that is not finite, from bad values or an overflow, goes through the element-wise policy below)
    if bool(torch.isfinite(flat.sum())):
        prob = torch.softmax(flat, dim=-1).reshape(x.shape)
        return prob if is_tensor else prob.numpy()
    has_nan = torch.isnan(flat).any(-1, keepdim=True)
    posinf = flat == math.inf
    has_posinf = posinf.any(-1, keepdim=True)
    prob = torch.softmax(flat, dim=-1)  # NaN for channels with NaN / +inf / all -inf
    if bool(has_posinf.any()):
        share = posinf.to(flat.dtype) / posinf.sum(-1, keepdim=True).clamp_min(1).to(flat.dtype)
        prob = torch.where(has_posinf, share, prob)
    prob = torch.where(has_nan, torch.full_like(prob, math.nan), prob)
    prob = prob.reshape(x.shape)
    return prob if is_tensor else prob.numpy()


def grid_scale(orig_shape, grid_shape) -> tuple[float, float]:
    """``(sy, sx)``: original pixels per grid pixel along rows and columns."""
    return (float(orig_shape[0]) / float(grid_shape[0]), float(orig_shape[1]) / float(grid_shape[1]))


def hottest_points(prob) -> np.ndarray:
    """``(..., K, 2)`` grid ``(row, col)`` of the maximum of each ``(..., K, h, w)`` map (first one
    in row-major order on ties); NaN for a channel with NaN/inf or no positive value."""
    p = _np(prob)
    h, w = p.shape[-2:]
    finite = np.isfinite(p).all(axis=(-2, -1))
    flat = np.where(np.isfinite(p), p, -np.inf).reshape(*p.shape[:-2], h * w)
    idx = flat.argmax(axis=-1)
    best = np.take_along_axis(flat, idx[..., None], axis=-1)[..., 0]
    out = np.stack([idx // w, idx % w], axis=-1).astype(np.float64)
    out[~(finite & (best > 0))] = np.nan
    return out


def max_confidence(prob) -> np.ndarray:
    """``(..., K)`` maximum probability of each map — the paper's *confidence* (the probability of
    the predicted pixel); NaN for a channel containing NaN/inf."""
    p = _np(prob)
    finite = np.isfinite(p).all(axis=(-2, -1))
    m = np.where(np.isfinite(p), p, -np.inf).max(axis=(-2, -1))
    return np.where(finite, m, np.nan)


# --------------------------------------------------------------------------------------------------
# Expected Radial Error
# --------------------------------------------------------------------------------------------------


def _maps_and_points(prob, pred, scale):
    """``(L, h, w)`` maps and ``(L, 2)`` grid points as torch tensors (float64 for numpy input; a float tensor keeps
    its dtype and device), the ``(sy, sx)`` scale and the leading shape ``(...)`` — shared by the ERE and the
    spread."""
    if torch.is_tensor(prob):
        p = prob.detach()
        if not torch.is_floating_point(p) or p.dtype in (torch.float16, torch.bfloat16):
            p = p.float()
    else:
        p = torch.from_numpy(_np(prob))
    c = torch.as_tensor(_np(pred), dtype=p.dtype, device=p.device)
    if p.ndim < 2 or tuple(c.shape) != tuple(p.shape[:-2]) + (2,):
        raise ValueError(f"pred must have shape {tuple(p.shape[:-2]) + (2,)}, got {tuple(c.shape)}")
    s = np.ones(2) if scale is None else np.broadcast_to(_np(scale), (2,))
    lead = tuple(p.shape[:-2])
    h, w = p.shape[-2:]
    return p.reshape(math.prod(lead), h, w), c.reshape(math.prod(lead), 2), s, lead


def expected_radial_error(prob, pred, scale=None, threshold: float = 0.05) -> np.ndarray:
    """The paper's Expected Radial Error (Eq. 4 with its pre-processing).

    Each map is divided by its maximum, values ``<= threshold`` are set to 0, the rest is
    renormalised to sum 1, and ``ERE = Σ p · ‖pixel − pred‖``.  The map need not be normalised
    (any non-negative heatmap works: only relative values matter).

    Parameters
    ----------
    prob : torch.Tensor or array_like, shape ``(..., K, h, w)``
    pred : array_like, shape ``(..., K, 2)``
        Predictions in the same grid's ``(row, col)`` pixel coordinates (normally
        :func:`hottest_points`; may be sub-pixel or outside the grid).
    scale : None, scalar or ``(sy, sx)``
        Length of a grid pixel along rows / columns in the output unit (original pixels:
        :func:`grid_scale`; mm: that times the spacing).  ``None`` → grid pixels.
    threshold : float in ``[0, 1)``
        Relative cut-off (the paper's 5 %).

    Returns
    -------
    ndarray ``(..., K)`` float64 — NaN where the map has no usable probability mass (contains
    NaN/inf, has no positive value) or the prediction is not finite.
    """
    if not 0.0 <= float(threshold) < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {threshold!r}")
    # computed in torch: float64 for numpy input (reference precision); a float32 tensor stays float32 on its
    # device (the predictor's per-update path: a few ms for 68 maps instead of tens in float64 numpy)
    p, c, s, lead = _maps_and_points(prob, pred, scale)
    n_maps, h, w = p.shape
    zero = torch.zeros((), dtype=p.dtype, device=p.device)
    # a map whose sum is finite has only finite values (NaN and ±inf propagate): one read instead of an
    # element-wise test; the element-wise test only where a sum is not finite (bad values or an overflow)
    usable = torch.isfinite(p.sum(dim=(-2, -1)))
    if not bool(usable.all()):
        usable = torch.isfinite(p).flatten(-2).all(-1)
    usable = usable & torch.isfinite(c).all(-1)
    if not bool(usable.all()):  # rare: blank the unusable maps (their ERE is NaN below), keep the rest exact
        p = torch.where(usable[:, None, None], p, zero)
        c = torch.where(usable[:, None], c, zero)
    m = p.amax(dim=(-2, -1)).clamp_min(0.0) if p.numel() else torch.zeros(n_maps, dtype=p.dtype, device=p.device)
    # the paper divides by the maximum and cuts at 5 %; the division cancels in the ratio, so only the cut needs it
    # (kept pixels are > 0: negative values count as 0, a map without a positive value has no ERE)
    keep = p > threshold * m[:, None, None]
    sy, sx = float(s[0]), float(s[1])
    li, yi, xi = keep.nonzero(as_tuple=True)
    if len(li) * 4 < keep.numel():  # the usual, peaked map: distances of the kept pixels only
        q = p[li, yi, xi]
        d = torch.hypot((yi.to(p.dtype) - c[li, 0]) * sy, (xi.to(p.dtype) - c[li, 1]) * sx)
        total = torch.zeros_like(m).index_add_(0, li, q)
        num = torch.zeros_like(m).index_add_(0, li, q * d)
    else:  # broad maps (an untrained model): the dense sum is cheaper than indexing most pixels
        q = torch.where(keep, p, zero)
        total = q.sum(dim=(-2, -1))
        dy = (torch.arange(h, dtype=p.dtype, device=p.device) - c[:, 0, None]) * sy  # (L, h)
        dx = (torch.arange(w, dtype=p.dtype, device=p.device) - c[:, 1, None]) * sx  # (L, w)
        num = (q * torch.hypot(dy[:, :, None], dx[:, None, :])).sum(dim=(-2, -1))
    ok = usable & (m > 0) & (total > 0)
    ere = torch.where(ok, num / torch.where(ok, total, torch.ones_like(total)), torch.full_like(total, math.nan))
    return ere.reshape(lead).cpu().numpy().astype(np.float64)


# --------------------------------------------------------------------------------------------------
# the map's spread as a 2 × 2 covariance (the shape of the conformal regions, ``regions.py``)
# --------------------------------------------------------------------------------------------------


def spread_covariance(prob, pred, scale=None, threshold: float = 0.05) -> np.ndarray:
    """``(..., K, 2, 2)`` second moment of each map about its prediction, ``Σ p · d dᵀ`` with
    ``d = (Δrow · sy, Δcol · sx)``, after the same pre-processing as :func:`expected_radial_error`
    (values ``<= threshold ×`` the maximum cut, the rest renormalised): the ellipse the map's mass
    spreads over around the shown point, in the unit of ``scale``.  A quantisation floor of one grid
    pixel's variance (``s² / 12`` per axis) keeps it invertible for a one-pixel map.  NaN where the
    ERE is NaN (no usable mass, or a non-finite prediction)."""
    if not 0.0 <= float(threshold) < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {threshold!r}")
    p, c, s, lead = _maps_and_points(prob, pred, scale)
    n_maps, h, w = p.shape
    zero = torch.zeros((), dtype=p.dtype, device=p.device)
    # as in the ERE: a finite sum means finite values; the element-wise test and the blanking only when one is not
    usable = torch.isfinite(p.sum(dim=(-2, -1)))
    if not bool(usable.all()):
        usable = torch.isfinite(p).flatten(-2).all(-1)
    usable = usable & torch.isfinite(c).all(-1)
    if not bool(usable.all()):
        p = torch.where(usable[:, None, None], p, zero)
        c = torch.where(usable[:, None], c, zero)
    m = p.amax(dim=(-2, -1)).clamp_min(0.0) if p.numel() else torch.zeros(n_maps, dtype=p.dtype, device=p.device)
    q = torch.where(p > threshold * m[:, None, None], p, zero)
    # the moments of the unnormalised masses, divided by their total once (not the maps)
    qy, qx = q.sum(-1), q.sum(-2)  # marginals (L, h), (L, w)
    total = qy.sum(-1)
    ok = usable & (m > 0) & (total > 0)
    norm = torch.where(ok, total, torch.ones_like(total))
    sy, sx = float(s[0]), float(s[1])
    dy = (torch.arange(h, dtype=p.dtype, device=p.device) - c[:, 0, None]) * sy  # (L, h)
    dx = (torch.arange(w, dtype=p.dtype, device=p.device) - c[:, 1, None]) * sx  # (L, w)
    syy = (qy * dy * dy).sum(-1) / norm + sy * sy / 12.0
    sxx = (qx * dx * dx).sum(-1) / norm + sx * sx / 12.0
    sxy = (torch.bmm(q, dx[:, :, None])[..., 0] * dy).sum(-1) / norm  # Σ_h dy Σ_w q dx: a matrix-vector product
    cov = torch.stack([torch.stack([syy, sxy], -1), torch.stack([sxy, sxx], -1)], -2)
    cov = torch.where(ok[:, None, None], cov, torch.full_like(cov, math.nan))
    return cov.reshape(lead + (2, 2)).cpu().numpy().astype(np.float64)
