"""How much a local refiner (models/refiner.py) changes a first stage's points at 0 clicks, per landmark.

    python experiments/benchmarks/refiner_eval.py --first src/napari_interactive_landmarks/weights/isbi-ceph.safetensors \
        --refiner runs/isbi-ceph-refiner/best.safetensors --dataset isbi2015 --root ../shared/datasets/isbi2015 \
        --split Test1Data [--split-file NAME --part eval] [--cache /tmp/first-test1.npz] [--json OUT]

Prints the MRE (mm where the films have a spacing, else px) and SDR@2/2.5/3/4 mm of the first stage, of one and two
refiner passes, and of the mean of the first stage and one pass; per landmark, and the paired Wilcoxon test over films
of first stage against one pass. The first stage's points can be cached (``--cache``): the refiner's epochs are then
compared on the same points in seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--first", required=True, help="the first stage's weights file")
    ap.add_argument("--refiner", nargs="+", required=True, help="refiner files (train-refiner's *.safetensors)")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--split", required=True)
    ap.add_argument("--split-file", dest="split_file")
    ap.add_argument("--part")
    ap.add_argument("--cache")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from scipy.stats import wilcoxon

    from napari_interactive_landmarks.data.datasets import load_dataset
    from napari_interactive_landmarks.data.splits import apply_split, load_split
    from napari_interactive_landmarks.inference import Predictor
    from napari_interactive_landmarks.io.images import as_greyscale_2d, normalise_intensity
    from napari_interactive_landmarks.models.refiner import fine_image, refine_points
    from napari_interactive_landmarks.training.refiner import load_refiner

    samples = load_dataset(args.dataset, args.root, args.split)
    if args.split_file:
        samples = apply_split(samples, load_split(args.split_file), args.part)
    truth = np.stack([s.coords for s in samples])
    spacing = samples[0].spacing or 1.0
    unit = "mm" if samples[0].spacing else "px"
    cache = Path(args.cache) if args.cache else None
    if cache and cache.is_file() and list(np.load(cache)["names"]) == [s.name for s in samples]:
        first = np.load(cache)["first"]
    else:
        pred = Predictor.from_file(args.first)
        pred.compute_ere = False
        pred.use_refiner = False
        first = np.stack([pred.predict(s.load_image()).coords for s in samples])
        if cache:
            np.savez(cache, first=first, names=np.array([s.name for s in samples]))
    refiners = [(Path(f), *load_refiner(f)) for f in args.refiner]
    units = [normalise_intensity(as_greyscale_2d(s.load_image())) for s in samples]

    def report(label, pts):
        err = np.linalg.norm(pts - truth, axis=-1) * spacing
        line = {"label": label, "mre": float(err.mean()), "per_landmark": err.mean(0).round(4).tolist()}
        if unit == "mm":
            line["sdr"] = {r: float((err <= r).mean() * 100) for r in (2.0, 2.5, 3.0, 4.0)}
        print(f"{label:>40}: MRE {line['mre']:.4f} {unit}"
              + (" SDR " + " / ".join(f"{v:.1f}" for v in line["sdr"].values()) if unit == "mm" else ""))
        return line, err

    out = {"first": str(args.first), "split": args.split, "part": args.part, "n": len(samples), "rows": []}
    row, err0 = report("first stage", first)
    out["rows"].append(row)
    k = truth.shape[1]
    fines = {}  # step -> every film resized for the crops
    for path, refiner, meta in refiners:
        if refiner.step not in fines:
            fines[refiner.step] = [fine_image(x, refiner.step) for x in units]
        once, twice = [], []
        for i, u in enumerate(units):
            f = fines[refiner.step][i]
            p1 = refine_points(refiner, f, u.shape, first[i], range(k))
            once.append(p1)
            twice.append(refine_points(refiner, f, u.shape, p1, range(k)))
        once, twice = np.stack(once), np.stack(twice)
        name = f"{path.parent.name}/{path.name} (epoch {meta.get('epoch')})"
        r1, e1 = report(name + " 1 pass", once)
        r2, _ = report(name + " 2 passes", twice)
        r3, _ = report(name + " mean with first", (once + first) / 2)
        d = e1.mean(1) - err0.mean(1)
        r1["paired_vs_first"] = {"mean": float(d.mean()), "p": float(wilcoxon(d).pvalue)}
        print(f"{'':>40}  1 pass − first stage per film: {d.mean():+.4f} {unit} (Wilcoxon p = {r1['paired_vs_first']['p']:.2g});"
              f" landmarks better: {int((e1.mean(0) < err0.mean(0)).sum())} of {k}")
        out["rows"] += [r1, r2, r3]
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
