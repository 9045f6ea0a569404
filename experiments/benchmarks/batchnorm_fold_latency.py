"""Paired latency of one interactive update with and without batch norm folded into the convolutions
(models/folding.py, what every Predictor of a weights file now does). Both predictors are built from the same file
in one process and their updates alternate, so drift in machine load hits both alike. Prints numbers; asserts
nothing.

    python experiments/benchmarks/batchnorm_fold_latency.py --model isbi-ceph --image FILM [--runs 30] [--threads 2]
        [--precision bf16] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="isbi-ceph")
    ap.add_argument("--image", required=True)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    ap.add_argument("--clicks", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import napari_interactive_landmarks.inference.predictor as predictor_module
    from napari_interactive_landmarks.inference.predictor import Predictor
    from napari_interactive_landmarks.io.images import read_image

    fold = predictor_module.fold_batchnorm
    predictor_module.fold_batchnorm = lambda model: 0  # the predictor as it was built before folding
    try:
        plain = Predictor.from_name(args.model)
    finally:
        predictor_module.fold_batchnorm = fold
    folded = Predictor.from_name(args.model)
    image = read_image(args.image).array
    for p in (plain, folded):
        p.set_precision(args.precision)
    prepared = {id(p): p.prepare(image) for p in (plain, folded)}
    first = folded.predict(prepared[id(folded)])
    h, w = prepared[id(folded)].original_shape
    rng = np.random.default_rng(0)
    sets = [{int(i): (float(rng.uniform(0, h - 1)), float(rng.uniform(0, w - 1)))
             for i in rng.choice(folded.num_landmarks, args.clicks, replace=False)} for _ in range(args.runs + 3)]
    times = {"plain": [], "folded": []}
    moved = []
    for n, clicks in enumerate(sets):
        order = [("plain", plain), ("folded", folded)] if n % 2 == 0 else [("folded", folded), ("plain", plain)]
        out = {}
        for key, p in order:
            t0 = time.perf_counter()
            out[key] = p.predict(prepared[id(p)], clicks=clicks, previous=first.coords).coords
            if n >= 3:
                times[key].append(1000 * (time.perf_counter() - t0))
        moved.append(float(np.abs(out["plain"] - out["folded"]).max()))
    a, b = np.array(times["plain"]), np.array(times["folded"])
    res = {"model": args.model, "precision": args.precision, "threads": args.threads, "runs": args.runs,
           "median_ms_plain": round(float(np.median(a)), 1), "median_ms_folded": round(float(np.median(b)), 1),
           "median_paired_saving_ms": round(float(np.median(a - b)), 1),
           "saving_pct": round(100 * (1 - np.median(b) / np.median(a)), 1),
           # per update the largest move of any landmark between the two; in bf16 the rounding of either network
           # can tip a decision (a mode of the shape prior's posterior, the hold), so the median says more
           "median_largest_difference_px": round(float(np.median(moved)), 4),
           "max_coordinate_difference_px": round(max(moved), 4)}
    for k, v in res.items():
        print(f"{k:>30}: {v}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
