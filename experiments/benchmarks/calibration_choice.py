"""Which temperature scaling does a model's calibration split support: none (T = 1), one shared temperature, or
one per landmark (the default of `napari-landmarks calibrate`)? With few calibration films (ISBI: 25) the 19
per-landmark temperatures may fit noise. This script answers by K-fold cross-validation on the calibration split
(fit on K-1 folds, score the held-out fold) and, optionally, on an evaluation split after fitting on the whole
calibration split. Scores: the mean negative log-likelihood of the ground-truth pixel under the tempered 2-D
softmax (the proper score that temperature scaling minimises; bilinear at sub-pixel targets, as the fit) and the
ECE of the hottest pixel (the calibration figure docs/results.md reports).

    python experiments/benchmarks/calibration_choice.py --weights W.safetensors --dataset isbi2015 --root ../shared/datasets/isbi2015 \\
        --split val [--eval-split Test1Data] --folds 5 --threads 2

Prints one table; --json writes the numbers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from napari_interactive_landmarks.evaluation import calibration as cal
from napari_interactive_landmarks.evaluation.calibration_stats import calibration_bins, fit_temperatures, target_nll

CHOICES = ("none", "shared", "per-landmark")


def hottest_pixel_ece(data: dict, idx, temps) -> float:
    stats = [cal._image_stats(data["logits"][i], data["targets"][i], data["preds"][i], data["scales"][i], temps)
             for i in idx]
    conf, corr, _ = zip(*stats)
    return float(calibration_bins(np.concatenate(conf), np.concatenate(corr), n_bins=10)["ece"])


def fit_choice(choice: str, logits, targets) -> np.ndarray:
    k = logits.shape[1]
    if choice == "none":
        return np.ones(k)
    return np.broadcast_to(fit_temperatures(logits, targets, per_landmark=choice == "per-landmark"), (k,)).copy()


def score(data: dict, idx, temps) -> tuple[float, float]:
    idx = np.asarray(idx)
    return target_nll(data["logits"][idx], data["targets"][idx], temps), hottest_pixel_ece(data, idx, temps)


def cross_validate(data: dict, folds: int, seed: int = 0) -> dict:
    n = len(data["targets"])
    order = np.random.default_rng(seed).permutation(n)
    parts = np.array_split(order, min(folds, n))
    out = {c: {"nll": [], "ece": [], "weights": []} for c in CHOICES}
    for held in parts:
        train = np.setdiff1d(order, held)
        for c in CHOICES:
            temps = fit_choice(c, data["logits"][train], data["targets"][train])
            nll, ece = score(data, held, temps)
            out[c]["nll"].append(nll)
            out[c]["ece"].append(ece)
            out[c]["weights"].append(len(held))
    return {c: {"nll": float(np.average(v["nll"], weights=v["weights"])),
                "ece": float(np.average(v["ece"], weights=v["weights"]))} for c, v in out.items()}


def main(argv=None):
    from napari_interactive_landmarks.cli import _dataset_samples, _load_predictor

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights")
    ap.add_argument("--model", default=None)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--root")
    ap.add_argument("--split", required=True, help="the calibration split (e.g. val)")
    ap.add_argument("--eval-split", help="also fit on the whole calibration split and score this split")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ns = argparse.Namespace(weights=args.weights, model=args.model, device="cpu", dataset=args.dataset,
                            root=args.root, split=args.split, split_file=None, limit=None)
    predictor = _load_predictor(ns)
    calib = cal.collect(predictor, _dataset_samples(ns, predictor), progress=False)
    result = {"calibration_images": len(calib["targets"]), "folds": args.folds,
              "cross_validated": cross_validate(calib, args.folds)}
    if args.eval_split:
        ns.split = args.eval_split
        ev = cal.collect(predictor, _dataset_samples(ns, predictor), progress=False)
        result["eval_images"] = len(ev["targets"])
        result["eval"] = {}
        for c in CHOICES:
            temps = fit_choice(c, calib["logits"], calib["targets"])
            nll, ece = score(ev, range(len(ev["targets"])), temps)
            result["eval"][c] = {"nll": nll, "ece": ece, "median_t": float(np.median(temps))}
    print(f"| temperatures | {args.folds}-fold CV on {args.split} ({result['calibration_images']} images): NLL / ECE |"
          + (f" fitted on all of {args.split}, scored on {args.eval_split} ({result['eval_images']}): NLL / ECE |"
             if args.eval_split else ""))
    print("|---|---|" + ("---|" if args.eval_split else ""))
    for c in CHOICES:
        cv = result["cross_validated"][c]
        row = f"| {c} | {cv['nll']:.4f} / {cv['ece']:.4f} |"
        if args.eval_split:
            e = result["eval"][c]
            row += f" {e['nll']:.4f} / {e['ece']:.4f} (median T {e['median_t']:.3f}) |"
        print(row)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
