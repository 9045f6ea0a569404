"""Doubt coverage (issue 20 item 7): how often the true error of a landmark and of a measurement falls inside the
± the plugin states, before and after the measurement doubt scales (measurements/doubt.py) — fitted on a
calibration split, reported on a disjoint one.

For each image of both splits the click protocol runs once (worst-first clicks at the ground truth, 0..--clicks;
the session's path, as in `calibrate`), and every step's points and ERE are kept (cached in --cache). Then:

- landmarks: the share of unclicked landmarks whose true radial error is ≤ their ERE (the ERE is a *mean* error,
  so a calibrated one covers ~54 % under a Rayleigh reading, not 90 %), and ≤ the conformal region (the model's
  stored ``regions``: the true point inside its ellipse), at the regions' level;
- measurements: the share of (image, step) pairs where |true − measured| ≤ the stated ± — the true value computed
  by the same ``compute_measurements`` from the ground-truth landmarks — with the unscaled ± (the Monte Carlo mean
  absolute deviation) and with the ± scaled by the scales :func:`fit_doubt_scales` fits on the calibration split
  at --level; and the median ± before / after, and how often ⚠ is shown and how often it would be deserved.

    python benchmarks/doubt_coverage.py --model isbi-ceph --dataset isbi2015 --root ../shared/datasets/isbi2015 \
        --calib-split val --split Test1Data --clicks 3 --threads 1
    python benchmarks/doubt_coverage.py --model aasce-spine --dataset aasce --root ../shared/datasets/aasce \
        --calib-split calib --split eval --clicks 3 --threads 1

The scales are fitted here with the same function ``calibrate`` uses (on the model's stored temperatures); a model
with stored regions is measured with those, one without gets them fitted on the calibration traces (--region-level).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np


def collect(predictor, samples, clicks: int, cache: Path | None, label: str) -> list[dict]:
    """Per image: gt (K, 2), coords (S, K, 2), ere (S, K), spread (S, K, 2, 2), clicked (list), spacing, image_shape."""
    from napari_interactive_landmarks.evaluation.protocol import run_click_protocol
    from napari_interactive_landmarks.io.images import ImageError

    if cache is not None and cache.exists():
        with open(cache) as f:
            rows = json.load(f)
        print(f"{label}: {len(rows)} traces from {cache}", file=sys.stderr)
        return [{k: (np.asarray(v, float) if k in ("gt", "coords", "ere", "spread") else v) for k, v in r.items()} for r in rows]
    rows, t0 = [], time.time()
    for i, s in enumerate(samples):
        try:
            tr = run_click_protocol(predictor, s, max_clicks=clicks, order="worst")
        except ImageError as exc:
            print(f"{label}: skipped {s.name}: {exc}", file=sys.stderr)
            continue
        rows.append({"name": str(s.name), "gt": tr.gt, "coords": tr.coords, "ere": tr.ere, "spread": tr.spread, "clicked": list(tr.clicked),
                     "spacing": s.spacing, "image_shape": list(s.image_shape)})
        print(f"{label}: {i + 1}/{len(samples)} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with open(cache, "w") as f:
            json.dump([{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in r.items()} for r in rows], f)
    return rows


def compute_units(predictor, traces):
    """The measurements of the first report image's ground truth (for their units)."""
    from napari_interactive_landmarks.measurements import compute_measurements

    t = traces[0]
    return compute_measurements(predictor.schema, t["gt"], t.get("spacing"), image_shape=tuple(t["image_shape"])).values()


