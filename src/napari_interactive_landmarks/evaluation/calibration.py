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


def collect(predictor, samples, progress=True, temperatures=None):
    """0-click predictions of ``samples``: ground truth in grid pixels (N, K, 2), predictions (network pixels →
    grid), scales grid → original pixels, spacings, errors — and either the logits (N, K, h, w), for fitting
    temperatures, or, when ``temperatures`` are given, only each image's calibration statistics before and
    after them (``stats``): full-resolution logits of a stride-1 model are ~39 MB an image at 800 × 640, so
    evaluating with known temperatures keeps none."""
    from tqdm.auto import tqdm

    logits, targets, preds, scales, spacing, errs = [], [], [], [], [], []
    stats = {"before": [], "after": []}
    old = predictor.compute_ere
    predictor.compute_ere = False
    try:
        for s in tqdm(samples, desc="calibration pass", disable=not progress, file=sys.stderr):
            img = s.load_image()
            pred = predictor.predict(img)
            lg = pred.logits.float().cpu()
            grid = tuple(lg.shape[-2:])
            codec = predictor.codec
            targets.append(codec.original_to_grid(s.coords, img.shape[:2], grid))
            preds.append(codec.original_to_grid(pred.coords, img.shape[:2], grid))
            scales.append(codec.grid_scale(img.shape[:2], grid))
            spacing.append(np.nan if s.spacing is None else float(np.mean(s.spacing)))
            errs.append(np.linalg.norm(pred.coords - s.coords, axis=1))
            if temperatures is None:
                logits.append(lg)
            else:
                for tag, temps in (("before", None), ("after", temperatures)):
                    stats[tag].append(_image_stats(lg, targets[-1], preds[-1], scales[-1], temps))
    finally:
        predictor.compute_ere = old
    out = {"targets": np.stack(targets), "preds": np.stack(preds), "scales": np.array(scales),
           "spacing": np.array(spacing), "errors_px": np.stack(errs)}
    if temperatures is None:
        out["logits"] = torch.stack(logits)
    else:
        out["stats"], out["stats_temperatures"] = stats, np.asarray(temperatures, float)
    return out


def _image_stats(logits, target, pred, scale, temps):
    """One image's (max confidence, hottest pixel correct, ERE) per landmark under temperatures ``temps``."""
    prob = softmax_maps(logits, temps)
    return (max_confidence(prob), correct_within(hottest_points(prob), target, radius=0.5, norm="max"),
            expected_radial_error(prob, pred, scale=tuple(scale)))


def fit(data) -> np.ndarray:
    if "logits" not in data:
        raise ValueError("fitting temperatures needs the logits: collect(...) without temperatures")
    return fit_temperatures(data["logits"], torch.as_tensor(data["targets"], device="cpu"), per_landmark=True)


def metrics(data, temperatures, error_threshold: float, unit: str = "px", group_size: int = 36) -> dict:
    """ECE before (T = 1) / after (fitted T), and ERE quality on ``data`` (which must not be the calibration
    data). ``error_threshold`` (in ``unit``) defines an erroneous landmark for AUROC and the split table."""
    n, k = data["targets"].shape[:2]
    out = {}
    bins = {}
    ere_all = None
    if "stats" in data and not np.allclose(data["stats_temperatures"], temperatures):
        raise ValueError("these statistics were collected with other temperatures")
    for tag, temps in (("before", None), ("after", temperatures)):
        if "stats" in data:
            per_image = data["stats"][tag]
        else:
            per_image = [_image_stats(data["logits"][i], data["targets"][i], data["preds"][i], data["scales"][i],
                                      temps) for i in range(n)]
        conf, corr, ere = (list(x) for x in zip(*per_image))
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
