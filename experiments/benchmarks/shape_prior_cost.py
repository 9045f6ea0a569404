"""The shape prior's added cost per interactive update of a shipped model: conditioning on clicks, the robust prior
on every unclicked landmark's map grid (the predictor's torch version, and the shape model's numpy reference), the
posterior's decoding (which replaces the network's own decoding), each landmark given all the others (one joint
round), and the whole decoding under the prior as the predictor runs it with the model's settings (after --clicks
clicks: 1 + click_rounds rounds). Medians over --runs; prints milliseconds, asserts nothing.

    python experiments/benchmarks/shape_prior_cost.py --model aasce-spine --clicks 3 --threads 1
"""

import argparse
import time

import numpy as np
import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="aasce-spine")
    ap.add_argument("--clicks", type=int, default=3)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from napari_interactive_landmarks.codecs.heatmaps import decode_strided_logits
    from napari_interactive_landmarks.inference import Predictor
    from napari_interactive_landmarks.inference.predictor import log_prior_on_grid

    p = Predictor.from_name(args.model)
    sm = p.shape_model
    if sm is None:
        raise SystemExit(f"{args.model} carries no shape model")
    k, grid = p.num_landmarks, p.codec.grid
    u = sm.mean.reshape(k, 2)
    clicked = list(np.linspace(0, k - 1, args.clicks).astype(int))
    free = [i for i in range(k) if i not in clicked]
    logits = torch.randn(k, *grid)
    times = {"condition": [], "prior on the grid (torch, used)": [], "prior on the grid (numpy reference)": [],
             "decode (replaces the network's)": [], "each given all the others": [],
             f"whole decoding under the prior, {1 + sm.settings.click_rounds} round(s)": []}
    shape = (2375, 890)
    clicks = {int(i): tuple(((u[i] + 0.01) * shape) - 0.5) for i in clicked}
    net_np = p.codec.to_network(sm.mean.reshape(k, 2) * shape - 0.5, shape)
    for _ in range(args.runs):
        t0 = time.perf_counter()
        m, c = sm.condition(clicked, u[clicked] + 0.01)
        t1 = time.perf_counter()
        lp = log_prior_on_grid(sm, m, c, grid, free, "cpu")
        t2 = time.perf_counter()
        sm.log_prior_on_grid(m, c, grid, rows=free)
        t3 = time.perf_counter()
        decode_strided_logits((logits + lp)[None], p.input_size, window=p.codec.window, heatmap="softmax")
        t4 = time.perf_counter()
        sm.leave_one_out(u)
        t5 = time.perf_counter()
        p._decode_under_prior(logits, net_np, clicks, shape)
        t6 = time.perf_counter()
        for key, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5)):
            times[key].append(dt * 1000)
    for key, v in times.items():
        print(f"{key}: {np.median(v):.2f} ms median")


if __name__ == "__main__":
    main()