def main(argv=None):
    from napari_interactive_landmarks import cli

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model")
    p.add_argument("--weights")
    p.add_argument("--dataset", required=True)
    p.add_argument("--root")
    p.add_argument("--split-file", dest="split_file")
    p.add_argument("--calib-split", required=True, help="the split the scales are fitted on")
    p.add_argument("--split", required=True, help="the split coverage is reported on (disjoint from --calib-split)")
    p.add_argument("--clicks", type=int, default=3, help="0..N worst-first clicks (default 3)")
    p.add_argument("--level", type=float, default=0.9, help="the measurements' ± level (default 0.9)")
    p.add_argument("--region-level", dest="region_level", type=float, default=0.95,
                   help="the conformal regions' level when the model has none stored (calibrate's default 0.95)")
    p.add_argument("--limit", type=int, default=0, help="first N images of each split (development)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--cache", default="/tmp/doubt_coverage", help="folder for the collected traces")
    p.add_argument("--json", help="write the tables as JSON")
    p.add_argument("--collect-only", action="store_true", help="collect (and cache) the traces, print nothing")
    args = p.parse_args(argv)
    args.device = "cpu"
    cli._set_threads(args)
    predictor = cli._load_predictor(args)
    tag = hashlib.sha1(json.dumps([args.model, args.weights, predictor.temperatures is None]).encode()).hexdigest()[:8]
    traces = {}
    for which, split in (("calib", args.calib_split), ("report", args.split)):
        ns = argparse.Namespace(dataset=args.dataset, root=args.root, split=split, split_file=args.split_file,
                                limit=args.limit)
        samples = cli._dataset_samples(ns, predictor)
        cache = Path(args.cache) / f"{predictor.name}-{tag}-{split}-c{args.clicks}-n{args.limit or len(samples)}.json"
        traces[which] = collect(predictor, samples, args.clicks, cache, f"{predictor.name} {split}")
    if args.collect_only:
        return 0
    from napari_interactive_landmarks.measurements.doubt import (coverage_table, fit_doubt_scales, landmark_coverage,
                                                                 trace_scores)

    schema = predictor.schema
    cal_scores = [trace_scores(schema, t) for t in traces["calib"]]
    scales = fit_doubt_scales(cal_scores, args.level,
                              fitted_on=f"{args.dataset} {args.calib_split} ({len(traces['calib'])} images, "
                                        f"0-{args.clicks} worst-first clicks)")
    before = [trace_scores(schema, t) for t in traces["report"]]
    after = [trace_scores(schema, t, scales) for t in traces["report"]]
    table = coverage_table(before, scales, after)
    regions = getattr(predictor, "regions", None)
    if regions is None:  # the shipped model has none yet: fitted on the same calibration traces, as calibrate does
        from napari_interactive_landmarks.regions import fit_regions, mahalanobis_radius

        sc = np.stack([mahalanobis_radius(np.asarray(t["gt"])[None] - t["coords"], t["spread"])
                       for t in traces["calib"]])  # (N, S, K): one set of radii per click count, as calibrate
        sc[np.stack([t["ere"] for t in traces["calib"]]) <= 0] = np.nan  # clicked points have no region
        regions = fit_regions(sc, args.region_level)
    lm = landmark_coverage(traces["report"], regions)
    n_img = len(traces["report"])
    print(f"model {predictor.name}; fitted on {args.dataset} {args.calib_split} ({len(traces['calib'])} images), "
          f"coverage on {args.split} ({n_img} images), 0–{args.clicks} worst-first clicks; measurement level "
          f"{args.level:.0%}")
    print()
    print("| landmarks (unclicked) | samples | true point within its ERE | within its conformal region |")
    print("|---|---|---|---|")
    reg = "—" if lm["region"] is None else f"{lm['region']:.1f} % (level {lm['region_level']:.0%})"
    reg0 = "—" if lm["region0"] is None else f"{lm['region0']:.1f} %"
    print(f"| 0–{args.clicks} clicks | {lm['n']} | {lm['ere']:.1f} % | {reg} |")
    print(f"| 0 clicks | {lm['n0']} | {lm['ere0']:.1f} % | {reg0} |")
    print()
    print(f"| measurement | samples | scale | within ± before | within ± after | median ± before | median ± after | "
          f"median true error | ⚠ before | ⚠ after |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    unit = {"deg": "°", "mm": " mm", "px": " px", "ratio": ""}
    units = {m.name: m.unit for m in compute_units(predictor, traces["report"])}
    for row in table:
        u = unit.get(units.get(row["name"]), "")
        print(f"| {row['name']} | {row['n']} | {row['scale']:.2f}{' (pooled)' if row['pooled'] else ''} | "
              f"{row['coverage_before']:.1f} % | {row['coverage_after']:.1f} % | {row['median_before']:.3g}{u} | "
              f"{row['median_after']:.3g}{u} | {row['median_error']:.3g}{u} | {row['flag_before']:.0f} % | "
              f"{row['flag_after']:.0f} % |")
    allb = np.mean([r["coverage_before"] for r in table])
    alla = np.mean([r["coverage_after"] for r in table])
    print(f"| mean over measurements | | | {allb:.1f} % | {alla:.1f} % | | | | | |")
    if args.json:
        Path(args.json).write_text(json.dumps({"scales": scales.to_card(), "measurements": table, "landmarks": lm},
                                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
