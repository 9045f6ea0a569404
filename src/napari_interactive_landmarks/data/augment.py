"""Augmentation in network space that moves the landmarks with the image: rotation, scale, horizontal
flip (with the schema's left/right index swap), brightness and contrast."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass
class AugmentConfig:
    rotate_deg: float = 15.0
    rotate_p: float = 0.5
    scale_range: tuple = (0.9, 1.2)
    scale_p: float = 0.5
    flip_p: float = 0.5
    brightness: float = 0.1
    contrast: float = 0.25
    intensity_p: float = 0.5
    # shift by up to ± this fraction of the height and of the width (0: none, and no random draw, so a config
    # without it keeps its augmentation stream): the film's framing varies, the anatomy's place in it is no cue
    translate: float = 0.0
    translate_p: float = 0.0


def affine_matrix(shape, angle_deg=0.0, scale=1.0, flip=False, shift=(0.0, 0.0)) -> np.ndarray:
    """3×3 matrix mapping input (row, col, 1) to output (row, col, 1), about the image centre, then moved by
    ``shift`` (rows, cols)."""
    h, w = shape
    c = np.array([(h - 1) / 2.0, (w - 1) / 2.0])
    a = np.deg2rad(angle_deg)
    # rotation in (row, col): counter-clockwise on screen for positive angles
    r = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]]) * scale
    if flip:
        r = r @ np.array([[1.0, 0.0], [0.0, -1.0]])
    m = np.eye(3)
    m[:2, :2] = r
    m[:2, 2] = c - r @ c + np.asarray(shift, float)
    return m


def apply_affine(image: np.ndarray, coords: np.ndarray, m: np.ndarray, order: int = 1):
    inv = np.linalg.inv(m)
    out = ndimage.affine_transform(image, inv[:2, :2], offset=inv[:2, 2], order=order, mode="constant", cval=0.0)
    pts = coords @ m[:2, :2].T + m[:2, 2]
    return out, pts


def flip_horizontal(image: np.ndarray, coords: np.ndarray, permutation: np.ndarray):
    """Mirror left-right and swap left/right landmark indices (a flip that does not swap would teach the
    network that the top-left corner is sometimes on the right)."""
    w = image.shape[1]
    out = image[:, ::-1].copy()
    pts = coords.copy()
    pts[:, 1] = (w - 1) - pts[:, 1]
    return out, pts[permutation]


def augment(image01: np.ndarray, coords: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig,
            flip_permutation: np.ndarray | None):
    """image01 (H, W) float in [0, 1]; coords (K, 2) network pixels. Returns new (image, coords)."""
    angle = rng.uniform(-cfg.rotate_deg, cfg.rotate_deg) if rng.random() < cfg.rotate_p else 0.0
    scale = rng.uniform(*cfg.scale_range) if rng.random() < cfg.scale_p else 1.0
    shift = (0.0, 0.0)
    if cfg.translate_p > 0 and rng.random() < cfg.translate_p:
        shift = tuple(rng.uniform(-cfg.translate, cfg.translate, 2) * np.asarray(image01.shape[:2], float))
    img, pts = image01, coords
    if flip_permutation is not None and rng.random() < cfg.flip_p:
        img, pts = flip_horizontal(img, pts, flip_permutation)
    if angle != 0.0 or scale != 1.0 or shift != (0.0, 0.0):
        img, pts = apply_affine(img, pts, affine_matrix(img.shape, angle, scale, shift=shift))
    if rng.random() < cfg.intensity_p:
        c = rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)
        b = rng.uniform(-cfg.brightness, cfg.brightness)
        img = np.clip((img - 0.5) * c + 0.5 + b, 0.0, 1.0)
    return np.ascontiguousarray(img, dtype=np.float32), pts.astype(np.float32)
