"""Clinical measurements defined in a landmark schema's ``measurements:`` list, computed from (row, col) points.

A definition is a mapping with ``name``, ``kind``, ``unit``, ``definition`` (one line), ``reference`` and the
fields of its kind:

=============  =====================================================================================  =========
kind           fields                                                                                  unit
=============  =====================================================================================  =========
``distance``   ``landmarks: [p, q]`` — length of p–q                                                   mm (px)
``angle``      ``landmarks: [a, vertex, b]`` — angle a–vertex–b, 0..180°                               deg
``line_angle`` ``landmarks: [p1, p2, p3, p4]``; ``directed`` (default false), ``signed`` (false)       deg
               — angle between line 1 (p1→p2) and line 2 (p3→p4); see :func:`line_angle`
``cobb``       ``curve: main | pt | mt | tl``; optional ``groups`` (vertebra group names, top to         deg
               bottom; default: all of the schema's groups, each 4 corners TL, TR, BL, BR)
``difference`` ``of: [m1, m2]`` — m1 − m2, two other measurements with the same unit                    theirs
``ratio``      ``of: [m1, m2]`` — m1 / m2, two other measurements with the same unit                    ratio
=============  =====================================================================================  =========

Landmarks are given by name (or 0-based index). A distance declared in ``mm`` is reported in mm when the
pixel spacing is known and in px otherwise. With a spacing, all geometry (angles included) is computed in
physical units, so an anisotropic spacing is honoured.

Bad geometry never raises: a measurement whose landmarks are missing (NaN), coincident (zero-length line) or
out of order (Cobb) comes back with ``available=False`` and a plain-language ``reason``; the others still
compute. Malformed *definitions* raise :class:`~napari_interactive_landmarks.schemas.SchemaError`
(:func:`validate_definitions`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from ..schemas import LandmarkSchema, SchemaError, load_schema

UNITS = ("deg", "mm", "px", "ratio")
KINDS = {"distance": 2, "angle": 3, "line_angle": 4, "cobb": 0, "difference": 0, "ratio": 0}
DEFAULT_UNIT = {"distance": "mm", "angle": "deg", "line_angle": "deg", "cobb": "deg", "ratio": "ratio"}
COBB_CURVES = ("main", "pt", "mt", "tl")
COMMON_KEYS = {"name", "kind", "unit", "definition", "reference"}
KIND_KEYS = {"distance": {"landmarks"}, "angle": {"landmarks"}, "line_angle": {"landmarks", "directed", "signed"},
             "cobb": {"curve", "groups"}, "difference": {"of"}, "ratio": {"of"}}
_EPS = 1e-9


@dataclass
class Measurement:
    """One measurement's result. ``value`` is None when ``available`` is False, and ``reason`` then says why.
    ``details`` holds what was measured, JSON-friendly: ``lines`` (list of ((r, c), (r, c)) segments in image
    pixels, for drawing) and kind-specific entries (Cobb: end and apex vertebrae, ``s_curve``)."""

    name: str
    value: float | None
    unit: str
    definition: str
    available: bool
    reason: str | None = None
    details: dict = field(default_factory=dict)
    kind: str = ""
    reference: str = ""

    def to_dict(self) -> dict:
        return _jsonable(asdict(self))

    def __str__(self) -> str:
        if not self.available:
            return f"{self.name}: unavailable ({self.reason})"
        return f"{self.name}: {format_value(self.value, self.unit)}"


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "deg":
        return f"{value:.1f}°"
    if unit == "ratio":
        return f"{value:.3f}"
    return f"{value:.1f} {unit}"


def _jsonable(x, nan_to_none: bool = False):
    """Numpy-free, JSON-ready copy of ``x``; with ``nan_to_none`` non-finite floats become None."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v, nan_to_none) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v, nan_to_none) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist(), nan_to_none)
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, (np.floating, float)):
        return None if nan_to_none and not np.isfinite(x) else float(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    return x


# ----------------------------------------------------------------------------------------------- geometry
class GeometryError(ValueError):
    """Raised inside this module for undefined geometry; turned into ``available=False``."""


def _vec(p, q, what: str) -> np.ndarray:
    v = np.asarray(q, float) - np.asarray(p, float)
    if np.hypot(*v) < _EPS:
        raise GeometryError(f"{what} coincide, so the line between them has no direction")
    return v


def angle_at(a, vertex, b) -> float:
    """Angle a–vertex–b in degrees, 0..180. Points are (row, col)."""
    u, v = _vec(vertex, a, "the vertex and the first point"), _vec(vertex, b, "the vertex and the second point")
    return _angle_between(u, v)


def _angle_between(u, v) -> float:
    cos = float(np.dot(u, v) / (np.hypot(*u) * np.hypot(*v)))
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def line_angle(p1, p2, p3, p4, *, directed: bool = False, signed: bool = False) -> float:
    """Angle in degrees between line 1 through p1, p2 and line 2 through p3, p4 (points (row, col)).

    - ``directed=False, signed=False``: the acute angle between the two lines, 0..90.
    - ``directed=True``: the angle between the vectors p1→p2 and p3→p4, 0..180 — use it when the side of the
      angle matters (e.g. Downs' facial angle, which exceeds 90° in a prognathic face).
    - ``signed=True``: the rotation from line 1 to line 2, **positive when counter-clockwise as the image is
      displayed** (row 0 at the top, columns to the right); (−180, 180] when directed, else (−90, 90].
    """
    u = _vec(p1, p2, "the two points of the first line")
    v = _vec(p3, p4, "the two points of the second line")
    # screen axes: x = col, y = −row (so counter-clockwise on screen is the usual positive rotation)
    ux, uy, vx, vy = u[1], -u[0], v[1], -v[0]
    a = math.degrees(math.atan2(ux * vy - uy * vx, ux * vx + uy * vy))  # (−180, 180]
    if not directed:
        if a > 90:
            a -= 180
        elif a <= -90:
            a += 180
    return a if signed else abs(a)


# ------------------------------------------------------------------------------------------- definitions
@dataclass(frozen=True)
class _Def:
    name: str
    kind: str
    unit: str
    definition: str
    reference: str
    landmarks: tuple = ()
    of: tuple = ()
    options: dict = field(default_factory=dict)


def validate_definitions(schema) -> list[_Def]:
    """Check a schema's ``measurements`` list and return it normalised (landmark names resolved to indices).
    Raises SchemaError naming the offending entry."""
    schema = load_schema(schema)
    out, names = [], []
    for i, raw in enumerate(schema.measurements):
        where = f"schema '{schema.name}', measurement #{i + 1}"
        if not isinstance(raw, dict):
            raise SchemaError(f"{where}: expected a mapping with name, kind, unit, definition")
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip():
            raise SchemaError(f"{where}: 'name' must be a non-empty string")
        where = f"schema '{schema.name}', measurement '{name}'"
        if name in names:
            raise SchemaError(f"{where}: the name is used twice")
        kind = raw.get("kind")
        if kind not in KINDS:
            raise SchemaError(f"{where}: unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
        unknown = set(raw) - COMMON_KEYS - KIND_KEYS[kind]
        if unknown:
            raise SchemaError(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))} for kind '{kind}'")
        definition = raw.get("definition")
        if not isinstance(definition, str) or not definition.strip():
            raise SchemaError(f"{where}: 'definition' (one line) is required")
        unit = raw.get("unit", DEFAULT_UNIT.get(kind))
        if not (unit is None and kind == "difference") and unit not in UNITS:  # a difference may inherit it
            raise SchemaError(f"{where}: unknown unit {unit!r}; expected one of {', '.join(UNITS)}")
        landmarks, of, options = (), (), {}
        if KINDS[kind]:
            lms = raw.get("landmarks")
            if not isinstance(lms, (list, tuple)) or len(lms) != KINDS[kind]:
                raise SchemaError(f"{where}: kind '{kind}' needs 'landmarks' with exactly {KINDS[kind]} entries")
            try:
                landmarks = tuple(schema.index(lm) for lm in lms)
            except (KeyError, IndexError) as exc:
                raise SchemaError(f"{where}: {exc.args[0]}") from None
            allowed = {"distance": ("mm", "px"), "angle": ("deg",), "line_angle": ("deg",)}[kind]
            if unit not in allowed:
                raise SchemaError(f"{where}: a {kind} is measured in {' or '.join(allowed)}, not {unit}")
        if kind == "line_angle":
            for key in ("directed", "signed"):
                val = raw.get(key, False)
                if not isinstance(val, bool):
                    raise SchemaError(f"{where}: '{key}' must be true or false")
                options[key] = val
        elif kind == "cobb":
            curve = raw.get("curve")
            if curve not in COBB_CURVES:
                raise SchemaError(f"{where}: 'curve' must be one of {', '.join(COBB_CURVES)}")
            if unit != "deg":
                raise SchemaError(f"{where}: Cobb angles are in deg")
            groups = raw.get("groups") or list(schema.groups)
            if len(groups) < 3:
                raise SchemaError(f"{where}: the Cobb method needs at least 3 vertebra groups in the schema")
            corners = []
            for g in groups:
                if g not in schema.groups:
                    raise SchemaError(f"{where}: no landmark group '{g}' in the schema")
                if len(schema.groups[g]) != 4:
                    raise SchemaError(f"{where}: group '{g}' must list 4 corners (TL, TR, BL, BR)")
                corners.extend(schema.groups[g])
            landmarks = tuple(corners)
            options = {"curve": curve, "groups": tuple(groups)}
        elif kind in ("difference", "ratio"):
            of = raw.get("of")
            if not isinstance(of, (list, tuple)) or len(of) != 2 or not all(isinstance(o, str) for o in of):
                raise SchemaError(f"{where}: kind '{kind}' needs 'of: [first, second]' (two measurement names)")
            of = tuple(of)
            if kind == "ratio" and unit != "ratio":
                raise SchemaError(f"{where}: a ratio has unit 'ratio'")
        out.append(_Def(name, kind, unit, definition.strip(), str(raw.get("reference", "")).strip(), landmarks,
                        of, options))
        names.append(name)
    # references between measurements: must exist, no cycles, compatible units
    by_name = {d.name: d for d in out}
    for d in out:
        for o in d.of:
            if o not in by_name:
                raise SchemaError(f"schema '{schema.name}', measurement '{d.name}': "
                                  f"refers to unknown measurement '{o}'")
    for d in out:
        _check_cycle(d.name, by_name, (), schema.name)

    def unit_of(name):
        d = by_name[name]
        if d.unit is None:
            d = by_name[name] = replace(d, unit=unit_of(d.of[0]))
        return d.unit

    out = [by_name[d.name] if d.unit is not None else replace(d, unit=unit_of(d.name)) for d in out]
    by_name = {d.name: d for d in out}
    for d in out:
        if d.of:
            u1, u2 = (by_name[o].unit for o in d.of)
            if u1 != u2:
                raise SchemaError(f"schema '{schema.name}', measurement '{d.name}': '{d.of[0]}' is in {u1} but "
                                  f"'{d.of[1]}' in {u2}")
            if d.kind == "difference" and d.unit != u1:
                raise SchemaError(f"schema '{schema.name}', measurement '{d.name}': a difference of {u1} values "
                                  f"is in {u1}, not {d.unit}")
    return out


