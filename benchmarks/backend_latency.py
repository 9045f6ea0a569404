"""The shipped networks' forward pass on CPU runtimes, at equal inputs (issue 39 item 1): eager PyTorch in fp32 and in
bf16 autocast (where the CPU computes bf16 natively), against ONNX Runtime (fp32, its graph optimisations on) on the
same network exported with ``torch.onnx.export``. The network is given its hint maps (drawn by the predictor, as an
update does) so that the exported graph has two inputs: the film at the network's size and the hints. Prints the
median and p95 of ``--runs`` forwards per runtime, and the largest difference of ONNX Runtime's logits from eager
fp32's on the same inputs (a self-check: a backend that differs is not used).

    python benchmarks/backend_latency.py --model isbi-ceph --runs 20 --threads 2
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/backend_latency.py ...   # eager as on a CPU
        without AVX512 (ONNX Runtime picks its own kernels by the CPU it runs on; compare on such a CPU to be sure)

Needs ``pip install onnxruntime onnx onnxscript`` (not dependencies of the package).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


class _Logits(torch.nn.Module):
    """The network as the exported graph sees it: (film, hints) → logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image, hints):
        return self.model(image, hints)["logits"]


def _timed(fn, runs: int) -> tuple[float, float]:
    fn()  # warm-up (allocations, oneDNN primitive caches)
    fn()
    t = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        t.append((time.perf_counter() - t0) * 1000)
    return float(np.median(t)), float(np.percentile(t, 95))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="isbi-ceph")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clicks", type=int, default=3, help="clicks drawn into the hint maps (the update's case)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from napari_interactive_landmarks.inference import Predictor
    from napari_interactive_landmarks.inference.predictor import native_cpu_bf16 as bf16_native

    pred = Predictor.from_name(args.model, device="cpu")
    model = pred.model.eval()
    h, w = pred.input_size
    rng = np.random.default_rng(0)
    film = (2400, 1935)
    image = torch.from_numpy(rng.uniform(-1, 1, (1, 1, h, w)).astype(np.float32)).contiguous(
        memory_format=torch.channels_last)
    k = pred.num_landmarks
    pts = np.column_stack([rng.uniform(0.2, 0.8, k) * film[0], rng.uniform(0.2, 0.8, k) * film[1]])
    clicks = {int(i): tuple(pts[i] + 20) for i in rng.choice(k, size=min(args.clicks, k), replace=False)}
    hints = pred._hints(clicks, pts, film).float()
    out = {"model": args.model, "input": [h, w], "threads": args.threads, "bf16_native": bool(bf16_native())}
    with torch.no_grad():
        c, m, prev = pred._interaction(clicks, pts, film)
        out["hints_vs_clicks_max_abs"] = float(np.abs(model(image, hints)["logits"].float().numpy() - model(
            image, clicks=c, clicked=m, previous=prev)["logits"].float().numpy()).max())
        # an ensemble is timed member by member, each on its own input (the resizes between them are the same
        # torch code whichever runtime runs the members, and antialiased resizing has no ONNX export)
        parts = []
        for member, size in zip(getattr(model, "members", [model]), getattr(model, "member_sizes", [(h, w)])):
            if tuple(size) == (h, w):
                x, hh = image, hints
            else:
                x = torch.nn.functional.interpolate(image, size=size, mode="bilinear", align_corners=False,
                                                    antialias=size[0] < h).contiguous(memory_format=torch.channels_last)
                hh = torch.nn.functional.interpolate(hints, size=((size[0] + 1) // 2, (size[1] + 1) // 2),
                                                     mode="bilinear", align_corners=False)
            parts.append((_Logits(member).eval(), x, hh))
        refs = [net(x, hh).float().numpy() for net, x, hh in parts]
        out["members"] = [list(map(int, x.shape[-2:])) for _, x, _ in parts]
        out["eager_fp32_ms"] = _timed(lambda: [net(x, hh) for net, x, hh in parts], args.runs)
        if bf16_native():
            def bf16():
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return [net(x, hh) for net, x, hh in parts]
            out["eager_bf16_ms"] = _timed(bf16, args.runs)
    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime is not installed: eager only")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            sessions, feeds, diff, t0, size = [], [], 0.0, time.perf_counter(), 0
            for i, (net, x, hh) in enumerate(parts):
                path = Path(tmp) / f"{args.model}-{i}.onnx"
                torch.onnx.export(net, (x.contiguous(), hh), str(path), input_names=["image", "hints"],
                                  output_names=["logits"], opset_version=18, dynamo=False)
                size += path.stat().st_size
                so = ort.SessionOptions()
                so.intra_op_num_threads = args.threads
                so.inter_op_num_threads = 1
                so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
                feed = {"image": x.contiguous().numpy(), "hints": hh.numpy()}
                diff = max(diff, float(np.abs(sess.run(None, feed)[0] - refs[i]).max()))
                sessions.append(sess)
                feeds.append(feed)
            out["onnx_export_s"] = round(time.perf_counter() - t0, 1)
            out["onnx_mb"] = round(size / 2**20, 1)
            out["ort_vs_eager_max_abs"] = diff
            out["ort_fp32_ms"] = _timed(lambda: [s.run(None, f) for s, f in zip(sessions, feeds)], args.runs)
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
