"""Latency benchmark of one interactive update (image + clicks → coordinates), printed, not asserted."""

from __future__ import annotations

import platform
import resource
import sys
import time

import numpy as np
import torch


def _peak_rss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024.0 if sys.platform != "darwin" else r / 1024.0 / 1024.0


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_bench(predictor, image: np.ndarray, runs: int = 30, warmup: int = 3, num_clicks: int = 3, seed: int = 0) -> dict:
    """Median / p95 of a full interactive update (click validation, hint maps, network, decoding, pinning, in
    original pixels) on an already prepared image — what happens on every drag release — next to the bare
    network forward on the same input; peak memory of the process (CPU RSS, or CUDA allocator peak)."""
    rng = np.random.default_rng(seed)
    prepared = predictor.prepare(image)
    first = predictor.predict(prepared)
    k = predictor.num_landmarks
    h, w = prepared.original_shape
    click_sets = []
    for _ in range(runs + warmup):
        idx = rng.choice(k, size=min(num_clicks, k), replace=False)
        click_sets.append({int(i): (float(rng.uniform(0, h - 1)), float(rng.uniform(0, w - 1))) for i in idx})
    dev = predictor.device
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    update, bare_update, uncert, fwd = [], [], [], []
    keep_ere = predictor.compute_ere
    try:
        for n, clicks in enumerate(click_sets):
            # interleaved, so that drift in machine load hits all alike: the full update (with ERE, calibrated
            # maps and the display map the session builds), the same update without any uncertainty, and the
            # bare network forward on the same hint maps
            predictor.compute_ere = True
            _sync(dev)
            t0 = time.perf_counter()
            pred = predictor.predict(prepared, clicks=clicks, previous=first.coords)
            t1 = time.perf_counter()
            if pred.ere is not None:
                pred.uncertainty_map(include=~pred.clicked)
            _sync(dev)
            t2 = time.perf_counter()
            predictor.compute_ere = False
            predictor.predict(prepared, clicks=clicks, previous=first.coords)
            _sync(dev)
            t3 = time.perf_counter()
            hints = predictor._hints(clicks, first.coords, prepared.original_shape)
            _sync(dev)
            t4 = time.perf_counter()
            with torch.no_grad(), predictor.autocast():
                predictor.model(prepared.tensor, hints)
            _sync(dev)
            t5 = time.perf_counter()
            if n >= warmup:
                update.append((t1 - t0) * 1000)
                uncert.append((t2 - t0) * 1000)
                bare_update.append((t3 - t2) * 1000)
                fwd.append((t5 - t4) * 1000)
    finally:
        predictor.compute_ere = keep_ere
    peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else _peak_rss_mb()
    update, fwd = np.array(update), np.array(fwd)
    with_u, without_u = float(np.median(uncert)), float(np.median(bare_update))
    return {
        "model": predictor.name,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "precision": predictor.precision,
        "refiner": predictor.refiner_active,
        "shape_prior": predictor.shape_prior_active,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "image_shape": list(prepared.original_shape),
        "input_size": list(predictor.input_size),
        "runs": int(runs),
        "clicks": int(num_clicks),
        "median_ms": round(float(np.median(update)), 2),
        "p95_ms": round(float(np.percentile(update, 95)), 2),
        "forward_ms": round(float(np.median(fwd)), 2),
        "forward_p95_ms": round(float(np.percentile(fwd, 95)), 2),
        "overhead_ratio": round(float(np.median(update) / np.median(fwd)), 3),
        # uncertainty's share of an update: predict + ERE + calibrated maps + display map, vs predict without
        "update_with_uncertainty_ms": round(with_u, 2),
        "update_without_uncertainty_ms": round(without_u, 2),
        "uncertainty_overhead_pct": round(100.0 * (with_u / without_u - 1.0), 1),
        "peak_mb": round(float(peak), 1),
        "peak_kind": "cuda max_memory_allocated" if dev.type == "cuda" else "process peak RSS",
    }
