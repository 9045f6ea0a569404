"""Preprocessing cache: every image decoded once, intensity-normalised, resized to the network input and
stored as uint8, with its landmarks in network pixels — so training epochs never re-decode full-size files.

The cache is one ``.npz`` per (dataset, split, input size, content) under ``$NAPARI_LANDMARKS_CACHE/preproc``
(default ``~/.cache/napari-interactive-landmarks/preproc``). It is also small enough (≈ 60 MB for AASCE at
512 × 256) to carry to a GPU machine.

An entry is keyed by **content**, never by file names alone (:func:`content_key`): the SHA-256 of every image
file's bytes (of the array for generated images), each sample's name, landmarks, image shape and spacing, the
input size and the preprocessing (:data:`PREPROC_VERSION` and the source of the functions that decode,
normalise and resize). A corrected label or a replaced film is a new key, so it reaches the next training run;
two folders with the same file names never share an entry. Hashing is cheap next to preprocessing: the 481
AASCE films (56 MB) take 0.1 s, 481 films of 5 MB about 3 s, on one CPU core (files in the page cache).
When a new entry is written, the older entries of the *same* images (the same file paths, same split part and
input size) are removed: editing labels does not pile up stale copies.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..codecs.geometry import resize_image, to_network

PREPROC_VERSION = 1
CACHE_KEY_VERSION = 2  # what a cache entry's key covers (2: content of images, labels, spacing, preprocessing)

log = logging.getLogger(__name__)


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


def file_digest(path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _preprocessing_fingerprint() -> str:
    """The preprocessing version and the source of the functions a cache entry's images and coordinates come
    from: an edit to any of them is a new key, even when nobody remembered to bump the version."""
    from ..codecs import geometry
    from ..io import images

    parts = [f"key v{CACHE_KEY_VERSION} preproc v{PREPROC_VERSION}"]
    for fn in (preprocess, images.read_image, images.as_greyscale_2d, images.normalise_intensity,
               geometry.resize_image, geometry.to_network):
        try:
            parts.append(inspect.getsource(fn))
        except (OSError, TypeError):  # no source (frozen install): the version alone
            parts.append(getattr(fn, "__qualname__", str(fn)))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def sample_digest(sample) -> str:
    """Content of one sample as the cache sees it: name, image bytes (or the generated array), landmarks,
    image shape, spacing."""
    h = hashlib.sha256()
    h.update(str(sample.name).encode() + b"\0")
    array = getattr(sample, "extra", {}).get("array")
    if array is not None:
        a = np.ascontiguousarray(array)
        h.update(f"array {a.dtype.str} {a.shape}".encode())
        h.update(a.tobytes())
    else:
        h.update(b"file " + file_digest(sample.image_path).encode())
    h.update(np.ascontiguousarray(np.asarray(sample.coords, np.float64)).tobytes())
    h.update(repr((tuple(int(v) for v in sample.image_shape) if sample.image_shape is not None else None,
                   None if sample.spacing is None else float(np.mean(sample.spacing)))).encode())
    return h.hexdigest()


def content_key(samples, input_size) -> str:
    """The key of a cache entry: every sample's :func:`sample_digest` in order, the input size and the
    preprocessing fingerprint."""
    h = hashlib.sha256(_preprocessing_fingerprint().encode())
    h.update(repr(tuple(int(v) for v in input_size)).encode())
    for s in samples:
        h.update(sample_digest(s).encode())
    return h.hexdigest()[:16]


def _source_key(samples) -> str:
    """Which images an entry is of (their paths, or names for generated ones), whatever their content: the
    entries of one source are versions of each other, and only the newest is kept."""
    ids = sorted(str(s.name) if "array" in getattr(s, "extra", {}) else os.path.abspath(s.image_path) for s in samples)
    return hashlib.sha1("\n".join(ids).encode()).hexdigest()[:8]


def build_cache(samples, input_size, key: str, cache_dir=None, progress=True) -> CachedSet:
    """The preprocessed set of ``samples`` at ``input_size``, from the cache when an entry with the same content
    exists (see :func:`content_key`), else built and stored. ``key`` names the entry (dataset, split part)."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{key}_{input_size[0]}x{input_size[1]}_{_source_key(samples)}"
    path = cache_dir / f"{stem}_{content_key(samples, input_size)}.npz"
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
    for old in cache_dir.iterdir():  # earlier versions of the same images (labels or films edited)
        if old != path and old.name.startswith(stem + "_") and len(old.name) == len(path.name) and old.suffix == ".npz":
            try:
                old.unlink()
                log.info("preprocessing cache: removed %s (superseded by %s)", old.name, path.name)
            except OSError:
                pass
    return CachedSet([s.name for s in samples], images, coords, shapes, orig, spacing)
