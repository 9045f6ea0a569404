"""Training curves from runs' metrics.csv: validation MRE at each click count it records (val_mre@0, @2, …) per
epoch, one colour per run, solid = 0 clicks, dashed = the larger click count; for a refiner run (train-refiner) the
refined points' MRE, solid, and the first stage's it starts from, dashed.

    python benchmarks/plot_training_curves.py runs/aasce-spine-gpu/metrics.csv runs/aasce-spine-gpu-bf16/metrics.csv \
        --out docs/images/aasce-spine-training.png --title "aasce-spine on one H100"
"""

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read(path):
    """{curve name: [(epoch, value)]}: "0 clicks", "2 clicks", … from a trainer's val_mre@N columns, or, from a
    refiner run (train-refiner), "refined" and the constant "first stage" it starts from."""
    rows = list(csv.DictReader(Path(path).open()))
    header = rows[0] if rows else {}
    cols = {f"{c.split('@')[1]} click{'s' if c.split('@')[1] != '1' else ''}": c
            for c in sorted(header, key=lambda c: int(c.split("@")[1]) if c.startswith("val_mre@") else 0)
            if c.startswith("val_mre@")}
    if not cols and "val_refined" in header:
        cols = {"refined": "val_refined", "first stage": "val_first_stage"}
    return {name: [(int(r["epoch"]), float(r[c])) for r in rows if r.get(c) not in (None, "")]
            for name, c in cols.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("metrics", nargs="+", help="runs/<name>/metrics.csv or <name>.metrics.csv files (<name> labels the curve)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--title", default="validation MRE per epoch")
    ap.add_argument("--unit", default="px")
    args = ap.parse_args()
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    for n, path in enumerate(args.metrics):
        path = Path(path)  # runs/<name>/metrics.csv, or <name>.metrics.csv as gpu_train.sh collect returns it
        label = path.parent.name if path.name == "metrics.csv" else path.name.removesuffix(".csv").removesuffix(".metrics")
        colour = f"C{n}"
        for j, (curve, pts) in enumerate(read(path).items()):
            if not pts:
                continue
            ep, v = zip(*pts)
            ax.plot(ep, v, color=colour, linestyle="-" if j == 0 else "--", marker=".", label=f"{label}: {curve}")
            best = min(range(len(v)), key=v.__getitem__)
            ax.annotate(f"{v[best]:.1f}", (ep[best], v[best]), textcoords="offset points", xytext=(0, -12),
                        ha="center", fontsize=7, color=colour)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation MRE ({args.unit})")
    ax.set_title(args.title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
