"""Calibration of the interactive model's heatmaps (McCouat & Voiculescu, CVPR 2022, applied to the
interactive model's logits): per-landmark temperature scaling fitted on a calibration split, then ECE before
and after, ERE vs true error (Spearman, AUROC, binned correlation) and the good/erroneous split on a disjoint
evaluation split. Everything at 0 clicks (the automatic prediction a clinician first checks)."""

from __future__ import annotations

import sys

import numpy as np
import torch

from ..measurements.core import _jsonable as jsonable
from ..codecs.uncertainty import expected_radial_error, hottest_points, max_confidence, softmax_maps
from .calibration_stats import (
    auroc,
    binned_correlation,
    calibration_bins,
    correct_within,
    fit_temperatures,
    good_erroneous_table,
    spearman,
    threshold_at_tpr,
)


def collect(predictor, samples, progress=True):
    """0-click logits (N, K, h, w), ground truth in grid pixels (N, K, 2), predictions (network pixels →
    grid), scales grid → original pixels, and spacings."""
    from tqdm.auto import tqdm

    logits, targets, preds, scales, spacing, errs = [], [], [], [], [], []
    old = predictor.compute_ere
    predictor.compute_ere = False
    try:
        for s in tqdm(samples, desc="calibration pass", disable=not progress, file=sys.stderr):
            img = s.load_image()
            pred = predictor.predict(img)
            lg = pred.logits.float().cpu()
            grid = tuple(lg.shape[-2:])
            logits.append(lg)
            codec = predictor.codec
            targets.append(codec.original_to_grid(s.coords, img.shape[:2], grid))
            preds.append(codec.original_to_grid(pred.coords, img.shape[:2], grid))
            scales.append(codec.grid_scale(img.shape[:2], grid))
            spacing.append(np.nan if s.spacing is None else float(np.mean(s.spacing)))
            errs.append(np.linalg.norm(pred.coords - s.coords, axis=1))
    finally:
        predictor.compute_ere = old
    return {"logits": torch.stack(logits), "targets": np.stack(targets), "preds": np.stack(preds),
            "scales": np.array(scales), "spacing": np.array(spacing), "errors_px": np.stack(errs)}


def fit(data) -> np.ndarray:
    return fit_temperatures(data["logits"], torch.as_tensor(data["targets"], device="cpu"), per_landmark=True)


def metrics(data, temperatures, error_threshold: float, unit: str = "px", group_size: int = 36) -> dict:
    """ECE before (T = 1) / after (fitted T), and ERE quality on ``data`` (which must not be the calibration
    data). ``error_threshold`` (in ``unit``) defines an erroneous landmark for AUROC and the split table."""
    n, k = data["targets"].shape[:2]
    out = {}
    bins = {}
    ere_all = None
    for tag, temps in (("before", None), ("after", temperatures)):
        conf, corr, ere = [], [], []
        for i in range(n):
            prob = softmax_maps(data["logits"][i], temps)
            hot = hottest_points(prob)
            conf.append(max_confidence(prob))
            corr.append(correct_within(hot, data["targets"][i], radius=0.5, norm="max"))
            ere.append(expected_radial_error(prob, data["preds"][i], scale=tuple(data["scales"][i])))
        b = calibration_bins(np.concatenate(conf), np.concatenate(corr), n_bins=10)
        bins[tag] = b
        out[f"ece_{tag}"] = float(b["ece"])
        if tag == "after":
            ere_all = np.stack(ere)
    err = data["errors_px"].copy()
    ere = ere_all
    if unit == "mm":
        err = err * data["spacing"][:, None]
        ere = ere * data["spacing"][:, None]
    e0, r0 = ere.ravel(), err.ravel()
    r_bin, bin_ere, bin_err = binned_correlation(e0, r0, group_size=group_size)
    # the same without the last, smaller group: with few, extreme landmarks it can dominate the correlation
    r_full, _, _ = binned_correlation(e0, r0, group_size=group_size, keep_partial=False)
    thr = threshold_at_tpr(e0, r0, error_threshold, tpr=0.5) if np.any(r0 > error_threshold) else float("nan")
    out.update({
        "unit": unit,
        "num_images": int(n),
        "num_landmarks": int(n * k),
        "ere_spearman": float(spearman(e0, r0)),
        "ere_auroc": float(auroc(e0, r0 > error_threshold)),
        "error_threshold": float(error_threshold),
        "ere_binned_pearson": float(r_bin),
        "ere_binned_pearson_full_groups": float(r_full),
        "ere_group_size": int(group_size),
        "mean_ere": float(np.nanmean(e0)),
        "mre": float(np.nanmean(r0)),
        "good_erroneous": _jsonable(good_erroneous_table(e0, r0, thr, error_threshold=error_threshold))
        if np.isfinite(thr) else None,
        "ere_flag_threshold": float(thr),
    })
    out["_bins"] = bins
    out["_binned"] = (bin_ere, bin_err, r_bin)
    return out


def _jsonable(x):
    return jsonable(x, nan_to_none=True)


def public(result: dict) -> dict:
    """Drop the plotting-only entries for JSON."""
    return _jsonable({k: v for k, v in result.items() if not k.startswith("_")})
