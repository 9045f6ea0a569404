"""Which shape makes the smallest honest regions? (issue 21: "outlines as small as honesty allows")

The conformal regions are ellipses: the shape is the second moment of each landmark's calibrated map about the
shown point, after cutting the map below a fraction (the cut, ``Predictor.spread_cut``) of its maximum; the size is the conformal radius
fitted on a calibration split. A softmax map tempered by T ≈ 2 has heavy tails, and with the ERE's cut (0.05) the
tails set the shape: wide ellipses. This runs the click protocol (0…--clicks worst-first clicks) once per cut on a
calibration split and a report split, fits the radii on the first (per click count; per landmark or pooled as
`calibrate` would) and prints, on the report split, coverage and median area per click count for each cut.
Asserts nothing.

    python experiments/benchmarks/regions_shape.py --model isbi-ceph --dataset isbi2015 --root ../shared/datasets/isbi2015 \
        --split-file isbi_test1_halves --calib-split calib --report-split eval --cuts 0.05 0.2 0.4 0.6 \
        --json docs/results/regions-shape-isbi.json
"""

from __future__ import annotations

import argparse
import json
from types import SimpleNamespace

import numpy as np


def collect(p, samples, clicks):
    """(scores (N, S, K), det_sqrt (N, S, K)): Mahalanobis radii of the true points and √det Σ of each region."""
    from napari_interactive_landmarks.evaluation.protocol import region_scores, run_click_protocol

    scores, dets = [], []
    for s in samples:
        tr = run_click_protocol(p, s, max_clicks=clicks, order="worst")
        scores.append(region_scores(tr))
        with np.errstate(invalid="ignore"):
            dets.append(np.sqrt(np.linalg.det(tr.spread)))
    return np.stack(scores), np.stack(dets)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--split-file", dest="split_file")
    ap.add_argument("--calib-split", required=True)
    ap.add_argument("--report-split", required=True)
    ap.add_argument("--clicks", type=int, default=3)
    ap.add_argument("--level", type=float, default=0.95)
    ap.add_argument("--cuts", type=float, nargs="+", default=[0.05, 0.2, 0.4, 0.6])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()

    import torch

    from napari_interactive_landmarks.cli import _dataset_samples
    from napari_interactive_landmarks.inference import Predictor
    from napari_interactive_landmarks.regions import fit_regions

    torch.set_num_threads(args.threads)
    p = Predictor.from_name(args.model)
    samples = {sp: _dataset_samples(SimpleNamespace(split=sp, dataset=args.dataset, root=args.root,
                                                    split_file=args.split_file, limit=None), p)
               for sp in (args.calib_split, args.report_split)}
    mm = all(s.spacing for s in samples[args.report_split])
    unit = "mm²" if mm else "px²"
    out = {"model": p.name, "level": args.level, "calib": args.calib_split, "report": args.report_split,
           "films": [len(v) for v in samples.values()], "unit": unit, "cuts": {}}
    print(f"{p.name}: {args.level:.0%} regions, fitted on {args.calib_split} ({len(samples[args.calib_split])} films), "
          f"reported on {args.report_split} ({len(samples[args.report_split])} films); coverage % / median area {unit} "
          f"at 0..{args.clicks} clicks")
    for cut in args.cuts:
        p.spread_cut = cut
        cal_s, _ = collect(p, samples[args.calib_split], args.clicks)
        rep_s, rep_d = collect(p, samples[args.report_split], args.clicks)
        fit = fit_regions(cal_s, args.level)
        r = fit.radii  # (S, K)
        spacing = samples[args.report_split][0].spacing or 1.0
        cov, area, per_lm = [], [], []
        for c in range(rep_s.shape[1]):
            ok = np.isfinite(rep_s[:, c])
            cov.append(float(100 * (rep_s[:, c][ok] <= np.broadcast_to(r[c], rep_s[:, c].shape)[ok]).mean()))
            a = np.pi * r[c][None] ** 2 * rep_d[:, c] * (spacing ** 2 if mm else 1.0)
            area.append(float(np.nanmedian(np.where(ok, a, np.nan))))
            with np.errstate(invalid="ignore"):
                lm = 100 * np.nansum(np.where(ok, rep_s[:, c] <= r[c][None], 0), 0) / ok.sum(0)
            per_lm.append([float(np.nanmin(lm)), float(np.nanmax(lm))])
        out["cuts"][str(cut)] = {"coverage": cov, "median_area": area, "per_landmark_coverage_range": per_lm,
                                 "pooled": fit.pooled, "median_radius": np.median(r, axis=1).tolist()}
        print(f"  cut {cut:<5g} coverage " + " ".join(f"{v:5.1f}" for v in cov) + "   area "
              + " ".join(f"{v:8.1f}" for v in area) + f"   per-landmark at 0: {per_lm[0][0]:.0f}–{per_lm[0][1]:.0f} %"
              + f"   ({'pooled' if fit.pooled else 'per landmark'})", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
