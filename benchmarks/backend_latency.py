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


def _int8(args, pred, parts, refs, tmp: Path, ort) -> dict:
    """Each exported member quantized to int8 (static, QDQ, per-channel weights; activations calibrated on real films'
    network inputs), its latency and its logits' difference from eager fp32 on the benchmark's input, and the
    difference of the decoded points on the calibration films themselves (argmax of the logits, network pixels)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from napari_interactive_landmarks.cli import _dataset_samples
    import types

    ns = types.SimpleNamespace(dataset=args.dataset, root=args.root, split=args.calib_split, split_file=None,
                               limit=args.calib_films)
    films = [pred.prepare(s.load_image()).tensor.float() for s in _dataset_samples(ns, pred)]

    class Reader(CalibrationDataReader):
        def __init__(self, feeds):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    out, sessions, feeds, peak_moves = {}, [], [], []
    h, w = pred.input_size
    for i, (net, x, hh) in enumerate(parts):
        size = tuple(x.shape[-2:])

        def member_input(t):
            if size == (h, w):
                return t
            return torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False,
                                                   antialias=size[0] < h)
        zero = torch.zeros_like(hh).numpy()
        cal = [{"image": member_input(t).contiguous().numpy(), "hints": zero} for t in films]
        src, dst = tmp / f"{args.model}-{i}.onnx", tmp / f"{args.model}-{i}.int8.onnx"
        quantize_static(str(src), str(dst), Reader(cal), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(dst), so, providers=["CPUExecutionProvider"])
        feed = {"image": x.contiguous().numpy(), "hints": hh.numpy()}
        out.setdefault("int8_vs_eager_max_abs", 0.0)
        out["int8_vs_eager_max_abs"] = max(out["int8_vs_eager_max_abs"], float(np.abs(sess.run(None, feed)[0] - refs[i]).max()))
        with torch.no_grad():
            for c in cal:
                a = net(torch.from_numpy(c["image"]).contiguous(memory_format=torch.channels_last),
                        torch.from_numpy(zero)).float().numpy()[0]
                b = sess.run(None, c)[0][0]
                pa = np.array(np.unravel_index(a.reshape(a.shape[0], -1).argmax(1), a.shape[1:])).T
                pb = np.array(np.unravel_index(b.reshape(b.shape[0], -1).argmax(1), b.shape[1:])).T
                peak_moves.append(np.hypot(*(pa - pb).T))
        sessions.append(sess)
        feeds.append(feed)
    moves = np.concatenate(peak_moves)
    out["int8_peak_move_cells_median_p95_max"] = [float(np.median(moves)), float(np.percentile(moves, 95)),
                                                  float(moves.max())]
    out["ort_int8_ms"] = _timed(lambda: [s.run(None, f) for s, f in zip(sessions, feeds)], args.runs)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="isbi-ceph")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clicks", type=int, default=3, help="clicks drawn into the hint maps (the update's case)")
    ap.add_argument("--int8", action="store_true",
                    help="also ONNX Runtime with int8 static quantization (QDQ, per-channel weights), calibrated on "
                         "--calib-films real films of --dataset (their 0-click hints: none)")
    ap.add_argument("--dataset", default=None, help="int8 calibration films: aasce or isbi2015")
    ap.add_argument("--root", default=None)
    ap.add_argument("--calib-split", dest="calib_split", default="val",
                    help="int8 calibration films' split (default val: the model's held-out films; isbi-ceph: TrainingData)")
    ap.add_argument("--calib-films", dest="calib_films", type=int, default=8)
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
            if args.int8:
                out.update(_int8(args, pred, parts, refs, Path(tmp), ort))
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
