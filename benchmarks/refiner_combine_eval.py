"""How to combine a first stage's point with one or more local refiners' (models/refiner.py), chosen on one split and
reported on another, at 0 clicks.

    # 1. the points of each split, once (first stage alone, its ERE; each refiner's point and its own expected error)
    python benchmarks/refiner_combine_eval.py points --model src/napari_interactive_landmarks/weights/isbi-ceph.safetensors \
        [--refiner runs/isbi-ceph-refiner-seed1/best.safetensors …] --dataset isbi2015 --root ../shared/datasets/isbi2015 \
        --split TrainingData --split-file isbi_seed0 --part val --out /tmp/val-points.npz
    # 2. the rules, fitted on the first file, reported on the second
    python benchmarks/refiner_combine_eval.py compare --choose-on /tmp/val-points.npz --report-on /tmp/test1-points.npz \
        [--json OUT]

``--model`` is a model file; its own refiner (when it carries one) is the first refiner. Rules compared: the first
stage; each refiner alone; the fixed blend 0.5 (shipped); the mean of every refiner, blended 0.5 with the first
stage; a per-landmark blend weight of the first refiner chosen on ``--choose-on`` (grid 0, 0.1, … 1); for each
refiner an inverse-variance blend, each point weighted by 1 / expected error² with the first stage's ERE and the
refiner's own times an error scale chosen on ``--choose-on`` (attach-refiner --blend expected-error --error-scale). Prints MRE and SDR@2/2.5/3/4 mm (or px), and the paired Wilcoxon test of each rule against the
shipped blend.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch


def _refiner_of(path):
    """(refiner, name) from a train-refiner file or from a model file that carries one."""
    from napari_interactive_landmarks.inference import Predictor
    from napari_interactive_landmarks.training.refiner import load_refiner

    try:
        refiner, meta = load_refiner(path)
        return refiner, f"{Path(path).parent.name}/{Path(path).name} (epoch {meta.get('epoch')})"
    except ValueError:
        pred = Predictor.from_file(path)
        if pred.refiner is None:
            raise SystemExit(f"{path} holds no refiner")
        return pred.refiner.float().eval(), f"{Path(path).name}'s own refiner"


def points(args):
    from napari_interactive_landmarks.data.datasets import load_dataset
    from napari_interactive_landmarks.data.splits import apply_split, load_split
    from napari_interactive_landmarks.inference import Predictor
    from napari_interactive_landmarks.io.images import as_greyscale_2d, normalise_intensity
    from napari_interactive_landmarks.models.refiner import fine_image, refine_points

    torch.set_num_threads(args.threads)
    samples = load_dataset(args.dataset, args.root, args.split)
    if args.split_file:
        samples = apply_split(samples, load_split(args.split_file), args.part)
    pred = Predictor.from_file(args.model)
    pred.set_precision("fp32")
    refiners = []
    if pred.refiner is not None:
        refiners.append(_refiner_of(args.model))
    refiners += [_refiner_of(f) for f in args.refiner or []]
    if not refiners:
        raise SystemExit("no refiner: --model carries none and no --refiner was given")
    pred.use_refiner = False
    k = pred.num_landmarks
    first, ere, refined, ref_err = [], [], [], []
    with torch.inference_mode():
        for n, s in enumerate(samples, 1):
            image = s.load_image()
            p = pred.predict(image, shape_prior=False)
            first.append(p.coords)
            ere.append(p.ere)
            unit = normalise_intensity(as_greyscale_2d(image))
            fines = {}
            rows, errs = [], []
            for refiner, _ in refiners:
                if refiner.step not in fines:
                    fines[refiner.step] = fine_image(unit, refiner.step)
                e = np.full(k, np.nan)
                rows.append(refine_points(refiner, fines[refiner.step], unit.shape, p.coords, range(k), e))
                errs.append(e)
            refined.append(np.stack(rows))
            ref_err.append(np.stack(errs))
            print(f"\r{n}/{len(samples)}", end="", file=sys.stderr)
    print(file=sys.stderr)
    np.savez(args.out, names=np.array([s.name for s in samples]), truth=np.stack([s.coords for s in samples]),
             spacing=float(samples[0].spacing or 0.0), first=np.stack(first), ere=np.stack(ere),
             refined=np.stack(refined), refined_error=np.stack(ref_err),
             refiners=np.array([name for _, name in refiners]))
    print(f"wrote {args.out}: {len(samples)} films, refiners {[name for _, name in refiners]}")
    return 0


def _load(path):
    d = dict(np.load(path))
    d["refined"] = np.moveaxis(d["refined"], 1, 0)  # (R, N, K, 2)
    d["refined_error"] = np.moveaxis(d["refined_error"], 1, 0)  # (R, N, K)
    return d


def _err(d, pts):
    return np.linalg.norm(pts - d["truth"], axis=-1) * (float(d["spacing"]) or 1.0)


def _rules(d, per_landmark_w=None, c=None):
    """name -> (N, K, 2) points of each rule on the files' points ``d``."""
    first, ref = d["first"], d["refined"]
    out = {"first stage": first}
    for r in range(len(ref)):
        out[f"refiner {r} alone"] = ref[r]
        out[f"refiner {r}, blend 0.5"] = 0.5 * ref[r] + 0.5 * first
    if len(ref) > 1:
        mean = ref.mean(0)
        out["mean of the refiners, blend 0.5"] = 0.5 * mean + 0.5 * first
        out["first stage and every refiner, equal weights"] = (first + ref.sum(0)) / (1 + len(ref))
    if per_landmark_w is not None:
        w = per_landmark_w[None, :, None]
        out["refiner 0, per-landmark blend"] = w * ref[0] + (1 - w) * first
    for r, cr in enumerate(c or []):  # c: one variance ratio per refiner
        v1 = d["ere"] ** 2
        v2 = cr * d["refined_error"][r] ** 2
        w = (v1 / (v1 + v2))[..., None]
        out[f"refiner {r}, inverse-variance blend (error scale {np.sqrt(cr):.4g})"] = w * ref[r] + (1 - w) * first
    return out


