"""Cobb angles from vertebra corner landmarks, following the AASCE 2019 challenge method, and the challenge's
SMAPE score.

Input: ``coords`` of shape (4·V, 2), (row, col) pixels, V vertebrae from top to bottom, each with its corners
in the order top-left, top-right, bottom-left, bottom-right (left/right as seen in the image) — the AASCE
68-point layout (V = 17, T1..L5).

Method (the challenge's reference code, re-implemented; the choices are ours where it is silent):

1. **Vertebra direction.** For each vertebra, the vector from the midpoint of its left edge (top-left,
   bottom-left) to the midpoint of its right edge (top-right, bottom-right). This is what the reference code
   does (it does *not* use the endplates); it averages the two endplate slopes and is less sensitive to a
   single misplaced corner.
2. **Main curve.** The angle between two vertebrae is the angle between their direction vectors. The main
   angle is the largest angle over all pairs; its end vertebrae are the pair (upper = smaller index; ties go
   to the first pair found from the top, as in the reference code).
3. **S-curve rule.** The centreline is the 2·V midpoints of the vertebra endplates (top edge, bottom edge of
   each vertebra, top to bottom). The spine is S-shaped when centreline points lie strictly on both sides of
   the straight line joining its first and last point. As in the reference code, the last vertebra's two
   endplate midpoints are left out of the test (the bottom one is the line's end; the top one lies across
   the line in many spines only because the line ends just below it) — with it included, 15 of the 481
   AASCE training spines get a different S verdict, 10 of them angles > 1° away from ``angles.csv``.
   ``s_tolerance`` lets a tiny crossing be ignored (default 0 = the reference behaviour).
4. **The two other curves.**
   - not S: the curve from the top vertebra to the main curve's upper end, and the curve from the main
     curve's lower end to the bottom vertebra (fixed end vertebrae, angle between them).
   - S, main curve in the upper half: the largest angle between the main curve's upper end and any
     vertebra above it, and the largest angle between the main curve's lower end and any vertebra below it.
   - S, main curve in the lower half: the largest angle between the main curve's upper end and any vertebra
     above it (end vertebra *e*), then the largest angle between *e* and any vertebra above *e*.
   "Upper half" means: the mean row of the two end vertebrae's bottom-edge midpoints is above the middle of
   the image (``image_height / 2``), as in the reference code. When the image height is not given, the
   middle of the spine's own vertical extent is used instead (see ``cobb_angles``).

Implausible vertebrae (``exclude_implausible=True``, what the clinical measurements use). A vertebra whose 4
corners do not form a plausible vertebra — corners missing, degenerate (zero width or height), left and right
swapped, upside down, twisted (its outline crosses itself), or out of order along the spine — is left out and
the angles are computed from the others (:func:`vertebra_problems` says which and why). End vertebrae keep their
index in the whole spine. A left-out vertebra *could* have been an end vertebra of a curve when it lies next to
one of the curve's end vertebrae (between it and the nearest kept vertebra, or beyond it at the end of the
spine): a vertebra's tilt varies smoothly along the spine, so only there can a missing vertebra be more tilted
than the measured end, and the angle measured without it is then at best a lower bound
(:meth:`CobbResult.possible_ends`).

Naming. The reference code returns ``[main, second, third]`` (the order of the dataset's ``angles.csv``,
whose columns the dataset calls PT, MT, TL/L even though the first is always the largest angle);
:attr:`CobbResult.challenge_angles` keeps that order and is what SMAPE compares against ``angles.csv``.
:attr:`CobbResult.pt`, :attr:`~CobbResult.mt`, :attr:`~CobbResult.tl` name the same three curves by position,
top to bottom: proximal-thoracic (highest), main-thoracic (middle), thoracolumbar/lumbar (lowest).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

Segment = tuple[tuple[float, float], tuple[float, float]]


class CobbError(ValueError):
    """The landmarks do not describe a spine the Cobb method can measure (missing, degenerate or out of order).
    The message is a plain-language reason."""


@dataclass(frozen=True)
class CobbCurve:
    """One curve: the angle (degrees) between the directions of its two end vertebrae."""

    angle: float
    upper: int  # index of the upper end vertebra (0 = top)
    lower: int  # index of the lower end vertebra
    apex: int | None  # vertebra between the ends farthest from the line joining the ends' centres; None if none
    lines: tuple[Segment, Segment]  # the two end-vertebra direction segments, ((r, c), (r, c)) each

    def to_dict(self, names=None) -> dict:
        nm = (lambda i: None if i is None else names[i]) if names is not None else (lambda i: i)
        return {"angle": self.angle, "upper": nm(self.upper), "lower": nm(self.lower), "apex": nm(self.apex),
                "lines": [[list(p) for p in seg] for seg in self.lines]}


@dataclass(frozen=True)
class CobbResult:
    """Cobb angles (degrees) of one spine. ``pt``/``mt``/``tl`` are the three curves top to bottom;
    ``challenge_angles`` the same three in the AASCE reference order ``(main, second, third)``."""

    pt: float
    mt: float
    tl: float
    main_angle: float
    curves: dict  # 'pt' | 'mt' | 'tl' -> CobbCurve
    main: str  # which of 'pt', 'mt', 'tl' is the main (largest) curve
    s_curve: bool
    challenge_angles: tuple[float, float, float]
    vertebra_lines: np.ndarray  # (V, 2, 2): left-edge midpoint, right-edge midpoint of each vertebra (row, col)
    centreline: np.ndarray  # (2V, 2): top- and bottom-edge midpoints, top to bottom (of the kept vertebrae)
    notes: tuple[str, ...] = field(default=())
    excluded: dict = field(default_factory=dict)  # vertebra index -> why it was left out (exclude_implausible)
    kept: tuple[int, ...] = ()  # indices of the vertebrae the angles were computed from (all when none excluded)

    def possible_ends(self, key: str) -> dict[int, int]:
        """Left-out vertebrae that could have been an end vertebra of curve ``key`` ('pt', 'mt', 'tl'):
        ``{left-out index: the end vertebra it could replace}`` — those lying between an end vertebra and the
        nearest kept vertebra on either side (or beyond the end vertebra when it is the first or last kept one).
        Empty when nothing was left out."""
        if not self.excluded:
            return {}
        kept = list(self.kept)
        nv = len(self.vertebra_lines)
        out = {}
        for end in (self.curves[key].upper, self.curves[key].lower):
            pos = kept.index(end)
            lo = kept[pos - 1] if pos > 0 else -1
            hi = kept[pos + 1] if pos + 1 < len(kept) else nv
            for v in sorted(self.excluded):
                if lo < v < hi:
                    out.setdefault(v, end)
        return out

    @property
    def angles(self) -> np.ndarray:
        """``(pt, mt, tl)`` as an array."""
        return np.array([self.pt, self.mt, self.tl])

    def lines(self) -> list[Segment]:
        """All end-vertebra lines of the three curves (for drawing), without duplicates."""
        out = []
        for key in ("pt", "mt", "tl"):
            for seg in self.curves[key].lines:
                if seg not in out:
                    out.append(seg)
        return out


def vertebra_geometry(coords) -> dict:
    """Per-vertebra midpoints: ``left``, ``right`` (edge midpoints), ``top``, ``bottom`` (endplate midpoints),
    ``centre``; each (V, 2) (row, col)."""
    c = np.asarray(coords, dtype=np.float64).reshape(-1, 4, 2)
    tl, tr, bl, br = c[:, 0], c[:, 1], c[:, 2], c[:, 3]
    return {"left": (tl + bl) / 2, "right": (tr + br) / 2, "top": (tl + tr) / 2, "bottom": (bl + br) / 2,
            "centre": c.mean(axis=1)}


def check_spine(coords, vertebra_names=None, check_order: bool = True) -> str | None:
    """Why the Cobb method cannot measure these landmarks, in plain words, or None when it can."""
    c = np.asarray(coords, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != 2 or c.shape[0] % 4 or c.shape[0] < 12:
        return f"expected 4 corners for each of at least 3 vertebrae, got landmarks of shape {c.shape}"
    nv = c.shape[0] // 4
    names = list(vertebra_names) if vertebra_names is not None else [f"vertebra {i + 1}" for i in range(nv)]
    bad = [names[v] for v in range(nv) if not np.all(np.isfinite(c[4 * v:4 * v + 4]))]
    if bad:
        return f"landmarks missing on {_list(bad)}"
    g = vertebra_geometry(c)
    vec = g["right"] - g["left"]
    flat = [names[v] for v in range(nv) if np.hypot(*vec[v]) < 1e-9]
    if flat:
        return f"left and right edges coincide (zero width) on {_list(flat)}"
    if not check_order:
        return None
    swapped = [names[v] for v in range(nv) if vec[v, 1] <= 0]
    if swapped:
        return f"right corners are not to the right of the left corners on {_list(swapped)}"
    upside = [names[v] for v in range(nv) if g["top"][v, 0] >= g["bottom"][v, 0]]
    if upside:
        return f"top edge is not above the bottom edge on {_list(upside)}"
    order = [f"{names[v + 1]} is not below {names[v]}" for v in range(nv - 1)
             if g["centre"][v + 1, 0] <= g["centre"][v, 0]]
    if order:
        return "vertebrae out of order: " + "; ".join(order)
    return None


def vertebra_problems(coords, vertebra_names=None) -> dict[int, str]:
    """``{vertebra index: why its corners do not form a plausible vertebra}``, in spine order; {} when all do.

    Per vertebra (corners TL, TR, BL, BR): "corners missing", "degenerate (...)" (left and right edges, or top
    and bottom edges, at the same place), "left and right swapped (right corners not to the right of the left
    corners)", "upside down (top corners below bottom corners)", "twisted (its outline crosses itself)"
    (several joined with "; "). Then, among the others, the order along the spine: the longest run of
    vertebrae whose centres go strictly down is kept, and each other one is "out of order (not between A and
    B)", A and B its nearest kept neighbours (one of two swapped vertebrae is left out this way)."""
    from .outline import is_twisted

    c = np.asarray(coords, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != 2 or c.shape[0] % 4 or c.shape[0] < 12:
        raise CobbError(f"expected 4 corners for each of at least 3 vertebrae, got landmarks of shape {c.shape}")
    nv = c.shape[0] // 4
    names = list(vertebra_names) if vertebra_names is not None else [f"vertebra {i + 1}" for i in range(nv)]
    v4 = c.reshape(nv, 4, 2)
    finite = np.all(np.isfinite(v4), axis=(1, 2))
    with np.errstate(invalid="ignore"):
        g = vertebra_geometry(c)
        vec = g["right"] - g["left"]
        twisted = np.atleast_1d(is_twisted(v4))
    out = {}
    for v in range(nv):
        if not finite[v]:
            out[v] = "corners missing"
            continue
        why = []
        if np.hypot(*vec[v]) < 1e-9:
            why.append("degenerate (left and right edges coincide)")
        elif vec[v, 1] <= 0:
            why.append("left and right swapped (right corners not to the right of the left corners)")
        dz = g["bottom"][v, 0] - g["top"][v, 0]
        if abs(dz) < 1e-9:
            why.append("degenerate (top and bottom edges at the same height)")
        elif dz < 0:
            why.append("upside down (top corners below bottom corners)")
        if twisted[v] and not why:
            why.append("twisted (its outline crosses itself)")
        if why:
            out[v] = "; ".join(why)
    # order: the longest chain of the remaining vertebrae with centres strictly going down (ties: the chain
    # that keeps the upper vertebrae)
    rest = [v for v in range(nv) if v not in out]
    rows = g["centre"][:, 0]
    best, prev = {}, {}
    for i, v in enumerate(rest):
        best[v], prev[v] = 1, None
        for u in rest[:i]:
            if rows[u] < rows[v] and best[u] + 1 > best[v]:
                best[v], prev[v] = best[u] + 1, u
    if rest:
        v = max(rest, key=lambda u: (best[u], -u))
        chain = []
        while v is not None:
            chain.append(v)
            v = prev[v]
        chain = chain[::-1]
        for v in rest:
            if v in chain:
                continue
            above = [u for u in chain if u < v]
            below = [u for u in chain if u > v]
            where = " and ".join(names[u] for u in ([above[-1]] if above else []) + ([below[0]] if below else []))
            out[v] = f"out of order (not between {where})" if above and below else \
                f"out of order (not {'below' if above else 'above'} {where})"
    return dict(sorted(out.items()))


def _list(items) -> str:
    return ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")


def _pair_angles(vec: np.ndarray) -> np.ndarray:
    """(V, V) angles in radians (0..π) between the direction vectors; atan2 of |cross| and dot, which stays
    accurate for nearly parallel vertebrae where arccos of the cosine loses precision."""
    x, y = vec[:, 0], vec[:, 1]
    cross = np.abs(x[:, None] * y[None, :] - y[:, None] * x[None, :])
    dot = x[:, None] * x[None, :] + y[:, None] * y[None, :]
    return np.arctan2(cross, dot)


def _side_of_chord(points: np.ndarray) -> np.ndarray:
    """Signed distance of each point from the line joining the first and last point (pixels)."""
    a, b = points[0], points[-1]
    d = b - a
    n = np.hypot(*d)
    if n < 1e-9:
        return np.zeros(len(points))
    rel = points - a
    return (rel[:, 0] * d[1] - rel[:, 1] * d[0]) / n


def is_s_curve(centreline, tolerance: float = 0.0) -> bool:
    """True when the centreline has points more than ``tolerance`` pixels on both sides of the line joining its
    first and last points, its last two points (the last vertebra's endplate midpoints) not counted — the
    S-curve test of the AASCE reference code when ``tolerance`` is 0."""
    s = _side_of_chord(np.asarray(centreline, dtype=np.float64))[:-2]
    return bool(np.any(s > tolerance) and np.any(s < -tolerance))


def _apex(centres: np.ndarray, upper: int, lower: int) -> int | None:
    if lower - upper < 2:
        return None
    dist = np.abs(_side_of_chord(centres[upper:lower + 1]))[1:-1]
    if dist.max() <= 1e-9:
        return None
    return upper + 1 + int(np.argmax(dist))


def cobb_angles(coords, image_height: float | None = None, *, vertebra_names=None, check_order: bool = True,
                s_tolerance: float = 0.0, exclude_implausible: bool = False) -> CobbResult:
    """Cobb angles of a spine (AASCE 2019 method; see the module docstring).

    Args:
        coords: (4·V, 2) (row, col) corners, V ≥ 3 vertebrae top to bottom, corners TL, TR, BL, BR.
        image_height: image height in pixels, for the reference code's "main curve in the upper half" rule in
            S-shaped spines. None: use the middle of the spine's vertical extent (first to last centreline
            point) instead; on the AASCE training set's ground truth this changes the third angle of 21 of 481
            images and raises the SMAPE against ``angles.csv`` from 0.0005 % to 0.76 %
            (``benchmarks/cobb_gt_smape.py``), so pass the height when it is known.
        vertebra_names: names used in error messages (default "vertebra 1", ...).
        check_order: refuse vertebrae that are flipped or out of order (``CobbError``). False computes anyway,
            as the reference code does (useful to score raw predictions).
        s_tolerance: pixels a centreline point must lie beyond the end-to-end line to count for the S test.
        exclude_implausible: leave out the vertebrae :func:`vertebra_problems` names (missing, degenerate,
            flipped, twisted or out of order) and compute the angles from the others instead of refusing;
            ``excluded`` says which and why, ``kept`` which were used, curve indices stay those of the whole
            spine. Raises ``CobbError`` only when fewer than 3 vertebrae are left.

    Raises:
        CobbError: missing (NaN) corners, a vertebra of zero width, or (with ``check_order``) a vertebra whose
            right corners are not right of its left corners, whose top edge is not above its bottom edge, or
            which is not below the previous one.
    """
    c = np.asarray(coords, dtype=np.float64)
    if exclude_implausible:
        return _cobb_without(c, image_height, vertebra_names, s_tolerance)
    reason = check_spine(c, vertebra_names, check_order=check_order)
    if reason:
        raise CobbError(reason)
    g = vertebra_geometry(c)
    nv = len(g["left"])
    vec = g["right"] - g["left"]
    ang = np.degrees(_pair_angles(vec))
    # main curve: first pair (row-major from the top) reaching the maximum; upper < lower
    flat = int(np.argmax(np.triu(ang, 1)))
    up, lo = divmod(flat, nv)
    if up == lo:  # all angles zero: argmax of an all-zero triangle gives (0, 0)
        up, lo = 0, nv - 1
    main = float(ang[up, lo])
    centreline = np.empty((2 * nv, 2))
    centreline[0::2], centreline[1::2] = g["top"], g["bottom"]
    s_curve = is_s_curve(centreline, s_tolerance)
    notes = []
    if not s_curve:
        second, third = (0, up), (lo, nv - 1)
        order = ((second, "2"), ((up, lo), "1"), (third, "3"))  # top to bottom
    else:
        mid_row = g["bottom"][up, 0] + g["bottom"][lo, 0]
        if image_height is not None:
            upper_half = mid_row < float(image_height)
        else:
            upper_half = mid_row < centreline[0, 0] + centreline[-1, 0]
            notes.append("image height unknown: 'upper half' judged against the spine's own extent")
        e1 = int(np.argmax(ang[up, :up + 1]))  # most tilted relative to the upper end, at or above it
        second = (e1, up)
        if upper_half:
            e2 = lo + int(np.argmax(ang[lo, lo:]))
            third = (lo, e2)
            order = ((second, "2"), ((up, lo), "1"), (third, "3"))
        else:
            e2 = int(np.argmax(ang[e1, :e1 + 1]))
            third = (e2, e1)
            order = ((third, "3"), (second, "2"), ((up, lo), "1"))
    curves, by_rank = {}, {}
    for key, ((a, b), rank) in zip(("pt", "mt", "tl"), order):
        seg = lambda v: (tuple(map(float, g["left"][v])), tuple(map(float, g["right"][v])))  # noqa: E731
        curves[key] = CobbCurve(float(ang[a, b]), a, b, _apex(g["centre"], a, b), (seg(a), seg(b)))
        by_rank[rank] = key
    return CobbResult(
        pt=curves["pt"].angle, mt=curves["mt"].angle, tl=curves["tl"].angle, main_angle=main, curves=curves,
        main=by_rank["1"], s_curve=s_curve,
        challenge_angles=(main, curves[by_rank["2"]].angle, curves[by_rank["3"]].angle),
        vertebra_lines=np.stack([g["left"], g["right"]], axis=1), centreline=centreline, notes=tuple(notes),
        kept=tuple(range(nv)))


def _cobb_without(c: np.ndarray, image_height, vertebra_names, s_tolerance) -> CobbResult:
    """:func:`cobb_angles` with ``exclude_implausible``: the method on the plausible vertebrae only, indices
    mapped back to the whole spine."""
    excluded = vertebra_problems(c, vertebra_names)
    nv = c.shape[0] // 4
    names = list(vertebra_names) if vertebra_names is not None else [f"vertebra {i + 1}" for i in range(nv)]
    kept = [v for v in range(nv) if v not in excluded]
    if len(kept) < 3:
        raise CobbError("fewer than 3 plausible vertebrae: " + "; ".join(f"{names[v]}: {why}"
                                                                          for v, why in excluded.items()))
    sub = c.reshape(nv, 4, 2)[kept].reshape(-1, 2)
    res = cobb_angles(sub, image_height, check_order=False, s_tolerance=s_tolerance)
    if not excluded:
        return res
    k = np.asarray(kept)
    curves = {key: CobbCurve(cv.angle, int(k[cv.upper]), int(k[cv.lower]),
                             None if cv.apex is None else int(k[cv.apex]), cv.lines) for key, cv in res.curves.items()}
    with np.errstate(invalid="ignore"):
        g = vertebra_geometry(c)
    return CobbResult(pt=res.pt, mt=res.mt, tl=res.tl, main_angle=res.main_angle, curves=curves, main=res.main,
                      s_curve=res.s_curve, challenge_angles=res.challenge_angles,
                      vertebra_lines=np.stack([g["left"], g["right"]], axis=1), centreline=res.centreline,
                      notes=res.notes, excluded=excluded, kept=tuple(kept))


@dataclass(frozen=True)
class CobbBatch:
    """The Cobb method on N spines at once (:func:`cobb_angles_batch`): ``angles`` (N, 3) the pt, mt, tl
    angles (degrees); ``main`` (N,) which of them (0, 1, 2) is the main curve; ``ends`` (N, 3, 2) the upper
    and lower end vertebra of each curve; ``s_curve`` (N,) bool."""

    angles: np.ndarray
    main: np.ndarray
    ends: np.ndarray
    s_curve: np.ndarray

    @property
    def main_angle(self) -> np.ndarray:
        return np.take_along_axis(self.angles, self.main[:, None], axis=1)[:, 0]


def cobb_angles_batch(coords, image_height: float | None = None, *, orient: bool = True,
                      s_tolerance: float = 0.0) -> CobbBatch:
    """:func:`cobb_angles` on a batch of spines, vectorised (no order checks, no error on bad geometry) — for
    the Monte Carlo that gives a Cobb angle its expected error, where the end vertebrae may change from one
    sample to the next.

    Args:
        coords: (N, 4·V, 2) corners (row, col), the same layout as :func:`cobb_angles`.
        image_height: as in :func:`cobb_angles` (None: the spine's own extent decides "upper half").
        orient: take each vertebra's direction from left to right as displayed whatever the corner labels say
            (a direction pointing left is reversed). With ``orient=False`` every spine gives
            ``cobb_angles(..., check_order=False)``; an ordered spine gives the same with either.
        s_tolerance: as in :func:`cobb_angles`.
    """
    c = np.asarray(coords, dtype=np.float64)
    if c.ndim != 3 or c.shape[2] != 2 or c.shape[1] % 4 or c.shape[1] < 12:
        raise ValueError(f"expected (N, 4·V, 2) corners of at least 3 vertebrae, got {c.shape}")
    return cobb_batch_sample_last(np.ascontiguousarray(c.transpose(1, 2, 0)), image_height, orient=orient,
                                  s_tolerance=s_tolerance)


def cobb_batch_sample_last(coords, image_height: float | None = None, *, orient: bool = True,
                           s_tolerance: float = 0.0) -> CobbBatch:
    """:func:`cobb_angles_batch` on corners laid out (4·V, 2, N) — samples last, so that every operation runs
    over N contiguous numbers (3–4× faster than (N, 4·V, 2) for N = 256, V = 17)."""
    c = np.asarray(coords, dtype=np.float64)
    k4, _, n = c.shape
    nv = k4 // 4
    c = c.reshape(nv, 4, 2, n)
    tl, tr, bl, br = c[:, 0], c[:, 1], c[:, 2], c[:, 3]  # (V, 2, N)
    vec = (tr + br - tl - bl) / 2  # (V, 2, N): left-edge midpoint -> right-edge midpoint
    if orient:
        vec = np.where(vec[:, 1:2] < 0, -vec, vec)
    # pair angles from one direction per vertebra (V arctan2 instead of V², and only the pairs needed): oriented
    # directions lie within ±90° of +col, so their differences need no wrapping
    phi = np.degrees(np.arctan2(vec[:, 0], vec[:, 1]))  # (V, N)
    rows = np.arange(n)

    def diff(a, b):
        d = np.abs(a - b)
        return d if orient else np.minimum(d, 360.0 - d)

    iu, ju = np.triu_indices(nv, 1)  # row-major, as argmax over the upper triangle in cobb_angles
    pairs = diff(phi[iu], phi[ju])  # (P, N)
    k = np.argmax(pairs, axis=0)
    zero = pairs[k, rows] <= 0  # all angles zero: (0, V-1), as cobb_angles
    up, lo = np.where(zero, 0, iu[k]), np.where(zero, nv - 1, ju[k])
    idx = np.arange(nv)[:, None]

    def end_from(v, mask):  # the vertebra (within mask) most tilted relative to vertebra v[n]; first on ties
        return np.argmax(np.where(mask, diff(phi, phi[v, rows]), -np.inf), axis=0)

    top_mid, bottom_mid = (tl + tr) / 2, (bl + br) / 2  # (V, 2, N)
    # S-curve test: centreline points (endplate midpoints, top to bottom) on both sides of the end-to-end line;
    # the last vertebra's two points are left out (as in cobb_angles)
    a, b = top_mid[0], bottom_mid[-1]
    d = b - a
    norm = np.hypot(d[0], d[1])
    safe = np.where(norm > 1e-9, norm, 1.0)

    def side(pts):  # (V-1, 2, N) -> (V-1, N)
        rel = pts - a
        return np.where(norm > 1e-9, (rel[:, 0] * d[1] - rel[:, 1] * d[0]) / safe, 0.0)

    s_top, s_bottom = side(top_mid[:-1]), side(bottom_mid[:-1])
    s_curve = ((np.any(s_top > s_tolerance, axis=0) | np.any(s_bottom > s_tolerance, axis=0))
               & (np.any(s_top < -s_tolerance, axis=0) | np.any(s_bottom < -s_tolerance, axis=0)))
    bottom_row = bottom_mid[:, 0]  # (V, N)
    mid_row = bottom_row[up, rows] + bottom_row[lo, rows]
    limit = float(image_height) if image_height is not None else a[0] + b[0]
    upper_half = mid_row < limit
    e1 = end_from(up, idx <= up)  # at or above the upper end
    e2_up = end_from(lo, idx >= lo)  # at or below the lower end
    e2_lo = end_from(e1, idx <= e1)  # at or above e1
    zeros, last = np.zeros(n, dtype=int), np.full(n, nv - 1)
    # (pt, mt, tl) end pairs for the three cases of cobb_angles: not S; S with the main curve in the upper
    # half; S with it in the lower half
    not_s = np.stack([np.stack([zeros, up], 1), np.stack([up, lo], 1), np.stack([lo, last], 1)], 1)
    s_up = np.stack([np.stack([e1, up], 1), np.stack([up, lo], 1), np.stack([lo, e2_up], 1)], 1)
    s_lo = np.stack([np.stack([e2_lo, e1], 1), np.stack([e1, up], 1), np.stack([up, lo], 1)], 1)
    lower_case = s_curve & ~upper_half
    ends = np.where(s_curve[:, None, None], np.where(lower_case[:, None, None], s_lo, s_up), not_s)  # (N, 3, 2)
    angles = diff(phi[ends[..., 0], rows[:, None]], phi[ends[..., 1], rows[:, None]])  # (N, 3)
    return CobbBatch(angles=angles, main=np.where(lower_case, 2, 1), ends=ends, s_curve=s_curve)


def smape(pred, gt) -> float:
    """Symmetric mean absolute percentage error of the AASCE 2019 challenge, in percent:
    ``100 · mean over images of Σ_j |pred_j − gt_j| / Σ_j (pred_j + gt_j)`` (j over the three angles).

    ``pred`` and ``gt`` are (N, 3) (or (3,) for one image) non-negative angles in the same order. An image
    whose angles are all zero in both counts as 0 (perfect agreement) instead of 0/0. NaN in an input gives
    NaN (a missing prediction is not silently dropped).
    """
    p = np.atleast_2d(np.asarray(pred, dtype=np.float64))
    t = np.atleast_2d(np.asarray(gt, dtype=np.float64))
    if p.shape != t.shape:
        raise ValueError(f"pred and gt must have the same shape, got {p.shape} and {t.shape}")
    if p.shape[0] == 0:
        raise ValueError("smape of zero images is undefined")
    if np.any(p < 0) or np.any(t < 0):
        raise ValueError("smape expects non-negative angles")
    num = np.abs(p - t).sum(axis=1)
    den = (p + t).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    per = np.where(np.isnan(num) | np.isnan(den), np.nan, per)
    return float(100.0 * per.mean())
