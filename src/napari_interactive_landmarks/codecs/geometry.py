"""The one place where original-image pixels and network-input pixels meet.

Pixel-centre convention: pixel i covers [i - 0.5, i + 0.5]. Rows and columns are scaled separately (the
network input has a fixed size, so the aspect ratio may change, as in the reference implementation).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def to_network(coords, orig_shape, net_shape) -> np.ndarray:
    coords = np.asarray(coords, dtype=np.float64)
    sy = net_shape[0] / orig_shape[0]
    sx = net_shape[1] / orig_shape[1]
    out = np.empty_like(coords)
    out[..., 0] = (coords[..., 0] + 0.5) * sy - 0.5
    out[..., 1] = (coords[..., 1] + 0.5) * sx - 0.5
    return out


def to_original(coords, orig_shape, net_shape) -> np.ndarray:
    coords = np.asarray(coords, dtype=np.float64)
    sy = orig_shape[0] / net_shape[0]
    sx = orig_shape[1] / net_shape[1]
    out = np.empty_like(coords)
    out[..., 0] = (coords[..., 0] + 0.5) * sy - 0.5
    out[..., 1] = (coords[..., 1] + 0.5) * sx - 0.5
    return out


def resize_image(image01: np.ndarray, net_shape) -> np.ndarray:
    """Area-aware (antialiased bilinear) resize of a 2-D float image to ``net_shape`` (H, W)."""
    t = torch.from_numpy(np.ascontiguousarray(image01, dtype=np.float32))[None, None]
    big = t.shape[-2] > net_shape[0] or t.shape[-1] > net_shape[1]
    out = F.interpolate(t, size=tuple(net_shape), mode="bilinear", align_corners=False, antialias=big)
    return out[0, 0].numpy()