def _check_cycle(name, by_name, stack, schema_name):
    if name in stack:
        raise SchemaError(f"schema '{schema_name}': measurements refer to each other in a cycle "
                          f"({' → '.join(stack + (name,))})")
    for o in by_name[name].of:
        _check_cycle(o, by_name, stack + (name,), schema_name)


# ------------------------------------------------------------------------------------------- computation
def _spacing_pair(spacing) -> tuple[float, float] | None:
    if spacing is None:
        return None
    s = np.broadcast_to(np.asarray(spacing, dtype=float), (2,))
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"pixel spacing must be positive, got {spacing!r}")
    return float(s[0]), float(s[1])


def compute_measurements(schema, coords, spacing=None, *, image_shape=None) -> dict[str, Measurement]:
    """Every measurement of ``schema`` (a LandmarkSchema, built-in name or path) on ``coords``.

    Args:
        coords: (K, 2) (row, col) in image pixels; NaN rows = missing landmarks.
        spacing: mm per pixel (a number, or (row, col) spacings), or None: distances are then in px.
        image_shape: (H, W) of the image; the Cobb method uses H in its S-curve rule (see
            :func:`~napari_interactive_landmarks.measurements.cobb.cobb_angles`).

    Returns: ``{name: Measurement}`` in the schema's order. Never raises for bad geometry.
    """
    schema = load_schema(schema)
    defs = validate_definitions(schema)
    pix = np.asarray(coords, dtype=np.float64)
    if pix.shape != (schema.num_landmarks, 2):
        raise ValueError(f"expected coords of shape ({schema.num_landmarks}, 2) for '{schema.name}', got {pix.shape}")
    sp = _spacing_pair(spacing)
    phys = pix * np.asarray(sp) if sp is not None else pix
    ctx = _Context(schema, pix, phys, sp, image_shape, {d.name: d for d in defs}, {})
    return {d.name: ctx.get(d.name) for d in defs}