def compare(args):
    from scipy.stats import wilcoxon

    fit, rep = _load(args.choose_on), _load(args.report_on)
    k = fit["first"].shape[1]
    grid = np.round(np.linspace(0, 1, 11), 2)
    # per-landmark weight of refiner 0, chosen on the fitting split's MRE of that landmark
    e = np.stack([_err(fit, w * fit["refined"][0] + (1 - w) * fit["first"]).mean(0) for w in grid])  # (G, K)
    per_w = grid[e.argmin(0)]
    cs = np.exp(np.linspace(np.log(0.05), np.log(50), 41))
    c_best = []  # per refiner, the variance ratio with the lowest MRE on the fitting split
    for r in range(len(fit["refined"])):
        e_c = []
        for c in cs:
            pts = _rules(fit, c=[c] * (r + 1))
            e_c.append(_err(fit, pts[[n for n in pts if n.startswith(f"refiner {r}, inverse")][0]]).mean())
        c_best.append(float(cs[int(np.argmin(e_c))]))
    unit = "mm" if float(rep["spacing"]) else "px"
    print(f"chosen on {args.choose_on} ({len(fit['first'])} films): per-landmark weights {per_w.tolist()}; "
          f"inverse-variance error scales {[round(float(np.sqrt(c)), 4) for c in c_best]}")
    out = {"choose_on": args.choose_on, "report_on": args.report_on, "per_landmark_w": per_w.tolist(),
           "variance_ratios": c_best, "refiners": rep["refiners"].tolist(), "rows": []}
    for label, d in (("choose-on", fit), ("report-on", rep)):
        rules = _rules(d, per_w, c_best)
        base = _err(d, rules["refiner 0, blend 0.5"]).mean(1)
        print(f"\n{label}: {len(d['first'])} films")
        for name, pts in rules.items():
            err = _err(d, pts)
            diff = err.mean(1) - base
            p = float(wilcoxon(diff).pvalue) if np.any(diff != 0) else 1.0
            sdr = {r: float((err <= r).mean() * 100) for r in (2.0, 2.5, 3.0, 4.0)}
            print(f"{name:>58}: MRE {err.mean():.4f} {unit}  SDR " + " / ".join(f"{v:.1f}" for v in sdr.values())
                  + (f"  vs blend 0.5 {diff.mean():+.4f} (p {p:.2g})" if name != "refiner 0, blend 0.5" else ""))
            out["rows"].append({"on": label, "rule": name, "mre": float(err.mean()), "sdr": sdr,
                                "vs_shipped_blend": float(diff.mean()), "p": p})
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("points")
    pp.add_argument("--model", required=True)
    pp.add_argument("--refiner", nargs="*")
    pp.add_argument("--dataset", required=True)
    pp.add_argument("--root", required=True)
    pp.add_argument("--split", required=True)
    pp.add_argument("--split-file", dest="split_file")
    pp.add_argument("--part")
    pp.add_argument("--threads", type=int, default=1)
    pp.add_argument("--out", required=True)
    pc = sub.add_parser("compare")
    pc.add_argument("--choose-on", dest="choose_on", required=True)
    pc.add_argument("--report-on", dest="report_on", required=True)
    pc.add_argument("--json")
    args = ap.parse_args(argv)
    return points(args) if args.cmd == "points" else compare(args)


if __name__ == "__main__":
    sys.exit(main())
