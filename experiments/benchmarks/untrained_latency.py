"""CPU latency of an interactive update for an architecture / input size before training it (random weights:
latency does not depend on the weights): is a candidate admissible under the ≤ 250 ms goal on 2 cores?

    python experiments/benchmarks/untrained_latency.py --preset hrnet-w32 --landmarks 68 --input-size 512 256 --threads 2
    python experiments/benchmarks/untrained_latency.py --arch farnet --preset farnet-compact --landmarks 19 \
        --input-size 800 640 --image-size 2400 1935 --threads 2

``--arch`` picks the architecture (interactive-hrnet-ocr, farnet, chh-unet); ``--preset`` defaults to the arch's;
``--published`` switches the interaction off (hint_fusion false, gating none: the published network).
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from napari_interactive_landmarks.evaluation.bench import run_bench
from napari_interactive_landmarks.inference import Predictor
from napari_interactive_landmarks.model_card import DEFAULT_NORMALIZATION, ModelCard
from napari_interactive_landmarks.models.interactive import build_model, check_input_size, resolve_config
from napari_interactive_landmarks.weights import save_weights

SCHEMAS = {68: "aasce-spine68", 19: "isbi-ceph19", 24: "phantom-spine24"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="interactive-hrnet-ocr")
    ap.add_argument("--preset", default=None, help="default: the architecture's default preset")
    ap.add_argument("--published", action="store_true", help="hint_fusion false, gating none")
    ap.add_argument("--landmarks", type=int, default=68, choices=sorted(SCHEMAS))
    ap.add_argument("--input-size", type=int, nargs=2, default=[512, 256])
    ap.add_argument("--image-size", type=int, nargs=2, default=[2375, 890])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    user = {"arch": args.arch, "num_landmarks": args.landmarks, "heatmap": "softmax"}
    if args.preset:
        user["preset"] = args.preset
    if args.published:
        user.update(hint_fusion=False, gating="none")
    cfg = resolve_config(user)
    check_input_size(cfg, args.input_size)
    model = build_model(cfg)
    nparams = sum(p.numel() for p in model.parameters())
    card = ModelCard(name=f"{cfg['preset']}{'-published' if args.published else ''}-{args.input_size[0]}x{args.input_size[1]}",
                     schema=SCHEMAS[args.landmarks],
                     config=cfg, input_size=tuple(args.input_size), sigma=7.5, normalization=DEFAULT_NORMALIZATION,
                     heatmap="softmax")
    with tempfile.TemporaryDirectory() as d:
        path = save_weights(model.state_dict(), Path(d) / "w.safetensors", metadata=card.to_metadata())
        size_mb = path.stat().st_size / 2**20
        p = Predictor.from_file(path, device="cpu")
        image = np.random.default_rng(0).normal(128, 40, size=args.image_size).clip(0, 255).astype(np.uint8)
        res = run_bench(p, image, runs=args.runs, num_clicks=3)
    print(f"{card.name} ({args.landmarks} landmarks, {nparams / 1e6:.2f} M parameters, fp16 {size_mb:.1f} MiB): update median {res['median_ms']:.1f} ms, "
          f"p95 {res['p95_ms']:.1f} ms, bare forward {res['forward_ms']:.1f} ms, {args.threads} threads")


if __name__ == "__main__":
    main()
