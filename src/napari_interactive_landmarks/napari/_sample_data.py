"""npe2 sample data: a generated, clearly synthetic spine phantom (no patient data)."""

from __future__ import annotations

import numpy as np

from ..data.phantom import make_phantom
from ._layers import META_KEY

__all__ = ["phantom_spine"]


def phantom_spine() -> list[tuple]:
    """A 1024 × 512 float32 phantom of 6 quadrilateral "vertebrae" (fixed seed), as an image layer tuple."""
    image, _coords = make_phantom(np.random.default_rng(2024), shape=(1024, 512), num_vertebrae=6)
    meta = {META_KEY: {"image_path": None, "spacing_mm": None, "synthetic": True}}
    return [(image.astype(np.float32, copy=False),
             {"name": "spine phantom (synthetic)", "colormap": "gray", "metadata": meta}, "image")]
