"""A/B of what the session gives the model as the 'previous prediction' of a point the user just corrected:
where the model had put it (what training and the evaluation protocol use; the session since this change) or
the user's new position (the session before). Same images, same worst-first clicks at the ground truth; prints
the model's MRE after each click for both.

    python experiments/benchmarks/previous_hint_ab.py --model aasce-spine --dataset aasce --root ../shared/datasets/aasce \
        --split val --limit 64 --clicks 5
"""

import argparse

import numpy as np
import torch

from napari_interactive_landmarks.cli import _dataset_samples
from napari_interactive_landmarks.data.clicks import Clicker
from napari_interactive_landmarks.evaluation.metrics import radial_errors
from napari_interactive_landmarks.inference import Predictor
from napari_interactive_landmarks.inference.session import InferenceRequest, LandmarkSession


class UserPositionAsPrevious(LandmarkSession):
    """The session as it was: 'previous' = the current points, a just-corrected one at the user's position."""

    def request(self):
        req = super().request()
        return InferenceRequest(req.generation, req.clicks, self.coords if self.detected else req.previous)


def run(session_cls, predictor, samples, clicks):
    curves = []
    for s in samples:
        sess = session_cls(predictor, s.load_image())
        sess.detect()
        clicker, done, curve = Clicker("worst"), np.zeros(predictor.num_landmarks, bool), []
        errs = radial_errors(sess.coords, s.coords)
        curve.append(np.nanmean(errs))
        for _ in range(clicks):
            i = clicker.choose(errs, done, clickable=np.isfinite(s.coords).all(1))
            done[i] = True
            sess.correct(i, tuple(s.coords[i]))
            errs = radial_errors(sess.coords, s.coords)
            curve.append(np.nanmean(errs))
        curves.append(curve)
    return np.mean(curves, axis=0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="aasce-spine")
    ap.add_argument("--weights")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dataset", default="aasce")
    ap.add_argument("--root", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--split-file", dest="split_file")
    ap.add_argument("--limit", type=int, default=64)
    ap.add_argument("--clicks", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    p = Predictor.from_file(args.weights, device=args.device) if args.weights else Predictor.from_name(args.model, device=args.device)
    samples = _dataset_samples(args, p)
    new = run(LandmarkSession, p, samples, args.clicks)
    old = run(UserPositionAsPrevious, p, samples, args.clicks)
    print(f"{p.name} on {args.dataset} {args.split}, {len(samples)} images, MRE after 0..{args.clicks} worst-first clicks")
    print("previous = where the model had it: " + " ".join(f"{v:.2f}" for v in new))
    print("previous = the user's position:    " + " ".join(f"{v:.2f}" for v in old))


if __name__ == "__main__":
    main()
