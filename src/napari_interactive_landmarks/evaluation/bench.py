"""Latency benchmark of one interactive update (image + clicks → coordinates), printed, not asserted."""

from __future__ import annotations

import platform
import resource
import sys
import time

import numpy as np
import torch

from ..inference.predictor import native_cpu_bf16


def cpu_description() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what :mod:`platform` says."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor() or ''}".strip()


def _peak_rss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024.0 if sys.platform != "darwin" else r / 1024.0 / 1024.0


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_bench(predictor, image: np.ndarray, runs: int = 30, warmup: int = 3, num_clicks: int = 3, seed: int = 0) -> dict:
    """Median / p95 of a full interactive update (click validation, hint maps, network, decoding, pinning, in
    original pixels) on an already prepared image — what happens on every drag release — next to the bare
    network forward on the same input, called as the update calls it (click coordinates in: the network draws
    its own hint maps, only the clicked channels); peak memory of the process (CPU RSS, or CUDA allocator peak)."""
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
    update, bare_update, uncert, fwd, stages = [], [], [], [], []
    keep_ere, keep_clock = predictor.compute_ere, predictor.stage_ms
    try:
        for n, clicks in enumerate(click_sets):
            # interleaved, so that drift in machine load hits all alike: the full update (with ERE, calibrated
            # maps and the display map the session builds), the same update without any uncertainty, and the
            # bare network forward on the same hint maps
            predictor.compute_ere = True
            predictor.stage_ms = {}
            _sync(dev)
            t0 = time.perf_counter()
            pred = predictor.predict(prepared, clicks=clicks, previous=first.coords)
            t1 = time.perf_counter()
            if pred.ere is not None:
                pred.uncertainty_map(include=~pred.clicked)
            _sync(dev)
            t2 = time.perf_counter()
            predictor.stage_ms["display map"] = (t2 - t1) * 1000
            run_stages, predictor.stage_ms = predictor.stage_ms, None
            predictor.compute_ere = False
            predictor.predict(prepared, clicks=clicks, previous=first.coords)
            _sync(dev)
            t3 = time.perf_counter()
            net_clicks, clicked, previous = predictor._interaction(clicks, first.coords, prepared.original_shape)
            _sync(dev)
            t4 = time.perf_counter()
            with torch.no_grad(), predictor.autocast():  # the network as the update runs it (it draws its hint maps)
                predictor.model(prepared.tensor, clicks=net_clicks, clicked=clicked, previous=previous)
            _sync(dev)
            t5 = time.perf_counter()
            if n >= warmup:
                update.append((t1 - t0) * 1000)
                uncert.append((t2 - t0) * 1000)
                bare_update.append((t3 - t2) * 1000)
                fwd.append((t5 - t4) * 1000)
                stages.append(run_stages)
    finally:
        predictor.compute_ere, predictor.stage_ms = keep_ere, keep_clock
    peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else _peak_rss_mb()
    update, fwd = np.array(update), np.array(fwd)
    with_u, without_u = float(np.median(uncert)), float(np.median(bare_update))
    # each stage's median, and its share of the median update with its display map (stages of a run sum to it)
    names = list(dict.fromkeys(k for run in stages for k in run))
    stage_ms = {k: float(np.median([run.get(k, 0.0) for run in stages])) for k in names}
    return {
        "model": predictor.name,
        "device": str(dev),
        "cpu": cpu_description(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": native_cpu_bf16(),
        "backend": "eager PyTorch",
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
        "stages_ms": {k: round(v, 2) for k, v in stage_ms.items()},
        "stage_share_pct": {k: round(100.0 * v / with_u, 1) for k, v in stage_ms.items()},
        "after_click_members": predictor.after_click_members,
        "peak_mb": round(float(peak), 1),
        "peak_kind": "cuda max_memory_allocated" if dev.type == "cuda" else "process peak RSS",
    }
