"""The interactive keypoint model of Kim et al. (MICCAI 2022): HRNet + OCR, hint fusion and
interaction-guided gating. One config dict builds it (``build_model``); the same dict is stored with the
weights in ``weights_manifest.yaml``.

Network-space conventions (this module and ``codecs`` only): the image is a (B, 1, H, W) tensor scaled to
[-1, 1]; hints are (B, 2K, H/2, W/2): the K previous-prediction maps then the K click maps, rendered at the
stem's stride 2 (where the reference adds them after a stride-2 conv of full-resolution maps — same place,
4× less work); outputs are logits at stride 4, which ``upsample_logits`` brings to any resolution
(bilinear, as in the reference).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..codecs.heatmaps import render_hints

from .hrnet import HRNet, conv_bn
from .ocr import OCRHead

PRESETS = {
    # The paper's configuration (HRNet-W32 + OCR 256/128), for a GPU. ≈ 19 GFLOPs at 512 × 256.
    "hrnet-w32": {
        "backbone": {"stem_channels": 64, "layer1_blocks": 4, "layer1_planes": 64, "widths": [32, 64, 128, 256],
                     "stage_modules": [1, 4, 3], "stage_blocks": [4, 4, 4]},
        "ocr": {"mid_channels": 256, "key_channels": 128, "aux_channels": None},
        "gating_channels": 256,
    },
    # Compact configuration for CPU training and interactive CPU inference.
    "hrnet-w18s": {
        "backbone": {"stem_channels": 32, "layer1_blocks": 1, "layer1_planes": 32, "widths": [18, 36, 72, 144],
                     "stage_modules": [1, 1, 1], "stage_blocks": [2, 2, 2]},
        "ocr": {"mid_channels": 96, "key_channels": 48, "aux_channels": 96, "conv_kernel": 1},
        "gating_channels": 64,
    },
    # Tiny configuration for tests, the synthetic demo and the sample-data model (trains in minutes on a CPU).
    "hrnet-tiny": {
        "backbone": {"stem_channels": 16, "layer1_blocks": 1, "layer1_planes": 16, "widths": [8, 16, 32, 64],
                     "stage_modules": [1, 1, 1], "stage_blocks": [1, 1, 1]},
        "ocr": {"mid_channels": 32, "key_channels": 16, "aux_channels": 32, "conv_kernel": 1},
        "gating_channels": 32,
    },
}

DEFAULTS = {
    "arch": "interactive-hrnet-ocr",
    "preset": "hrnet-w18s",
    "num_landmarks": None,
    "in_channels": 1,
    "hint_fusion": True,       # ablation switch: False ignores clicks/previous inside the network
    "gating": "max",           # "max" (paper), "avg" (SE-style ablation) or "none"
    "hint_scale_init": 0.05,
    # how the logits were trained, and so how they are decoded: "sigmoid" = per-pixel BCE on Gaussian targets
    # (Kim et al.); "softmax" = 2-D softmax + NLL (McCouat & Voiculescu), decoded from the logits themselves
    "heatmap": "sigmoid",
    # sigma (network-input pixels) of the Gaussians the model draws for its clicks and previous prediction; set
    # from the model card's sigma when a model is built for training or inference (not a parameter)
    "hint_sigma": None,
}


def resolve_config(config: dict) -> dict:
    """Fill a (possibly partial) config dict with the preset and defaults; the result is self-contained."""
    cfg = copy.deepcopy(DEFAULTS)
    cfg.update(copy.deepcopy(config))
    preset = cfg.get("preset")
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown model preset '{preset}'; known: {', '.join(PRESETS)}")
        base = copy.deepcopy(PRESETS[preset])
        for key in ("backbone", "ocr"):
            base[key].update(cfg.get(key) or {})
            cfg[key] = base[key]
        cfg.setdefault("gating_channels", base["gating_channels"])
        if cfg.get("gating_channels") is None:
            cfg["gating_channels"] = base["gating_channels"]
    if not cfg.get("num_landmarks"):
        raise ValueError("model config needs 'num_landmarks'")
    if cfg["heatmap"] not in ("sigmoid", "softmax"):
        raise ValueError(f"heatmap must be 'sigmoid' or 'softmax', not {cfg['heatmap']!r}")
    if cfg["gating"] not in ("max", "avg", "none"):
        raise ValueError(f"gating must be 'max', 'avg' or 'none', not {cfg['gating']!r}")
    return cfg


class HintFusion(nn.Module):
    """2K hint maps (stride 2) → 1×1 conv → 16 → LeakyReLU → 3×3 conv → stem channels, times a learnable |s|."""

    def __init__(self, num_landmarks, stem_channels, scale_init=0.05):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(2 * num_landmarks, 16, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(16, stem_channels, 3, 1, 1),
        )
        self.scale = nn.Parameter(torch.tensor(float(scale_init)))

    def forward(self, hints):
        return self.body(hints) * self.scale.abs()


class InteractionGate(nn.Module):
    """Channel gate from layer1 features + click maps: 3 conv-BN-ReLU, global max (or mean) pool, FC, sigmoid."""

    def __init__(self, in_channels, num_landmarks, out_channels, mid=256, pooling="max"):
        super().__init__()
        self.convs = nn.Sequential(conv_bn(in_channels + num_landmarks, mid, 3, 2), conv_bn(mid, mid, 3), conv_bn(mid, mid, 3))
        self.fc = nn.Sequential(nn.Conv2d(mid, 16, 1), nn.ReLU(inplace=True), nn.Conv2d(16, out_channels, 1))
        self.pooling = pooling

    def forward(self, l1, clicks):
        clicks = F.adaptive_avg_pool2d(clicks, l1.shape[-2:])
        x = self.convs(torch.cat([l1, clicks], dim=1))
        x = torch.amax(x, dim=(2, 3), keepdim=True) if self.pooling == "max" else x.mean(dim=(2, 3), keepdim=True)
        return torch.sigmoid(self.fc(x))


class InteractiveKeypointModel(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        cfg = resolve_config(config)
        self.config = cfg
        k = cfg["num_landmarks"]
        self.num_landmarks = k
        self.heatmap = cfg["heatmap"]  # how the logits decode (see DEFAULTS)
        self.hint_sigma = None if cfg["hint_sigma"] is None else float(cfg["hint_sigma"])
        self.backbone = HRNet(in_channels=cfg["in_channels"], **cfg["backbone"])
        c = self.backbone.out_channels
        self.hint_fusion = HintFusion(k, self.backbone.stem_channels, cfg["hint_scale_init"]) if cfg["hint_fusion"] else None
        self.gate = None
        if cfg["gating"] != "none":
            self.gate = InteractionGate(self.backbone.layer1_channels, k, c, cfg["gating_channels"], cfg["gating"])
        self.head = OCRHead(c, k, **cfg["ocr"])

    def forward(self, image, hints=None, *, clicks=None, clicked=None, previous=None):
        """image (B, 1, H, W) in [-1, 1] → dict(logits, aux) at stride 4.

        The interaction enters as coordinates: ``clicks`` (B, K, 2) (row, col) in network-input pixels with
        ``clicked`` (B, K) bool saying which are real, and ``previous`` (B, K, 2) the previous prediction (used
        only in clicked channels). The model draws its own hint maps from them (``render_hints``, sigma
        ``config['hint_sigma']``) — one implementation for training, validation and inference. ``hints``
        (B, 2K, H/2, W/2) ready-drawn maps may be passed instead; neither = no interaction."""
        b, _, h, w = image.shape
        k = self.num_landmarks
        if hints is None and clicks is not None:
            if self.hint_sigma is None:
                raise ValueError("this model was built without 'hint_sigma': it cannot draw its click maps")
            if clicked is None:
                clicked = torch.isfinite(clicks).all(-1)
            hints = render_hints(previous, clicks, clicked, (h, w), self.hint_sigma)
        if hints is None:
            hints = image.new_zeros(b, 2 * k, (h + 1) // 2, (w + 1) // 2)
        stem_hint = self.hint_fusion(hints) if self.hint_fusion is not None else None
        l1, feats = self.backbone(image, stem_hint)
        if self.gate is not None:
            feats = feats * self.gate(l1, hints[:, k:])
        out, aux = self.head(feats)
        return {"logits": out, "aux": aux}


def upsample_logits(logits: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def build_model(config: dict) -> InteractiveKeypointModel:
    arch = config.get("arch", DEFAULTS["arch"])
    if arch != "interactive-hrnet-ocr":
        raise ValueError(f"unknown architecture '{arch}'")
    return InteractiveKeypointModel(config)
