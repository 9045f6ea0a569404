"""How faithful a training pack is to the raw dataset it was made from: file size, and the difference between the
pack's JPEG-compressed images and the preprocessing cache's exact ones (grey levels of 255); landmarks must be
identical.

    python experiments/benchmarks/pack_fidelity.py --config configs/aasce-spine.yaml --root ../shared/datasets/aasce \
        --pack packs/aasce-spine.pack.npz
"""

import argparse
from pathlib import Path

import numpy as np

from napari_interactive_landmarks.data.pack import read_pack
from napari_interactive_landmarks.schemas import load_schema
from napari_interactive_landmarks.training.trainer import load_config, raw_dataset_sets


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--pack", required=True)
    args = ap.parse_args()
    cfg = load_config(args.config)
    cfg["root"] = args.root
    raw = raw_dataset_sets(cfg, tuple(cfg["input_size"]), load_schema(cfg["schema"]), progress=False)
    header, *packed = read_pack(args.pack)
    raw_mb = sum(s.images.nbytes for s in raw) / 2**20
    print(f"{Path(args.pack).name}: {Path(args.pack).stat().st_size / 2**20:.1f} MB "
          f"(uint8 images alone: {raw_mb:.1f} MB), JPEG quality {header['jpeg_quality']}")
    for part, a, b in zip(("train", "val"), raw, packed):
        assert a.names == b.names
        same = all(np.array_equal(x, y, equal_nan=True) for x, y in
                   ((a.coords, b.coords), (a.orig_coords, b.orig_coords), (a.orig_shapes, b.orig_shapes)))
        d = np.abs(a.images.astype(np.int16) - b.images.astype(np.int16))
        print(f"  {part}: {len(a)} images; landmarks identical: {same}; |image difference| in grey levels: "
              f"mean {d.mean():.3f}, 99th percentile {np.percentile(d, 99):.0f}, max {d.max()}")


if __name__ == "__main__":
    main()
