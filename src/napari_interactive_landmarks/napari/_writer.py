"""npe2 writer: a landmark Points layer to this package's JSON (``.json``) or CSV (``.csv``) format.

The layer is turned back into the full landmark set with :func:`layer_to_landmarks` (missing landmarks
are written as ``status: missing``); the file is written by the core writers in ``io.landmarks``, which
write atomically (temporary file + rename). Status is ``corrected`` for pinned points and ``predicted``
for the others. A model's points carry their conformal regions (``region`` in JSON, the ``region_*`` CSV columns).
"""

from __future__ import annotations

from pathlib import Path

from ..io.landmarks import write_landmarks_csv, write_landmarks_json
from ._layers import layer_to_landmarks

__all__ = ["write_landmarks"]

_EXTENSIONS = (".json", ".csv")


def write_landmarks(path, data, attributes: dict) -> list[str]:
    """Write one Points layer; returns ``[path written]``.

    Args:
        path: target file, ``.json`` or ``.csv`` (no extension: ``.json`` is added).
        data: (N, 2) points, (row, col) pixels.
        attributes: the layer's state (napari passes ``features``, ``metadata``, ``name``, …).

    Raises:
        LandmarkLayerError: the layer cannot be mapped to landmarks (unknown / duplicated labels, 3-D).
        ValueError: an extension other than ``.json`` / ``.csv``.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == "":
        p = p.with_name(p.name + ".json")
        suffix = ".json"
    if suffix not in _EXTENSIONS:
        raise ValueError(
            f"{p}: landmarks are saved as .json (full format, with image and model metadata) or .csv "
            f"(table); choose one of these extensions"
        )
    attributes = attributes or {}
    features = attributes.get("features")
    if features is None:
        features = attributes.get("properties")  # older napari state
    lm = layer_to_landmarks(data, features, attributes.get("metadata") or {})

    # overwrite=True on purpose: napari's own save dialog already asks before replacing a file, and a
    # writer that refused would make "save" fail after the user confirmed. The core writer still writes
    # atomically, so an interrupted save never leaves half a file.
    if suffix == ".json":
        written = write_landmarks_json(
            p, lm["coords"], lm["labels"], pinned=lm["pinned"], scores=lm["scores"],
            landmark_set=lm["landmark_set"], model=lm["model"], image_path=lm["image_path"],
            image_shape=lm["image_shape"], spacing=lm["spacing"], measurements=lm["measurements"] or None,
            regions=lm.get("regions"), overwrite=True,
        )
    else:
        written = write_landmarks_csv(
            p, lm["coords"], lm["labels"], pinned=lm["pinned"], scores=lm["scores"], regions=lm.get("regions"),
            spacing=lm["spacing"], overwrite=True,
        )
    return [str(written)]
