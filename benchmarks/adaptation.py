"""Adaptation to a new site as a user would do it (issue 36 item 4): ``napari-landmarks finetune`` on k of the site's
annotated films, then base vs adapted on the site's other films at 0 / 1 / 3 worst-first corrections, and the time
finetune took on this machine. Prints a table and writes JSON; several seeds (which films are the k).

    # cephalograms of a second hospital (hamedan-dev, 40 films, px): the ISBI model adapted
    python benchmarks/adaptation.py --model isbi-ceph --root ../shared/datasets/hamedan-dev --ks 5 10 20 30 \\
        --seeds 0 1 2 --threads 2 --json docs/results/adaptation/isbi-ceph-hamedan.json
    # the spine model, the eval half of its validation films standing in for a new site
    python benchmarks/adaptation.py --model aasce-spine --dataset aasce --root ../shared/datasets/aasce \\
        --split eval --ks 5 10 20 30 --seeds 0 1 2 --threads 2 --json docs/results/adaptation/aasce-spine-eval.json

Each run writes the k films as a generic folder of links (``--work``), so finetune reads them exactly as it reads a
study's export.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def site_films(args, names):
    from napari_interactive_landmarks.data.datasets import load_aasce, load_dataset

    if args.dataset == "aasce":
        by_name = {s.name: s for s in load_aasce(args.root, "training")}
        split = json.loads((REPO / "src/napari_interactive_landmarks/data/splits/aasce_seed0.json").read_text())
        return [by_name[n] for n in split[args.split]]
    return load_dataset("generic", args.root, "all", names)


def write_generic(films, names, folder: Path):
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    with open(folder / "landmarks.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "label", "row", "col"])
        for s in films:
            src = Path(s.image_path)
            link = folder / f"{s.name}{src.suffix}" if not s.name.endswith(src.suffix) else folder / s.name
            os.symlink(src.resolve(), link)
            for name, (r, c) in zip(names, s.coords):
                w.writerow([link.name, name, "" if not np.isfinite(r) else f"{r:.3f}", "" if not np.isfinite(c) else f"{c:.3f}"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="isbi-ceph")
    ap.add_argument("--dataset", default="generic", choices=["generic", "aasce"])
    ap.add_argument("--root", required=True)
    ap.add_argument("--split", default="eval", help="aasce: the part of aasce_seed0.json that is the 'site'")
    ap.add_argument("--ks", type=int, nargs="+", default=[5, 10, 20, 30])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--clicks", type=int, nargs="+", default=[0, 1, 3])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="/tmp/adaptation")
    ap.add_argument("--json")
    args = ap.parse_args()
    from napari_interactive_landmarks.finetune import _mre_after_clicks, finetune
    from napari_interactive_landmarks.inference import Predictor

    torch.set_num_threads(args.threads)
    base = Predictor.from_name(args.model)
    base.set_precision("auto")
    names = list(base.schema.landmarks)
    films = site_films(args, names)
    work = Path(args.work) / args.model
    rows, base_cache = [], {}
    for seed in args.seeds:
        order = np.random.default_rng(1000 + seed).permutation(len(films))
        for k in args.ks:
            if k >= len(films):
                continue
            train = [films[i] for i in order[:k]]
            test = [films[i] for i in order[k:]]
            folder = work / f"k{k}-seed{seed}" / "films"
            write_generic(train, names, folder)
            out = folder.parent / "adapted.safetensors"
            t0 = time.time()
            report = finetune(args.model, folder, out, epochs=args.epochs, seed=seed, threads=args.threads,
                              progress=False, evaluate=False)
            minutes = (time.time() - t0) / 60
            key = tuple(sorted(s.name for s in test))
            if key not in base_cache:
                base_cache[key] = _mre_after_clicks(base, test, tuple(args.clicks))
            adapted = Predictor.from_file(out)
            adapted.set_precision("auto")
            row = {"k": k, "seed": seed, "trained_on": len(report.trained_on), "held_aside": len(report.held_aside),
                   "test_films": len(test), "minutes": round(minutes, 2),
                   "base": base_cache[key], "adapted": _mre_after_clicks(adapted, test, tuple(args.clicks))}
            rows.append(row)
            print(f"k {k:2d} seed {seed}: {minutes:.1f} min; MRE at " + "/".join(map(str, args.clicks))
                  + " clicks on " + f"{len(test)} films: base " + " / ".join(f"{row['base'][c]:.2f}" for c in args.clicks)
                  + " → adapted " + " / ".join(f"{row['adapted'][c]:.2f}" for c in args.clicks), flush=True)
    print("\nk | films trained on (+ held aside) | minutes | " + " | ".join(
        f"MRE {c} clicks base → adapted" for c in args.clicks))
    for k in args.ks:
        rs = [r for r in rows if r["k"] == k]
        if not rs:
            continue
        cells = [f"{np.mean([r['base'][c] for r in rs]):.2f} → **{np.mean([r['adapted'][c] for r in rs]):.2f}** "
                 f"(± {np.std([r['adapted'][c] for r in rs]):.2f})" for c in args.clicks]
        print(f"{k} | {rs[0]['trained_on']} (+ {rs[0]['held_aside']}) | {np.mean([r['minutes'] for r in rs]):.1f} | "
              + " | ".join(cells))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"model": args.model, "root": str(args.root), "epochs": args.epochs,
                                               "threads": args.threads, "cpu": _cpu(), "rows": rows}, indent=1))


def _cpu() -> str:
    from napari_interactive_landmarks.evaluation.bench import cpu_description

    return cpu_description()


if __name__ == "__main__":
    main()
