"""Before any click, can the anatomy undo a whole run of vertebrae placed one level off? (issue 19 item 3)

benchmarks/vertebra_shift.py measured that on the validation films 22 % of the vertebrae of the fully automatic
spine prediction sit one level off, usually in runs, and that a Gaussian shape prior iterated from the network's
points keeps them there (a shifted chain is a plausible spine). This tries a multi-start: the zero-click decoding
under the prior (each landmark given all the others, iterated, as the predictor does) is run from the network's
points and from the same chain relabelled one vertebra up and one down (the end vertebra extrapolated), and the
start whose result has the highest joint score is kept:

    J(x) = Σ_i log q_i(x_i)  +  λ · log N(x | μ, τ Σ)

q_i the network's calibrated map (softmax of logits / T) at landmark i's cell, N the shape model's joint Gaussian in
normalised coordinates. Prints MRE and the share of shifted vertebrae for the network alone, the prior from the
network's points (the package today), the multi-start chosen by J (for a few λ), and the best of the three starts
chosen with the ground truth (an upper bound). Asserts nothing.

    python experiments/benchmarks/level_shift_multistart.py --model aasce-spine --root ../shared/datasets/aasce --split val \
        --json docs/results/level-shift-multistart-aasce-val.json
"""

from __future__ import annotations

import argparse
import json
from types import SimpleNamespace

import numpy as np


def relabel(coords: np.ndarray, shift: int, per: int = 4) -> np.ndarray:
    """(K, 2) corners of V vertebrae (``per`` each, top to bottom): vertebra v takes the points of v + shift; the
    vertebrae that fall off an end are extrapolated linearly from the last two."""
    v = coords.reshape(-1, per, 2)
    n = len(v)
    out = np.empty_like(v)
    for i in range(n):
        j = i + shift
        if 0 <= j < n:
            out[i] = v[j]
        elif j >= n:
            out[i] = v[n - 1] + (j - n + 1) * (v[n - 1] - v[n - 2])
        else:
            out[i] = v[0] + j * (v[1] - v[0])
    return out.reshape(-1, 2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="aasce-spine")
    ap.add_argument("--root", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 0.25, 1.0, 4.0])
    ap.add_argument("--limit", type=int)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    ap.add_argument("--verbose", action="store_true", help="each film's error and the two terms of J per start")
    args = ap.parse_args()

    import torch

    from napari_interactive_landmarks.cli import _dataset_samples
    from napari_interactive_landmarks.codecs.uncertainty import tempered_logits
    from napari_interactive_landmarks.inference import Predictor
    from napari_interactive_landmarks.measurements.cobb import check_spine
    from napari_interactive_landmarks.shape_model import normalise

    import importlib.util
    import sys
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("vertebra_shift", Path(__file__).resolve().parents[2] / "benchmarks" / "vertebra_shift.py")
    vs = importlib.util.module_from_spec(spec)
    sys.modules["vertebra_shift"] = vs
    spec.loader.exec_module(vs)

    torch.set_num_threads(args.threads)
    p = Predictor.from_name(args.model, device="cpu")
    sm = p.shape_model
    samples = _dataset_samples(SimpleNamespace(split=args.split, dataset="aasce", root=args.root, split_file=None,
                                               limit=args.limit), p)
    samples = [s for s in samples if check_spine(np.asarray(s.coords)) is None]  # valid labels only
    tau = sm.settings.tau
    tracks = {"network alone": [], "prior from the network (today)": [], "best start (oracle)": []}
    tracks.update({f"multi-start, lambda {lam:g}": [] for lam in args.lambdas})
    shifts = {k: [] for k in tracks}
    chosen_shift = {lam: [] for lam in args.lambdas}
    for n, s in enumerate(samples):
        img = s.load_image()
        gt = np.asarray(s.coords, np.float64)
        alone = p.predict(img, shape_prior=False)
        shape = alone.original_shape if hasattr(alone, "original_shape") else img.shape[:2]
        logits = alone.logits.float()
        grid = tuple(logits.shape[-2:])
        logq = torch.log_softmax(tempered_logits(logits, p.temperatures).flatten(-2), -1).reshape(logits.shape).numpy()
        net_np = p.codec.to_network(alone.coords, shape)
        results = {}
        for shift in (0, 1, -1):
            start = p.codec.to_network(relabel(alone.coords, shift), shape)
            cur, _ = p._decode_under_prior(logits, start, {}, shape)
            xy = p.codec.to_original(cur, shape)
            g = np.rint(p.codec.network_to_grid(cur, grid)).astype(int)
            g[:, 0] = g[:, 0].clip(0, grid[0] - 1)
            g[:, 1] = g[:, 1].clip(0, grid[1] - 1)
            net_term = float(logq[np.arange(len(g)), g[:, 0], g[:, 1]].sum())
            d = normalise(xy, shape).reshape(-1) - sm.mean
            shape_term = float(-0.5 * d @ sm.precision @ d / tau)
            results[shift] = (xy, net_term, shape_term)
        err = lambda xy: float(np.linalg.norm(xy - gt, axis=1).mean())  # noqa: E731
        shifted = lambda xy: float(100 * (vs.shifted_vertebrae(xy, gt) != 0).mean())  # noqa: E731
        for key, xy in (("network alone", alone.coords), ("prior from the network (today)", results[0][0])):
            tracks[key].append(err(xy))
            shifts[key].append(shifted(xy))
        best = min(results, key=lambda k: err(results[k][0]))
        if args.verbose:
            print(s.name, {k: (round(err(v[0]), 1), round(v[1], 1), round(v[2], 1)) for k, v in results.items()})
        tracks["best start (oracle)"].append(err(results[best][0]))
        shifts["best start (oracle)"].append(shifted(results[best][0]))
        for lam in args.lambdas:
            pick = max(results, key=lambda k: results[k][1] + lam * results[k][2])
            chosen_shift[lam].append(pick)
            key = f"multi-start, lambda {lam:g}"
            tracks[key].append(err(results[pick][0]))
            shifts[key].append(shifted(results[pick][0]))
        if (n + 1) % 20 == 0:
            print(f"{n + 1}/{len(samples)}", flush=True)
    out = {"model": p.name, "split": args.split, "films": len(samples), "tracks": {}}
    print(f"{p.name} on aasce {args.split}, {len(samples)} films with valid labels, 0 clicks")
    for key in tracks:
        e, sh = np.array(tracks[key]), np.array(shifts[key])
        out["tracks"][key] = {"mre": float(e.mean()), "median": float(np.median(e)), "shifted_pct": float(sh.mean()),
                              "per_film": e.tolist()}
        print(f"  {key:<34} MRE {e.mean():6.2f} px (median {np.median(e):6.2f})   vertebrae one level off {sh.mean():5.1f} %")
    for lam in args.lambdas:
        c = np.array(chosen_shift[lam])
        out["tracks"][f"multi-start, lambda {lam:g}"]["starts_chosen"] = {str(k): int((c == k).sum()) for k in (0, 1, -1)}
        print(f"  lambda {lam:g}: starts chosen 0 / +1 / -1: {(c == 0).sum()} / {(c == 1).sum()} / {(c == -1).sum()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
