"""FARNet (Ao & Wu, J. Digit. Imaging 2022): DenseNet encoder, multi-scale feature aggregation (MSFA) and feature
refinement (FR) to full resolution, with a coarse (stride 2) and a fine (stride 1) heatmap output for
coarse-to-fine supervision. Written for this project after the paper and the layout of the authors' code
(``../shared/docs/method-notes.md``).

MSFA, with the encoder's C1…C5 (strides 2…32):
  top-down 1   T5 = 1×1(3×3(C5))              T_i = 1×1[up(T_{i+1}) ‖ C_i]   i = 4, 3, 2   (``td`` channels)
  bottom-up    D_i = 3×3 stride 2 (B_{i-1}), doubling channels; B_i = 1×1[D_i ‖ T_i]  i = 3, 4 (B_2 = T_2);
               B5 = 3×3[D5 ‖ T5] (the reference's last fusion is a 3×3 conv back to 1024 channels)
  top-down 2   U5 = 1×1(B5); U_i = 1×1[up(U_{i+1}) ‖ B_i] (B_2 = T_2, B_1 = C1) → 256/256/128/64 at strides 16…2
  coarse head  3×3 conv + 1×1 conv of U1 → K heatmaps at stride 2
FR: C0 = 1×1 conv of the input (32 channels; the paper's text says 3×3, its code 1×1); up(U1) ‖ up(coarse) ‖ C0
→ 3×3 conv + 1×1 conv → K heatmaps at stride 1. The heads' convolutions are linear, as in the reference.

``encode`` / ``decode`` are split so that the interactive model can gate the encoder's features before the
decoder (``models.interactive``); ``forward`` is the published, non-interactive network.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .densenet import DenseNet
from .hrnet import conv_bn

DENSENET121 = {"growth_rate": 32, "block_config": [6, 12, 24, 16], "init_features": 64, "bn_size": 4}

PRESETS = {
    # The paper's network: DenseNet-121 and the reference's MSFA / FR widths (≈ 61 M parameters, mostly the
    # bottom-up path's 3×3 convolutions at strides 16 and 32).
    "farnet": {
        "encoder": dict(DENSENET121),
        "msfa": {"c5_mid": 512, "td": 256, "bu": [512, 1024, 2048], "bu_top": 1024, "bu_top_kernel": 3,
                 "td2": [256, 256, 256, 128, 64], "head": 64},
        "fr": {"input_channels": 32, "input_kernel": 1, "channels": None},
        "gating_channels": 256,
    },
    # The same encoder (DenseNet-121) with the decoder's widths cut to fit the shipping budget (≤ 25 MB fp16)
    # and the ≤ 16 MiB files a GPU session can bring back: no doubling in the bottom-up path, 1×1 top fusion.
    "farnet-compact": {
        "encoder": dict(DENSENET121),
        "msfa": {"c5_mid": 0, "td": 96, "bu": [96, 96, 96], "bu_top": 96, "bu_top_kernel": 1,
                 "td2": [96, 96, 96, 64, 32], "head": 32},
        "fr": {"input_channels": 16, "input_kernel": 1, "channels": 32},
        "gating_channels": 32,
    },
    # Tiny configuration for tests (same topology, a few thousand parameters).
    "farnet-tiny": {
        "encoder": {"growth_rate": 4, "block_config": [1, 1, 1, 1], "init_features": 8, "bn_size": 2},
        "msfa": {"c5_mid": 8, "td": 8, "bu": [8, 16, 16], "bu_top": 16, "bu_top_kernel": 3,
                 "td2": [8, 8, 8, 8, 8], "head": 8},
        "fr": {"input_channels": 4, "input_kernel": 1, "channels": None},
        "gating_channels": 8,
    },
}


def _up(x, like):
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class MSFA(nn.Module):
    """Multi-scale feature aggregation of [C1, …, C5] → stride-2 features (``out_channels``)."""

    def __init__(self, channels, c5_mid=512, td=256, bu=(512, 1024, 2048), bu_top=1024, bu_top_kernel=3,
                 td2=(256, 256, 256, 128, 64)):
        super().__init__()
        c1, c2, c3, c4, c5 = channels
        top = [conv_bn(c5, c5_mid, 3), conv_bn(c5_mid, td, 1)] if c5_mid else [conv_bn(c5, td, 1)]
        self.top = nn.Sequential(*top)
        self.td = nn.ModuleList(conv_bn(td + c, td, 1) for c in (c4, c3, c2))  # → T4, T3, T2
        b3, b4, b5 = bu
        self.down = nn.ModuleList([conv_bn(td, b3, 3, 2), conv_bn(b3, b4, 3, 2), conv_bn(b4, b5, 3, 2)])
        self.bu = nn.ModuleList([conv_bn(b3 + td, b3, 1), conv_bn(b4 + td, b4, 1),
                                 conv_bn(b5 + td, bu_top, bu_top_kernel)])  # → B3, B4, B5
        u5, u4, u3, u2, u1 = td2
        self.td2_top = conv_bn(bu_top, u5, 1)
        self.td2 = nn.ModuleList([conv_bn(u5 + b4, u4, 1), conv_bn(u4 + b3, u3, 1), conv_bn(u3 + td, u2, 1),
                                  conv_bn(u2 + c1, u1, 1)])  # → U4, U3, U2, U1
        self.out_channels = u1

    def forward(self, feats):
        c1, c2, c3, c4, c5 = feats
        t = [self.top(c5)]  # T5, T4, T3, T2
        for conv, skip in zip(self.td, (c4, c3, c2)):
            t.append(conv(torch.cat([_up(t[-1], skip), skip], 1)))
        t5, t4, t3, t2 = t
        b = [t2]  # B2, B3, B4, B5
        for down, fuse, lateral in zip(self.down, self.bu, (t3, t4, t5)):
            b.append(fuse(torch.cat([down(b[-1]), lateral], 1)))
        _, b3, b4, b5 = b
        u = self.td2_top(b5)
        for conv, skip in zip(self.td2, (b4, b3, t2, c1)):
            u = conv(torch.cat([_up(u, skip), skip], 1))
        return u


class FeatureRefinement(nn.Module):
    """up(stride-2 features) ‖ up(coarse heatmaps) ‖ C0 (a conv of the input) → 3×3 → 1×1 → full-resolution maps."""

    def __init__(self, in_channels, feat_channels, num_landmarks, input_channels=32, input_kernel=1, channels=None):
        super().__init__()
        self.input_conv = conv_bn(in_channels, input_channels, input_kernel)
        cat = feat_channels + num_landmarks + input_channels
        channels = channels or cat  # the reference keeps the concatenation's width (64 + 32 + K)
        self.conv = nn.Conv2d(cat, channels, 3, 1, 1)
        self.cls = nn.Conv2d(channels, num_landmarks, 1)

    def forward(self, image, feats, coarse):
        c0 = self.input_conv(image)
        x = torch.cat([_up(feats, c0), _up(coarse, c0), c0], 1)
        return self.cls(self.conv(x))


class FARNet(nn.Module):
    """image (B, C, H, W) → {"logits": fine (B, K, H, W), "aux": coarse (B, K, H/2, W/2)}."""

    output_stride = 1
    aux_stride = 2
    classifier_weight = "refine.cls.weight"  # the per-landmark classifier (K output channels)

    def __init__(self, num_landmarks, in_channels=1, encoder=None, msfa=None, fr=None):
        super().__init__()
        self.encoder = DenseNet(in_channels=in_channels, **(encoder or DENSENET121))
        msfa = dict(msfa or {})
        head = msfa.pop("head", 64)
        self.msfa = MSFA(self.encoder.channels, **msfa)
        self.coarse = nn.Sequential(nn.Conv2d(self.msfa.out_channels, head, 3, 1, 1), nn.Conv2d(head, num_landmarks, 1))
        self.refine = FeatureRefinement(in_channels, self.msfa.out_channels, num_landmarks, **(fr or {}))
        self.channels = self.encoder.channels  # what the decoder reads (and the interaction gate scales)
        self.stem_channels = self.encoder.stem_channels
        self.gate_index = self.encoder.gate_index

    def encode(self, image, stem_hint=None):
        return self.encoder(image, stem_hint)

    def decode(self, image, feats):
        u1 = self.msfa(feats)
        coarse = self.coarse(u1)
        return self.refine(image, u1, coarse), coarse

    def forward(self, image):
        fine, coarse = self.decode(image, self.encode(image))
        return {"logits": fine, "aux": coarse}
