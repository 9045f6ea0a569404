"""HRNet backbone (Sun et al., CVPR 2019; Wang et al., TPAMI 2020) with configurable widths and depth.

Written for this project (torchvision/timm are not available). The paper's W32 layout: stem of two 3×3
stride-2 convs, layer1 of 4 bottlenecks (256 channels at stride 4), stages 2/3/4 of 1/4/3 modules with
4 basic blocks per branch and branch widths 32/64/128/256. The four branches are upsampled to stride 4 and
concatenated. A hint tensor (stride 2, ``stem_channels``) can be added after the first stem conv.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

BN_MOMENTUM = 0.1


def conv_bn(cin, cout, k=3, stride=1, relu=True):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout, momentum=BN_MOMENTUM)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride=1):
        super().__init__()
        self.conv1 = conv_bn(cin, planes, 3, stride)
        self.conv2 = conv_bn(planes, planes, 3, 1, relu=False)
        self.down = None
        if stride != 1 or cin != planes:
            self.down = conv_bn(cin, planes, 1, stride, relu=False)

    def forward(self, x):
        idt = x if self.down is None else self.down(x)
        return F.relu(self.conv2(self.conv1(x)) + idt, inplace=True)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride=1):
        super().__init__()
        out = planes * self.expansion
        self.body = nn.Sequential(conv_bn(cin, planes, 1), conv_bn(planes, planes, 3, stride), conv_bn(planes, out, 1, relu=False))
        self.down = None if (stride == 1 and cin == out) else conv_bn(cin, out, 1, stride, relu=False)

    def forward(self, x):
        idt = x if self.down is None else self.down(x)
        return F.relu(self.body(x) + idt, inplace=True)


class HighResolutionModule(nn.Module):
    def __init__(self, widths, num_blocks, multi_scale_output=True):
        super().__init__()
        self.n = len(widths)
        self.branches = nn.ModuleList(
            nn.Sequential(*[BasicBlock(w, w) for _ in range(num_blocks)]) for w in widths
        )
        n_out = self.n if multi_scale_output else 1
        self.fuse = nn.ModuleList()
        for i in range(n_out):
            row = nn.ModuleList()
            for j in range(self.n):
                if j > i:  # lower resolution -> 1x1 then upsample
                    row.append(conv_bn(widths[j], widths[i], 1, relu=False))
                elif j == i:
                    row.append(nn.Identity())
                else:  # higher resolution -> strided 3x3 convs
                    steps = []
                    for s in range(i - j):
                        last = s == i - j - 1
                        cout = widths[i] if last else widths[j]
                        steps.append(conv_bn(widths[j], cout, 3, 2, relu=not last))
                    row.append(nn.Sequential(*steps))
            self.fuse.append(row)

    def forward(self, xs):
        xs = [b(x) for b, x in zip(self.branches, xs)]
        out = []
        for i, row in enumerate(self.fuse):
            y = None
            for j, f in enumerate(row):
                z = f(xs[j])
                if j > i:
                    z = F.interpolate(z, size=xs[i].shape[-2:], mode="bilinear", align_corners=False)
                y = z if y is None else y + z
            out.append(F.relu(y, inplace=True))
        return out


class HRNet(nn.Module):
    """Returns (layer1 features at stride 4, aggregated features at stride 4 with sum(widths) channels)."""

    def __init__(self, in_channels=1, stem_channels=64, layer1_blocks=4, layer1_planes=64,
                 widths=(32, 64, 128, 256), stage_modules=(1, 4, 3), stage_blocks=(4, 4, 4)):
        super().__init__()
        self.stem1 = conv_bn(in_channels, stem_channels, 3, 2)
        self.stem2 = conv_bn(stem_channels, stem_channels, 3, 2)
        blocks, cin = [], stem_channels
        for _ in range(layer1_blocks):
            blocks.append(Bottleneck(cin, layer1_planes))
            cin = layer1_planes * Bottleneck.expansion
        self.layer1 = nn.Sequential(*blocks)
        self.layer1_channels = cin
        self.stem_channels = stem_channels
        widths = list(widths)
        self.transitions = nn.ModuleList()
        self.stages = nn.ModuleList()
        prev = [cin]
        for s in range(3):
            cur = widths[: s + 2]
            trans = nn.ModuleList()
            for i, w in enumerate(cur):
                if i < len(prev):
                    trans.append(nn.Identity() if prev[i] == w else conv_bn(prev[i], w, 3, 1))
                else:
                    trans.append(conv_bn(prev[-1], w, 3, 2))
            self.transitions.append(trans)
            self.stages.append(nn.Sequential(*[HighResolutionModule(cur, stage_blocks[s]) for _ in range(stage_modules[s])]))
            prev = cur
        self.out_channels = sum(widths)

    def forward(self, x, stem_hint=None):
        x = self.stem1(x)
        if stem_hint is not None:
            x = x + stem_hint
        x = self.stem2(x)
        l1 = self.layer1(x)
        xs = [l1]
        for trans, stage in zip(self.transitions, self.stages):
            new = []
            for i, t in enumerate(trans):
                src = xs[i] if i < len(xs) else xs[-1]
                new.append(t(src))
            xs = stage(new)
        size = xs[0].shape[-2:]
        up = [xs[0]] + [F.interpolate(z, size=size, mode="bilinear", align_corners=False) for z in xs[1:]]
        return l1, torch.cat(up, dim=1)
