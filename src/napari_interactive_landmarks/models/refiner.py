"""A second, local stage: each landmark re-found in a small high-resolution crop around where the first stage put it.

The first stage sees the whole film at its input size (e.g. 768 × 624 for a 2400 × 1935 cephalogram, a stride-4
map cell of 1.24 mm); the refiner sees a ``size`` × ``size`` crop sampled every ``step`` original pixels (e.g.
64 × 64 at 3.5 px = 0.35 mm, a field of ±11 mm) centred on the first stage's point, and returns one softmax map per
landmark of the set at the crop's full resolution; landmark *k*'s crop is decoded from map *k* (the local
soft-argmax of :mod:`codecs.heatmaps`, as the first stage's softmax maps). Cascades of this kind (a global network,
then patches) are the usual way cephalometric detectors reach their last fraction of a millimetre (e.g. Zhong et
al., MICCAI 2019; Song et al., 2020).

The crops are drawn from the film once normalised (the same robust intensity scaling as the first stage) and
resized by ``1 / step`` (antialiased), then sampled bilinearly; all geometry is in original pixels, (row, col),
pixel-centre convention. Clicked landmarks are never refined: a user's point stays where it was put.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..codecs.heatmaps import local_soft_argmax

REFINER_PREFIX = "refiner."
# the card's refiner "blend" that weights each point by the two stages' expected errors (with "error_scale")
EXPECTED_ERROR_BLEND = "expected-error"


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class LocalRefiner(nn.Module):
    """A compact U-Net on a 1-channel crop; returns (N, K, size, size) logits (one softmax map per landmark)."""

    def __init__(self, num_landmarks: int, widths=(24, 48, 96, 160), size: int = 64, step: float = 3.5,
                 window: int = 9):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(f"refiner widths must be two or more positive channel counts, got {widths}")
        levels = len(widths) - 1
        if int(size) < 8 or int(size) % (2 ** levels):
            raise ValueError(f"refiner crop size {size} must be a multiple of {2 ** levels} (its {levels} poolings)")
        if not (math.isfinite(float(step)) and float(step) > 0):
            raise ValueError(f"refiner step must be a positive number of original pixels, got {step}")
        self.num_landmarks = int(num_landmarks)
        self.widths, self.size, self.step, self.window = widths, int(size), float(step), int(window)
        self.down = nn.ModuleList([_block(1, widths[0])] + [_block(widths[i], widths[i + 1]) for i in range(levels)])
        self.up = nn.ModuleList(_block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(levels)))
        self.head = nn.Conv2d(widths[0], self.num_landmarks, 1)

    def config(self) -> dict:
        return {"num_landmarks": self.num_landmarks, "widths": list(self.widths), "size": self.size,
                "step": self.step, "window": self.window}

    @classmethod
    def from_config(cls, cfg: dict) -> "LocalRefiner":
        unknown = set(cfg) - {"num_landmarks", "widths", "size", "step", "window"}
        if unknown:
            raise ValueError(f"refiner config: unknown keys {sorted(unknown)}")
        return cls(cfg["num_landmarks"], cfg.get("widths", (24, 48, 96, 160)), cfg.get("size", 64),
                   cfg.get("step", 3.5), cfg.get("window", 9))

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        skips = []
        x = crops
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], 1))
        return self.head(x)


def fine_image(image01: np.ndarray, step: float) -> torch.Tensor:
    """(1, 1, h, w) float32 in [-1, 1]: the normalised film resized by ``1 / step`` (antialiased), the crops' source."""
    from ..codecs.geometry import resize_image

    h, w = image01.shape
    size = (max(8, round(h / step)), max(8, round(w / step)))
    return torch.from_numpy(resize_image(image01, size) * 2.0 - 1.0)[None, None]


def crop_offsets(size: int, step, angle=None, device=None) -> torch.Tensor:
    """(N, size, size, 2) original-pixel (row, col) offsets of every crop pixel from the crop's centre: the crop's
    pixels ``step`` original pixels apart (per crop, (N,)), rotated by ``angle`` radians (per crop; None = 0)."""
    step = torch.as_tensor(step, dtype=torch.float32, device=device).reshape(-1)
    n = step.shape[0]
    half = (size - 1) / 2.0
    r = torch.arange(size, dtype=torch.float32, device=device) - half
    base = torch.stack(torch.meshgrid(r, r, indexing="ij"), -1)  # (S, S, 2) row, col
    off = base[None] * step[:, None, None, None]
    if angle is not None:
        a = torch.as_tensor(angle, dtype=torch.float32, device=device).reshape(-1)
        cos, sin = torch.cos(a)[:, None, None], torch.sin(a)[:, None, None]
        off = torch.stack([cos * off[..., 0] - sin * off[..., 1], sin * off[..., 0] + cos * off[..., 1]], -1)
    return off.expand(n, size, size, 2) if off.shape[0] != n else off


