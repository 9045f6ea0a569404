"""Batch norm folded into the convolution before it, for inference.

In eval mode a BatchNorm2d after a Conv2d is an affine map per channel, so the two are one convolution with a
rescaled kernel and a bias (``torch.nn.utils.fusion.fuse_conv_bn_eval``). Every ``conv → bn`` pair inside an
``nn.Sequential`` (all of them in this project's HRNet, OCR head and refiner: ``hrnet.conv_bn``) is replaced by
the folded convolution and an ``nn.Identity``: the same function in fp32 to rounding, one pass over each map
less per layer. Only for a model that is used, never trained or saved, afterwards (the Predictor of a weights
file): the folded module's state dict no longer matches the file's.
"""

from __future__ import annotations

import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every ``Conv2d → BatchNorm2d`` pair of ``model``'s Sequentials in place; returns how many were folded.
    The model must be in eval mode (its batch norms then use their running statistics)."""
    if model.training:
        raise ValueError("batch norm can only be folded into a model in eval mode")
    folded = 0
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                seq._modules[a] = fuse_conv_bn_eval(conv, bn)
                seq._modules[b] = nn.Identity()
                folded += 1
    return folded
