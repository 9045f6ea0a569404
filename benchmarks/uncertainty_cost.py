"""What the uncertainty costs on each interactive update, apart from the network: the calibrated 2-D softmax, the
Expected Radial Error, the maps' maxima and the display map, on logits of a given grid (a stride-1 model's grid is
its input size: 19 × 512 × 416 = 4.0 M values for the CHH U-Net at 512 × 416, 9.7 M at 800 × 640; HRNet's stride-4
grid is 16 × smaller). The logits are a trained model's shape: a sharp peak per landmark (a few broad ones),
background far below. Prints the median milliseconds of each step over --runs.

    python benchmarks/uncertainty_cost.py --grid 512 416 --threads 2
    python benchmarks/uncertainty_cost.py --grid 800 640 --threads 2
    python benchmarks/uncertainty_cost.py --grid 128 104 --threads 2     # HRNet at 512 × 416 (stride 4)

With --weights and --image, the same steps on a trained model's own maps of a real film, read as the network leaves
them (channels-last) and from a contiguous copy (what the predictor hands on):

    python benchmarks/uncertainty_cost.py --weights runs/chh-half-isbi-cpu/best.safetensors \
        --image ../shared/datasets/isbi2015/RawImage/Test1Data/151.jpg --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from napari_interactive_landmarks.codecs.uncertainty import expected_radial_error, softmax_maps
from napari_interactive_landmarks.inference.predictor import Prediction


def trained_like_logits(k: int, h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """(K, h, w) logits with one peak each (sigma 2 grid px; every fifth landmark broad, sigma 12) and the peaks."""
    g = np.random.default_rng(seed)
    centres = np.stack([g.uniform(0.1 * h, 0.9 * h, k), g.uniform(0.1 * w, 0.9 * w, k)], axis=1)
    yy = torch.arange(h, dtype=torch.float32)[:, None]
    xx = torch.arange(w, dtype=torch.float32)[None, :]
    maps = []
    for i, (cy, cx) in enumerate(centres):
        s = 12.0 if i % 5 == 0 else 2.0
        maps.append(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    noise = torch.from_numpy(g.normal(0, 0.3, (k, h, w)).astype(np.float32))
    return (torch.stack(maps) + noise).clamp_min(-60.0), centres


def median_ms(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def real_maps(weights: str, image: str, runs: int) -> None:
    """Decode, softmax and ERE of a trained model's maps of a real film, channels-last against contiguous."""
    from skimage import io

    from napari_interactive_landmarks.inference.predictor import Predictor

    p = Predictor.from_file(weights, device="cpu")
    prepared = p.prepare(io.imread(image))
    c, m, prev = p._interaction({}, None, prepared.original_shape)
    with torch.no_grad():
        raw = p.model(prepared.tensor, clicks=c, clicked=m, previous=prev)["logits"].float()
    net = p.codec.decode(raw.contiguous())[0][0].numpy().astype(np.float64)
    print(f"{p.name}: {tuple(raw.shape[1:])} maps, network output contiguous: {raw.is_contiguous()}")
    print(f"  {'contiguous copy':22s} {median_ms(lambda: raw.contiguous(), runs):8.1f} ms")
    for label, logits in (("as the network leaves", raw), ("contiguous", raw.contiguous())):
        print(f"  {label}:")
        for name, fn in {"decode": lambda: p.codec.decode(logits),
                         "softmax": lambda: softmax_maps(logits[0], p.temperatures),
                         "softmax + ERE": lambda: p._ere(logits[0], net, prepared.original_shape)}.items():
            print(f"    {name:20s} {median_ms(fn, runs):8.1f} ms")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", type=int, nargs=2, default=[512, 416], metavar=("H", "W"))
    ap.add_argument("--landmarks", type=int, default=19)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--weights", help="a trained model's .safetensors (with --image: its own maps of a real film)")
    ap.add_argument("--image", help="a film for --weights")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.weights:
        if not args.image:
            ap.error("--weights needs --image")
        return real_maps(args.weights, args.image, args.runs)
    k, (h, w) = args.landmarks, args.grid
    logits, centres = trained_like_logits(k, h, w)
    temps = np.linspace(0.9, 1.1, k)
    prob = softmax_maps(logits, temps)
    scale = (2400 / h, 1935 / w)
    pred = Prediction(centres, np.zeros(k), np.zeros(k, bool), logits, (2400, 1935), (h, w), np.zeros(k), temps,
                      prob.numpy())
    steps = {
        "softmax": lambda: softmax_maps(logits, temps),
        "ERE": lambda: expected_radial_error(prob, centres, scale=scale),
        "maxima": lambda: prob.flatten(-2).amax(-1),
        "display map": lambda: pred.uncertainty_map(),
    }
    total = 0.0
    print(f"{k} landmarks × {h} × {w} grid, {args.threads} threads, median of {args.runs}")
    for name, fn in steps.items():
        ms = median_ms(fn, args.runs)
        total += ms
        print(f"  {name:12s} {ms:8.1f} ms")
    print(f"  {'total':12s} {total:8.1f} ms")


if __name__ == "__main__":
    main()
