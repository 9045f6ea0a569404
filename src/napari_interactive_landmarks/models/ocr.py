"""Object-contextual representation head (Yuan et al., ECCV 2020) with its auxiliary head, as used by
HRNet-OCR in the RITM code base and by Kim et al. for keypoints: each landmark is an "object class"."""

from __future__ import annotations

import torch
import torch.nn as nn

from .hrnet import conv_bn


class ObjectAttention(nn.Module):
    def __init__(self, channels, key_channels):
        super().__init__()
        self.key_channels = key_channels
        self.f_pixel = nn.Sequential(conv_bn(channels, key_channels, 1), conv_bn(key_channels, key_channels, 1))
        self.f_object = nn.Sequential(conv_bn(channels, key_channels, 1), conv_bn(key_channels, key_channels, 1))
        self.f_down = conv_bn(channels, key_channels, 1)
        self.f_up = conv_bn(key_channels, channels, 1)

    def forward(self, feats, context):
        b, _, h, w = feats.shape
        q = self.f_pixel(feats).flatten(2).transpose(1, 2)  # B,HW,C
        k = self.f_object(context).flatten(2)  # B,C,K
        v = self.f_down(context).flatten(2).transpose(1, 2)  # B,K,C
        sim = torch.softmax(torch.bmm(q, k) * self.key_channels**-0.5, dim=-1)
        ctx = torch.bmm(sim, v).transpose(1, 2).reshape(b, self.key_channels, h, w)
        return self.f_up(ctx)


class OCRHead(nn.Module):
    def __init__(self, in_channels, num_classes, mid_channels=256, key_channels=128, aux_channels=None, dropout=0.05,
                 conv_kernel=3):
        super().__init__()
        aux_channels = aux_channels or in_channels
        self.aux = nn.Sequential(conv_bn(in_channels, aux_channels, 1), nn.Conv2d(aux_channels, num_classes, 1))
        self.conv3x3 = conv_bn(in_channels, mid_channels, conv_kernel)  # 3×3 in the paper; 1×1 in the compact preset
        self.attention = ObjectAttention(mid_channels, key_channels)
        self.fuse = nn.Sequential(conv_bn(2 * mid_channels, mid_channels, 1), nn.Dropout2d(dropout))
        self.cls = nn.Conv2d(mid_channels, num_classes, 1)

    def forward(self, feats):
        aux = self.aux(feats)
        x = self.conv3x3(feats)
        b, c, h, w = x.shape
        regions = torch.softmax(aux.flatten(2), dim=-1)  # B,K,HW soft object regions
        context = torch.bmm(regions, x.flatten(2).transpose(1, 2))  # B,K,C
        context = context.transpose(1, 2).unsqueeze(-1)  # B,C,K,1
        obj = self.attention(x, context)
        out = self.cls(self.fuse(torch.cat([obj, x], dim=1)))
        return out, aux
