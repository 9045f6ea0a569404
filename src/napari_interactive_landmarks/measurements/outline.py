"""Vertebra outlines in a drawable corner order, and which vertebrae have their corners out of order.

A vertebra is a schema group of 4 corners labelled top-left, top-right, bottom-left, bottom-right (TL, TR, BL,
BR; left/right as seen in the image). Its outline is the polygon TL → TR → BR → BL. When a model puts the
corners out of order (e.g. TR to the left of TL), that polygon crosses itself and is drawn as a twisted
bow-tie; :func:`vertebra_outline` then orders the 4 points by angle around their centroid instead, which
always gives a simple (non-crossing) quadrilateral. A twisted, mirrored or upside-down vertebra is still a
model error the user should check: :func:`corner_order_problems` names those vertebrae and says what is wrong.

Everything here is numpy only (no napari/Qt) and vectorised over vertebrae.
"""

from __future__ import annotations

import numpy as np

from ..schemas import load_schema

POLYGON_ORDER = (0, 1, 3, 2)  # TL, TR, BR, BL as indices into the labelled order TL, TR, BL, BR


def _cross(o, a, b):
    """z of (a − o) × (b − o) for (..., 2) points."""
    return (a[..., 0] - o[..., 0]) * (b[..., 1] - o[..., 1]) - (a[..., 1] - o[..., 1]) * (b[..., 0] - o[..., 0])


def _segments_cross(p1, p2, p3, p4):
    """True where segment p1–p2 properly crosses segment p3–p4 (they share one interior point)."""
    d1, d2 = _cross(p3, p4, p1), _cross(p3, p4, p2)
    d3, d4 = _cross(p1, p2, p3), _cross(p1, p2, p4)
    return (d1 * d2 < 0) & (d3 * d4 < 0)


def is_twisted(corners) -> np.ndarray | bool:
    """True where the labelled outline TL → TR → BR → BL crosses itself. ``corners``: (4, 2) or (G, 4, 2) in
    the labelled order TL, TR, BL, BR. Missing (NaN) corners give False."""
    c = np.asarray(corners, dtype=np.float64)
    tl, tr, bl, br = c[..., 0, :], c[..., 1, :], c[..., 2, :], c[..., 3, :]
    with np.errstate(invalid="ignore"):
        out = _segments_cross(tl, tr, br, bl) | _segments_cross(tr, br, bl, tl)
    return bool(out) if out.ndim == 0 else out


def outline_order(corners) -> np.ndarray:
    """Indices into the labelled corners (TL, TR, BL, BR) in the order to draw the outline polygon:
    ``(0, 1, 3, 2)`` (TL → TR → BR → BL) unless that polygon crosses itself; then the corners sorted by angle
    around their centroid, clockwise as displayed, starting from the labelled TL. ``corners``: (4, 2) or
    (G, 4, 2); returns (4,) or (G, 4) ints. Missing corners keep the labelled order."""
    c = np.asarray(corners, dtype=np.float64)
    single = c.ndim == 2
    c = c.reshape(-1, 4, 2)
    order = np.tile(np.array(POLYGON_ORDER), (len(c), 1))
    twisted = np.atleast_1d(is_twisted(c))
    if twisted.any():
        t = c[twisted]
        rel = t - t.mean(axis=1, keepdims=True)
        # angle on screen (x = col, y = −row), measured clockwise from the labelled TL's direction
        ang = np.arctan2(-rel[..., 0], rel[..., 1])
        clockwise = np.mod(ang[:, :1] - ang, 2 * np.pi)
        order[twisted] = np.argsort(clockwise, axis=1, kind="stable")
    return order[0] if single else order


def vertebra_outline(coords4) -> np.ndarray:
    """The 4 corners of one vertebra (labelled order TL, TR, BL, BR) as a (4, 2) polygon that does not cross
    itself: TL, TR, BR, BL when that is simple, else reordered by angle around the centroid (see
    :func:`outline_order`). Close it for drawing; NaN corners are kept (in the labelled order)."""
    c = np.asarray(coords4, dtype=np.float64)
    if c.shape != (4, 2):
        raise ValueError(f"expected the 4 corners of one vertebra as a (4, 2) array, got {c.shape}")
    return c[outline_order(c)]


def _corner_groups(schema) -> dict[str, tuple[int, ...]]:
    return {g: tuple(m) for g, m in schema.groups.items() if len(m) == 4}


def _corners_of(schema, coords) -> tuple[dict, np.ndarray]:
    """The 4-corner groups of ``schema`` and their corners (G, 4, 2) in labelled order, from checked coords."""
    schema = load_schema(schema)
    c = np.asarray(coords, dtype=np.float64)
    if c.shape != (schema.num_landmarks, 2):
        raise ValueError(f"expected coords of shape ({schema.num_landmarks}, 2) for '{schema.name}', got {c.shape}")
    groups = _corner_groups(schema)
    if not groups:
        return {}, np.zeros((0, 4, 2))
    return groups, c[np.array(list(groups.values()))]


def vertebra_outlines(schema, coords) -> tuple[list[str], np.ndarray]:
    """Outline polygons of every 4-corner group of ``schema`` (the vertebrae): ``(names, polygons)`` with
    polygons (G, 4, 2) (row, col), each in a non-crossing order (:func:`outline_order`). Vectorised: one call
    for the whole spine. Groups with a missing corner keep NaN rows (skip them when drawing)."""
    groups, corners = _corners_of(schema, coords)
    if not groups:
        return [], np.zeros((0, 4, 2))
    order = outline_order(corners)
    return list(groups), np.take_along_axis(corners, order[..., None], axis=1)


def corner_order_problems(schema, coords) -> dict[str, str]:
    """``{vertebra name: what is wrong}`` for each 4-corner group whose labelled corners are out of order, in
    schema order: "twisted" (the outline TL → TR → BR → BL crosses itself), "upside down" (the top edge's
    midpoint is not above the bottom edge's), "left and right swapped" (the right edge's midpoint is not to
    the right of the left edge's); several reasons are joined with "; ". The same geometry tests as the Cobb
    method's order check (``cobb.check_spine``), per vertebra. Groups with a missing corner are skipped."""
    groups, v = _corners_of(schema, coords)  # v: (G, 4, 2): TL, TR, BL, BR
    if not groups:
        return {}
    finite = np.all(np.isfinite(v), axis=(1, 2))
    tl, tr, bl, br = v[:, 0], v[:, 1], v[:, 2], v[:, 3]
    with np.errstate(invalid="ignore"):
        twisted = np.atleast_1d(is_twisted(v))
        upside = (tl[:, 0] + tr[:, 0]) >= (bl[:, 0] + br[:, 0])
        swapped = (tr[:, 1] + br[:, 1]) <= (tl[:, 1] + bl[:, 1])
    out = {}
    for k, name in enumerate(groups):
        if not finite[k]:
            continue
        why = [w for w, flag in (("twisted: its outline crosses itself", twisted[k]), ("upside down", upside[k]),
                                 ("left and right swapped", swapped[k])) if flag]
        if why:
            out[name] = "; ".join(why)
    return out


def corners_out_of_order(schema, coords) -> list[str]:
    """Names of the vertebrae (4-corner groups) whose labelled corners are twisted, upside down or mirrored
    (see :func:`corner_order_problems` for the reasons), in schema order; [] when all are in order."""
    return list(corner_order_problems(schema, coords))
