"""DenseNet encoder (Huang et al., CVPR 2017), written for this project (torchvision does not load here).

DenseNet-121: a 7×7 stride-2 stem conv (64 channels), 3×3 stride-2 max pool, dense blocks of 6/12/24/16 layers
(growth rate 32, bottleneck 4 × growth) separated by transitions (BN-ReLU-1×1 conv halving the channels, 2×2
average pool), and a final BN. ``forward`` returns the five feature maps FARNet (Ao & Wu 2022) reads, as
torchvision's ``features`` would give them to it:

    C1  stem conv output            stride  2,   64 channels
    C2  dense block 1 output        stride  4,  256
    C3  dense block 2 output        stride  8,  512
    C4  dense block 3 output        stride 16, 1024
    C5  dense block 4 output + BN   stride 32, 1024

A hint tensor (stride 2, ``stem_channels``) can be added to the stem conv output, before its BN and ReLU (the
interactive model's hint fusion, Kim et al. 2022). Input sizes should be multiples of 32 (the total stride).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

BN_MOMENTUM = 0.1


def _bn(c):
    return nn.BatchNorm2d(c, momentum=BN_MOMENTUM)


class DenseLayer(nn.Module):
    """BN-ReLU-1×1 conv (bn_size × growth) - BN-ReLU-3×3 conv (growth): the ``growth`` new channels."""

    def __init__(self, cin, growth, bn_size):
        super().__init__()
        mid = bn_size * growth
        self.body = nn.Sequential(
            _bn(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, mid, 1, bias=False),
            _bn(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, growth, 3, 1, 1, bias=False),
        )

    def forward(self, x):
        return self.body(x)


class DenseBlock(nn.Module):
    def __init__(self, cin, num_layers, growth, bn_size):
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(cin + i * growth, growth, bn_size) for i in range(num_layers))
        self.out_channels = cin + num_layers * growth

    def forward(self, x):
        feats = [x]
        for layer in self.layers:
            feats.append(layer(torch.cat(feats, 1) if len(feats) > 1 else x))
        return torch.cat(feats, 1)


class Transition(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__(_bn(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, cout, 1, bias=False), nn.AvgPool2d(2, 2))


class DenseNet(nn.Module):
    """Returns [C1, …, C5] (strides 2, 4, 8, 16, 32); ``channels`` lists their widths. ``gate_index`` names the
    stride-4 map the interaction gate reads (Kim et al. read HRNet's layer1 output there)."""

    gate_index = 1

    def __init__(self, in_channels=1, growth_rate=32, block_config=(6, 12, 24, 16), init_features=64, bn_size=4,
                 compression=0.5):
        super().__init__()
        self.conv0 = nn.Conv2d(in_channels, init_features, 7, 2, 3, bias=False)
        self.norm0 = _bn(init_features)
        self.blocks = nn.ModuleList()
        self.transitions = nn.ModuleList()
        c = init_features
        self.channels = [init_features]
        for i, n in enumerate(block_config):
            block = DenseBlock(c, int(n), growth_rate, bn_size)
            self.blocks.append(block)
            c = block.out_channels
            self.channels.append(c)
            if i < len(block_config) - 1:
                out = int(c * compression)
                self.transitions.append(Transition(c, out))
                c = out
        self.norm5 = _bn(c)
        self.stem_channels = init_features
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x, stem_hint=None):
        c1 = self.conv0(x)
        if stem_hint is not None:
            c1 = c1 + stem_hint
        x = F.max_pool2d(F.relu(self.norm0(c1)), 3, 2, 1)
        feats = [c1]
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i < len(self.transitions):
                feats.append(x)
                x = self.transitions[i](x)
        feats.append(self.norm5(x))
        return feats
