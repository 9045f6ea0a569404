"""CPU latency of an interactive update for an architecture / input size before training it (random weights:
latency does not depend on the weights): is a candidate admissible under the ≤ 250 ms goal on 2 cores?

    python benchmarks/untrained_latency.py --preset hrnet-w32 --landmarks 68 --input-size 512 256 --threads 2
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from napari_interactive_landmarks.evaluation.bench import run_bench
from napari_interactive_landmarks.inference import Predictor
from napari_interactive_landmarks.model_card import DEFAULT_NORMALIZATION, ModelCard
from napari_interactive_landmarks.models.interactive import build_model, resolve_config
from napari_interactive_landmarks.weights import save_weights

SCHEMAS = {68: "aasce-spine68", 19: "isbi-ceph19", 24: "phantom-spine24"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="hrnet-w18s")
    ap.add_argument("--landmarks", type=int, default=68, choices=sorted(SCHEMAS))
    ap.add_argument("--input-size", type=int, nargs=2, default=[512, 256])
    ap.add_argument("--image-size", type=int, nargs=2, default=[2375, 890])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = resolve_config({"preset": args.preset, "num_landmarks": args.landmarks, "heatmap": "softmax"})
    model = build_model(cfg)
    card = ModelCard(name=f"{args.preset}-{args.input_size[0]}x{args.input_size[1]}", schema=SCHEMAS[args.landmarks],
                     config=cfg, input_size=tuple(args.input_size), sigma=7.5, normalization=DEFAULT_NORMALIZATION,
                     heatmap="softmax")
    with tempfile.TemporaryDirectory() as d:
        path = save_weights(model.state_dict(), Path(d) / "w.safetensors", metadata=card.to_metadata())
        size_mb = path.stat().st_size / 2**20
        p = Predictor.from_file(path, device="cpu")
        image = np.random.default_rng(0).normal(128, 40, size=args.image_size).clip(0, 255).astype(np.uint8)
        res = run_bench(p, image, runs=args.runs, num_clicks=3)
    print(f"{card.name} ({args.landmarks} landmarks, fp16 {size_mb:.1f} MB): update median {res['median_ms']:.1f} ms, "
          f"p95 {res['p95_ms']:.1f} ms, bare forward {res['forward_ms']:.1f} ms, {args.threads} threads")


if __name__ == "__main__":
    main()
