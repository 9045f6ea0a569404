"""Which model fits an image: one rule for the napari widget and the ``predict`` command (no napari, no Qt).

A landmark set belongs to a kind of film (a spine AP film is ~2.7:1 tall, a cephalogram ~1:1.2 wide), and each
model's input has that kind's aspect ratio. So the shipped model for an image is the one whose input aspect ratio
(rows / cols) is closest to the image's, the phantom model only for the generated phantom; and a model whose
aspect ratio differs from the image's by more than :data:`ASPECT_MISMATCH` is probably the wrong landmark set for
it (68 spine corners on a skull).
"""

from __future__ import annotations

import math

# a model whose input aspect ratio differs from the image's by more than this factor is probably the wrong
# landmark set for the image (a spine AP film is ~2.7:1 tall, the spine model's input 2:1; a cephalogram ~1:1.2)
ASPECT_MISMATCH = 1.6

__all__ = ["ASPECT_MISMATCH", "model_aspect", "is_synthetic_model", "choose_model_for_image", "misfit_reason"]


def model_aspect(entry: dict) -> float | None:
    """rows / cols of a manifest entry's (or model card's) ``input_size``; None when it has none."""
    size = entry.get("input_size") if isinstance(entry, dict) else None
    try:
        return float(size[0]) / float(size[1])
    except (TypeError, ValueError, IndexError, ZeroDivisionError):
        return None


def is_synthetic_model(entry: dict) -> bool:
    """True for a model trained on the generated phantom (a toy, not for real films)."""
    return str(((entry or {}).get("training") or {}).get("dataset", "")).lower() == "phantom"


def choose_model_for_image(manifest: dict, shape, synthetic: bool) -> str | None:
    """The shipped model that fits an image: the phantom model for the synthetic sample only; for a real
    film the model whose input aspect ratio (rows / cols) is closest to the image's."""
    if not manifest:
        return None
    if synthetic:
        for name, entry in manifest.items():
            if is_synthetic_model(entry):
                return name
    real = {n: e for n, e in manifest.items() if not is_synthetic_model(e) and model_aspect(e)}
    if not real or shape is None:
        return next(iter(real or manifest), None)
    aspect = float(shape[0]) / max(float(shape[1]), 1.0)
    return min(real, key=lambda n: abs(math.log(aspect / model_aspect(real[n]))))


def misfit_reason(name: str, entry: dict, shape, *, image_name: str = "the image",
                  synthetic: bool | None = False) -> str | None:
    """Why model ``name`` (its manifest entry or model card ``entry``) looks wrong for an image of ``shape``
    (None when it looks right): the phantom model on a real film, or an input aspect ratio more than
    :data:`ASPECT_MISMATCH` away from the image's. ``synthetic``: whether the image is the generated phantom;
    None when that is unknown (a file may hold one), which skips the phantom-model check."""
    entry = entry or {}
    if synthetic is False and is_synthetic_model(entry):
        return (f"'{name}' is the toy model for the synthetic phantom, not for real films: its points on "
                f"'{image_name}' mean nothing. Choose a model for this kind of film.")
    h, w = (int(v) for v in tuple(shape)[:2])
    aspect, want = h / max(w, 1), model_aspect(entry)
    if want and abs(math.log(aspect / want)) > math.log(ASPECT_MISMATCH):
        kind = "tall" if aspect > 1 else "wide"
        schema = entry.get("schema") or "its landmark set"
        if isinstance(schema, dict):  # a user's own landmark set, inline
            schema = schema.get("name") or "its landmark set"
        return (f"'{image_name}' is {h} × {w} ({kind}); '{name}' expects {schema} images of about {want:.1f}:1 (rows:cols). "
                "Check that the model fits this film.")
    return None