@dataclass
class _Context:
    schema: LandmarkSchema
    pix: np.ndarray
    phys: np.ndarray
    spacing: tuple | None
    image_shape: tuple | None
    defs: dict
    done: dict
    cobb_cache: dict = field(default_factory=dict)

    def get(self, name: str) -> Measurement:
        if name not in self.done:
            self.done[name] = self._compute(self.defs[name])
        return self.done[name]

    def _result(self, d: _Def, value=None, unit=None, reason=None, **details) -> Measurement:
        ok = reason is None and value is not None and math.isfinite(value)
        if reason is None and not ok:
            reason = "the value is not a finite number"
        return Measurement(d.name, float(value) if ok else None, unit or d.unit, d.definition, ok,
                           None if ok else reason, _jsonable(details), d.kind, d.reference)

    def _missing(self, idx) -> list[str]:
        return [self.schema.landmarks[i] for i in dict.fromkeys(idx) if not np.all(np.isfinite(self.pix[i]))]

    def _seg(self, i, j):
        return (tuple(self.pix[i]), tuple(self.pix[j]))

    def _compute(self, d: _Def) -> Measurement:
        try:
            return getattr(self, "_" + d.kind)(d)
        except GeometryError as exc:
            return self._result(d, reason=str(exc), unit=self._unit(d))
        except (ArithmeticError, ValueError) as exc:  # never let odd numbers take the panel down
            return self._result(d, reason=f"could not be computed ({exc})", unit=self._unit(d))

    def _unit(self, d: _Def) -> str:
        if d.kind == "distance" and d.unit == "mm" and self.spacing is None:
            return "px"
        if d.kind == "difference":
            return self._unit(self.defs[d.of[0]])
        return d.unit

    def _names(self, *idx) -> str:
        return " and ".join(self.schema.landmarks[i] for i in idx)

    def _geometry_guard(self, d: _Def):
        miss = self._missing(d.landmarks)
        if miss:
            raise GeometryError(f"missing landmark{'s' if len(miss) > 1 else ''}: {', '.join(miss)}")

    def _distance(self, d: _Def) -> Measurement:
        self._geometry_guard(d)
        i, j = d.landmarks
        unit = self._unit(d)
        pts = self.phys if unit == "mm" else self.pix
        return self._result(d, float(np.hypot(*(pts[j] - pts[i]))), unit=unit, lines=[self._seg(i, j)])

    def _angle(self, d: _Def) -> Measurement:
        self._geometry_guard(d)
        a, v, b = d.landmarks
        p = self.phys
        for x in (a, b):
            if np.hypot(*(p[x] - p[v])) < _EPS:
                raise GeometryError(f"{self._names(v, x)} coincide, so the angle at {self.schema.landmarks[v]} "
                                    "is undefined")
        val = angle_at(p[a], p[v], p[b])
        details = {"lines": [self._seg(v, a), self._seg(v, b)], "vertex": self.schema.landmarks[v]}
        if val < 1e-6 or val > 180 - 1e-6:
            details["note"] = "the three points are collinear"
        return self._result(d, val, **details)

    def _line_angle(self, d: _Def) -> Measurement:
        self._geometry_guard(d)
        p1, p2, p3, p4 = d.landmarks
        p = self.phys
        for i, j in ((p1, p2), (p3, p4)):
            if np.hypot(*(p[j] - p[i])) < _EPS:
                raise GeometryError(f"{self._names(i, j)} coincide, so the line through them has no direction")
        val = line_angle(p[p1], p[p2], p[p3], p[p4], **d.options)
        return self._result(d, val, lines=[self._seg(p1, p2), self._seg(p3, p4)], **d.options)

    def _cobb(self, d: _Def) -> Measurement:
        from .cobb import CobbError, cobb_angles

        key = d.landmarks
        if key not in self.cobb_cache:
            groups = list(d.options["groups"])
            try:
                h = None if self.image_shape is None else float(self.image_shape[0])
                res = cobb_angles(self.phys[list(key)], None if h is None else h * self._row_spacing(),
                                  vertebra_names=groups)
                self.cobb_cache[key] = (res, None)
            except CobbError as exc:
                self.cobb_cache[key] = (None, str(exc))
        res, reason = self.cobb_cache[key]
        if res is None:
            return self._result(d, reason=reason)
        groups = list(d.options["groups"])
        curve = d.options["curve"]
        ckey = res.main if curve == "main" else curve
        cv = res.curves[ckey]
        scale = self._phys_to_pix()
        lines = [tuple(tuple(np.asarray(pt) / scale) for pt in seg) for seg in cv.lines]
        details = {"curve": ckey, "upper_end": groups[cv.upper], "lower_end": groups[cv.lower],
                   "apex": None if cv.apex is None else groups[cv.apex], "s_curve": res.s_curve,
                   "main_curve": res.main, "lines": lines}
        if res.notes:
            details["notes"] = list(res.notes)
        return self._result(d, cv.angle, **details)

    def _row_spacing(self) -> float:
        return 1.0 if self.spacing is None else self.spacing[0]

    def _phys_to_pix(self) -> np.ndarray:
        return np.ones(2) if self.spacing is None else np.asarray(self.spacing)

    def _operands(self, d: _Def):
        ms = [self.get(o) for o in d.of]
        bad = [m for m in ms if not m.available]
        if bad:
            raise GeometryError("; ".join(f"{m.name} is unavailable ({m.reason})" for m in bad))
        return ms

    def _difference(self, d: _Def) -> Measurement:
        a, b = self._operands(d)
        first = a.details.get("lines", [])
        lines = first + [s for s in b.details.get("lines", []) if s not in first]
        return self._result(d, a.value - b.value, unit=a.unit, of=list(d.of), lines=lines)

    def _ratio(self, d: _Def) -> Measurement:
        a, b = self._operands(d)
        if abs(b.value) < _EPS:
            raise GeometryError(f"{b.name} is zero, so the ratio is undefined")
        lines = a.details.get("lines", []) + b.details.get("lines", [])
        return self._result(d, a.value / b.value, of=list(d.of), lines=lines)
