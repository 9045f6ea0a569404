"""napari plugin of napari-interactive-landmarks (npe2 manifest: ``napari.yaml`` in this folder).

This is the only part of the package that may import napari or Qt. Importing this package stays cheap: the
submodules (``_layers``, ``_reader``, ``_writer``, ``_sample_data``, ``_widget``) are loaded by napari
through the manifest when their contribution is used, and the names below are resolved lazily.
"""

from __future__ import annotations

__all__ = [
    "META_KEY",
    "LandmarkLayerError",
    "points_layer_kwargs",
    "layer_to_landmarks",
    "skeleton_shapes",
    "get_reader",
    "write_landmarks",
    "phantom_spine",
]

_LAZY = {
    "META_KEY": "._layers",
    "LandmarkLayerError": "._layers",
    "points_layer_kwargs": "._layers",
    "layer_to_landmarks": "._layers",
    "skeleton_shapes": "._layers",
    "get_reader": "._reader",
    "write_landmarks": "._writer",
    "phantom_spine": "._sample_data",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
