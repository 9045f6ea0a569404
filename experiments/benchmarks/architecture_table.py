"""The issue-12 comparison of architectures on ISBI 2015 Test1Data, as markdown for docs/results.md: one summary
row per model (0-click MRE / SDR, calibration, CPU update time, weights size) beside the papers' figures, then
MRE and SDR@2 mm per click with the manual-revision baseline and the harm rate, then each model against the
first on the same films (mean per-image difference, Wilcoxon signed-rank p).

Each model is given by the files the package's own commands write:

    napari-landmarks evaluate --weights W --dataset isbi2015 --root R --split Test1Data --clicks 5 --json E.json
    napari-landmarks bench --weights W --size 2400 1935 --threads 2 --runs 30 --json B.json

    python experiments/benchmarks/architecture_table.py \
        --model "HRNet-W18s (isbi-ceph)" docs/results/isbi-ceph-test1-worst.json docs/results/bench-isbi-ceph.json \
                src/napari_interactive_landmarks/weights/isbi-ceph.safetensors \
        --model "CHH U-Net half" E.json B.json W

A bench JSON or weights file given as "-" leaves its columns empty. WEIGHTS may also be the JSON that
`--facts-out` wrote for that file (a table can then be rebuilt after the run folder is gone). Prints the markdown
to stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from pathlib import Path

import numpy as np

from safetensors import safe_open

# Test1Data figures as published (input size, MRE mm, SDR % at 2 / 2.5 / 3 / 4 mm). Both start from ImageNet
# encoders; FARNet selected its model on Test1Data itself (its paper: "the Test1 dataset for validation").
PAPERS = [
    ("FARNet (Ao & Wu 2022), DenseNet-121 ImageNet", "800 × 640", 1.12, (88.03, 92.73, 95.96, 98.48)),
    ("CHH U-Net (McCouat & Voiculescu 2022), ResNet-34 ImageNet", "800 × 640", 1.20, (83.47, 89.16, 92.60, 96.49)),
]
RADII = ("2", "2.5", "3", "4")


def _num(x, nd=2, unit=""):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{nd}f}{unit}"


def weights_facts(path: str | None) -> dict:
    """Parameter count, file size and input size of a safetensors weights file (read without unpickling)."""
    if not path or path == "-":
        return {}
    p = Path(path)
    if p.suffix == ".json":
        return json.loads(p.read_text())
    n = 0
    with safe_open(str(p), framework="numpy") as f:
        meta = f.metadata() or {}
        for key in f.keys():
            shape = f.get_slice(key).get_shape()
            n += math.prod(shape) if shape else 1
    size = json.loads(meta["input_size"]) if "input_size" in meta else None
    return {"params_m": n / 1e6, "mib": p.stat().st_size / 2**20,
            "input": f"{size[0]} × {size[1]}" if size else None}


def load_json(path: str | None) -> dict:
    return json.loads(Path(path).read_text()) if path and path != "-" else {}


def summary_table(models: list[tuple[str, dict, dict, dict]]) -> str:
    rows = ["| model | input | MRE 0 clicks (mm) | SDR 2 / 2.5 / 3 / 4 mm (%) | ECE before → after | ERE AUROC | "
            "CPU update median / p95 (ms) | fp16 weights | params |",
            "|---|---|---|---|---|---|---|---|---|"]
    for label, ev, be, wf in models:
        sdr = " / ".join(_num((ev.get("sdr") or {}).get(r, [None])[0], 1) for r in RADII)
        cal = ev.get("calibration") or {}
        ece = f"{_num(cal.get('ece_before'), 4)} → {_num(cal.get('ece_after'), 4)}" if cal else "–"
        lat = f"{_num(be.get('median_ms'), 0)} / {_num(be.get('p95_ms'), 0)}" if be else "–"
        rows.append(f"| {label} | {wf.get('input') or '–'} | {_num((ev.get('mre_model') or [None])[0])} | {sdr} | {ece} | "
                    f"{_num(cal.get('ere_auroc'), 3)} | {lat} | {_num(wf.get('mib'), 1, ' MiB')} | "
                    f"{_num(wf.get('params_m'), 2, ' M')} |")
    for label, size, mre, sdrs in PAPERS:
        rows.append(f"| *{label}* | {size} | *{mre:.2f}* | *{' / '.join(f'{v:.2f}' for v in sdrs)}* | – | – | – | – | – |")
    return "\n".join(rows)


def clicks_table(models: list[tuple[str, dict, dict, dict]]) -> str:
    n = max((len(ev.get("mre_model") or []) for _, ev, _, _ in models), default=1)
    head = "| model | " + " | ".join(f"{c} clicks" for c in range(n)) + " | harm rate (all clicks) |"
    rows = [head, "|---" * (n + 2) + "|"]
    for label, ev, _, _ in models:
        mm, mh = ev.get("mre_model") or [], ev.get("mre_manual") or []
        s2, s2h = (ev.get("sdr") or {}).get("2") or [], (ev.get("sdr_manual") or {}).get("2") or []
        cells = []
        for c in range(n):
            if c >= len(mm):
                cells.append("–")
                continue
            cell = f"{_num(mm[c])} mm, {_num(s2[c] if c < len(s2) else None, 1)} %"
            if c and c < len(mh):
                cell += f" (manual {_num(mh[c])}, {_num(s2h[c] if c < len(s2h) else None, 1)} %)"
            cells.append(cell)
        rows.append(f"| {label} | " + " | ".join(cells) + f" | {_num(ev.get('harm_rate_all'), 1, ' %')} |")
    return "\n".join(rows)


def paired_table(models: list[tuple[str, dict, dict, dict]]) -> str:
    """Each model against the first, image by image (the same films): the mean difference of the per-image MRE at
    0 clicks and at the last click, with the two-sided Wilcoxon signed-rank p-value."""
    from scipy.stats import wilcoxon

    base_label, base = models[0][0], models[0][1]
    by_name = {im["name"]: im["mre_model"] for im in base.get("per_image") or []}
    rows = [f"| model − {base_label} | images | Δ MRE 0 clicks (p) | Δ MRE last click (p) |", "|---|---|---|---|"]
    for label, ev, _, _ in models[1:]:
        pairs = [(by_name[im["name"]], im["mre_model"]) for im in ev.get("per_image") or [] if im["name"] in by_name]
        if not pairs:
            continue
        cells = []
        for j in (0, -1):
            d = np.array([b[j] - a[j] for a, b in pairs], dtype=float)
            d = d[np.isfinite(d)]
            p = wilcoxon(d).pvalue if np.any(d != 0) else 1.0
            cells.append(f"{d.mean():+.3f} {ev.get('unit', '')} (p = {p:.2g})")
        rows.append(f"| {label} | {len(pairs)} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", nargs=4, action="append", default=[],
                    metavar=("LABEL", "EVAL_JSON", "BENCH_JSON", "WEIGHTS"))
    ap.add_argument("--facts-out", nargs=2, metavar=("WEIGHTS", "JSON"),
                    help="only write WEIGHTS' parameter count, file size and input size to JSON, then exit")
    args = ap.parse_args(argv)
    if args.facts_out:
        w, out = args.facts_out
        digest = hashlib.sha256(Path(w).read_bytes()).hexdigest()
        Path(out).write_text(json.dumps({**weights_facts(w), "file": w, "sha256": digest}, indent=1) + "\n")
        return
    if not args.model:
        ap.error("give at least one --model LABEL EVAL_JSON BENCH_JSON WEIGHTS")
    models = [(label, load_json(e), load_json(b), weights_facts(w)) for label, e, b, w in args.model]
    print(summary_table(models))
    print()
    print("MRE and SDR@2 mm per click (worst-first clicks at the ground truth); in brackets the manual-revision "
          "baseline (only the clicked landmarks corrected):")
    print()
    print(clicks_table(models))
    if len(models) > 1:
        print()
        print(paired_table(models))


if __name__ == "__main__":
    main()
