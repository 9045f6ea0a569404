"""Which doubt signal ranks real errors best once the shape prior decodes the points (issue 19 item 4)?

For every film the session is run as a user meets it (the model's shape prior on), and after every update each
unclicked landmark gets five signals about the point that is *shown*:

- ``posterior_ere``: the expected radial error of the fused (network × prior) map — what the package shows today;
- ``network_ere``: the expected radial error of the network's own calibrated map about the network's own point
  (the same forward pass, decoded without the prior);
- ``disagreement``: the distance between the shown point and the network's own point (network vs anatomy);
- ``ere_plus_disagreement``: their sum;
- ``network_ere_at_shown``: the expected radial error under the network's own calibrated map about the *shown*
  point, E_q[‖x − shown‖]: how far the network believes the shown point is from the truth (both at once).

Reported: AUROC of each signal for "the shown point is more than ``--threshold`` off" (20 px on the spine, 2 mm on
cephalograms), at 0 clicks and pooled over 1..N worst-first clicks; and the click protocol guided by each signal
(click the landmark the signal ranks highest, at its true position) against the oracle (the worst landmark) and
correcting by hand: MRE per click. Asserts nothing.

    python experiments/benchmarks/posterior_doubt.py --model aasce-spine --dataset aasce --root ../shared/datasets/aasce \
        --split eval --clicks 5 --json docs/results/posterior-doubt-aasce-eval.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from types import SimpleNamespace

import numpy as np

SIGNALS = ("posterior_ere", "network_ere", "disagreement", "ere_plus_disagreement", "network_ere_at_shown")


def signals_of(predictor, session, unit_scale: float) -> dict[str, np.ndarray]:
    """The signals (K,) of the session's last prediction, in the reporting unit."""
    pred = session.last_prediction
    shape = session.image_shape
    logits = pred.logits
    net, _ = predictor.codec.decode(logits[None])
    net_np = net[0].cpu().numpy().astype(np.float64)
    net_coords = predictor.codec.to_original(net_np, shape)
    net_ere, _ = predictor._ere(logits, net_np, shape)
    shown = session.coords.astype(np.float64)
    post = posterior_ere(predictor, session, logits, net_np, shape)
    dis = np.hypot(*(shown - net_coords).T)
    out = {"posterior_ere": post * unit_scale, "network_ere": net_ere.astype(np.float64) * unit_scale,
           "disagreement": dis * unit_scale}
    out["ere_plus_disagreement"] = out["posterior_ere"] + out["disagreement"]
    at_shown, _ = predictor._ere(logits, predictor.codec.to_network(shown, shape), shape)
    out["network_ere_at_shown"] = at_shown.astype(np.float64) * unit_scale
    return out


def posterior_ere(predictor, session, logits, net_np, shape) -> np.ndarray:
    """The expected radial error of the fused (network × prior) maps about the shown points (the package's ERE until
    2026-12-04; it now reports ``network_ere_at_shown``), recomputed from the same forward pass."""
    from napari_interactive_landmarks.codecs.uncertainty import expected_radial_error, softmax_maps

    pinned = np.asarray(session.pinned, bool)
    clicks = {int(i): tuple(session.coords[i]) for i in np.flatnonzero(pinned)}
    fused = predictor._decode_under_prior(logits, net_np, clicks, shape) if predictor.shape_prior_active else None
    if fused is None:
        ere, _ = predictor._ere(logits, predictor.codec.to_network(session.coords, shape), shape)
    else:
        cur, post = fused
        grid = tuple(post.shape[-2:])
        ere = expected_radial_error(softmax_maps(post.float(), None), predictor.codec.network_to_grid(cur, grid),
                                    scale=predictor.codec.grid_scale(shape, grid))
    ere = np.asarray(ere, np.float64).copy()
    ere[pinned] = 0.0
    return ere


