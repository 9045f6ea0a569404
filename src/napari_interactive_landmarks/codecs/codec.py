"""One codec per model: how landmark coordinates become the network's targets and hint maps, how its logits become
coordinates again, and every conversion between original-image pixels, network-input pixels and the grids of
the network's maps. The trainer, the losses' targets, the predictor, the calibration data and the session's
display geometry all go through a model's :class:`LandmarkCodec` (built from its model card), so training,
inference and evaluation cannot drift apart.

Conventions (pixel centres): pixel i covers [i − 0.5, i + 0.5]; a grid at stride s maps network pixel p to
(p + 0.5) / s − 0.5; rows and columns are scaled separately. Coordinates are (row, col) everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import geometry
from .heatmaps import decode_strided_logits, gaussian_heatmaps, render_hints
from .uncertainty import grid_scale


@dataclass(frozen=True)
class LandmarkCodec:
    input_size: tuple[int, int]  # (H, W) of the network input
    sigma: float  # Gaussian sigma of targets and hint maps, network pixels
    heatmap: str = "sigmoid"  # how the logits were trained: sigmoid (BCE) or softmax (2-D softmax + NLL)
    window: int = 15  # local soft-argmax window, network pixels
    # stride of the model's logits (the model's ``output_stride``: 4 for HRNet, 1 for FARNet / the CHH U-Net)
    stride: int = 4

    @property
    def grid(self) -> tuple[int, int]:
        """(h, w) of the model's logits: ⌈H / stride⌉ × ⌈W / stride⌉."""
        return (-(-self.input_size[0] // self.stride), -(-self.input_size[1] // self.stride))

    # ------------------------------------------------------------------ pixel conversions
    def to_network(self, coords, orig_shape) -> np.ndarray:
        """Original-image (row, col) → network-input pixels."""
        return geometry.to_network(coords, orig_shape, self.input_size)

    def to_original(self, coords, orig_shape) -> np.ndarray:
        """Network-input (row, col) → original-image pixels."""
        return geometry.to_original(coords, orig_shape, self.input_size)

    @staticmethod
    def to_grid(coords, stride: float):
        """Network pixels → the pixels of a map at ``stride`` (numpy or torch)."""
        return (coords + 0.5) / stride - 0.5

    def network_to_grid(self, coords, grid) -> np.ndarray:
        """Network-input pixels → the pixels of a map of shape ``grid`` covering the whole input."""
        return geometry.to_network(coords, self.input_size, grid)

    def original_to_grid(self, coords, orig_shape, grid) -> np.ndarray:
        """Original-image pixels → the pixels of a map of shape ``grid`` that covers the whole image."""
        return geometry.to_network(coords, orig_shape, grid)

    grid_scale = staticmethod(grid_scale)  # original pixels per grid pixel, (rows, cols)

    def grid_placement(self, orig_shape, grid):
        """(scale, translate) that place a map of shape ``grid`` covering the image over its original pixels
        (for display: cell (i, j) is centred at translate + (i, j) · scale)."""
        sy, sx = self.grid_scale(orig_shape, grid)
        return (sy, sx), (0.5 * sy - 0.5, 0.5 * sx - 0.5)

    # ------------------------------------------------------------------ encoding
    def hints(self, previous, clicks, clicked):
        """The model's hint maps (network pixels in, stride-2 maps out; see ``render_hints``)."""
        return render_hints(previous, clicks, clicked, self.input_size, self.sigma)

    def targets(self, coords_net, stride: int, sigma: float | None = None):
        """Gaussian target maps at ``stride`` for network-pixel coordinates (B, K, 2) (the BCE / EWC targets);
        ``sigma`` (network pixels) defaults to the codec's. Centred with the same pixel-centre convention the
        decoder reads, so a target decodes to its own coordinates (no one-pixel bias as in FARNet's code)."""
        size = (self.input_size[0] // stride, self.input_size[1] // stride)
        sigma = self.sigma if sigma is None else sigma
        return gaussian_heatmaps(self.to_grid(coords_net, stride), size, sigma / stride)

    # ------------------------------------------------------------------ decoding
    def decode(self, logits: torch.Tensor):
        """Logits (B, K, h, w) on the codec's grid (``stride``) → (coordinates (B, K, 2) in network pixels, peak
        (B, K)): the local soft-argmax of the full-resolution maps, interpolating only a patch around each peak."""
        if tuple(logits.shape[-2:]) != self.grid:
            raise ValueError(f"logits of size {tuple(logits.shape[-2:])} are not the stride-{self.stride} grid "
                             f"{self.grid} of a {self.input_size[0]} × {self.input_size[1]} input")
        return decode_strided_logits(logits, self.input_size, window=self.window, heatmap=self.heatmap)
