"""Time one training step of a config's model on synthetic data (no dataset needed): median over --steps
steps for each number of iterative click rounds. Prints one line per rounds value.

    python experiments/benchmarks/train_step_cpu.py --config configs/aasce-spine.yaml --threads 2 --steps 8
    python experiments/benchmarks/train_step_cpu.py --config configs/aasce-spine.yaml --compile   # torch.compile (inductor)
    python experiments/benchmarks/train_step_cpu.py --hints      # hint maps: the old dense NCHW drawing + layout copy vs now
    python experiments/benchmarks/train_step_cpu.py --profile    # torch.profiler table of one step with 2 click rounds
    python experiments/benchmarks/train_step_cpu.py --config configs/aasce-spine.yaml --amp bf16   # bf16 autocast (paired:
        # alternate it with --amp none in the same sitting; the step's learning is compared by a short run)
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


def time_hints(t, b, runs):
    """Median ms to draw one batch's hint maps in the model's channels-last layout: the way before (every channel
    rendered densely in NCHW, then copied to channels-last) and now (``render_hints``)."""
    from napari_interactive_landmarks.codecs.heatmaps import gaussian_heatmaps, render_hints

    g = torch.Generator().manual_seed(0)
    k, size, sigma = t.k, t.size, t.codec.sigma
    coords = torch.rand(b, k, 2, generator=g) * torch.tensor(size, dtype=torch.float32)
    prev = coords + torch.randn(b, k, 2, generator=g) * 5
    clicked = torch.rand(b, k, generator=g) < 0.15
    hs = ((size[0] + 1) // 2, (size[1] + 1) // 2)

    def before():
        to2 = (lambda c: (c + 0.5) / 2.0 - 0.5)  # noqa: E731
        maps = torch.cat([gaussian_heatmaps(to2(prev), hs, sigma / 2.0, mask=clicked),
                          gaussian_heatmaps(to2(coords), hs, sigma / 2.0, mask=clicked)], dim=1)
        return maps.contiguous(memory_format=torch.channels_last)

    def now():
        return render_hints(prev, coords, clicked, size, sigma)

    torch.testing.assert_close(before(), now())
    for name, fn in (("before (dense NCHW + channels-last copy)", before), ("now (render_hints)", now)):
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        print(f"hint maps, batch {b} x {2 * k} x {hs[0]} x {hs[1]}, {name}: median {1000 * statistics.median(times):.1f} ms")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/aasce-spine.yaml")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rounds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--hints", action="store_true", help="time the hint maps of one batch, old way vs now")
    ap.add_argument("--profile", action="store_true", help="print a torch.profiler table of one step (2 rounds)")
    ap.add_argument("--amp", choices=["none", "bf16"], help="override the config's mixed precision")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile the training forward (inductor; compiled during the warm-up steps)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    cfg.update(device="cpu", out_dir="/tmp/train_step_bench", pack=None)
    if args.amp:
        cfg["amp"] = args.amp
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
    if args.compile:
        t.net = torch.compile(t.net)
        t0 = time.perf_counter()
        for _ in range(2):  # compiles (the first steps), then one more to settle
            t.train_step(*t._batch(np.arange(bs)))
        print(f"torch.compile: the first two steps took {time.perf_counter() - t0:.1f} s")
    t.train_step(*t._batch(np.arange(bs)))  # warm-up (allocator, oneDNN primitives)
    if args.hints:
        return time_hints(t, bs, args.steps)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        t.click_rng = FixedRounds(2, int(cfg["max_iterative_rounds"]))
        batch = t._batch(np.arange(bs))
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t.train_step(*batch)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
        return
    for r in args.rounds:
        t.click_rng = t.rng = FixedRounds(r, int(cfg["max_iterative_rounds"]))  # (older trainers drew clicks from t.rng)
        times = []
        for _ in range(args.steps):
            batch = t._batch(np.arange(bs))
            t0 = time.perf_counter()
            t.train_step(*batch)
            times.append(time.perf_counter() - t0)
        print(f"rounds {r}: median {statistics.median(times):.3f} s, min {min(times):.3f} s over {args.steps} steps "
              f"(batch {bs}, {h}x{w}, {args.threads} threads, amp {cfg.get('amp', 'none')})")


if __name__ == "__main__":
    main()
