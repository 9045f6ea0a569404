"""How much of the spine model's fully automatic error is whole vertebrae placed one level off (issue 19 item 3)?

For every film of a split, the fully automatic prediction (network alone, and with the model's shape prior) is
compared vertebra by vertebra with the ground truth: a vertebra counts as *shifted* when the centroid of its four
predicted corners lies nearer the true centroid of the vertebra above or below than of its own, and more than half
a vertebra's height from its own. Prints the share of shifted vertebrae, the films with a run of >= 3 shifted
vertebrae, the direction, and the MRE with and without the shifted vertebrae. Films whose labels are defective
(vertebrae out of order: ``check_spine``) are left out. Asserts nothing.

    python benchmarks/vertebra_shift.py --model aasce-spine --root ../shared/datasets/aasce --split val
"""

from __future__ import annotations

import argparse
import json
from types import SimpleNamespace

import numpy as np


def shifted_vertebrae(pred: np.ndarray, gt: np.ndarray):
    """(shift (V,) in {-1, 0, +1}: the level each vertebra's predicted centroid matches, 0 when its own)."""
    pc, gc = pred.reshape(-1, 4, 2).mean(1), gt.reshape(-1, 4, 2).mean(1)
    nv = len(gc)
    height = np.median(np.linalg.norm(np.diff(gc, axis=0), axis=1))
    out = np.zeros(nv, int)
    for v in range(nv):
        own = np.linalg.norm(pc[v] - gc[v])
        if own <= 0.5 * height:
            continue
        for s in (-1, 1):
            if 0 <= v + s < nv and np.linalg.norm(pc[v] - gc[v + s]) < own:
                out[v] = s
    return out


def longest_run(mask: np.ndarray) -> int:
    best = cur = 0
    for m in mask:
        cur = cur + 1 if m else 0
        best = max(best, cur)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="aasce-spine")
    ap.add_argument("--weights")
    ap.add_argument("--root", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()

    import torch

    from napari_interactive_landmarks.cli import _dataset_samples
    from napari_interactive_landmarks.inference import Predictor
    from napari_interactive_landmarks.measurements.cobb import check_spine

    torch.set_num_threads(args.threads)
    p = Predictor.from_file(args.weights) if args.weights else Predictor.from_name(args.model)
    samples = _dataset_samples(SimpleNamespace(split=args.split, dataset="aasce", root=args.root, split_file=None,
                                               limit=None), p)
    samples = [s for s in samples if check_spine(np.asarray(s.coords)) is None]
    result = {"model": p.name, "split": args.split, "films": len(samples), "tracks": {}}
    for track, prior in (("network alone", False), ("with the shape prior", True)):
        shifts, mre_all, mre_kept, runs = [], [], [], []
        for s in samples:
            gt = np.asarray(s.coords, np.float64)
            pred = p.predict(s.load_image(), shape_prior=prior).coords
            sh = shifted_vertebrae(pred, gt)
            err = np.linalg.norm(pred - gt, axis=1)
            keep = np.repeat(sh == 0, 4)
            shifts.append(sh)
            runs.append(longest_run(sh != 0))
            mre_all.append(err.mean())
            mre_kept.append(err[keep].mean() if keep.any() else np.nan)
        sh = np.concatenate(shifts)
        runs = np.array(runs)
        r = {"shifted_vertebrae_pct": float(100 * (sh != 0).mean()),
             "shifted_up_pct": float(100 * (sh == -1).mean()), "shifted_down_pct": float(100 * (sh == 1).mean()),
             "films_with_a_shifted_vertebra": int((runs >= 1).sum()), "films_with_a_run_of_3": int((runs >= 3).sum()),
             "mre": float(np.mean(mre_all)), "mre_without_shifted_vertebrae": float(np.nanmean(mre_kept)),
             "mre_films_without_any_shift": float(np.mean(np.array(mre_all)[runs == 0]))}
        result["tracks"][track] = r
        print(f"{track}: {r['shifted_vertebrae_pct']:.1f} % of vertebrae one level off ({r['shifted_up_pct']:.1f} % "
              f"onto the one above, {r['shifted_down_pct']:.1f} % below); films with one: "
              f"{r['films_with_a_shifted_vertebra']}/{len(samples)}, with a run of >= 3: {r['films_with_a_run_of_3']}; "
              f"MRE {r['mre']:.1f} px, without the shifted vertebrae {r['mre_without_shifted_vertebrae']:.1f} px, "
              f"on the films without any {r['mre_films_without_any_shift']:.1f} px")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