def run_film(predictor, sample, clicks: int, order: str, unit_scale: float):
    """One film: (per step: errors, signals, clicked mask) following ``order`` ('worst' or a signal name)."""
    from napari_interactive_landmarks.inference.session import LandmarkSession

    gt = np.asarray(sample.coords, np.float64)
    ok = np.isfinite(gt).all(axis=1)
    session = LandmarkSession(predictor, sample.load_image())
    session.detect()
    steps = []
    for s in range(clicks + 1):
        err = np.hypot(*(session.coords - gt).T) * unit_scale
        sig = signals_of(predictor, session, unit_scale)
        pinned = np.asarray(session.pinned, bool).copy()
        steps.append((err, sig, pinned))
        if s == clicks:
            break
        free = ok & ~pinned
        if not free.any():
            break
        rank = err if order == "worst" else sig[order]
        idx = int(np.flatnonzero(free)[np.nanargmax(np.where(np.isnan(rank[free]), -np.inf, rank[free]))])
        session.correct(idx, tuple(gt[idx]))
    return steps, ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--weights")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--split", default="eval")
    ap.add_argument("--split-file", dest="split_file")
    ap.add_argument("--clicks", type=int, default=5)
    ap.add_argument("--threshold", type=float, help="an error above this is 'wrong' (default 20 px / 2 mm)")
    ap.add_argument("--orders", default="worst," + ",".join(SIGNALS))
    ap.add_argument("--limit", type=int)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()

    import torch

    from napari_interactive_landmarks.cli import _dataset_samples
    from napari_interactive_landmarks.evaluation.calibration_stats import auroc
    from napari_interactive_landmarks.inference import Predictor

    torch.set_num_threads(args.threads)
    predictor = Predictor.from_file(args.weights) if args.weights else Predictor.from_name(args.model)
    if not predictor.shape_prior_active:
        print(f"note: {predictor.name}'s shape prior is off; the posterior signals equal the network's",
              file=sys.stderr)
    ns = SimpleNamespace(split=args.split, dataset=args.dataset, root=args.root, split_file=args.split_file, limit=None)
    samples = _dataset_samples(ns, predictor)[: args.limit]
    mm = all(s.spacing for s in samples)
    unit = "mm" if mm else "px"
    thr = args.threshold if args.threshold is not None else (2.0 if mm else 20.0)

    result = {"model": predictor.name, "dataset": args.dataset, "split": args.split, "films": len(samples),
              "unit": unit, "threshold": thr, "auroc": {}, "guided_mre": {}}
    for order in args.orders.split(","):
        t0 = time.perf_counter()
        per_step = [[] for _ in range(args.clicks + 1)]  # (err, signals, free) per film
        for sample in samples:
            scale = float(np.mean(sample.spacing)) if mm else 1.0
            steps, ok = run_film(predictor, sample, args.clicks, order, scale)
            for s, (err, sig, pinned) in enumerate(steps):
                per_step[s].append((err, sig, ok & ~pinned))
        mre = []
        for s in range(args.clicks + 1):
            mre.append(float(np.mean([np.nanmean(np.where(np.isfinite(e), e, np.nan)) for e, _, _ in per_step[s]])))
        result["guided_mre"][order] = mre
        if order == "worst":  # the AUROC on the oracle's trajectory: the states a careful user goes through
            for name in SIGNALS:
                def pooled(steps_range):
                    e = np.concatenate([err[f] for s in steps_range for err, _, f in per_step[s]])
                    v = np.concatenate([sig[name][f] for s in steps_range for _, sig, f in per_step[s]])
                    return float(auroc(v, e > thr))
                result["auroc"][name] = {"0": pooled([0]), f"1-{args.clicks}": pooled(range(1, args.clicks + 1)),
                                         "all": pooled(range(args.clicks + 1))}
        print(f"{order}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    print(f"{predictor.name} on {args.dataset} {args.split} ({len(samples)} films); 'wrong' = error > {thr:g} {unit}")
    print(f"{'AUROC':<24}{'0 clicks':>10}{'1-' + str(args.clicks):>10}{'all':>10}")
    for name, a in result["auroc"].items():
        print(f"{name:<24}" + "".join(f"{v:10.3f}" for v in a.values()))
    print(f"\nMRE ({unit}) per click, clicks chosen by:")
    for order, m in result["guided_mre"].items():
        print(f"{order:<24}" + "".join(f"{v:8.2f}" for v in m))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
