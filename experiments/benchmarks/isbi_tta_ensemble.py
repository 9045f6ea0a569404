"""Does test-time averaging buy the isbi-ceph network accuracy at 0 clicks? (issue 18: Test1Data bar 1.15 mm /
SDR@2 mm 87 %, shipped 1.26 / 84.8.)

For each film of the split, predicts at 0 clicks with each model given (--weights, model-card files) on the film
itself and on copies shifted by (dr, dc) original pixels (--shifts: the film padded by edge values on one side and
cropped on the other, the prediction shifted back), then reports MRE (mm) and SDR@2/2.5/3/4 mm of:
each model alone on the unshifted film, each model's shift average, and the average over every model and shift
(coordinates averaged: the mean of the candidate points per landmark), plus the update time each variant costs.
Asserts nothing.

    python experiments/benchmarks/isbi_tta_ensemble.py --root ../shared/datasets/isbi2015 --split Test1Data \
        --weights src/napari_interactive_landmarks/weights/isbi-ceph.safetensors --shifts "0,0;4,4;-4,-4;4,-4;-4,4"
"""

from __future__ import annotations

import argparse
import json
import time
from types import SimpleNamespace

import numpy as np


def shifted(image: np.ndarray, dr: int, dc: int) -> np.ndarray:
    """The image content moved by (dr, dc) pixels, edges repeated: a point at (r, c) ends up at (r + dr, c + dc)."""
    pad = ((max(dr, 0), max(-dr, 0)), (max(dc, 0), max(-dc, 0)))
    big = np.pad(image, pad, mode="edge")
    h, w = image.shape
    r0, c0 = max(-dr, 0), max(-dc, 0)
    return big[r0:r0 + h, c0:c0 + w]


def scores(pred: np.ndarray, truth: np.ndarray, mm_per_px: float) -> dict:
    err = np.linalg.norm(pred - truth, axis=-1) * mm_per_px
    return {"mre_mm": float(err.mean()), "median_mm": float(np.median(err)),
            **{f"sdr_{r}mm": float(100 * (err <= r).mean()) for r in (2.0, 2.5, 3.0, 4.0)},
            "per_landmark_mm": err.mean(axis=0).round(3).tolist(),
            # systematic offset (row, col) per landmark: a convention error would show here as one shared shift
            "mean_offset_mm": ((pred - truth).mean(axis=0) * mm_per_px).round(3).tolist()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--split", default="Test1Data")
    ap.add_argument("--weights", nargs="+", required=True)
    ap.add_argument("--shifts", default="0,0", help="dr,dc;dr,dc;… in original pixels")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()

    import torch

    from napari_interactive_landmarks.cli import _dataset_samples
    from napari_interactive_landmarks.inference import Predictor

    torch.set_num_threads(args.threads)
    shifts = [tuple(int(v) for v in s.split(",")) for s in args.shifts.split(";")]
    predictors = [Predictor.from_file(w) for w in args.weights]
    samples = _dataset_samples(SimpleNamespace(split=args.split, dataset="isbi2015", root=args.root, split_file=None,
                                               limit=args.limit), predictors[0])
    mm = 0.1
    # preds[m][s]: (N, K, 2)
    preds = [[[] for _ in shifts] for _ in predictors]
    seconds = [0.0 for _ in predictors]
    truth = []
    for sample in samples:
        image = np.asarray(sample.load_image())
        if image.ndim == 3:
            image = image[..., 0]
        truth.append(sample.coords)
        for m, p in enumerate(predictors):
            for s, (dr, dc) in enumerate(shifts):
                t0 = time.perf_counter()
                out = p.predict(shifted(image, dr, dc) if (dr or dc) else image, shape_prior=False)
                seconds[m] += time.perf_counter() - t0
                preds[m][s].append(out.coords - np.array([dr, dc], float))
    truth = np.stack(truth)
    preds = np.array(preds, dtype=float)  # (M, S, N, K, 2)
    result = {"split": args.split, "films": len(truth), "shifts": shifts, "weights": args.weights, "rows": {}}
    for m, w in enumerate(args.weights):
        result["rows"][f"{w} alone"] = scores(preds[m, shifts.index((0, 0)) if (0, 0) in shifts else 0], truth, mm)
        result["rows"][f"{w} shift mean"] = scores(preds[m].mean(axis=0), truth, mm)
        result["rows"][f"{w} shift median"] = scores(np.median(preds[m], axis=0), truth, mm)
    if len(predictors) > 1:
        result["rows"]["all models, unshifted, mean"] = scores(preds[:, 0].mean(axis=0), truth, mm)
        result["rows"]["all models and shifts, mean"] = scores(preds.reshape(-1, *preds.shape[2:]).mean(axis=0),
                                                              truth, mm)
    result["seconds_per_prediction"] = [s / (len(truth) * len(shifts)) for s in seconds]
    for k, v in result["rows"].items():
        print(f"{k:70s} MRE {v['mre_mm']:.3f} mm  median {v['median_mm']:.3f}  SDR@2 {v['sdr_2.0mm']:.1f} %  "
              f"@2.5 {v['sdr_2.5mm']:.1f}  @3 {v['sdr_3.0mm']:.1f}  @4 {v['sdr_4.0mm']:.1f}")
    print("seconds per prediction:", [round(s, 3) for s in result["seconds_per_prediction"]])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
