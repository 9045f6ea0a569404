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


def _hint_factors(prev_coords, click_coords, clicked, size, sigma):
    """The separable factors of the hint maps: row Gaussians (B, ⌈H/2⌉, 2K), column Gaussians (B, ⌈W/2⌉, 2K) (zero in
    channels not drawn) and which of the 2K channels are drawn (B, 2K)."""
    dev = click_coords.device
    h2, w2 = (int(size[0]) + 1) // 2, (int(size[1]) + 1) // 2
    clicked = clicked.to(device=dev, dtype=torch.bool)
    prev = click_coords.new_full(click_coords.shape, float("nan")) if prev_coords is None else prev_coords
    pos = torch.cat([prev, click_coords], dim=1).to(torch.float32)  # (B, 2K, 2)
    keep = torch.cat([clicked, clicked], dim=1) & torch.isfinite(pos).all(-1)
    p2 = torch.where(keep[..., None], (pos + 0.5) / 2.0 - 0.5, torch.full_like(pos, -1e4))
    ys = torch.arange(h2, dtype=torch.float32, device=dev)
    xs = torch.arange(w2, dtype=torch.float32, device=dev)
    s2 = 2 * (sigma / 2.0) ** 2
    gy = torch.exp(-((ys[None, :, None] - p2[:, None, :, 0]) ** 2) / s2) * keep[:, None, :]  # (B, H/2, 2K)
    gx = torch.exp(-((xs[None, :, None] - p2[:, None, :, 1]) ** 2) / s2)  # (B, W/2, 2K)
    return gy, gx, keep


def render_hints(prev_coords: torch.Tensor | None, click_coords: torch.Tensor, clicked: torch.Tensor, size,
                 sigma: float) -> torch.Tensor:
    """The model's hint input: (B, 2K, ⌈H/2⌉, ⌈W/2⌉) — the previous prediction's Gaussians, then the clicks'
    Gaussians, both **only in clicked channels**, at stride 2 (coordinates and sigma halved; pixel-centre
    convention). ``size`` and coordinates (B, K, 2) (row, col) are network-input pixels; NaN coordinates give
    an empty channel. The one implementation used by training, validation and inference.

    Drawn as one separable product written directly in the channels-last layout the model runs in (no dense
    NCHW rendering, no layout copy); unclicked channels are zero.
    """
    gy, gx, _ = _hint_factors(prev_coords, click_coords, clicked, size, sigma)
    # one dense product written in NHWC order: the channels-last layout without a separate copy
    return (gy[:, :, None, :] * gx[:, None, :, :]).permute(0, 3, 1, 2)


