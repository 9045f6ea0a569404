"""ERE quality on the AASCE eval half with and without the images whose ground-truth labels fail the
vertebra order checks (vertebrae listed out of order in the .mat file; the model's points are then
"wrong" by hundreds of pixels against a wrong label). Prints numbers from the evaluate JSON; no model run.

    python benchmarks/ere_without_label_defects.py [docs/results/aasce-spine-eval-worst.json ...]

The list of defective labels comes from docs/results/cobb-gt-smape.json (benchmarks/cobb_gt_smape.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from napari_interactive_landmarks.evaluation.calibration_stats import auroc, binned_correlation, spearman


def main(paths):
    defects = set(json.loads(Path("docs/results/cobb-gt-smape.json").read_text())["refused_by_order_checks"])
    for p in paths:
        d = json.loads(Path(p).read_text())
        names = [im["name"] for im in d["per_image"]]
        keep = np.array([n not in defects for n in names])
        err, ere = np.asarray(d["errors_0"], float), np.asarray(d["ere_0"], float)
        thr = float(d.get("calibration", {}).get("error_threshold", 20.0))
        print(f"{p}: {len(names)} images, {int((~keep).sum())} with defective labels: "
              + ", ".join(n for n in names if n in defects))
        for tag, m in (("all images", np.ones_like(keep)), ("without defective labels", keep)):
            e, u = err[m].ravel(), ere[m].ravel()
            print(f"  {tag:>25}: landmarks {e.size}, MRE {np.nanmean(e):.2f}, mean ERE {np.nanmean(u):.2f}, "
                  f"Spearman {spearman(u, e):.3f}, AUROC(> {thr:g}) {auroc(u, e > thr):.3f}, binned r "
                  f"{binned_correlation(u, e, 36)[0]:.3f} ({binned_correlation(u, e, 36, keep_partial=False)[0]:.3f} full groups)")


if __name__ == "__main__":
    main(sys.argv[1:] or ["docs/results/aasce-spine-eval-worst.json", "docs/results/aasce-spine-v1-bce10-eval-worst.json"])
