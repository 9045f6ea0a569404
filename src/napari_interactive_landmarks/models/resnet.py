"""ResNet encoder (He et al., CVPR 2016) with basic blocks, written for this project (torchvision does not load
here). ResNet-34: a 7×7 stride-2 stem conv (64 channels, BN, ReLU), 3×3 stride-2 max pool, then stages of
3/4/6/3 basic blocks with 64/128/256/512 channels (each stage after the first halves the resolution).
``forward`` returns the five maps a U-Net decoder reads (as segmentation_models_pytorch's encoder does):

    stem (after ReLU) stride 2,  64 channels;  layer1 stride 4, 64;  layer2 8, 128;  layer3 16, 256;  layer4 32, 512

A hint tensor (stride 2, ``stem_channels``) can be added to the stem's output (the interactive model's hint
fusion, Kim et al. 2022, added after HRNet's first conv-BN-ReLU in the same way). Input sizes should be
multiples of 32 (the total stride).
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from .hrnet import BasicBlock, conv_bn


class ResNet(nn.Module):
    """Returns [stem, layer1, …, layer4] (strides 2, 4, 8, 16, 32); ``channels`` lists their widths;
    ``gate_index`` names the stride-4 map (layer1) the interaction gate reads."""

    gate_index = 1

    def __init__(self, in_channels=1, widths=(64, 128, 256, 512), blocks=(3, 4, 6, 3), stem_channels=None):
        super().__init__()
        stem_channels = int(stem_channels or widths[0])
        self.stem = conv_bn(in_channels, stem_channels, 7, 2)
        self.layers = nn.ModuleList()
        cin = stem_channels
        for i, (w, n) in enumerate(zip(widths, blocks)):
            stride = 1 if i == 0 else 2
            layer = [BasicBlock(cin, w, stride)] + [BasicBlock(w, w) for _ in range(int(n) - 1)]
            self.layers.append(nn.Sequential(*layer))
            cin = w
        self.stem_channels = stem_channels
        self.channels = [stem_channels] + [int(w) for w in widths]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x, stem_hint=None):
        x = self.stem(x)
        if stem_hint is not None:
            x = x + stem_hint
        feats = [x]
        x = F.max_pool2d(x, 3, 2, 1)
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return feats