def sample_crops(fine: torch.Tensor, shape, centres: torch.Tensor, size: int, step, angle=None) -> torch.Tensor:
    """(N, 1, size, size) crops of the film ``fine`` (its :func:`fine_image`, original shape ``shape``) centred on
    ``centres`` (N, 2) original pixels; outside the film the border pixels repeat."""
    h, w = shape
    pos = centres[:, None, None, :].float() + crop_offsets(size, step, angle, fine.device)
    gx = (2.0 * (pos[..., 1] + 0.5) / w) - 1.0
    gy = (2.0 * (pos[..., 0] + 0.5) / h) - 1.0
    n = centres.shape[0]
    grid = torch.stack([gx, gy], -1).reshape(1, n * size, size, 2)
    out = F.grid_sample(fine, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.reshape(1, n, size, size).permute(1, 0, 2, 3).contiguous()


def to_crop(points: torch.Tensor, centres: torch.Tensor, size: int, step, angle=None) -> torch.Tensor:
    """Original-pixel points (N, M, 2) → crop pixels of each of the N crops (the inverse of the crops' sampling)."""
    step = torch.as_tensor(step, dtype=torch.float32, device=points.device).reshape(-1, 1)
    d = points.float() - centres[:, None, :].float()
    if angle is not None:
        a = torch.as_tensor(angle, dtype=torch.float32, device=points.device).reshape(-1, 1)
        cos, sin = torch.cos(a), torch.sin(a)
        d = torch.stack([cos * d[..., 0] + sin * d[..., 1], -sin * d[..., 0] + cos * d[..., 1]], -1)
    return d / step[..., None] + (size - 1) / 2.0


def from_crop(points: torch.Tensor, centres: torch.Tensor, size: int, step) -> torch.Tensor:
    """Crop pixels (N, 2) of unrotated crops → original pixels."""
    step = torch.as_tensor(step, dtype=torch.float32, device=points.device).reshape(-1, 1)
    return centres.float() + (points.float() - (size - 1) / 2.0) * step


@torch.no_grad()
def refine_points(refiner: LocalRefiner, fine: torch.Tensor, shape, coords: np.ndarray, which,
                  expected_error: np.ndarray | None = None) -> np.ndarray:
    """``coords`` (K, 2) original pixels with the landmarks ``which`` (indices) re-found in their crops; the others
    unchanged. A landmark whose refined place is not finite keeps its first-stage place. ``expected_error`` (K,),
    when given, receives each refined landmark's expected radial error under its own softmax map about the refined
    place (original pixels; the map uncalibrated), NaN for the others."""
    out = np.array(coords, dtype=np.float64, copy=True)
    idx = np.asarray(list(which), dtype=np.int64)
    if expected_error is not None:
        expected_error[:] = np.nan
    if idx.size == 0:
        return out
    centres = torch.as_tensor(out[idx], dtype=torch.float32, device=fine.device)
    crops = sample_crops(fine, shape, centres, refiner.size, refiner.step)
    logits = refiner(crops)  # (n, K, S, S)
    own = logits[torch.arange(len(idx)), torch.as_tensor(idx, device=logits.device)][:, None]  # (n, 1, S, S)
    local = local_soft_argmax(own.float(), window=refiner.window, beta=1.0)[:, 0]
    new = from_crop(local, centres, refiner.size, refiner.step).double().cpu().numpy()
    ok = np.isfinite(new).all(axis=1)
    out[idx[ok]] = new[ok]
    if expected_error is not None:
        s = refiner.size
        prob = torch.softmax(own.float().reshape(len(idx), -1), dim=-1).reshape(len(idx), s, s)
        grid = torch.stack(torch.meshgrid(torch.arange(s, dtype=torch.float32), torch.arange(s, dtype=torch.float32),
                                          indexing="ij"), dim=-1).to(prob.device)  # (S, S, 2)
        dist = torch.linalg.vector_norm(grid[None] - local[:, None, None, :], dim=-1)  # (n, S, S) crop pixels
        ere = (prob * dist).sum((1, 2)).double().cpu().numpy() * float(refiner.step)
        expected_error[idx[ok]] = ere[ok]
    return out
