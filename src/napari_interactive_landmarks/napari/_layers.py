"""How landmarks look as napari layers: the one place that defines the Points layer convention.

A landmark set of K named points becomes a Points layer holding only the *placed* points (napari Points
cannot hold NaN); which landmark each point is lives in the layer's ``features``:

============  =======  ======================================================================
column        dtype    meaning
============  =======  ======================================================================
``index``     int      position 0..K-1 in the landmark set (-1 for a point not yet assigned)
``label``     str      landmark name (the key used to map points back to the set)
``pinned``    bool     a person placed / confirmed the point (the model must keep it)
``score``     float    model confidence, NaN if unknown
============  =======  ======================================================================

A model's points may carry their conformal regions in the columns ``region_major_px``, ``region_minor_px``,
``region_angle_deg``, ``region_area_px2`` (centred on the point; NaN where none) with the level in
``metadata[META_KEY]["region_level"]`` (None: the model has no regions).

``layer.metadata[META_KEY]`` holds ``landmark_set``, ``model``, ``image_path``, ``image_shape``,
``spacing_mm`` and ``landmarks`` (all K names, in index order), so the full set, including missing
points, can be rebuilt with :func:`layer_to_landmarks`. Coordinates are (row, col) pixels of the original
image; the layer's ``scale`` carries the pixel spacing so it overlays an image layer with the same scale.

Nothing here imports napari: the functions work on arrays, DataFrames and any object with ``data``,
``features`` and ``metadata`` attributes (a napari Points layer).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "META_KEY",
    "FEATURE_COLUMNS",
    "PINNED_COLOR",
    "PREDICTED_COLOR",
    "FACE_COLOR_CYCLE",
    "LandmarkLayerError",
    "point_size",
    "points_layer_kwargs",
    "layer_to_landmarks",
    "skeleton_shapes",
    "skeleton_layer_kwargs",
]

#: Key of this plugin's entry in ``layer.metadata`` (image and points layers).
META_KEY = "napari_interactive_landmarks"
#: Feature columns of a landmark Points layer, in order.
FEATURE_COLUMNS = ("index", "label", "pinned", "score")
#: Face colour of points a person placed or confirmed (``pinned`` True).
PINNED_COLOR = "#ff8c00"
#: Face colour of points the model predicted (``pinned`` False).
PREDICTED_COLOR = "#00e5ff"
#: ``face_color_cycle`` for ``face_color="pinned"``. A dict (value -> colour) rather than a list, so the
#: mapping does not depend on which value napari happens to meet first.
FACE_COLOR_CYCLE = {True: PINNED_COLOR, False: PREDICTED_COLOR}
#: Colour of skeleton lines.
SKELETON_COLOR = "#ffff66"


class LandmarkLayerError(ValueError):
    """A Points layer cannot be turned into a landmark set; the message says what to fix."""


# --------------------------------------------------------------------------------------------------
# landmarks -> layer


PINNED_SIZE_FACTOR = 1.6


def point_size(image_shape=None) -> float:
    """Point diameter in image pixels: max(H, W) / 120, at least 4 (10 when the image size is unknown)."""
    if image_shape is None:
        return 10.0
    return float(max(4.0, max(int(v) for v in image_shape) / 120.0))


def _scale_of(spacing) -> tuple[float, float]:
    if spacing is None:
        return (1.0, 1.0)
    s = tuple(float(v) for v in spacing)
    if len(s) != 2 or not all(math.isfinite(v) and v > 0 for v in s):
        raise ValueError(f"spacing must be two positive numbers (row_mm, col_mm), got {spacing!r}")
    return s


def _features_frame(index, labels, pinned, scores) -> pd.DataFrame:
    return pd.DataFrame({
        "index": pd.Series(np.asarray(index, dtype=np.int64), dtype=np.int64),
        "label": pd.Series([str(x) for x in labels], dtype=object),
        "pinned": pd.Series(np.asarray(pinned, dtype=bool), dtype=bool),
        "score": pd.Series(np.asarray(scores, dtype=np.float64), dtype=np.float64),
    })


def points_layer_kwargs(
    coords,
    labels: Sequence[str],
    *,
    pinned=None,
    scores=None,
    landmark_set: str | None = None,
    model: str | None = None,
    image_path=None,
    image_shape=None,
    spacing=None,
    name: str = "landmarks",
    scale=None,
) -> tuple[np.ndarray, dict]:
    """Data and keyword arguments for a landmark Points layer.

    Use as ``viewer.add_points(data, **kwargs)`` or ``(data, kwargs, "points")`` in a reader.

    Args:
        coords: (K, 2) (row, col) pixels; NaN rows are missing landmarks (left out of ``data``).
        labels: the K landmark names, in index order.
        pinned: (K,) bool, default all False. scores: (K,) float, NaN = unknown (default).
        landmark_set, model, image_path, image_shape, spacing: stored in ``metadata[META_KEY]``
            (``spacing`` as ``spacing_mm``).
        name: layer name.
        scale: the layer's scale; default ``spacing`` (or (1, 1) when unknown). Must equal the scale of
            the image layer the points belong to, or the points are drawn in the wrong place.

    Returns:
        ``(data, kwargs)``: ``data`` (N, 2) float64 placed points; ``kwargs`` with ``features``, ``text``,
        ``face_color`` (driven by ``pinned``), ``face_color_cycle``, ``border_color``, ``border_width``,
        ``size``, ``scale``, ``metadata``, ``name`` and ``feature_defaults`` (a newly clicked point:
        index -1, empty label, pinned, unknown score).
    """
    labels = [str(x) for x in labels]
    k = len(labels)
    if len(set(labels)) != k:
        dup = sorted({x for x in labels if labels.count(x) > 1})
        raise ValueError(f"duplicate landmark labels: {dup}")
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 2 or coords.shape != (k, 2):
        raise ValueError(f"coords must have shape ({k}, 2) for {k} labels, got {coords.shape}")
    pinned = np.zeros(k, bool) if pinned is None else np.asarray(pinned, dtype=bool).reshape(-1)
    if pinned.shape != (k,):
        raise ValueError(f"pinned must have {k} values, got {pinned.shape[0]}")
    if scores is None:
        scores = np.full(k, np.nan)
    else:
        scores = np.array([np.nan if s is None else float(s) for s in np.asarray(scores, dtype=object).reshape(-1)])
    if scores.shape != (k,):
        raise ValueError(f"scores must have {k} values, got {scores.shape[0]}")

    placed = np.isfinite(coords).all(axis=1)
    idx = np.flatnonzero(placed)
    data = coords[placed].copy()
    features = _features_frame(idx, [labels[i] for i in idx], pinned[idx], scores[idx])

    size = point_size(image_shape)
    meta = {
        "landmark_set": None if landmark_set is None else str(landmark_set),
        "model": None if model is None else str(model),
        "image_path": None if image_path is None else str(image_path),
        "image_shape": None if image_shape is None else [int(v) for v in image_shape],
        "spacing_mm": None if spacing is None else [float(v) for v in _scale_of(spacing)],
        "landmarks": list(labels),
    }
    kwargs = {
        "name": name,
        "features": features,
        "feature_defaults": {"index": -1, "label": "", "pinned": True, "score": np.nan},
        "text": {
            "string": "{label}",
            "size": 8,
            "color": "white",
            "anchor": "upper_left",
            "translation": [-0.6 * size, 0.6 * size],
        },
        "face_color": "pinned",
        "face_color_cycle": dict(FACE_COLOR_CYCLE),
        "border_color": "black",
        "border_width": 0.1,
        "border_width_is_relative": True,
        # corrected (pinned) points drawn larger as well as in another colour, so they stand out
        "size": np.where(pinned[idx], PINNED_SIZE_FACTOR * size, size),
        "scale": _scale_of(spacing) if scale is None else tuple(float(v) for v in scale),
        "metadata": {META_KEY: meta},
    }
    return data, kwargs


# --------------------------------------------------------------------------------------------------
# layer -> landmarks


def _is_blank(v) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    try:
        if pd.isna(v):
            return True
    except (TypeError, ValueError):
        pass
    return str(v).strip() == ""


def _as_frame(features, n: int) -> pd.DataFrame:
    if features is None:
        return pd.DataFrame(index=range(n))
    df = features if isinstance(features, pd.DataFrame) else pd.DataFrame(dict(features))
    if len(df) != n:
        raise LandmarkLayerError(
            f"the layer has {n} points but {len(df)} feature rows; the layer is inconsistent — "
            f"recreate it (e.g. reload the landmark file)"
        )
    return df.reset_index(drop=True)


def _column(df: pd.DataFrame, name: str, default, n: int) -> list:
    if name in df.columns:
        return list(df[name])
    return [default] * n


def _fmt(rc) -> str:
    return f"({rc[0]:.1f}, {rc[1]:.1f})"


def layer_to_landmarks(layer_or_data, features=None, metadata=None) -> dict:
    """Rebuild the full landmark set from a Points layer (or its data, features and metadata).

    Points are matched to the landmark set (``metadata[META_KEY]["landmarks"]``) by their ``label``
    feature; a point whose label is blank falls back to its ``index`` feature. Without landmark-set
    metadata (a plain Points layer someone drew), every point is a landmark named by its ``label``
    feature, or ``point_<i>``.

    Args:
        layer_or_data: a napari Points layer (``data``, ``features`` and ``metadata`` are taken from
            it unless given) or an (N, 2) array of (row, col) points.
        features: DataFrame (or dict of columns) with one row per point.
        metadata: the layer's metadata dict.

    Returns:
        dict with ``coords`` (K, 2) float64 (NaN rows = missing), ``pinned`` (K,) bool, ``scores`` (K,)
        float64, ``labels`` (K names), ``landmark_set``, ``model``, ``image_path``, ``image_shape``,
        ``spacing`` (tuple or None), ``measurements`` (dict, from the metadata if present) and ``regions`` (the
        points' conformal regions as :class:`~napari_interactive_landmarks.io.landmarks.LandmarkFile` takes them,
        or None when the layer carries none).

    Raises:
        LandmarkLayerError: points of a 3-D layer, unknown or duplicated labels, indices outside the set,
            or a feature table that does not match the points. The message says what to do.
    """
    if hasattr(layer_or_data, "data") and hasattr(layer_or_data, "features"):
        layer = layer_or_data
        data = layer.data
        features = layer.features if features is None else features
        metadata = getattr(layer, "metadata", None) if metadata is None else metadata
    else:
        data = layer_or_data
    data = np.asarray(data, dtype=np.float64)
    if data.size == 0:
        data = data.reshape(0, 2)
    if data.ndim != 2 or data.shape[1] != 2:
        raise LandmarkLayerError(
            f"landmarks are 2-D (row, col) points, but this layer's points have shape {data.shape}; "
            f"use a 2-D Points layer on a 2-D image"
        )
    n = len(data)
    df = _as_frame(features, n)
    meta = dict(((metadata or {}).get(META_KEY)) or {})
    names = meta.get("landmarks")

    raw_labels = _column(df, "label", None, n)
    raw_index = _column(df, "index", None, n)
    raw_pinned = _column(df, "pinned", False, n)
    raw_scores = _column(df, "score", np.nan, n)

    if names:
        names = [str(x) for x in names]
        k = len(names)
        slot = {nm: i for i, nm in enumerate(names)}
        order: list[int] = []
        unknown, bad_index, unassigned = [], [], []
        for i in range(n):
            lab = raw_labels[i]
            if not _is_blank(lab):
                lab = str(lab)
                if lab not in slot:
                    unknown.append(f"'{lab}' at {_fmt(data[i])}")
                    order.append(-1)
                    continue
                order.append(slot[lab])
                continue
            ix = raw_index[i]
            if _is_blank(ix):
                if "label" not in df.columns and "index" not in df.columns and n == k:
                    order.append(i)  # bare layer with exactly one point per landmark, in order
                    continue
                unassigned.append(_fmt(data[i]))
                order.append(-1)
                continue
            ix = int(ix)
            if 0 <= ix < k:
                order.append(ix)
            elif ix == -1:
                unassigned.append(_fmt(data[i]))
                order.append(-1)
            else:
                bad_index.append(f"{ix} at {_fmt(data[i])}")
                order.append(-1)
        problems = []
        if unknown:
            problems.append(
                f"point(s) with label(s) not in the landmark set: {', '.join(unknown)}. Rename them to one "
                f"of the set's names ({', '.join(names[:8])}{', …' if k > 8 else ''}) or delete them"
            )
        if unassigned:
            problems.append(
                f"point(s) without a landmark label at {', '.join(unassigned)}; give each a label from the "
                f"landmark set or delete it"
            )
        if bad_index:
            problems.append(
                f"point(s) with landmark index outside 0..{k - 1}: {', '.join(bad_index)}; the layer does "
                f"not belong to this {k}-landmark set — delete those points or reload the landmark file"
            )
        taken: dict[int, list[int]] = {}
        for i, j in enumerate(order):
            if j >= 0:
                taken.setdefault(j, []).append(i)
        dups = {j: pts for j, pts in taken.items() if len(pts) > 1}
        if dups:
            desc = "; ".join(
                f"'{names[j]}' {len(pts)}× at {', '.join(_fmt(data[i]) for i in pts)}" for j, pts in sorted(dups.items())
            )
            problems.append(f"landmark(s) placed more than once: {desc}. Delete the extra points")
        if problems:
            raise LandmarkLayerError("cannot read the landmarks from this layer: " + "; ".join(problems))
        labels = names
    else:
        labels = [f"point_{i}" if _is_blank(raw_labels[i]) else str(raw_labels[i]) for i in range(n)]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise LandmarkLayerError(
                f"cannot save this points layer: the label(s) {dup} are used by more than one point; "
                f"give every point a unique label (or clear the labels to get point_0, point_1, …)"
            )
        k = n
        order = list(range(n))

    coords = np.full((k, 2), np.nan)
    pinned = np.zeros(k, bool)
    scores = np.full(k, np.nan)
    for i, j in enumerate(order):
        coords[j] = data[i]
        pinned[j] = bool(False if _is_blank(raw_pinned[i]) else raw_pinned[i])
        s = raw_scores[i]
        scores[j] = np.nan if _is_blank(s) else float(s)
    missing = ~np.isfinite(coords).all(axis=1)
    coords[missing] = np.nan
    regions = None
    if "region_level" in meta:  # a model's points: their regions (all none when the model has no regions)
        cols = {c: np.full(k, np.nan) for c in ("region_major_px", "region_minor_px", "region_angle_deg",
                                                 "region_area_px2")}
        for c, arr in cols.items():
            values = _column(df, c, np.nan, n)
            for i, j in enumerate(order):
                arr[j] = np.nan if _is_blank(values[i]) else float(values[i])
        regions = {"level": meta.get("region_level"), "centre": coords.copy(),
                   "semi_axes_px": np.stack([cols["region_major_px"], cols["region_minor_px"]], axis=1),
                   "angle_deg": cols["region_angle_deg"], "area_px2": cols["region_area_px2"]}

    spacing = meta.get("spacing_mm")
    shape = meta.get("image_shape")
    return {
        "coords": coords,
        "pinned": pinned,
        "scores": scores,
        "labels": list(labels),
        "landmark_set": meta.get("landmark_set"),
        "model": meta.get("model"),
        "image_path": meta.get("image_path"),
        "image_shape": None if shape is None else tuple(int(v) for v in shape),
        "spacing": None if spacing is None else tuple(float(v) for v in spacing),
        "measurements": dict(meta.get("measurements") or {}),
        "regions": regions,
    }


# --------------------------------------------------------------------------------------------------
# skeleton


def skeleton_shapes(coords, edges) -> list[np.ndarray]:
    """Line segments ((2, 2) arrays of (row, col)) for the skeleton ``edges`` (pairs of landmark
    indices); edges touching a missing (NaN) landmark are left out."""
    coords = np.asarray(coords, dtype=np.float64)
    k = len(coords)
    lines = []
    for a, b in edges:
        a, b = int(a), int(b)
        if not (0 <= a < k and 0 <= b < k):
            raise ValueError(f"skeleton edge ({a}, {b}) refers to a landmark outside 0..{k - 1}")
        seg = coords[[a, b]]
        if np.isfinite(seg).all():
            lines.append(seg.copy())
    return lines


def skeleton_layer_kwargs(coords, edges, *, spacing=None, image_shape=None, name: str = "skeleton",
                          scale=None) -> tuple[list[np.ndarray], dict]:
    """Data and keyword arguments for a Shapes layer of skeleton lines (``viewer.add_shapes``)."""
    width = max(1.0, point_size(image_shape) / 5.0)
    kwargs: dict[str, Any] = {
        "name": name,
        "shape_type": "line",
        "edge_color": SKELETON_COLOR,
        "edge_width": width,
        "opacity": 0.7,
        "scale": _scale_of(spacing) if scale is None else tuple(float(v) for v in scale),
    }
    return skeleton_shapes(coords, edges), kwargs
