"""Which AASCE films ``label_order: anatomical`` re-orders, and how (data/label_order.py). Prints; asserts nothing.

    python experiments/benchmarks/label_order_report.py --root ../shared/datasets [--split training]
"""

from __future__ import annotations

import argparse


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True, help="dataset root (containing aasce/ or boostnet_labeldata/)")
    ap.add_argument("--split", default="training")
    args = ap.parse_args()

    from napari_interactive_landmarks.data.datasets import load_aasce
    from napari_interactive_landmarks.data.label_order import anatomical_permutation

    samples = load_aasce(args.root, args.split)
    changed = 0
    for s in samples:
        _, changes = anatomical_permutation("aasce-spine68", s.coords)
        if changes:
            changed += 1
            print(f"{s.name}: {'; '.join(changes)}")
    print(f"{changed} of {len(samples)} films re-ordered")


if __name__ == "__main__":
    main()
