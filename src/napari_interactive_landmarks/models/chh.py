"""The network of Contour-Hugging Heatmaps (McCouat & Voiculescu, CVPR 2022): a U-Net with a ResNet-34 encoder
(as built by segmentation_models_pytorch), a decoder of five up-sampling levels with 256/128/64/32/32 channels
(each: ×2 nearest up-sampling, concatenation with the encoder map of that stride, two 3×3 conv-BN-ReLU), and a
final 1×1 conv to one full-resolution channel per landmark. The paper trains it with a 2-D softmax + NLL
against one-hot targets (``losses.heatmap_softmax_nll`` with ``sigma = 0``); ``heatmap: softmax`` in the config.

``encode`` / ``decode`` are split so that the interactive model can gate the encoder's features before the
decoder (``models.interactive``); ``forward`` is the published, non-interactive network.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .hrnet import conv_bn
from .resnet import ResNet

PRESETS = {
    # The paper's network: ResNet-34 encoder, decoder 256/128/64/32/32 (≈ 24 M parameters).
    "chh-resnet34": {
        "encoder": {"widths": [64, 128, 256, 512], "blocks": [3, 4, 6, 3]},
        "decoder": [256, 128, 64, 32, 32],
        "gating_channels": 256,
    },
    # ResNet-34's depth at half its widths, decoder halved too: inside the shipping budget (≤ 25 MB fp16) and the
    # ≤ 16 MiB files a GPU session can bring back.
    "chh-resnet34-half": {
        "encoder": {"widths": [32, 64, 128, 256], "blocks": [3, 4, 6, 3]},
        "decoder": [128, 64, 32, 16, 16],
        "gating_channels": 64,
    },
    # Tiny configuration for tests.
    "chh-tiny": {
        "encoder": {"widths": [8, 8, 16, 16], "blocks": [1, 1, 1, 1]},
        "decoder": [16, 8, 8, 8, 8],
        "gating_channels": 8,
    },
}


class DecoderBlock(nn.Module):
    def __init__(self, cin, skip, cout):
        super().__init__()
        self.convs = nn.Sequential(conv_bn(cin + skip, cout, 3), conv_bn(cout, cout, 3))

    def forward(self, x, size, skip=None):
        x = F.interpolate(x, size=size, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], 1)
        return self.convs(x)


class UNetResNet(nn.Module):
    """image (B, C, H, W) → {"logits": (B, K, H, W), "aux": None}."""

    output_stride = 1
    aux_stride = None
    classifier_weight = "cls.weight"  # the per-landmark classifier (K output channels)

    def __init__(self, num_landmarks, in_channels=1, encoder=None, decoder=(256, 128, 64, 32, 32)):
        super().__init__()
        self.encoder = ResNet(in_channels=in_channels, **(encoder or {}))
        ch = self.encoder.channels  # strides 2, 4, 8, 16, 32
        skips = [ch[3], ch[2], ch[1], ch[0], 0]  # the encoder map each decoder level joins (none at stride 1)
        cin = ch[4]
        self.blocks = nn.ModuleList()
        for skip, cout in zip(skips, decoder):
            self.blocks.append(DecoderBlock(cin, skip, int(cout)))
            cin = int(cout)
        self.cls = nn.Conv2d(cin, num_landmarks, 1)
        self.channels = ch  # what the decoder reads (and the interaction gate scales)
        self.stem_channels = self.encoder.stem_channels
        self.gate_index = self.encoder.gate_index

    def encode(self, image, stem_hint=None):
        return self.encoder(image, stem_hint)

    def decode(self, image, feats):
        x = feats[4]
        for block, skip in zip(self.blocks, (feats[3], feats[2], feats[1], feats[0], None)):
            x = block(x, image.shape[-2:] if skip is None else skip.shape[-2:], skip)
        return self.cls(x), None

    def forward(self, image):
        logits, aux = self.decode(image, self.encode(image))
        return {"logits": logits, "aux": aux}
