"""A generated, clearly synthetic spine-like phantom: a curved column of bright quadrilateral "vertebrae"
on a noisy background, with their four corners as landmarks (top-left, top-right, bottom-left,
bottom-right — the AASCE order). Used by tests, the demo and the sample data; no patient data involved."""

from __future__ import annotations

import numpy as np
from skimage.draw import polygon


def phantom_schema_dict(num_vertebrae: int = 6) -> dict:
    corners = ["top_left", "top_right", "bottom_left", "bottom_right"]
    names = [f"V{v + 1}_{c}" for v in range(num_vertebrae) for c in corners]
    flips, edges = [], []
    for v in range(num_vertebrae):
        b = 4 * v
        flips += [[b, b + 1], [b + 2, b + 3]]
        edges += [[b, b + 1], [b + 1, b + 3], [b + 3, b + 2], [b + 2, b]]
    return {"name": f"phantom-spine{4 * num_vertebrae}", "description": "Synthetic spine phantom (generated)",
            "landmarks": names, "flip_pairs": flips, "edges": edges,
            "groups": {f"V{v + 1}": [4 * v + i for i in range(4)] for v in range(num_vertebrae)}}


def make_phantom(rng: np.random.Generator, shape=(512, 256), num_vertebrae: int = 6, noise: float = 0.08,
                 curve: float | None = None):
    """Returns (image float32 (H, W) in [0, 1], coords (4·V, 2) float64 (row, col))."""
    h, w = shape
    img = np.zeros(shape, np.float32)
    # smooth lateral curve (scoliosis-like): centre column as a sine of the row
    amp = (curve if curve is not None else rng.uniform(-0.12, 0.12)) * w
    phase = rng.uniform(0, np.pi)
    top, bottom = 0.08 * h + rng.uniform(0, 0.04 * h), 0.92 * h - rng.uniform(0, 0.04 * h)
    pitch = (bottom - top) / num_vertebrae
    height = pitch * rng.uniform(0.62, 0.75)
    width = w * rng.uniform(0.28, 0.36)
    coords = []
    for v in range(num_vertebrae):
        cy = top + pitch * (v + 0.5)
        t = (cy - top) / (bottom - top)
        cx = w / 2 + amp * np.sin(np.pi * t + phase)
        slope = amp * np.pi / (bottom - top) * np.cos(np.pi * t + phase)  # d(cx)/d(row)
        ang = -np.arctan(slope) + rng.normal(0, 0.03)
        ca, sa = np.cos(ang), np.sin(ang)
        local = np.array([[-height / 2, -width / 2], [-height / 2, width / 2], [height / 2, -width / 2], [height / 2, width / 2]])
        local = local * rng.uniform(0.95, 1.05, size=(4, 2))
        rot = np.array([[ca, -sa], [sa, ca]])
        pts = local @ rot.T + np.array([cy, cx])
        coords.append(pts)
        rr, cc = polygon(pts[[0, 1, 3, 2], 0], pts[[0, 1, 3, 2], 1], shape)
        img[rr, cc] = rng.uniform(0.55, 0.8)
    coords = np.concatenate(coords).astype(np.float64)
    yy = np.linspace(-1, 1, h)[:, None]
    img += 0.15 * np.exp(-(yy**2) / 0.5)  # soft-tissue-like vertical gradient
    from scipy.ndimage import gaussian_filter

    img = gaussian_filter(img, sigma=max(1.0, h / 400))
    img += rng.normal(0, noise, size=shape).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32), coords


def phantom_set(n: int, seed: int = 0, shape=(512, 256), num_vertebrae: int = 6):
    """n phantoms: (images (n, H, W) float32, coords (n, K, 2))."""
    rng = np.random.default_rng(seed)
    ims, cs = zip(*(make_phantom(rng, shape, num_vertebrae) for _ in range(n)))
    return np.stack(ims), np.stack(cs)
