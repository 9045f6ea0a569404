"""The shape prior against the network alone, on the same network and films in one run: the click protocol
(worst-first clicks at the ground truth) once without the prior and once per prior setting. Prints a table and,
with --json, writes every track's evaluate result (MRE per click, manual revision, NoC / FR, harm rate, Cobb SMAPE
per click on the spine, per-image MRE per click). Asserts nothing.

    python benchmarks/shape_prior_eval.py --model aasce-spine --dataset aasce --root ../shared/datasets/aasce \
        --split val --clicks 10 --setting tau=1,weight=0.9 --setting tau=2,weight=0.9 --json out.json

The shape model is fitted on the model's own training split (``--fit-split train`` of its split file; on the
spine, films whose labels are out of order are left out), unless the model already carries one and
``--use-stored`` is given. ``--alone-hold H …`` adds network-alone tracks whose small moves after a click are held
(``Predictor.hold``); ``--no-prior-tracks`` runs only the network-alone ones. Settings: tau, weight, shrinkage, zero_click, click_rounds, hold (see shape_model.ShapePriorSettings).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from types import SimpleNamespace

import numpy as np


def parse_setting(text: str) -> dict:
    out = {}
    for part in filter(None, text.split(",")):
        k, v = part.split("=")
        key = k.strip()
        out[key] = (v.strip().lower() in ("1", "true", "yes") if key == "zero_click"
                    else int(v) if key in ("click_rounds", "zero_click_rounds") else float(v))
    return out


def samples_for(args, predictor, split):
    from napari_interactive_landmarks.cli import _dataset_samples

    ns = SimpleNamespace(split=split, dataset=args.dataset, root=args.root, split_file=args.split_file, limit=None)
    return _dataset_samples(ns, predictor)


def run_track(predictor, samples, args, unit, cobb):
    from napari_interactive_landmarks.evaluation.protocol import evaluate_dataset

    from napari_interactive_landmarks.evaluation.metrics import others_delta, radial_errors

    per_image, deltas = [], []

    def on_trace(sample, trace):
        per_image.append([float(v) for v in trace.mre_model])
        deltas.append(others_delta(radial_errors(trace.coords, trace.gt), trace.clicked).tolist())
        if cobb is not None:
            cobb(sample, trace)

    t0 = time.perf_counter()
    targets = (20, 30, 40, 50) if unit == "px" else (1.5, 2.0, 2.5, 3.0)
    res = evaluate_dataset(predictor, samples, max_clicks=args.clicks, order="worst", targets=targets, unit=unit,
                           progress=False, on_trace=on_trace, sdr_radii=(2.0, 2.5, 3.0, 4.0) if unit == "mm" else None)
    res["per_image_mre_per_click"] = per_image
    res["per_image_others_delta"] = deltas  # (films, clicks): change of the unclicked landmarks' mean error
    res["seconds"] = round(time.perf_counter() - t0, 1)
    if cobb is not None:
        res.update(cobb.summary())
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--weights", help="a weights file instead of a shipped model")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--fit-split", default="train")
    ap.add_argument("--split-file", dest="split_file")
    ap.add_argument("--clicks", type=int, default=10)
    ap.add_argument("--setting", action="append", default=[], help="e.g. tau=1,weight=0.9 (repeatable)")
    ap.add_argument("--use-stored", action="store_true", help="the model's own shape model and settings")
    ap.add_argument("--alone-hold", dest="alone_hold", type=float, nargs="+", default=[],
                    help="also run the network alone with these holds (map cells; Predictor.hold)")
    ap.add_argument("--no-prior-tracks", dest="no_prior_tracks", action="store_true",
                    help="only the network-alone tracks (no shape model is fitted)")
    ap.add_argument("--limit", type=int, help="only the first N films (quick looks)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="fp32",
                    help="the networks' arithmetic (default fp32, as every figure before 2026-12-06 was made; the "
                         "viewer and the CLI use auto: bf16 where the CPU computes it natively)")
    ap.add_argument("--json")
    args = ap.parse_args()

    import torch

    from napari_interactive_landmarks.cli import CobbCollector
    from napari_interactive_landmarks.inference import Predictor
    from napari_interactive_landmarks.shape_model import ShapePriorSettings, fit_from_samples

    torch.set_num_threads(args.threads)
    pred = Predictor.from_file(args.weights) if args.weights else Predictor.from_name(args.model)
    print(f"precision: {pred.set_precision(args.precision)}")
    samples = samples_for(args, pred, args.split)
    if args.limit:
        samples = samples[: args.limit]
    unit = "mm" if all(s.spacing for s in samples) else "px"
    stored = pred.shape_model
    if args.no_prior_tracks:
        base, tracks = None, {}
    elif args.use_stored:
        if stored is None:
            sys.exit(f"{pred.name} carries no shape model")
        base = stored
        tracks = {"stored": stored}
    else:
        fit = samples_for(args, pred, args.fit_split)
        base, left_out = fit_from_samples(fit, pred.schema.name, ShapePriorSettings(),
                                          fitted_on=f"{args.dataset} {args.fit_split}")
        print(f"shape model: {base.num_shapes} training shapes ({len(left_out)} left out: "
              f"{', '.join(sorted(left_out)[:8])}{'…' if len(left_out) > 8 else ''})", file=sys.stderr)
        tracks = {}
        for text in args.setting or ["tau=1,weight=0.9"]:
            tracks[text] = base.with_settings(**parse_setting(text))
    is_spine = args.dataset == "aasce" and pred.num_landmarks == 68
    results = {}
    pred.set_shape_model(None)
    stored_hold, pred.hold = pred.hold, 0.0
    results["network alone"] = run_track(pred, samples, args, unit, CobbCollector() if is_spine else None)
    print(f"network alone: {results['network alone']['seconds']} s", file=sys.stderr)
    for hold in args.alone_hold:
        pred.hold = hold
        name = f"network alone, hold {hold:g}"
        results[name] = run_track(pred, samples, args, unit, CobbCollector() if is_spine else None)
        print(f"{name}: {results[name]['seconds']} s", file=sys.stderr)
    pred.hold = stored_hold
    for name, sm in tracks.items():
        pred.set_shape_model(sm)
        results[name] = run_track(pred, samples, args, unit, CobbCollector() if is_spine else None)
        print(f"{name}: {results[name]['seconds']} s", file=sys.stderr)

    alone = np.array(results["network alone"]["per_image_mre_per_click"])
    # films whose ground truth is itself defective (the spine's vertebrae listed out of order or upside down):
    # an error against them says little, so the films-worse and harm figures are also given without them
    defective = np.zeros(len(samples), bool)
    if is_spine:
        from napari_interactive_landmarks.measurements.cobb import check_spine

        defective = np.array([check_spine(np.asarray(s.coords)) is not None for s in samples])
    names = [str(s.name) for s in samples]
    head = "clicks".ljust(26) + "".join(f"{c:>7d}" for c in range(args.clicks + 1))
    print(f"{pred.name} on {args.dataset} {args.split} ({len(samples)} films), MRE ({unit}), worst-first clicks")
    print(head)
    print("manual revision".ljust(26) + "".join(f"{v:7.2f}" for v in results["network alone"]["mre_manual"]))
    for name, r in results.items():
        print(name[:26].ljust(26) + "".join(f"{v:7.2f}" for v in r["mre_model"]))
    for name, r in results.items():
        per = np.array(r["per_image_mre_per_click"])
        c5 = min(5, args.clicks)
        worse = per[:, c5] - alone[:, c5]
        extra = (f" cobb smape 0/3/5: {r['cobb_smape'][0]:.1f}/{r['cobb_smape'][min(3, args.clicks)]:.1f}/"
                 f"{r['cobb_smape'][c5]:.1f} %" if "cobb_smape" in r else "")
        d = np.array(r["per_image_others_delta"], np.float64)
        valid = ~defective
        harm_valid = 100.0 * np.nanmean(np.where(np.isfinite(d[valid]), d[valid] > 0, np.nan))
        r["defective_labels"] = [n for n, bad in zip(names, defective) if bad]
        r["harm_rate_valid_labels"] = float(harm_valid)
        r["films_worse_than_alone_by_10"] = [n for n, w in zip(names, worse) if w > 10]
        bad_worse = int(((worse > 10) & valid).sum())
        print(f"{name}: harm {r['harm_rate_all']:.1f} % ({harm_valid:.1f} % on the {valid.sum()} films with valid "
              f"labels), collapse {r['collapse_rate_all']:.1f} %, NoC {r['noc']}, "
              f"FR {r['fr']}, films worse than alone after {c5} clicks by > 10 {unit}: {(worse > 10).sum()} "
              f"(max {worse.max():+.1f}; with valid labels: {bad_worse}, max "
              f"{worse[valid].max():+.1f}){extra}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": pred.name, "dataset": args.dataset, "split": args.split, "tracks": results,
                       "shape_model": None if base is None else {"num_shapes": base.num_shapes,
                                                                  "fitted_on": base.fitted_on}}, f,
                      separators=(",", ":"))


if __name__ == "__main__":
    main()
