"""Where to write landmark labels so that none covers another label or a point (no napari, no Qt).

:func:`place_labels` takes the points on the film, the point each label names (its *anchor*), the label texts
and the text's size in data units (the labels are drawn at a fixed size on the screen, so the caller
converts it with the current zoom: :func:`text_size_in_data`), and returns each label's box. It is a greedy
search over candidate positions: labels are placed one after another, the most crowded first; each tries 8
positions around its anchor (16 on the outer rings) at increasing distances, the preferred side first, and takes
the one that overlaps no label placed so far and no point, nearest to the anchor on the preferred side (where
no position is free it takes the one with the least overlap). Softer costs keep a label's leader off other
labels, points and leaders, fan the labels of a cluster out (each prefers the side away from its neighbours),
keep labels inside the image, off bright bone (:class:`BrightBackground`) and, for vertebrae, in their order.
A label set off from its anchor — not on the first ring, or with another label's anchor less than a line height
farther than its own — gets a leader line from the anchor to the box, so it stays clear which label belongs to
which point.

Coordinates are (row, col) in the points' units (original image pixels); a box is (row0, col0, row1, col1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["LabelPlacement", "place_labels", "place_chain_labels", "text_size_in_data", "text_width_em", "boxes_overlap",
           "box_point_distance", "BrightBackground", "LINE_HEIGHT_EM"]

#: Height of a label's box as a fraction of the font size in screen pixels: napari's text at size 10 is 14 px
#: high in capitals, 18 px with a descender ("Pog", "L1 tip"); 20 px leaves a margin.
LINE_HEIGHT_EM = 2.0
_NARROW, _SEMI, _WIDE = set("il '.,:;|!I"), set("tfjr1"), set("MWmw")


def text_width_em(text: str) -> float:
    """Estimated width of a label in units of its font size (napari's text at size 10: "L1 tip" 48 px, "Pog"
    29 px, "Me" 24 px, "T10" 33 px, "WWW" 51 px; the estimate is a little wider, margin included)."""
    return 0.6 + sum(0.5 if ch in _NARROW else 0.8 if ch in _SEMI else 1.6 if ch in _WIDE else 1.0 for ch in text)


@dataclass
class LabelPlacement:
    """The result of :func:`place_labels`, one row per label, in the order given.

    Attributes:
        centers: (M, 2) (row, col) of each label's centre (draw the text there, anchored at its centre).
        boxes: (M, 4) (row0, col0, row1, col1) of each label's box.
        leader: (M,) bool, the label is set off from its anchor and needs a leader line.
        leaders: (L, 2, 2) line segments (from the anchor's edge to the box) for the labels with ``leader``.
        overlaps: (M,) number of other boxes and points each box still overlaps (0 unless the film is too
            crowded for every label to find a free place within ``max_rings``).
    """

    centers: np.ndarray
    boxes: np.ndarray
    leader: np.ndarray
    leaders: np.ndarray
    overlaps: np.ndarray


def text_size_in_data(font_size: float, zoom: float, scale=(1.0, 1.0)) -> tuple[float, float]:
    """(line height, em) in data units of a label of font size ``font_size`` (screen pixels) at a camera
    ``zoom`` (screen pixels per world unit) on a layer with ``scale`` (world units per data unit); a label's
    width is ``em * text_width_em(text)``."""
    zoom = float(zoom) if zoom and np.isfinite(zoom) and zoom > 0 else 1.0
    sr, sc = (float(v) for v in scale)
    return (LINE_HEIGHT_EM * font_size / (zoom * sr), font_size / (zoom * sc))


def boxes_overlap(a, b, eps: float = 1e-9) -> bool:
    """Whether two (row0, col0, row1, col1) boxes share any area (touching edges do not count)."""
    return bool(min(a[2], b[2]) - max(a[0], b[0]) > eps and min(a[3], b[3]) - max(a[1], b[1]) > eps)


def box_point_distance(box, points) -> np.ndarray:
    """Distance from each (row, col) point to a (row0, col0, row1, col1) box (0 inside)."""
    p = np.asarray(points, float).reshape(-1, 2)
    dr = np.maximum(np.maximum(box[0] - p[:, 0], p[:, 0] - box[2]), 0.0)
    dc = np.maximum(np.maximum(box[1] - p[:, 1], p[:, 1] - box[3]), 0.0)
    return np.hypot(dr, dc)


class BrightBackground:
    """How much of a label's box lies on bright film (where white text cannot be read): called with (C, 4) boxes,
    it returns (C,) values in [0, 1] — 0 where the film under the box is darker than ``dark`` of the display range,
    1 where it is brighter than ``bright``, in between linearly — from a summed-area table of the film
    (subsampled to at most ``max_side`` pixels a side), so that many candidate boxes cost a few array operations.

    Args:
        image: (H, W) or (H, W, C) film, in the coordinates of the boxes.
        limits: (low, high) display range (the image layer's contrast limits); default the film's 1st and 99th
            percentiles.
        subsampled: the film was given subsampled by this step (``film[::k, ::k]``); boxes stay in full pixels.
    """

    def __init__(self, image, limits=None, *, dark: float = 0.45, bright: float = 0.7, max_side: int = 512,
                 subsampled: int = 1):
        img = np.asarray(image)
        if img.ndim == 3:
            img = img[..., :3].mean(-1)
        step = max(1, int(np.ceil(max(img.shape[:2]) / max_side)))
        small = np.asarray(img[::step, ::step], float)
        lo, hi = (np.nanpercentile(small, [1, 99]) if limits is None else (float(v) for v in limits))
        small = np.clip((np.nan_to_num(small, nan=lo) - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
        self.step = step * max(1, int(subsampled))
        self.shape = small.shape
        self.table = np.pad(small.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        self.dark, self.bright = float(dark), float(bright)

    def __call__(self, boxes) -> np.ndarray:
        b = np.asarray(boxes, float).reshape(-1, 4) / self.step
        r0 = np.clip(np.floor(b[:, 0]), 0, self.shape[0]).astype(int)
        r1 = np.clip(np.ceil(b[:, 2]), 0, self.shape[0]).astype(int)
        c0 = np.clip(np.floor(b[:, 1]), 0, self.shape[1]).astype(int)
        c1 = np.clip(np.ceil(b[:, 3]), 0, self.shape[1]).astype(int)
        t = self.table
        total = t[r1, c1] - t[r0, c1] - t[r1, c0] + t[r0, c0]
        area = (r1 - r0) * (c1 - c0)
        mean = np.where(area > 0, total / np.maximum(area, 1), 0.0)  # off the film: the dark canvas
        return np.clip((mean - self.dark) / (self.bright - self.dark), 0.0, 1.0)


def _directions(n: int) -> np.ndarray:
    a = np.arange(n) * (2 * np.pi / n)
    d = np.stack([np.sin(a), np.cos(a)], 1)  # (row, col): 0 = east (right), then clockwise on screen (down)
    d[np.abs(d) < 1e-12] = 0.0
    return d


def _intersection(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """(C, O) overlap areas of C candidate boxes with O boxes."""
    h = np.minimum(boxes[:, None, 2], others[None, :, 2]) - np.maximum(boxes[:, None, 0], others[None, :, 0])
    w = np.minimum(boxes[:, None, 3], others[None, :, 3]) - np.maximum(boxes[:, None, 1], others[None, :, 1])
    return np.clip(h, 0, None) * np.clip(w, 0, None)


def _box_points_distance(boxes: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(C, P) distances from P points to C boxes (0 inside)."""
    dr = np.maximum(np.maximum(boxes[:, None, 0] - points[None, :, 0], points[None, :, 0] - boxes[:, None, 2]), 0.0)
    dc = np.maximum(np.maximum(boxes[:, None, 1] - points[None, :, 1], points[None, :, 1] - boxes[:, None, 3]), 0.0)
    return np.hypot(dr, dc)


def _segments_cross(p1: np.ndarray, p2: np.ndarray, segs: np.ndarray) -> np.ndarray:
    """(C, L) whether each of C segments p1→p2 properly crosses each of L segments (L, 2, 2)."""
    q1, q2 = segs[None, :, 0], segs[None, :, 1]
    a, b = p1[:, None], p2[:, None]

    def orient(u, v, w):
        return (v[..., 0] - u[..., 0]) * (w[..., 1] - u[..., 1]) - (v[..., 1] - u[..., 1]) * (w[..., 0] - u[..., 0])

    d1, d2 = orient(q1, q2, a), orient(q1, q2, b)
    d3, d4 = orient(a, b, q1), orient(a, b, q2)
    return (d1 * d2 < 0) & (d3 * d4 < 0)


def _leader_segment(anchor, box, start_gap: float) -> np.ndarray:
    """From just outside the anchor's point to the nearest point of the box."""
    anchor = np.asarray(anchor, float)
    end = np.array([np.clip(anchor[0], box[0], box[2]), np.clip(anchor[1], box[1], box[3])])
    v = end - anchor
    n = float(np.hypot(*v))
    start = anchor + v / n * min(start_gap, 0.5 * n) if n > 0 else anchor
    return np.stack([start, end])


def _segments_hit_boxes(starts, ends, boxes, samples: int = 9) -> np.ndarray:
    """(C,) number of boxes each of C segments passes through (sampled along the segment)."""
    if not len(boxes):
        return np.zeros(len(starts))
    t = np.linspace(0.1, 0.9, samples)
    pts = starts[:, None, :] + t[None, :, None] * (ends - starts)[:, None, :]  # (C, S, 2)
    inside = ((pts[:, :, None, 0] > boxes[None, None, :, 0]) & (pts[:, :, None, 0] < boxes[None, None, :, 2])
              & (pts[:, :, None, 1] > boxes[None, None, :, 1]) & (pts[:, :, None, 1] < boxes[None, None, :, 3]))
    return inside.any(1).sum(1).astype(float)


def place_labels(
    anchors,
    texts: Sequence[str],
    points=None,
    *,
    text_size: tuple[float, float],
    point_radius=0.0,
    preferred=None,
    gap: float | None = None,
    obstacles=None,
    bounds=None,
    background=None,
    keep_order: bool = False,
    max_rings: int = 14,
) -> LabelPlacement:
    """Place one label per anchor so that no label overlaps another label or a point.

    Args:
        anchors: (M, 2) (row, col) the point each label names (a landmark, or the edge of a vertebra).
        texts: the M label texts (:func:`text_width_em` sets each box's width).
        points: (N, 2) every point drawn on the film (no label may cover one); default the anchors.
        text_size: (line height, em) in data units (:func:`text_size_in_data`).
        point_radius: radius of the drawn points in data units, one number or (N,).
        preferred: (M, 2) or (2,) direction (row, col) of each label's default side (default: right, east).
        gap: distance from the anchor to the box on the first ring (default: the point radius + a third of the
            line height).
        obstacles: (K, 4) boxes a label should rather not cover (soft: a vertebra's body), or None.
        bounds: (row0, col0, row1, col1) the labels should stay inside (the image), or None.
        background: called with (C, 4) candidate boxes, returns (C,) in [0, 1], how unreadable a label is there
            (:class:`BrightBackground`: white text on bright bone); a soft cost (worth about three rings).
        keep_order: the labels' rows should keep the anchors' order from top to bottom (vertebrae: T4 is never
            written above T3); a soft cost.
        max_rings: how many distances to try, each half a line height further out.

    Returns:
        :class:`LabelPlacement`.
    """
    anchors = np.asarray(anchors, float).reshape(-1, 2)
    m = len(anchors)
    texts = [str(t) for t in texts]
    if len(texts) != m:
        raise ValueError(f"{m} anchors but {len(texts)} texts")
    points = anchors.copy() if points is None else np.asarray(points, float).reshape(-1, 2)
    keep = np.isfinite(points).all(1)
    radius = np.broadcast_to(np.asarray(point_radius, float), (len(points),))[keep]
    points = points[keep]
    lh, cw = (float(v) for v in text_size)
    if not (lh > 0 and cw > 0):
        raise ValueError(f"text_size must be two positive numbers, got {text_size!r}")
    pref = np.broadcast_to(np.asarray([0.0, 1.0] if preferred is None else preferred, float), (m, 2)).copy()
    norm = np.linalg.norm(pref, axis=1, keepdims=True)
    pref = np.where(norm > 1e-12, pref / np.maximum(norm, 1e-12), np.array([0.0, 1.0]))
    # in a cluster, labels fan out: away from the neighbouring anchors (within two line heights), the given side
    # still counting (a label whose neighbours surround it keeps the given side)
    ok = np.isfinite(anchors).all(1)
    for i in np.flatnonzero(ok):
        d = np.hypot(*(anchors[ok] - anchors[i]).T)
        near = (d > 1e-9) & (d < 2.0 * lh)
        if near.any():
            local = (anchors[i] - anchors[ok][near].mean(0)) / (2.0 * lh)
            v = pref[i] + 3.0 * local
            if np.linalg.norm(v) > 1e-9:
                pref[i] = v / np.linalg.norm(v)
    rmax = float(radius.max()) if len(radius) else 0.0
    gap = rmax + lh / 3.0 if gap is None else float(gap)
    step = 0.5 * lh
    point_boxes = np.concatenate([points - radius[:, None], points + radius[:, None]], 1)
    soft = np.zeros((0, 4)) if obstacles is None else np.asarray(obstacles, float).reshape(-1, 4)
    soft = soft[np.isfinite(soft).all(1)]
    half = np.stack([np.full(m, lh / 2.0), np.array([text_width_em(t) * cw / 2.0 for t in texts])], 1)

    # the most crowded labels choose first: count the anchors and points within a few boxes' reach
    reach = 3.0 * np.maximum(half[:, 0], half[:, 1]) + gap
    crowd = np.array([(np.hypot(*(points - a).T) < r).sum() + (np.hypot(*(anchors - a).T) < r).sum()
                      for a, r in zip(anchors, reach)]) if m else np.zeros(0)
    order = sorted(range(m), key=lambda i: (-crowd[i], i))

    # candidate offsets: ring k at distance gap + k * step, 8 directions on the first two rings, 16 further out
    dirs8, dirs16 = _directions(8), _directions(16)
    ring_of, dir_of = [], []
    for k in range(max_rings):
        d = dirs8 if k < 2 else dirs16
        ring_of += [k] * len(d)
        dir_of.append(d)
    ring_of = np.asarray(ring_of)
    dir_of = np.concatenate(dir_of)
    dist = gap + ring_of * step
    # the box's nearest edge/corner to the anchor sits at `dist` along the direction
    sgn = np.clip(dir_of / np.sin(np.pi / 8), -1.0, 1.0)
    sgn[np.abs(dir_of) < 1e-9] = 0.0

    boxes = np.full((m, 4), np.nan)
    centers = np.full((m, 2), np.nan)
    ring_used = np.zeros(m, int)
    placed: list[int] = []
    segs: list[np.ndarray] = []

    def _cost(i, a, c, ring, dirs):
        cand = np.concatenate([c - half[i], c + half[i]], 1)
        area = 4.0 * half[i, 0] * half[i, 1]
        cost = 1.0 * ring + 0.6 * (1.0 - dirs @ pref[i])  # nearer first, then the preferred side
        ends = np.stack([np.clip(a[0], cand[:, 0], cand[:, 2]), np.clip(a[1], cand[:, 1], cand[:, 3])], 1)
        starts = np.broadcast_to(a, ends.shape)
        if placed:
            inter = _intersection(cand, boxes[placed])
            cost += 100.0 * (inter > 1e-9).sum(1) + 30.0 * inter.sum(1) / area
            # a leader from this candidate should not run through the labels already placed
            cost += 5.0 * _segments_hit_boxes(starts, ends, boxes[placed])
        near = (np.abs(points - a) < reach_all).all(1) if len(points) else np.zeros(0, bool)
        if near.any():
            cost += 100.0 * (_intersection(cand, point_boxes[near]) > 1e-9).sum(1)
            # nor through another point (its own, and points on top of it, do not count)
            other = near & (np.hypot(*(points - a).T) > radius + 1e-9)
            if other.any():
                cost += 3.0 * _segments_hit_boxes(starts, ends, point_boxes[other])
        if segs:  # nor cross a leader already drawn
            cost += 3.0 * _segments_cross(starts, ends, np.asarray(segs)).sum(1)
        if len(soft):
            cost += 2.0 * (_intersection(cand, soft).sum(1) / area)
        if bounds is not None:
            r0, c0, r1, c1 = (float(v) for v in bounds)
            out_h = np.clip(r0 - cand[:, 0], 0, None) + np.clip(cand[:, 2] - r1, 0, None)
            out_w = np.clip(c0 - cand[:, 1], 0, None) + np.clip(cand[:, 3] - c1, 0, None)
            cost += 20.0 * np.minimum(out_h / (2 * half[i, 0]) + out_w / (2 * half[i, 1]), 1.0)
        if background is not None:
            cost += 3.0 * np.asarray(background(cand), float)
        if keep_order and placed:
            pr = np.asarray(placed)
            above = anchors[pr, 0] < a[0]  # placed labels whose anchors lie above this one's
            below = anchors[pr, 0] > a[0]
            inverted = ((centers[pr, 0][None, :] > c[:, None, 0]) & above[None, :]) | \
                       ((centers[pr, 0][None, :] < c[:, None, 0]) & below[None, :])
            cost += 5.0 * inverted.sum(1)
        if segs:  # do not write over the leader lines already drawn
            cost += 20.0 * _segments_hit_boxes_rev(np.asarray(segs), cand)
        # a label that sits nearer to another label's anchor than to its own is ambiguous: near its point it
        # is not allowed (the leader would be too short to see); farther out it gets a leader
        dd = _box_points_distance(cand, others_of[i])
        own = _box_points_distance(cand, a[None, :])[:, 0]
        ambiguous = (dd < own[:, None] + margin).any(1)
        cost += np.where(ambiguous, np.where(ring < 2, 50.0, 2.0), 0.0)
        return cost

    others_of = [np.delete(anchors, i, 0)[np.delete(ok, i)] for i in range(m)]
    # another label's anchor less than a line height farther from the box than its own makes it unclear
    margin = lh
    reach_all = gap + max_rings * step + 2 * float(half.max()) + rmax if m else 0.0
    chunks = [(0, 2), (2, 4), (4, 8), (8, max_rings)]
    for i in order:
        a = anchors[i]
        if not np.isfinite(a).all():
            continue
        best = (np.inf, None, None, None)
        for lo, hi in chunks:  # nearer rings first; stop once no farther ring can do better
            if best[0] <= lo:
                break
            sel = slice(int(np.searchsorted(ring_of, lo)), int(np.searchsorted(ring_of, hi)))
            c = a[None, :] + dir_of[sel] * dist[sel, None] + sgn[sel] * half[i][None, :]
            cost = _cost(i, a, c, ring_of[sel], dir_of[sel])
            j = int(np.argmin(cost))
            if cost[j] < best[0]:
                best = (float(cost[j]), c[j], int(ring_of[sel][j]), None)
        _, cj, rj, _ = best
        boxes[i] = np.concatenate([cj - half[i], cj + half[i]])
        centers[i] = cj
        ring_used[i] = rj
        placed.append(i)
        if rj > 0:
            segs.append(_leader_segment(a, boxes[i], rmax))

    # leaders: a label off the first ring, or nearer to another label's anchor than to its own
    leader = np.zeros(m, bool)
    overlaps = np.zeros(m, int)
    ok = np.isfinite(anchors).all(1)
    for i in range(m):
        if not ok[i]:
            continue
        dd = box_point_distance(boxes[i], np.delete(anchors, i, 0)[np.delete(ok, i)])
        own = float(box_point_distance(boxes[i], anchors[i:i + 1])[0])
        leader[i] = ring_used[i] > 0 or bool((dd < own + margin).any())
        others = [b for b in placed if b != i]
        overlaps[i] = int(sum(boxes_overlap(boxes[i], boxes[b]) for b in others)
                          + (_intersection(boxes[i:i + 1], point_boxes) > 1e-9).sum())
    leaders = np.asarray([_leader_segment(anchors[i], boxes[i], rmax) for i in np.flatnonzero(leader)],
                         float).reshape(-1, 2, 2)
    return LabelPlacement(centers=centers, boxes=boxes, leader=leader, leaders=leaders, overlaps=overlaps)


def _segments_hit_boxes_rev(segs: np.ndarray, cand: np.ndarray, samples: int = 9) -> np.ndarray:
    """(C,) number of the given segments that pass through each of C candidate boxes."""
    t = np.linspace(0.1, 0.9, samples)
    pts = (segs[:, None, 0, :] + t[None, :, None] * (segs[:, 1] - segs[:, 0])[:, None, :]).reshape(-1, 2)  # (L*S, 2)
    inside = ((pts[None, :, 0] > cand[:, None, 0]) & (pts[None, :, 0] < cand[:, None, 2])
              & (pts[None, :, 1] > cand[:, None, 1]) & (pts[None, :, 1] < cand[:, None, 3]))
    return inside.reshape(len(cand), len(segs), samples).any(2).sum(1).astype(float)


def place_chain_labels(
    anchors,
    texts: Sequence[str],
    points=None,
    *,
    text_size: tuple[float, float],
    point_radius=0.0,
    gap: float | None = None,
    bounds=None,
) -> LabelPlacement:
    """Labels of a chain (vertebrae T1 … L5), all on the left, each beside its own anchor and in the chain's order
    from top to bottom.

    Each label's row is as near its anchor's row as the labels above and below allow: the rows that minimise the
    squared distances to the anchors subject to consecutive labels being a line height apart (an isotonic
    regression of ``anchor row − i · line height``, then kept inside ``bounds``); its right edge is ``gap`` left of
    the leftmost point in its row band (its own vertebra, or a neighbour bulging further left). So the labels read
    in the chain's order, their leaders are short (at most the stacking's shift plus the gap) and, both ends
    ordered alike, do not cross. ``anchors`` (M, 2) in the chain's order (the middle of each vertebra's left side);
    other arguments as :func:`place_labels`."""
    from scipy.optimize import isotonic_regression

    anchors = np.asarray(anchors, float).reshape(-1, 2)
    m = len(anchors)
    lh, em = float(text_size[0]), float(text_size[1])
    pts = anchors if points is None else np.asarray(points, float).reshape(-1, 2)
    rad = np.broadcast_to(np.asarray(point_radius, float), (len(pts),))
    gap = float(np.max(rad, initial=0.0) + lh / 3) if gap is None else float(gap)
    widths = np.array([text_width_em(t) * em for t in texts], float)
    if m == 0:
        z = np.zeros((0, 2))
        return LabelPlacement(z, np.zeros((0, 4)), np.zeros(0, bool), np.zeros((0, 2, 2)), np.zeros(0, int))
    step = lh * 1.05
    offsets = np.arange(m) * step
    z = isotonic_regression(anchors[:, 0] - offsets).x  # consecutive rows ≥ a line apart, in order
    if bounds is not None:  # and inside the film (clipping the isotonic fit is the bounded fit)
        lo, hi = float(bounds[0]) + lh / 2, float(bounds[2]) - lh / 2 - offsets[-1]
        z = np.clip(z, lo, max(lo, hi))
    rows = z + offsets
    def side(sign):  # boxes beside the points level with each label: sign −1 on the left, +1 on the right
        bx, fits = np.zeros((m, 4)), np.ones(m, bool)
        for i in range(m):
            band = np.abs(pts[:, 0] - rows[i]) <= lh / 2 + rad  # the points level with the label
            if sign < 0:
                edge = min(anchors[i, 1], float(np.min(pts[band, 1] - rad[band], initial=np.inf)))
                c1 = edge - gap
                c0 = c1 - widths[i]
                fits[i] = bounds is None or c0 >= float(bounds[1])
            else:
                edge = max(anchor_right[i], float(np.max(pts[band, 1] + rad[band], initial=-np.inf)))
                c0 = edge + gap
                c1 = c0 + widths[i]
                fits[i] = bounds is None or c1 <= float(bounds[3])
            bx[i] = (rows[i] - lh / 2, c0, rows[i] + lh / 2, c1)
        return bx, fits

    # the right edge of each anchor's group, for labels that must go right (the points level with the anchor)
    anchor_right = np.array([float(np.max(pts[np.abs(pts[:, 0] - a[0]) <= lh, 1], initial=a[1])) for a in anchors])
    left, left_fits = side(-1)
    boxes = left
    if not left_fits.all():  # no room on the left (a spine near the film's edge): all on the right if they fit
        right, right_fits = side(+1)
        boxes = right if right_fits.all() else np.where((~left_fits & right_fits)[:, None], right, left)
    if bounds is not None:  # where neither side has room: as far out as the film allows
        boxes[:, [1, 3]] -= np.minimum(boxes[:, 1] - float(bounds[1]), 0.0)[:, None]
        boxes[:, [1, 3]] -= np.maximum(boxes[:, 3] - float(bounds[3]), 0.0)[:, None]
    centers = np.stack([rows, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
    on_right = boxes[:, 1] > anchors[:, 1]
    anchors = np.where(on_right[:, None], np.stack([anchors[:, 0], anchor_right], 1), anchors)
    # a leader where the label does not sit level with its anchor, right next to it
    reach = np.where(on_right, boxes[:, 1] - anchors[:, 1], anchors[:, 1] - boxes[:, 3])
    leader = (np.abs(rows - anchors[:, 0]) > lh / 2) | (reach > gap + lh)
    leaders = np.array([_leader_segment(anchors[i], boxes[i], float(rad.max(initial=0.0)))
                        for i in np.flatnonzero(leader)]).reshape(-1, 2, 2)
    overlaps = np.array([int(sum(boxes_overlap(boxes[i], boxes[j]) for j in range(m) if j != i))
                         + int((box_point_distance(boxes[i], pts) < rad).sum()) for i in range(m)])
    return LabelPlacement(centers, boxes, leader, leaders, overlaps)