def render_hint_channels(prev_coords: torch.Tensor | None, click_coords: torch.Tensor, clicked: torch.Tensor, size,
                         sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Only the channels of :func:`render_hints` that are drawn in some batch element: ``(maps (B, n, ⌈H/2⌉, ⌈W/2⌉),
    channels (n,) their indices among the 2K)`` (at least one: channel 0, all zero, when none is drawn); every other
    channel of the full hint maps is zero. After three clicks on a 68-landmark model that is 6 of 136 channels: the
    hint fusion's first convolution and the gate's pooling then skip the zeros (issue 39)."""
    gy, gx, keep = _hint_factors(prev_coords, click_coords, clicked, size, sigma)
    channels = keep.any(0).nonzero()[:, 0]
    if not len(channels):  # nothing drawn: one zero channel stands for all (the convolution of zeros is its bias)
        channels = torch.zeros(1, dtype=torch.long, device=channels.device)
    return (gy[:, :, None, channels] * gx[:, None, :, channels]).permute(0, 3, 1, 2), channels


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


def decoding_input(logits: torch.Tensor, heatmap: str = "sigmoid") -> tuple[torch.Tensor, float]:
    """What the local soft-argmax weighs, and with which ``beta``, for logits trained as ``heatmap``:
    BCE-trained logits → ``(sigmoid(logits), 10)``; softmax-NLL-trained logits → ``(logits, 1)``, so the
    window's weights are the model's own 2-D softmax probabilities restricted to the window."""
    if heatmap == "sigmoid":
        return torch.sigmoid(logits), 10.0
    if heatmap == "softmax":
        return logits, 1.0
    raise ValueError(f"heatmap must be 'sigmoid' or 'softmax', not {heatmap!r}")


def decode_strided_logits(logits: torch.Tensor, size, window: int = 15, beta: float | None = None, stride: int = 4,
                          heatmap: str = "sigmoid", top: torch.Tensor | None = None):
    """Local soft-argmax of sigmoid(bilinear-upsampled logits) at full resolution ``size``, without
    upsampling whole maps: the same result as ``local_soft_argmax(sigmoid(upsample(logits, size)))``.
    For ``heatmap="softmax"`` models the patch logits are weighed directly (``decoding_input``); the
    returned peak is then the peak *logit* (the predictor reports the calibrated map's maximum instead).

    A bilinear interpolant peaks at a grid node, so the full-resolution argmax lies within a pixel of the
    upsampled position of the coarse argmax; only a (window + 4)² patch per landmark is interpolated (with
    ``grid_sample``, which matches ``F.interpolate(..., align_corners=False)``). ``top`` (B, K): each map's argmax
    (flat index) when the caller knows it already (the shape prior's rounds, from a box; the whole-map argmax is
    the one step here that reads every cell). Returns (coords (B, K, 2) (row, col) in full-resolution pixels, peak
    sigmoid value (B, K)).
    """
    b, k, h4, w4 = logits.shape
    hh, ww = size
    sy, sx = hh / h4, ww / w4
    r = window // 2
    pad = r + 2
    flat = logits.reshape(b, k, -1).argmax(-1) if top is None else top
    iy = torch.div(flat, w4, rounding_mode="floor").to(logits.dtype)
    ix = (flat % w4).to(logits.dtype)
    cy = torch.floor((iy + 0.5) * sy - 0.5)  # full-res pixel next to the node
    cx = torch.floor((ix + 0.5) * sx - 0.5)
    offs = torch.arange(-pad, pad + 1, device=logits.device, dtype=logits.dtype)
    py = cy[..., None] + offs  # (B,K,P)
    px = cx[..., None] + offs
    # full-res pixel p samples the coarse map at (p + 0.5) / s - 0.5, clamped (F.interpolate semantics)
    gy = ((py + 0.5) / sy - 0.5).clamp(0, h4 - 1)
    gx = ((px + 0.5) / sx - 0.5).clamp(0, w4 - 1)
    ny = (2 * gy + 1) / h4 - 1
    nx = (2 * gx + 1) / w4 - 1
    n = 2 * pad + 1
    grid = torch.stack([nx[..., None, :].expand(b, k, n, n), ny[..., :, None].expand(b, k, n, n)], dim=-1)
    patch = F.grid_sample(logits.reshape(b * k, 1, h4, w4), grid.reshape(b * k, n, n, 2), mode="bilinear",
                          padding_mode="border", align_corners=False).reshape(b, k, n, n)
    patch, default_beta = decoding_input(patch, heatmap)
    beta = default_beta if beta is None else beta
    inside = ((py >= 0) & (py < hh))[..., :, None] & ((px >= 0) & (px < ww))[..., None, :]
    patch = torch.where(inside, patch, torch.full_like(patch, float("-inf")))
    # exact full-resolution argmax: within the central 5 × 5 (first maximum in raster order, like argmax)
    centre = patch[..., pad - 2 : pad + 3, pad - 2 : pad + 3].reshape(b, k, 25)
    j = centre.argmax(-1)
    ay = torch.div(j, 5, rounding_mode="floor") - 2 + pad
    ax = j % 5 - 2 + pad
    peak = centre.gather(-1, j[..., None])[..., 0]
    wo = torch.arange(-r, r + 1, device=logits.device)
    rows = (ay[..., None] + wo)[..., :, None].expand(b, k, window, window)
    cols = (ax[..., None] + wo)[..., None, :].expand(b, k, window, window)
    sub = patch.reshape(b, k, -1).gather(-1, (rows * n + cols).reshape(b, k, -1))
    prob = torch.softmax(beta * sub, dim=-1).reshape(b, k, window, window)
    dy = (prob.sum(-1) * wo.to(prob.dtype)).sum(-1)
    dx = (prob.sum(-2) * wo.to(prob.dtype)).sum(-1)
    y = cy + (ay - pad).to(logits.dtype) + dy
    x = cx + (ax - pad).to(logits.dtype) + dx
    return torch.stack([y, x], dim=-1), peak
