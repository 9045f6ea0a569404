"""Training labels put in anatomical order (the config's ``label_order: anatomical``).

The public AASCE labels list some vertebrae out of order: of the 481 training films, 23 list vertebrae out of order
along the spine (mostly the top vertebra listed last), 3 have a vertebra upside down, one L5's left and right
corners swapped (``experiments/benchmarks/label_order_report.py`` lists them). A network trained on them is taught, on those films,
that L4 sits below L5 — exactly the whole-level confusion that dominates the spine model's errors. The published
labels stay what evaluation, validation and the Cobb reference use; this module re-assigns the *training*
targets only:

- within each 4-corner group (a vertebra: TL, TR, BL, BR), an upside-down group (its top edge's midpoint not
  above its bottom edge's) has its top and bottom pairs exchanged, and a mirrored one (its right edge's midpoint
  not right of its left edge's) its left and right pairs — the same geometry tests as
  :func:`..measurements.outline.corner_order_problems`, so tilted vertebrae (any tilt under 90°) are left alone;
- the groups are then ordered top to bottom by the rows of their centres (a stable sort: groups already in
  order keep it).

A group still twisted after that (its outline crosses itself) is left as labelled and reported. Landmarks
outside the 4-corner groups keep their index.
"""

from __future__ import annotations

import numpy as np

from ..measurements.outline import _corner_groups, is_twisted
from ..schemas import load_schema

_UPSIDE_DOWN = np.array([2, 3, 0, 1])  # TL, TR, BL, BR -> the bottom pair on top
_MIRRORED = np.array([1, 0, 3, 2])  # left and right exchanged


def corner_groups(schema) -> tuple[list[str], np.ndarray]:
    """(names, (G, 4) landmark indices TL, TR, BL, BR) of the schema's 4-corner groups, in schema order."""
    groups = _corner_groups(load_schema(schema))
    return list(groups), np.array(list(groups.values()), dtype=np.int64).reshape(-1, 4)


def anatomical_permutation(schema, coords) -> tuple[np.ndarray, list[str]]:
    """``(perm, changes)``: ``coords[perm]`` are the labelled points re-assigned in anatomical order (see the module
    docstring); ``changes`` says in words what moved (empty when the labels were in order, ``perm`` then the
    identity). ``coords``: (K, 2) (row, col) in any frame that does not flip an axis."""
    names, idx = corner_groups(schema)
    c = np.asarray(coords, dtype=np.float64)
    perm = np.arange(len(c))
    if not len(idx):
        raise ValueError("label_order 'anatomical' needs a landmark set of 4-corner groups (vertebrae); "
                         f"'{load_schema(schema).name}' has none")
    local = idx.copy()
    changes = []
    for g in range(len(idx)):
        v = c[local[g]]
        if not np.isfinite(v).all():
            continue
        if v[0, 0] + v[1, 0] >= v[2, 0] + v[3, 0]:
            local[g] = local[g][_UPSIDE_DOWN]
            changes.append(f"{names[g]} upside down")
            v = c[local[g]]
        if v[1, 1] + v[3, 1] <= v[0, 1] + v[2, 1]:
            local[g] = local[g][_MIRRORED]
            changes.append(f"{names[g]} left and right swapped")
            v = c[local[g]]
        if bool(is_twisted(v)):
            changes.append(f"{names[g]} twisted (left as labelled)")
    centres = c[local].mean(axis=1)[:, 0]
    if np.isfinite(centres).all():
        order = np.argsort(centres, kind="stable")
        moved = [names[g] for j, g in enumerate(order) if g != j]
        if moved:
            shown = ", ".join(moved[:4]) + (", …" if len(moved) > 4 else "")
            changes.append(f"{len(moved)} vertebrae out of order along the spine ({shown}): re-assigned by height")
        local = local[order]
    perm[idx.ravel()] = local.ravel()
    return perm, changes


def reorder_set(schema, coords: np.ndarray, *others: np.ndarray) -> tuple[list[np.ndarray], list[list[str]]]:
    """Every image of a set in anatomical order: the permutation is found on ``coords`` (N, K, 2) and applied to it
    and to each of ``others`` (N, K, 2: the same points in another frame, e.g. network pixels). Returns the
    re-ordered arrays (``coords`` first) and each image's changes."""
    arrays = [np.array(a, copy=True) for a in (coords, *others)]
    changes = []
    for n in range(len(coords)):
        perm, what = anatomical_permutation(schema, coords[n])
        for a, src in zip(arrays, (coords, *others)):
            a[n] = np.asarray(src[n])[perm]
        changes.append(what)
    return arrays, changes
