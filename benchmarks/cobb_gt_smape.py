"""How well our Cobb-angle implementation reproduces the AASCE dataset's own angles: the Cobb method run on the
*ground-truth* landmarks of every image of a split, compared with ``angles.csv`` (SMAPE, the challenge's
formula, and the mean absolute error of each angle). Prints numbers; asserts nothing.

    python benchmarks/cobb_gt_smape.py --root ../shared/datasets [--split training] [--json out.json]

Angles are compared in the order of ``angles.csv`` (the challenge reference code's order: the main angle,
then the other two curves). Three variants:

- ``reference``: image height given to the S-curve rule and no order check, as the challenge's code does;
- ``no-height``: the same without the image height (the rule then uses the spine's own extent);
- ``checked``: our default order checks on; images whose annotated vertebrae are out of order are refused
  (listed) and the SMAPE is over the others.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True, help="dataset root (containing aasce/ or boostnet_labeldata/)")
    ap.add_argument("--split", default="training")
    ap.add_argument("--json", help="also write the numbers to this JSON file")
    ap.add_argument("--worst", type=int, default=5, help="list this many images with the largest errors")
    args = ap.parse_args()

    from napari_interactive_landmarks.data.datasets import load_aasce
    from napari_interactive_landmarks.measurements.cobb import CobbError, check_spine, cobb_angles, smape

    t0 = time.perf_counter()
    samples = [s for s in load_aasce(args.root, args.split) if "cobb_angles" in s.extra]
    t_load = time.perf_counter() - t0
    gt = np.array([s.extra["cobb_angles"] for s in samples], dtype=float)
    names = [s.name for s in samples]

    t0 = time.perf_counter()
    ref = [cobb_angles(s.coords, s.image_shape[0], check_order=False) for s in samples]
    t_cobb = (time.perf_counter() - t0) / len(samples)
    pred = np.array([r.challenge_angles for r in ref])
    no_h = np.array([cobb_angles(s.coords, check_order=False).challenge_angles for s in samples])
    refused, kept = {}, []
    for i, s in enumerate(samples):
        try:
            cobb_angles(s.coords, s.image_shape[0])
            kept.append(i)
        except CobbError as exc:
            refused[names[i]] = str(exc)
    assert all(check_spine(samples[i].coords) is None for i in kept)

    def summary(p, idx=slice(None)):
        err = np.abs(p[idx] - gt[idx])
        return {"n": int(len(gt[idx])), "smape_percent": smape(p[idx], gt[idx]),
                "mae_deg": [float(v) for v in err.mean(0)], "max_abs_err_deg": [float(v) for v in err.max(0)],
                "images_off_by_more_than_0.1_deg": int((err.max(1) > 0.1).sum())}

    out = {"split": args.split, "images": len(samples), "s_curves": int(sum(r.s_curve for r in ref)),
           "reference": summary(pred), "no-height": summary(no_h), "checked": summary(pred, kept),
           "refused_by_order_checks": refused, "seconds_per_image": t_cobb, "load_seconds": t_load}

    print(f"AASCE {args.split}: {len(samples)} images with angles.csv rows, {out['s_curves']} S-shaped "
          f"(load {t_load:.1f} s, Cobb {1e3 * t_cobb:.2f} ms/image)")
    print("angles in angles.csv order: [main, second, third]")
    for key in ("reference", "no-height", "checked"):
        r = out[key]
        print(f"  {key:10s} n={r['n']:3d}  SMAPE {r['smape_percent']:.4f} %  "
              f"MAE {', '.join(f'{v:.4f}' for v in r['mae_deg'])} deg  "
              f"max {', '.join(f'{v:.3f}' for v in r['max_abs_err_deg'])} deg  "
              f"(>0.1 deg off: {r['images_off_by_more_than_0.1_deg']})")
    print(f"ground-truth spines refused by the order checks: {len(refused)}")
    for name, why in list(refused.items()):
        print(f"  {name}: {why}")
    worst = np.argsort(-np.abs(no_h - gt).max(1))[: args.worst]
    print(f"largest errors without the image height ({args.worst}):")
    for i in worst:
        print(f"  {names[i]}: ours {np.round(no_h[i], 2).tolist()}  angles.csv {np.round(gt[i], 2).tolist()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
