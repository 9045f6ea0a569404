"""Is an int8 network accurate enough to ship? (issue 39 item 1: "int8 … where the accuracy holds"). The spine network
exported to ONNX and quantized to int8 by ONNX Runtime (static QDQ, per-channel weights, activations calibrated on real
films of the calib half *with clicks drawn*: calibrated on 0-click hints only, the hint channels' range is [0, 0] and
every click is quantized away), then put in the predictor in place of the eager network, and the click protocol run on
the same films with eager fp32, ONNX Runtime fp32 and ONNX Runtime int8: MRE per click and the paired difference, and
each runtime's forward time. Prints numbers; ships nothing.

    python experiments/benchmarks/int8_accuracy.py --split eval --clicks 5 --threads 2 [--json out.json]

Needs ``pip install onnxruntime onnx onnxscript`` (not dependencies of the package). ONNX Runtime chooses its int8
kernels by the CPU it runs on (VNNI or not): the accuracy of int8 on a CPU without VNNI is not measured here.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from backend_latency import _Logits  # noqa: E402  (the network as the exported graph sees it)


class OrtNetwork(torch.nn.Module):
    """The predictor's network, run by an ONNX Runtime session: draws the full hint maps as the exported graph takes
    them and returns the logits as the eager network does (channels first, float32)."""

    def __init__(self, eager, session):
        super().__init__()
        self.eager, self.session = eager, session
        self.num_landmarks, self.hint_sigma = eager.num_landmarks, eager.hint_sigma
        self.forward_ms: list[float] = []

    def forward(self, image, hints=None, *, clicks=None, clicked=None, previous=None):
        from napari_interactive_landmarks.models.interactive import hint_maps

        hints = hint_maps(self.eager, image, hints, clicks, clicked, previous)
        t = time.perf_counter()
        out = self.session.run(None, {"image": image.float().contiguous().numpy(),
                                      "hints": hints.float().contiguous().numpy()})[0]
        self.forward_ms.append((time.perf_counter() - t) * 1000)
        return {"logits": torch.from_numpy(out), "aux": None}


def _calibration_feeds(pred, samples, clicks_per_film: int, seed: int):
    """Network inputs of real films with realistic hints: the 0-click prediction as 'previous' and a few landmarks
    clicked at their true places (and one feed without clicks per film)."""
    rng = np.random.default_rng(seed)
    feeds = []
    for s in samples:
        prepared = pred.prepare(s.load_image())
        auto = pred.predict(prepared)
        x = prepared.tensor.float().contiguous().numpy()
        k = pred.num_landmarks
        zero = pred._hints({}, None, prepared.original_shape).float().numpy() * 0.0
        feeds.append({"image": x, "hints": zero})
        idx = rng.choice(k, size=clicks_per_film, replace=False)
        clicks = {int(i): (float(s.coords[i][0]), float(s.coords[i][1])) for i in idx}
        feeds.append({"image": x, "hints": pred._hints(clicks, auto.coords, prepared.original_shape).float().numpy()})
    return feeds


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="aasce-spine")
    ap.add_argument("--dataset", default="aasce")
    ap.add_argument("--root", default="../shared/datasets/aasce")
    ap.add_argument("--split", default="eval")
    ap.add_argument("--calib-split", dest="calib_split", default="calib")
    ap.add_argument("--calib-films", dest="calib_films", type=int, default=16)
    ap.add_argument("--clicks", type=int, default=5)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    import types

    from napari_interactive_landmarks.cli import _dataset_samples
    from napari_interactive_landmarks.evaluation.protocol import run_click_protocol
    from napari_interactive_landmarks.inference import Predictor

    pred = Predictor.from_name(args.model, device="cpu")
    pred.set_precision("fp32")
    eager = pred.model.eval()
    ns = lambda split, limit: types.SimpleNamespace(dataset=args.dataset, root=args.root, split=split,  # noqa: E731
                                                     split_file=None, limit=limit)
    eval_samples = _dataset_samples(ns(args.split, args.limit), pred)
    calib_samples = _dataset_samples(ns(args.calib_split, args.calib_films), pred)

    class Reader(CalibrationDataReader):
        def __init__(self, feeds):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    def session(path):
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    out = {"model": args.model, "split": args.split, "films": len(eval_samples), "clicks": args.clicks,
           "calib_films": len(calib_samples), "onnxruntime": ort.__version__, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        h, w = pred.input_size
        x = torch.zeros(1, 1, h, w)
        hh = torch.zeros(1, 2 * pred.num_landmarks, (h + 1) // 2, (w + 1) // 2)
        fp32_path, int8_path = Path(tmp) / "net.onnx", Path(tmp) / "net.int8.onnx"
        # the wrapper in eval mode too: the exporter restores the wrapper's own mode afterwards, recursively (a fresh
        # wrapper is in training mode, which would leave the network's batch norms updating their statistics)
        torch.onnx.export(_Logits(eager).eval(), (x, hh), str(fp32_path), input_names=["image", "hints"],
                          output_names=["logits"], opset_version=18, dynamo=False)
        assert not any(m.training for m in eager.modules())
        t0 = time.perf_counter()
        quantize_static(str(fp32_path), str(int8_path), Reader(_calibration_feeds(pred, calib_samples, 3, 0)),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)
        out["quantize_s"] = round(time.perf_counter() - t0, 1)
        runtimes = {"eager fp32": None, "ORT fp32": session(fp32_path), "ORT int8": session(int8_path)}
        errors = {}
        for name, sess in runtimes.items():
            pred.model = eager if sess is None else OrtNetwork(eager, sess)
            t0 = time.perf_counter()
            traces = [run_click_protocol(pred, s, max_clicks=args.clicks, order="worst") for s in eval_samples]
            errors[name] = np.array([tr.errors.mean(axis=1) for tr in traces])  # (films, clicks + 1) MRE per film
            row = {"mre": [round(float(v), 3) for v in errors[name].mean(0)], "seconds": round(time.perf_counter() - t0, 1)}
            if sess is not None:
                row["forward_ms_median"] = round(float(np.median(pred.model.forward_ms)), 2)
            out["runs"][name] = row
            print(name, row, flush=True)
        pred.model = eager
    for name in ("ORT fp32", "ORT int8"):
        d = errors[name] - errors["eager fp32"]  # paired, per film and click count
        se = d.std(axis=0, ddof=1) / np.sqrt(len(d))
        out["runs"][name]["paired_mre_difference"] = [round(float(v), 3) for v in d.mean(0)]
        out["runs"][name]["paired_difference_95ci_half_width"] = [round(float(1.96 * v), 3) for v in se]
        print(name, "− eager fp32, MRE per click (mean ± 95 % CI):",
              " ".join(f"{m:+.2f}±{1.96 * e:.2f}" for m, e in zip(d.mean(0), se)))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
