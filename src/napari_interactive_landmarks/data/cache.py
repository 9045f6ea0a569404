"""Preprocessing cache: every image decoded once, intensity-normalised, resized to the network input and
stored as uint8, with its landmarks in network pixels — so training epochs never re-decode full-size files.

The cache is one ``.npz`` per (dataset, split, input size, preprocessing version) under
``$NAPARI_LANDMARKS_CACHE/preproc`` (default ``~/.cache/napari-interactive-landmarks/preproc``). It is also
small enough (≈ 60 MB for AASCE at 512 × 256) to carry to a GPU machine.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..codecs.geometry import resize_image, to_network

PREPROC_VERSION = 1


@dataclass
class CachedSet:
    names: list
    images: np.ndarray  # (N, H, W) uint8, intensity-normalised
    coords: np.ndarray  # (N, K, 2) float32 network pixels (row, col)
    orig_shapes: np.ndarray  # (N, 2)
    orig_coords: np.ndarray  # (N, K, 2) float64 original pixels
    spacing: np.ndarray  # (N,) mm/px, NaN when unknown

    def __len__(self):
        return len(self.names)

    def subset(self, names) -> "CachedSet":
        index = {n: i for i, n in enumerate(self.names)}
        idx = np.array([index[n] for n in names])
        return CachedSet([self.names[i] for i in idx], self.images[idx], self.coords[idx], self.orig_shapes[idx],
                         self.orig_coords[idx], self.spacing[idx])


def default_cache_dir() -> Path:
    base = os.environ.get("NAPARI_LANDMARKS_CACHE")
    root = Path(base) if base else Path.home() / ".cache" / "napari-interactive-landmarks"
    return root / "preproc"


def preprocess(image: np.ndarray, input_size) -> np.ndarray:
    """Greyscale → robust [0, 1] intensity → network size. Used identically by training and inference."""
    from ..io.images import as_greyscale_2d, normalise_intensity

    return resize_image(normalise_intensity(as_greyscale_2d(image)), input_size)


def build_cache(samples, input_size, key: str, cache_dir=None, progress=True) -> CachedSet:
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha1(("|".join(s.name for s in samples) + f"{tuple(input_size)}v{PREPROC_VERSION}").encode()).hexdigest()[:10]
    path = cache_dir / f"{key}_{input_size[0]}x{input_size[1]}_{h}.npz"
    if path.is_file():
        z = np.load(path, allow_pickle=False)
        return CachedSet(list(z["names"]), z["images"], z["coords"], z["orig_shapes"], z["orig_coords"], z["spacing"])
    n = len(samples)
    k = samples[0].coords.shape[0]
    images = np.zeros((n, *input_size), np.uint8)
    coords = np.zeros((n, k, 2), np.float32)
    shapes = np.zeros((n, 2), np.int64)
    orig = np.zeros((n, k, 2), np.float64)
    spacing = np.full(n, np.nan)
    for i, s in enumerate(tqdm(samples, desc=f"preprocessing {key}", disable=not progress)):
        img = s.load_image()
        shapes[i] = img.shape[:2]
        images[i] = np.clip(np.round(preprocess(img, input_size) * 255), 0, 255).astype(np.uint8)
        coords[i] = to_network(s.coords, img.shape[:2], input_size)
        orig[i] = s.coords
        spacing[i] = np.nan if s.spacing is None else float(np.mean(s.spacing))
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, names=np.array([s.name for s in samples]), images=images, coords=coords, orig_shapes=shapes,
             orig_coords=orig, spacing=spacing)
    os.replace(tmp, path)
    return CachedSet([s.name for s in samples], images, coords, shapes, orig, spacing)
