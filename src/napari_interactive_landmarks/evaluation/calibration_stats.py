"""Temperature scaling and calibration statistics (McCouat & Voiculescu, CVPR 2022; Guo et al. 2017): fitting
one temperature per landmark by NLL, reliability bins and ECE, and how well the Expected Radial Error ranks the
true errors (Spearman, AUROC, binned correlation, the ERE threshold at a TPR). The maps and the ERE themselves are
in ``codecs/uncertainty.py``; this module only judges and calibrates them.

Bad input (all functions return a defined value, never raise on data)
---------------------------------------------------------------------
* :func:`fit_temperatures`: (sample, landmark) pairs whose target is NaN or outside the grid
  (beyond the outer pixel edges ``[-0.5, h - 0.5]``) or whose logits are not all finite are ignored;
  a landmark with no usable pair keeps ``T = 1`` (the identity, same as "no fitted temperatures").
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from ..codecs.uncertainty import T_MAX, T_MIN, _np

__all__ = [
    "fit_temperatures",
    "correct_within",
    "calibration_bins",
    "expected_calibration_error",
    "binned_correlation",
    "auroc",
    "spearman",
    "threshold_at_tpr",
    "good_erroneous_table",
]


# --------------------------------------------------------------------------------------------------
# temperature scaling
# --------------------------------------------------------------------------------------------------


def _logits_tensor(logits) -> torch.Tensor:
    L = logits if torch.is_tensor(logits) else torch.from_numpy(np.asarray(logits))
    L = L.detach()
    if not torch.is_floating_point(L) or L.dtype in (torch.float16, torch.bfloat16):
        L = L.float()
    if L.ndim != 4:
        raise ValueError(f"logits must be (N, K, h, w), got shape {tuple(L.shape)}")
    return L


def _target_logits(L: torch.Tensor, targets, subpixel: str, chunk: int):
    """The logit at each (sub-pixel) target, bilinear or nearest, as float64 on the CPU (N, K), and which
    (image, landmark) pairs are usable: a finite target inside the grid and finite logits."""
    n, k, h, w = L.shape
    tg = torch.as_tensor(_np(targets), device="cpu")  # book-keeping on the CPU; logits stay where they are
    if tg.shape != (n, k, 2):
        raise ValueError(f"targets must have shape {(n, k, 2)}, got {tuple(tg.shape)}")
    dev = L.device

    r, c = tg[..., 0], tg[..., 1]
    valid = torch.isfinite(tg).all(-1) & (r >= -0.5) & (r <= h - 0.5) & (c >= -0.5) & (c <= w - 0.5)
    finite = torch.cat([torch.isfinite(L[s : s + chunk]).flatten(-2).all(-1).cpu() for s in range(0, n, chunk)])
    valid &= finite
    r = torch.where(valid, r, 0.0)
    c = torch.where(valid, c, 0.0)

    ni = torch.arange(n, device="cpu")[:, None].expand(n, k)
    ki = torch.arange(k, device="cpu")[None, :].expand(n, k)

    def at(rows, cols):
        return L[ni.to(dev), ki.to(dev), rows.to(dev), cols.to(dev)].double().cpu()

    if subpixel == "nearest":
        ri = torch.round(r).clamp(0, h - 1).long()
        ci = torch.round(c).clamp(0, w - 1).long()
        tval = at(ri, ci)
    else:
        rr, cc = r.clamp(0, h - 1), c.clamp(0, w - 1)
        r0, c0 = torch.floor(rr).long(), torch.floor(cc).long()
        r1, c1 = (r0 + 1).clamp(max=h - 1), (c0 + 1).clamp(max=w - 1)
        wr, wc = rr - r0, cc - c0
        tval = (
            (1 - wr) * (1 - wc) * at(r0, c0)
            + (1 - wr) * wc * at(r0, c1)
            + wr * (1 - wc) * at(r1, c0)
            + wr * wc * at(r1, c1)
        )
    tval = torch.where(valid, tval, 0.0)
    return tval, valid


def fit_temperatures(
    logits,
    targets,
    per_landmark: bool = True,
    max_iter: int = 100,
    chunk: int = 16,
    subpixel: str = "bilinear",
) -> np.ndarray:
    """Temperatures minimising the NLL of the targets under ``softmax2d(logits / T)``.

    ``NLL_nk = logsumexp(L_nk / T_k) − ℓ_nk / T_k`` where ``ℓ_nk`` is the logit at the target:

    * ``subpixel="bilinear"`` (default): ``ℓ`` is the bilinear interpolation of the logits at the
      (sub-pixel) target, i.e. the log-probability interpolated bilinearly — equivalently the
      cross-entropy against a soft one-hot target that splits the unit mass over the 4 pixels
      around the target with bilinear weights.  For an integer target it is exactly the paper's
      one-hot target.
    * ``subpixel="nearest"``: the one-hot target at the nearest pixel (the paper's choice).

    ``log T`` is optimised with LBFGS (strong-Wolfe line search); the objective is the sum over
    landmarks of each landmark's mean NLL (per-landmark problems are independent), or the overall
    mean NLL with one shared temperature when ``per_landmark=False``.  The logits are frozen (no
    gradient to them) and processed ``chunk`` samples at a time in float64 (exact line searches), so
    only a few ``chunk·K·h·w`` float64 temporaries exist at once; ``logits`` itself (any float dtype)
    may live on any device, where the chunks are computed.

    Parameters
    ----------
    logits : torch.Tensor or array_like ``(N, K, h, w)``
    targets : array_like ``(N, K, 2)`` grid ``(row, col)`` coordinates (NaN = missing)

    Returns
    -------
    ndarray ``(K,)`` float64, clipped to ``[1e-3, 1e3]``.  Ignored pairs (NaN / outside-the-grid
    target, non-finite logits) do not count; a landmark without any usable pair gets ``T = 1``.
    """
    if subpixel not in ("bilinear", "nearest"):
        raise ValueError(f"subpixel must be 'bilinear' or 'nearest', got {subpixel!r}")
    L = _logits_tensor(logits)
    n, k = L.shape[:2]
    chunk = max(1, int(chunk))
    dev = L.device
    tval, valid = _target_logits(L, targets, subpixel, chunk)

    count_k = valid.sum(0)  # (K,)
    fitted = count_k > 0
    out = np.ones(k)
    if not bool(fitted.any()):
        return out
    if per_landmark:
        weight = torch.where(fitted, 1.0 / count_k.clamp_min(1).double(), 0.0)  # (K,)
        log_t = torch.zeros(k, dtype=torch.float64, device="cpu", requires_grad=True)
    else:
        weight = torch.full((k,), 1.0 / float(count_k.sum()), dtype=torch.float64, device="cpu")
        log_t = torch.zeros(1, dtype=torch.float64, device="cpu", requires_grad=True)
    wmask = torch.where(valid, weight[None, :], 0.0)  # (N, K) per-pair weight, 0 where ignored
    opt = torch.optim.LBFGS(
        [log_t], lr=1.0, max_iter=int(max_iter), line_search_fn="strong_wolfe",
        tolerance_grad=1e-9, tolerance_change=1e-12,
    )

    def closure():
        opt.zero_grad()
        total = 0.0
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            vm = valid[s:e].to(dev)
            x = torch.where(vm[..., None, None], L[s:e], torch.zeros((), dtype=L.dtype, device=dev)).double()
            t = log_t.exp().expand(k)
            lse = torch.logsumexp((x / t.to(dev)[:, None, None]).flatten(-2), dim=-1).cpu()
            nll = lse - tval[s:e] / t
            loss = (nll * wmask[s:e]).sum()
            loss.backward()
            total += float(loss.detach())
        return torch.tensor(total, dtype=torch.float64, device="cpu")

    with torch.enable_grad():
        opt.step(closure)
    t = log_t.detach().exp().expand(k).numpy().astype(np.float64)
    t = np.where(np.isfinite(t), np.clip(t, T_MIN, T_MAX), 1.0)
    return np.where(fitted.numpy(), t, out)



def target_nll(logits, targets, temperatures=None, subpixel: str = "bilinear", chunk: int = 16) -> float:
    """Mean over the usable (image, landmark) pairs of ``−log p(target)`` under ``softmax2d(logits / T)``: the
    objective ``fit_temperatures`` minimises (same target interpolation, same pairs ignored), for scoring
    temperatures on other data. ``temperatures``: (K,), a scalar, or None for T = 1."""
    L = _logits_tensor(logits)
    n, k = L.shape[:2]
    chunk = max(1, int(chunk))
    tval, valid = _target_logits(L, targets, subpixel, chunk)
    t = torch.as_tensor(np.broadcast_to(1.0 if temperatures is None else temperatures, (k,)).copy(),
                        dtype=torch.float64)
    total = 0.0
    for s in range(0, n, chunk):
        x = L[s : s + chunk].double() / t.to(L.device)[:, None, None]
        lse = torch.logsumexp(x.flatten(-2), dim=-1).cpu()
        total += float(torch.where(valid[s : s + chunk], lse - tval[s : s + chunk] / t, 0.0).sum())
    return total / max(int(valid.sum()), 1)

# --------------------------------------------------------------------------------------------------
# calibration (reliability diagrams, ECE)
# --------------------------------------------------------------------------------------------------


def correct_within(pred, target, radius: float = 0.5, norm: str = "max") -> np.ndarray:
    """Whether each prediction is *correct* for the reliability diagram.

    The paper counts a prediction correct when its hottest pixel is the ground-truth pixel.  With
    the default ``radius=0.5, norm="max"`` a prediction is correct when the (possibly sub-pixel)
    target lies inside the predicted pixel's cell (``|Δrow| <= 0.5`` and ``|Δcol| <= 0.5`` grid
    pixels) — the event whose probability *is* the confidence (the max of the map), so a
    calibrated map has accuracy = confidence.  ``norm="euclidean"`` uses ``‖Δ‖ <= radius``
    instead (e.g. "within about one pixel", radius 1: more lenient than the confidence's event).
    NaN in either point → False.
    """
    d = _np(pred) - _np(target)
    if norm == "max":
        dist = np.abs(d).max(axis=-1)
    elif norm == "euclidean":
        dist = np.sqrt((d * d).sum(axis=-1))
    else:
        raise ValueError(f"norm must be 'max' or 'euclidean', got {norm!r}")
    with np.errstate(invalid="ignore"):
        return np.isfinite(dist) & (dist <= radius)


def calibration_bins(confidence, correct, n_bins: int = 10, upper: float | str = 1.0) -> dict:
    """Reliability-diagram bins (Guo et al. 2017; the paper's Fig. 4).

    ``confidence`` is the max probability of each map (:func:`max_confidence`), ``correct`` whether
    that prediction is right (:func:`correct_within`); both are flattened.  NaN confidences are
    dropped.  ``n_bins`` equal-width bins ``[e_i, e_{i+1})`` (the last one closed) cover
    ``[0, upper]``: ``upper=1.0`` is the standard ECE; ``upper="max"`` uses the largest confidence,
    as in the paper (probability maps over thousands of pixels rarely reach high confidences).

    Returns a dict of numpy arrays / floats: ``edges (n_bins+1)``, ``counts``, ``confidence`` and
    ``accuracy`` (per-bin means, NaN for empty bins), ``gap`` (accuracy − confidence), ``ece``
    (count-weighted mean |gap|), ``mce`` (max |gap|), ``n`` (samples used), ``upper``.
    """
    conf = _np(confidence).ravel()
    corr = np.asarray(_np(correct, dtype=bool)).ravel()
    if conf.shape != corr.shape:
        raise ValueError(f"confidence and correct differ in size: {conf.shape} vs {corr.shape}")
    n_bins = int(n_bins)
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    ok = np.isfinite(conf)
    conf, corr = conf[ok], corr[ok]
    if upper == "max":
        upper = float(conf.max()) if conf.size and conf.max() > 0 else 1.0
    upper = float(upper)
    edges = np.linspace(0.0, upper, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1]), 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    sum_conf = np.bincount(idx, weights=conf, minlength=n_bins)
    sum_acc = np.bincount(idx, weights=corr.astype(np.float64), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mconf = np.where(counts > 0, sum_conf / np.maximum(counts, 1), np.nan)
        macc = np.where(counts > 0, sum_acc / np.maximum(counts, 1), np.nan)
    gap = macc - mconf
    n = int(counts.sum())
    if n:
        ece = float(np.nansum(counts / n * np.abs(gap)))
        mce = float(np.nanmax(np.abs(gap)))
    else:
        ece = mce = float("nan")
    return {"edges": edges, "counts": counts, "confidence": mconf, "accuracy": macc, "gap": gap,
            "ece": ece, "mce": mce, "n": n, "upper": upper}


def expected_calibration_error(confidence, correct, n_bins: int = 10, upper: float | str = 1.0) -> float:
    """ECE = Σ_b (n_b / n) · |accuracy_b − confidence_b| over equal-width bins (see
    :func:`calibration_bins`); NaN when there is no finite confidence."""
    return calibration_bins(confidence, correct, n_bins, upper)["ece"]


# --------------------------------------------------------------------------------------------------
# ERE as an error predictor
# --------------------------------------------------------------------------------------------------


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 2:
        return float("nan")
    xc, yc = x - x.mean(), y - y.mean()
    den = math.sqrt(float((xc * xc).sum()) * float((yc * yc).sum()))
    return float((xc * yc).sum() / den) if den > 0 else float("nan")


def binned_correlation(ere, err, group_size: int = 36, keep_partial: bool = True):
    """The paper's Fig. 5: sort by ERE, average ERE and true error over consecutive groups of
    ``group_size`` landmarks, Pearson correlation of the group means.

    Pairs with a NaN in either are dropped.  The trailing incomplete group is kept (its own
    mean) when ``keep_partial``, else dropped.  Returns ``(r, bin_ere, bin_err)``; ``r`` is NaN with
    fewer than 2 groups or a constant series.
    """
    a, b = _np(ere).ravel(), _np(err).ravel()
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    order = np.argsort(a, kind="stable")
    a, b = a[order], b[order]
    g = max(1, int(group_size))
    n_full = a.size // g
    stops = [g * (i + 1) for i in range(n_full)]
    if keep_partial and a.size % g:
        stops.append(a.size)
    starts = [0] + stops[:-1]
    bin_ere = np.array([a[s:e].mean() for s, e in zip(starts, stops)], dtype=np.float64)
    bin_err = np.array([b[s:e].mean() for s, e in zip(starts, stops)], dtype=np.float64)
    return _pearson(bin_ere, bin_err), bin_ere, bin_err


def auroc(scores, positives, nan_policy: str = "omit") -> float:
    """Area under the ROC curve of ``scores`` for the ``positives`` class (rank-based, i.e. the
    Mann-Whitney U statistic / (n_pos · n_neg); ties count 1/2).  Higher score = more likely
    positive (e.g. ERE for "error > threshold").

    ``nan_policy``: ``"omit"`` drops NaN scores; ``"max"`` ranks them above every finite score
    (a NaN ERE means "no usable probability mass", i.e. maximally uncertain).  NaN when either
    class is empty.
    """
    from scipy.stats import rankdata

    s = _np(scores).ravel()
    y = np.asarray(_np(positives, dtype=bool)).ravel()
    if nan_policy == "omit":
        ok = ~np.isnan(s)
        s, y = s[ok], y[ok]
    elif nan_policy == "max":
        s = np.where(np.isnan(s), np.inf, s)
    else:
        raise ValueError(f"nan_policy must be 'omit' or 'max', got {nan_policy!r}")
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def spearman(a, b) -> float:
    """Spearman rank correlation over the pairs where both are finite; NaN with fewer than 2 pairs
    or a constant series (no warning)."""
    from scipy.stats import spearmanr

    x, y = _np(a).ravel(), _np(b).ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(x, y).statistic)


def threshold_at_tpr(ere, err, error_threshold: float, tpr: float = 0.5) -> float:
    """The paper's choice of ERE threshold (Sec. 5.3.1): on a selection set, the largest threshold
    such that flagging ``ERE > threshold`` catches at least a fraction ``tpr`` of the predictions
    with ``err > error_threshold``.  Returned as the midpoint between the deciding ERE and the next
    smaller ERE in the set (robust when applied to another set).  NaN ERE / error pairs are dropped;
    NaN when there is no large error.
    """
    a, b = _np(ere).ravel(), _np(err).ravel()
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    pos = np.sort(a[b > error_threshold])[::-1]
    if pos.size == 0:
        return float("nan")
    m = max(1, int(math.ceil(float(tpr) * pos.size - 1e-12)))
    v = pos[min(m, pos.size) - 1]
    below = a[a < v]
    return float((v + below.max()) / 2.0) if below.size else float(v - max(1e-12, abs(v) * 1e-9))


def _group(err: np.ndarray, total: int, radii) -> dict:
    n = int(err.size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mre = float(err.mean()) if n else float("nan")
    sdr = {float(r): (float(100.0 * (err <= r).mean()) if n else float("nan")) for r in radii}
    return {"n": n, "fraction": (n / total if total else float("nan")), "mre": mre, "sdr": sdr}


def good_erroneous_table(ere, err, threshold: float, error_threshold: float | None = None,
                         radii=(), nan_flagged: bool = True) -> dict:
    """The paper's Table 2: split predictions by ``ERE > threshold`` into 'erroneous' (flagged)
    and 'good', and report each group against the overall set.

    Choose ``threshold`` on a set disjoint from the one tabulated (the paper picks it at TPR 0.5 on
    Test Set 1 with :func:`threshold_at_tpr` and applies it to Test Set 2).  Pairs with a NaN true
    error are dropped; a NaN ERE ("no usable probability mass") is flagged when ``nan_flagged``
    (the cautious choice), else the pair is dropped.

    Returns ``{"threshold", "overall", "good", "erroneous"}`` where each group is
    ``{"n", "fraction", "mre", "sdr": {radius: %}}``; with ``error_threshold`` (e.g. 2 mm) also
    ``"n_large"`` (errors > it), ``"caught"`` (fraction of those flagged = TPR), ``"false_alarm"``
    (fraction of the others flagged = FPR) and ``"precision"`` (fraction of flagged that are large).
    """
    a, b = _np(ere).ravel(), _np(err).ravel()
    ok = np.isfinite(b) & (np.isfinite(a) | (np.isnan(a) & nan_flagged))
    a, b = a[ok], b[ok]
    with np.errstate(invalid="ignore"):
        flagged = np.isnan(a) | (a > threshold)
    total = int(b.size)
    out = {
        "threshold": float(threshold),
        "overall": _group(b, total, radii),
        "good": _group(b[~flagged], total, radii),
        "erroneous": _group(b[flagged], total, radii),
    }
    if error_threshold is not None:
        large = b > error_threshold
        nl, nf = int(large.sum()), int(flagged.sum())
        out["error_threshold"] = float(error_threshold)
        out["n_large"] = nl
        out["caught"] = float((flagged & large).sum() / nl) if nl else float("nan")
        out["false_alarm"] = float((flagged & ~large).sum() / (total - nl)) if total - nl else float("nan")
        out["precision"] = float((flagged & large).sum() / nf) if nf else float("nan")
    return out
