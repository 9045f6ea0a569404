"""Time one training step of a config's model on synthetic data (no dataset needed): median over --steps
steps for each number of iterative click rounds. Prints one line per rounds value.

    python benchmarks/train_step_cpu.py --config configs/aasce-spine.yaml --threads 2 --steps 8
"""

import argparse
import statistics
import time

import numpy as np
import torch

from napari_interactive_landmarks.data.cache import CachedSet
from napari_interactive_landmarks.training.trainer import Trainer, load_config


class FixedRounds:
    """A click RNG whose draw of the number of iterative rounds is fixed (everything else is random)."""

    def __init__(self, rounds, max_rounds):
        self.rounds, self.max_rounds, self.g = rounds, max_rounds, np.random.default_rng(0)

    def integers(self, low, high=None, size=None):
        if high == self.max_rounds + 1 and size is None:
            return self.rounds
        return self.g.integers(low, high, size)

    def __getattr__(self, name):
        return getattr(self.g, name)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/aasce-spine.yaml")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rounds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    cfg.update(device="cpu", out_dir="/tmp/train_step_bench", pack=None)
    t = Trainer(cfg)
    h, w = t.size
    n, k = 8, t.k
    rng = np.random.default_rng(0)
    images = (rng.random((n, h, w)) * 255).astype(np.uint8)
    rows = np.linspace(0.08 * h, 0.92 * h, k)
    cols = w / 2 + 0.1 * w * np.sin(np.arange(k))
    coords = np.stack([np.stack([rows, cols], 1)] * n).astype(np.float32)
    data = CachedSet([str(i) for i in range(n)], images, coords, np.tile([4 * h, 4 * w], (n, 1)), coords * 4.0,
                     np.full(n, np.nan))
    t.load_data(data, data)
    bs = int(cfg["batch_size"])
    t.train_step(*t._batch(np.arange(bs)))  # warm-up (allocator, oneDNN primitives)
    for r in args.rounds:
        t.click_rng = t.rng = FixedRounds(r, int(cfg["max_iterative_rounds"]))  # (older trainers drew clicks from t.rng)
        times = []
        for _ in range(args.steps):
            batch = t._batch(np.arange(bs))
            t0 = time.perf_counter()
            t.train_step(*batch)
            times.append(time.perf_counter() - t0)
        print(f"rounds {r}: median {statistics.median(times):.3f} s, min {min(times):.3f} s over {args.steps} steps "
              f"(batch {bs}, {h}x{w}, {args.threads} threads)")


if __name__ == "__main__":
    main()
