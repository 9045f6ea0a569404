"""Do the conformal regions miss their level because the calibration films are not exchangeable with the reported
ones? (issue 21: isbi-ceph's regions, fitted on the 25 held-out TrainingData films, covered 89.9 % after 3 clicks on
Test1Data.)

Collects the regions' nonconformity scores (Mahalanobis radius of the true point under each landmark's map spread
about the shown point, 0…--clicks worst-first clicks) on a calibration split and on a report split, then prints the
coverage per click count of:

- radii fitted on the calibration split, on the report split (what the shipped model does);
- radii fitted on one half of the report split, on the other half, both ways (2-fold cross-fitting: exchangeable
  by construction);
- radii fitted on the calibration split, on the calibration split itself (what it promises there).

Same level and pooling as the model's stored regions. Asserts nothing.

    python experiments/benchmarks/regions_split_check.py --model isbi-ceph --dataset isbi2015 --root ../shared/datasets/isbi2015 \
        --calib-split val --report-split Test1Data --json docs/results/regions-split-check-isbi.json
"""

from __future__ import annotations

import argparse
import json
from types import SimpleNamespace

import numpy as np


def coverage(scores: np.ndarray, radii: np.ndarray) -> list[float]:
    """(N, C, K) scores against (C, K) radii: % of finite scores inside, per click count."""
    out = []
    for c in range(scores.shape[1]):
        s = scores[:, c]
        ok = np.isfinite(s)
        out.append(float(100 * (s[ok] <= np.broadcast_to(radii[c], s.shape)[ok]).mean()))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--calib-split", default="val")
    ap.add_argument("--report-split", default="Test1Data")
    ap.add_argument("--clicks", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()

    import torch

    from napari_interactive_landmarks.cli import _dataset_samples
    from napari_interactive_landmarks.evaluation.protocol import collect_region_scores
    from napari_interactive_landmarks.inference import Predictor
    from napari_interactive_landmarks.regions import fit_regions

    torch.set_num_threads(args.threads)
    p = Predictor.from_name(args.model)
    if p.regions is None:
        raise SystemExit(f"{args.model} carries no regions")
    level, pooled = p.regions.level, p.regions.pooled

    def samples(split):
        return _dataset_samples(SimpleNamespace(split=split, dataset=args.dataset, root=args.root, split_file=None,
                                                limit=None), p)

    cal = collect_region_scores(p, samples(args.calib_split), max_clicks=args.clicks, progress=False)
    rep = collect_region_scores(p, samples(args.report_split), max_clicks=args.clicks, progress=False)
    fit = lambda s: fit_regions(s, level, pooled).radii  # noqa: E731
    result = {"model": p.name, "level": level, "pooled": pooled, "calib_split": args.calib_split,
              "report_split": args.report_split, "films": [len(cal), len(rep)]}
    r_cal = fit(cal)
    result["calib_on_report"] = coverage(rep, r_cal)
    result["calib_on_calib"] = coverage(cal, r_cal)
    order = np.random.default_rng(args.seed).permutation(len(rep))
    a, b = order[: len(rep) // 2], order[len(rep) // 2:]
    result["half_a_on_half_b"] = coverage(rep[b], fit(rep[a]))
    result["half_b_on_half_a"] = coverage(rep[a], fit(rep[b]))
    result["median_radius"] = {"calib": np.median(r_cal, axis=1).tolist(), "half_a": np.median(fit(rep[a]), axis=1).tolist(),
                               "half_b": np.median(fit(rep[b]), axis=1).tolist()}
    print(f"{p.name}: {level:.0%} regions ({'pooled' if pooled else 'per landmark'}), coverage (%) at 0..{args.clicks} "
          f"clicks; calibration {args.calib_split} ({len(cal)} films), report {args.report_split} ({len(rep)} films)")
    for key in ("calib_on_report", "calib_on_calib", "half_a_on_half_b", "half_b_on_half_a"):
        print(f"  {key:<18}" + "".join(f"{v:7.1f}" for v in result[key]))
    for key, v in result["median_radius"].items():
        print(f"  median radius fitted on {key:<7}" + "".join(f"{x:7.2f}" for x in v))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
