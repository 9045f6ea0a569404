"""Coordinates <-> heatmaps in network-input pixels: Gaussian targets and click maps, local soft-argmax."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gaussian_heatmaps(coords: torch.Tensor, size, sigma: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Render exp(-d²/2σ²) at ``coords`` (B, K, 2) (row, col) on an (H, W) grid → (B, K, H, W).

    ``mask`` (B, K) bool zeroes the channels that are False (e.g. unclicked landmarks). NaN coordinates
    give an all-zero channel.
    """
    h, w = size
    coords = coords.to(torch.float32)
    ys = torch.arange(h, dtype=torch.float32, device=coords.device)
    xs = torch.arange(w, dtype=torch.float32, device=coords.device)
    valid = torch.isfinite(coords).all(-1)
    c = torch.where(valid[..., None], coords, torch.full_like(coords, -1e4))
    gy = torch.exp(-((ys[None, None, :] - c[..., 0:1]) ** 2) / (2 * sigma**2))  # (B,K,H)
    gx = torch.exp(-((xs[None, None, :] - c[..., 1:2]) ** 2) / (2 * sigma**2))  # (B,K,W)
    maps = gy[..., :, None] * gx[..., None, :]
    keep = valid if mask is None else (valid & mask.to(torch.bool))
    return maps * keep[..., None, None].to(maps.dtype)


def local_soft_argmax(heatmaps: torch.Tensor, window: int = 15, beta: float = 10.0) -> torch.Tensor:
    """Hard argmax of each (H, W) map, then a softmax(beta · values) over a window × window patch around
    it; returns the argmax position plus the expected offset, (B, K, 2) (row, col), differentiable with
    respect to the patch values. Patches are zero-padded at the border."""
    b, k, h, w = heatmaps.shape
    r = window // 2
    flat = heatmaps.reshape(b, k, -1)
    idx = flat.argmax(-1)
    cy = torch.div(idx, w, rounding_mode="floor")
    cx = idx % w
    padded = F.pad(heatmaps, (r, r, r, r), value=float("-inf"))
    offs = torch.arange(-r, r + 1, device=heatmaps.device)
    rows = (cy[..., None] + offs + r)  # (B,K,win) in padded coords
    cols = (cx[..., None] + offs + r)
    pw = w + 2 * r
    lin = rows[..., :, None] * pw + cols[..., None, :]  # (B,K,win,win)
    patch = torch.gather(padded.reshape(b, k, -1), 2, lin.reshape(b, k, -1))
    prob = torch.softmax(beta * patch, dim=-1).reshape(b, k, window, window)
    dy = (prob.sum(-1) * offs.to(prob.dtype)).sum(-1)
    dx = (prob.sum(-2) * offs.to(prob.dtype)).sum(-1)
    return torch.stack([cy.to(prob.dtype) + dy, cx.to(prob.dtype) + dx], dim=-1)
