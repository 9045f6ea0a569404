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

Bad geometry never raises: a measurement whose landmarks are missing (NaN) or coincident (zero-length line)
comes back with ``available=False`` and a plain-language ``reason``; the others still compute. A Cobb angle is
computed from the vertebrae whose corners form a plausible vertebra: one that is missing a corner, degenerate,
mirrored, upside down, twisted or out of order is left out (``details["left_out"]``: name → why, and ``note``:
"left out — T9: upside down (top corners below bottom corners)"), and only when fewer than 3 remain is the angle
unavailable. Its end vertebrae are ``details["upper_end"]``/``["lower_end"]`` and :meth:`Measurement.shown`
names them ("32.1° ± 4.0° (T5–T11)"). When a left-out vertebra lies next to one of the angle's end vertebrae it
may be the true end and the angle is at best a lower bound: the measurement is then ``uncertain`` (with or
without ERE) and its ``doubt`` says so (``details["left_out_may_be_end"]`` names them). Malformed
*definitions* raise :class:`~napari_interactive_landmarks.schemas.SchemaError`
(:func:`validate_definitions`).

Confidence. Every measurement records the landmarks it rests on (``rests_on``: the definition's landmarks; for
a Cobb angle the 8 corners of its two end vertebrae; for a difference or ratio those of both operands). Given
the landmarks' expected radial errors (``ere``, original pixels, 0 for pinned points), each available
measurement gets ``expected_error`` in its own unit and, when that exceeds the measurement's tolerance,
``uncertain=True`` and a whole-sentence ``doubt`` naming the weakest landmarks. How:

- Each landmark is an isotropic 2-D Gaussian around its position whose mean radial error is its ERE: the
  radial error of a 2-D Gaussian with per-axis σ is Rayleigh-distributed with mean σ·√(π/2), so
  σ = ERE / √(π/2).
- The whole measurement is recomputed on ``MC_SAMPLES`` noisy copies of the landmarks (a vectorised Monte
  Carlo with fixed standard-normal draws, ``MC_SEED``; the same draws for every measurement, so a difference
  such as ANB = SNA − SNB sees the shared S and N move together). ``expected_error`` is the mean absolute
  deviation of the samples from the measured value — the same kind of number as the ERE (a mean error
  magnitude), in degrees, mm (px without spacing) or ratio units.
- Why Monte Carlo and not linearised finite differences: a Cobb angle is a maximum over vertebra pairs and
  its end vertebrae (and the S-curve rule) are discrete choices that flip under noise; ERE of tens of pixels
  is comparable to a vertebra's width, far outside the range where a first-order expansion holds, and the
  max over pairs is biased upward by noise (the way automatic Cobb angles come out 2–3× too large), which
  only a recomputation of the whole measurement shows. A Monte Carlo with fixed draws is also exact for
  pinned points (σ = 0 ⇒ no spread) and deterministic (the same input gives the same numbers on every drag).
  256 samples give the expected error to about ±5 % (relative standard error of a mean absolute deviation,
  0.76/√256). Cost: the samples are laid out last, (K, 2, N), so every numpy operation streams over them,
  and the Cobb method runs vectorised over them (``cobb.cobb_batch_sample_last``: one direction per vertebra,
  only the pairs needed). Measured on 2 shared CPU cores (numpy 2.4), median over 300 calls: +2.3 ms for the
  four Cobb angles of a 68-point spine (0.8 ms of it the batch Cobb method), +1.2 ms for the 11
  cephalometric measurements.
- A landmark the measurement does not rest on does not move it, with one deliberate exception: a Cobb
  angle's end vertebrae are chosen from the whole spine, so the Monte Carlo perturbs every vertebra, and a
  poorly placed vertebra that could become an end vertebra does widen the error; the doubt then names it.
- Tolerances (:data:`TOLERANCE`; a definition may set its own ``tolerance:`` in its unit) are clinical:
  5° for Cobb angles, 2° for other angles, 2 mm for distances, 0.02 for ratios; see the constants below.
- ``ere=None`` (no uncertainty available): ``expected_error=None``, ``uncertain=False``, values unchanged.
  A landmark with unknown (NaN) ERE makes every measurement resting on it uncertain ("ERE unknown").
- Doubt scales (issue 20 item 7; :mod:`.doubt`): the mean absolute deviation above is *unscaled* — a calibrated
  Gaussian error stays within it only ~58 % of the time, and a model's ERE is over-confident on top. With
  ``doubt_scales`` (a model card's ``doubt_scales``, fitted by ``calibrate`` on a calibration split) each
  ``expected_error`` is multiplied by its measurement's scale, so that the true value lies within the shown ±
  with probability ``doubt_scales.level`` (90 % by default), ``error_level`` records that level, and the
  ``uncertain`` flag compares the scaled ± with the tolerance. Without scales the ± is the unscaled mean error
  (``error_level=None``), as before.
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
COMMON_KEYS = {"name", "kind", "unit", "definition", "reference", "tolerance"}
KIND_KEYS = {"distance": {"landmarks"}, "angle": {"landmarks"}, "line_angle": {"landmarks", "directed", "signed"},
             "cobb": {"curve", "groups"}, "difference": {"of"}, "ratio": {"of"}}
_EPS = 1e-9

# ---- confidence from the landmarks' expected radial error (see the module docstring)
MC_SAMPLES = 256  # relative standard error of the expected error ≈ 0.76 / √256 ≈ 5 %
MC_SEED = 20240611
ERE_TO_SIGMA = 1.0 / math.sqrt(math.pi / 2)  # per-axis σ of an isotropic 2-D Gaussian with mean radial error 1
# An expected error above these (in the measurement's unit) flags it uncertain. Clinical basis:
# - Cobb angle 5°: the inter-observer variability of manual Cobb measurement on the same film is about 5°
#   (95 % limits ±5–7°: Morrissy et al., JBJS Am 1990; Carman et al., JBJS Am 1990), and a change of ≥ 5° is
#   the usual threshold for calling a curve progressive — a measurement less certain than that cannot be read.
# - other angles 2°: cephalometric angles (SNA, SNB, ANB, FMA, …) are reproduced by trained observers to
#   about 1–2° (Baumrind & Frantz, Am J Orthod 1971), and ANB classes are only a few degrees wide (class I
#   about 0–4°), so 2° of doubt can change a diagnosis.
# - distances 2 mm: the clinically acceptable landmark error of the ISBI 2015 challenge (SDR at 2 mm, Wang et
#   al., MedIA 2016); a length cannot be trusted better than its end points.
# - ratios 0.02: 2 mm over a ~100 mm facial height; the FHI's normal band (0.65–0.75) is 0.10 wide.
# - a distance in px (spacing unknown): 2 % of its length, i.e. 2 mm on a 100 mm length.
TOLERANCE = {"cobb": 5.0, "deg": 2.0, "mm": 2.0, "ratio": 0.02}
RELATIVE_PX_TOLERANCE = 0.02
DOUBT_SHARE = 0.1  # a Cobb end vertebra chosen in ≥ 10 % of the samples is named in the doubt


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
    rests_on: list = field(default_factory=list)  # landmark indices the value is computed from
    expected_error: float | None = None  # in ``unit``; None without ERE (or when unavailable)
    uncertain: bool = False  # expected_error above the measurement's tolerance, or an ERE unknown
    doubt: str | None = None  # when uncertain: why, naming the weakest landmarks
    note: str | None = None  # a remark that is not a doubt (Cobb: which vertebrae were left out, and why)
    # the probability that the true value lies within ± expected_error (doubt scales applied); None: unscaled,
    # the ± is then the mean error under the landmarks' ERE
    error_level: float | None = None

    def to_dict(self) -> dict:
        return _jsonable(asdict(self))

    def shown(self) -> str:
        """The value as the viewer's table shows it: value ± expected error, a Cobb angle's end vertebrae, ⚠ when
        uncertain (``67.2° ± 21.4° (T5–T11) ⚠``), or ``unavailable ⚠``."""
        if not self.available:
            return "unavailable ⚠"
        text = format_value(self.value, self.unit)
        if self.expected_error is not None and np.isfinite(self.expected_error):
            text += f" ± {format_spread(self.expected_error, self.unit)}"
        ends = (self.details or {}).get("upper_end"), (self.details or {}).get("lower_end")
        if self.kind == "cobb" and all(ends):
            text += f" ({ends[0]}–{ends[1]})"
        return text + " ⚠" if self.uncertain else text

    def __str__(self) -> str:
        if not self.available:
            return f"{self.name}: unavailable ({self.reason})"
        text = f"{self.name}: {format_value(self.value, self.unit)}"
        return f"{text} ({self.doubt})" if self.uncertain else text


# an angle's ± at or beyond this many degrees spans most of the angles there are: said as such, not as a number
ANGLE_UNDETERMINED = 90.0


def format_spread(error: float | None, unit: str) -> str:
    """A measurement's ± as shown: its value, but for an angle whose ± reaches ANGLE_UNDETERMINED degrees (a
    Cobb angle lies in 0–180°) ``≥ 90° (undetermined)`` — a ± of 153° is no measurement (the file keeps the number)."""
    if unit == "deg" and error is not None and np.isfinite(error) and error >= ANGLE_UNDETERMINED:
        return f"≥ {ANGLE_UNDETERMINED:.0f}° (undetermined)"
    return format_value(error, unit)


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
    tolerance: float | None = None


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
        tol = raw.get("tolerance")
        if tol is not None and (isinstance(tol, bool) or not isinstance(tol, (int, float))
                                or not math.isfinite(tol) or tol <= 0):
            raise SchemaError(f"{where}: 'tolerance' must be a positive number (in the measurement's unit)")
        out.append(_Def(name, kind, unit, definition.strip(), str(raw.get("reference", "")).strip(), landmarks,
                        of, options, None if tol is None else float(tol)))
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


def period_of(d: _Def) -> float | None:
    """Signed line angles wrap around (360° directed, 180° not); deviations are taken the short way round."""
    if d.kind == "line_angle" and d.options.get("signed"):
        return 360.0 if d.options.get("directed") else 180.0
    return None


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


def compute_measurements(schema, coords, spacing=None, *, image_shape=None, ere=None,
                         doubt_scales=None) -> dict[str, Measurement]:
    """Every measurement of ``schema`` (a LandmarkSchema, built-in name or path) on ``coords``.

    Args:
        coords: (K, 2) (row, col) in image pixels; NaN rows = missing landmarks.
        spacing: mm per pixel (a number, or (row, col) spacings), or None: distances are then in px.
        image_shape: (H, W) of the image; the Cobb method uses H in its S-curve rule (see
            :func:`~napari_interactive_landmarks.measurements.cobb.cobb_angles`).
        ere: (K,) expected radial error of each landmark in image pixels (0 for pinned, hand-placed points;
            NaN = unknown), or None. With it, each available measurement gets ``expected_error``,
            ``uncertain`` and ``doubt`` (module docstring); without it they stay None / False / None.
        doubt_scales: a :class:`~.doubt.DoubtScales` or a model card's ``doubt_scales`` mapping, or None: each
            measurement's ``expected_error`` is multiplied by its scale (a measurement without one stays
            unscaled), so that it holds the true value with the scales' level (module docstring).

    Returns: ``{name: Measurement}`` in the schema's order. Never raises for bad geometry.
    """
    schema = load_schema(schema)
    defs = validate_definitions(schema)
    pix = np.asarray(coords, dtype=np.float64)
    if pix.shape != (schema.num_landmarks, 2):
        raise ValueError(f"expected coords of shape ({schema.num_landmarks}, 2) for '{schema.name}', got {pix.shape}")
    sp = _spacing_pair(spacing)
    phys = pix * np.asarray(sp) if sp is not None else pix
    if ere is not None:
        ere = np.asarray(ere, dtype=np.float64)
        if ere.shape != (schema.num_landmarks,):
            raise ValueError(f"expected ere of shape ({schema.num_landmarks},) for '{schema.name}', got {ere.shape}")
        if np.any(ere < 0):
            raise ValueError("expected radial errors must be ≥ 0")
    from .scales import as_doubt_scales

    ctx = _Context(schema, pix, phys, sp, image_shape, {d.name: d for d in defs}, {}, ere=ere,
                   doubt_scales=as_doubt_scales(doubt_scales))
    return {d.name: ctx.get(d.name) for d in defs}


_NOISE_CACHE: dict = {}


def _standard_noise(n: int, k: int) -> np.ndarray:
    """(k, 2, n) standard normal draws (samples last), fixed (seeded) and cached: the same for every call."""
    key = (n, k)
    if key not in _NOISE_CACHE:
        z = np.random.default_rng(MC_SEED).standard_normal((k, 2, n))
        z.setflags(write=False)
        _NOISE_CACHE.clear()  # one landmark set at a time is the rule; keep memory bounded
        _NOISE_CACHE[key] = z
    return _NOISE_CACHE[key]


def _angles_at(a, v, b) -> np.ndarray:
    """Vectorised :func:`angle_at` over points given as (2, N) (row, col first), degrees 0..180 (NaN where a
    side has no length)."""
    u, w = a - v, b - v
    cross = u[0] * w[1] - u[1] * w[0]
    dot = u[0] * w[0] + u[1] * w[1]
    out = np.degrees(np.arctan2(np.abs(cross), dot))
    bad = (np.hypot(u[0], u[1]) < _EPS) | (np.hypot(w[0], w[1]) < _EPS)
    return np.where(bad, np.nan, out)


def _line_angles(p1, p2, p3, p4, *, directed=False, signed=False) -> np.ndarray:
    """Vectorised :func:`line_angle` over points given as (2, N) (NaN where a line has no direction)."""
    u, v = p2 - p1, p4 - p3
    ux, uy, vx, vy = u[1], -u[0], v[1], -v[0]
    a = np.degrees(np.arctan2(ux * vy - uy * vx, ux * vx + uy * vy))
    if not directed:
        a = np.where(a > 90, a - 180, np.where(a <= -90, a + 180, a))
    a = a if signed else np.abs(a)
    bad = (np.hypot(ux, uy) < _EPS) | (np.hypot(vx, vy) < _EPS)
    return np.where(bad, np.nan, a)


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
    ere: np.ndarray | None = None
    sample_cache: dict = field(default_factory=dict)
    _mc: tuple | None = None
    left_out_doubt: dict = field(default_factory=dict)  # Cobb measurement name -> why a left-out vertebra matters
    doubt_scales: object = None  # a .doubt.DoubtScales, or None (the ± unscaled)

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
            m = getattr(self, "_" + d.kind)(d)
        except GeometryError as exc:
            m = self._result(d, reason=str(exc), unit=self._unit(d))
        except (ArithmeticError, ValueError) as exc:  # never let odd numbers take the panel down
            m = self._result(d, reason=f"could not be computed ({exc})", unit=self._unit(d))
        if d.kind != "cobb":  # a Cobb angle rests on its end vertebrae, set by _cobb when it is available
            idx = d.landmarks if not d.of else [i for o in d.of for i in self.get(o).rests_on]
            m.rests_on = [int(i) for i in dict.fromkeys(idx)]
        if self.ere is not None and m.available:
            try:
                self._confidence(d, m)
            except (ArithmeticError, ValueError) as exc:  # the value stands; only its confidence is unknown
                m.uncertain, m.doubt = True, f"uncertain: its expected error could not be computed ({exc})"
        extra = self.left_out_doubt.get(d.name)
        if extra and m.available:  # a left-out vertebra may be an end vertebra: a lower bound, whatever the ERE
            m.uncertain = True
            m.doubt = f"{m.doubt}; {extra}" if m.doubt else f"uncertain: {extra}"
        return m

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
                                  vertebra_names=groups, exclude_implausible=True)
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
        possible = res.possible_ends(ckey)
        if res.excluded:  # implausible vertebrae: the angles come from the others; say which and why
            details["left_out"] = {groups[v]: why for v, why in res.excluded.items()}
            details["left_out_may_be_end"] = [groups[v] for v in possible]
        m = self._result(d, cv.angle, **details)
        m.rests_on = [int(i) for v in (cv.upper, cv.lower) for i in d.landmarks[4 * v:4 * v + 4]]
        if res.excluded:
            m.note = "left out — " + "; ".join(f"{groups[v]}: {why}" for v, why in res.excluded.items())
        if possible:
            who = ", ".join(groups[v] for v in possible)
            instead = ", ".join(dict.fromkeys(groups[e] for e in possible.values()))
            one = len(possible) == 1
            self.left_out_doubt[d.name] = (
                f"{who} {'was' if one else 'were'} left out next to the end vertebra{'' if one else 'e'} {instead} "
                f"and may be the true end{'' if one else 's'}: the angle is at best a lower bound")
        return m

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

    # ------------------------------------------------------------------------------------- confidence
    def _mc_points(self) -> tuple[np.ndarray, np.ndarray]:
        """(pix, phys): (K, 2, MC_SAMPLES) copies of the landmarks (samples last, so that every operation runs
        over contiguous samples), each moved by its own Gaussian noise (σ = ERE / √(π/2) per axis, in
        pixels; NaN ERE counts as 0 here, and is reported separately)."""
        if self._mc is None:
            z = _standard_noise(MC_SAMPLES, self.schema.num_landmarks)
            sigma = np.where(np.isfinite(self.ere), self.ere, 0.0) * ERE_TO_SIGMA
            pix = self.pix[:, :, None] + z * sigma[:, None, None]
            phys = pix * np.asarray(self.spacing)[None, :, None] if self.spacing is not None else pix
            self._mc = (pix, phys)
        return self._mc

    def _samples(self, d: _Def) -> np.ndarray:
        """(MC_SAMPLES,) values of ``d`` on the noisy landmarks (NaN where undefined)."""
        if d.name not in self.sample_cache:
            with np.errstate(invalid="ignore", divide="ignore"):
                self.sample_cache[d.name] = np.asarray(getattr(self, "_mc_" + d.kind)(d), dtype=np.float64)
        return self.sample_cache[d.name]

    def _mc_distance(self, d: _Def) -> np.ndarray:
        pix, phys = self._mc_points()
        pts = phys if self._unit(d) == "mm" else pix
        i, j = d.landmarks
        diff = pts[j] - pts[i]
        return np.hypot(diff[0], diff[1])

    def _mc_angle(self, d: _Def) -> np.ndarray:
        p = self._mc_points()[1]
        a, v, b = d.landmarks
        return _angles_at(p[a], p[v], p[b])

    def _mc_line_angle(self, d: _Def) -> np.ndarray:
        p = self._mc_points()[1]
        p1, p2, p3, p4 = d.landmarks
        return _line_angles(p[p1], p[p2], p[p3], p[p4], **d.options)

    def _cobb_batch(self, d: _Def):
        from .cobb import cobb_batch_sample_last

        key = ("batch",) + d.landmarks
        if key not in self.cobb_cache:
            h = None if self.image_shape is None else float(self.image_shape[0]) * self._row_spacing()
            kept = self._cobb_kept(d)  # the left-out vertebrae stay out of every sample too
            b = cobb_batch_sample_last(self._mc_points()[1][self._cobb_corners(d, kept)], h)
            if len(kept) < len(d.landmarks) // 4:
                b = replace(b, ends=np.asarray(kept)[b.ends])  # end vertebrae as indices in the whole spine
            self.cobb_cache[key] = b
        return self.cobb_cache[key]

    def _cobb_kept(self, d: _Def) -> list[int]:
        """The vertebrae (indices into the definition's groups) the Cobb angles were computed from."""
        res = self.cobb_cache.get(d.landmarks, (None, None))[0]
        return list(res.kept) if res is not None else list(range(len(d.landmarks) // 4))

    @staticmethod
    def _cobb_corners(d: _Def, vertebrae) -> list[int]:
        return [i for v in vertebrae for i in d.landmarks[4 * v:4 * v + 4]]

    def _cobb_curve_index(self, d: _Def, batch) -> np.ndarray:
        curve = d.options["curve"]
        return batch.main if curve == "main" else np.full(len(batch.main), COBB_CURVES.index(curve) - 1)

    def _mc_cobb(self, d: _Def) -> np.ndarray:
        b = self._cobb_batch(d)
        k = self._cobb_curve_index(d, b)
        return b.angles[np.arange(len(k)), k]

    def _mc_difference(self, d: _Def) -> np.ndarray:
        a, b = (self._samples(self.defs[o]) for o in d.of)
        return a - b

    def _mc_ratio(self, d: _Def) -> np.ndarray:
        a, b = (self._samples(self.defs[o]) for o in d.of)
        return np.where(np.abs(b) < _EPS, np.nan, a / np.where(np.abs(b) < _EPS, 1.0, b))

    def _inputs(self, d: _Def) -> list[int]:
        """Every landmark the computation of ``d`` reads (a Cobb angle: all vertebrae it chooses from)."""
        if d.of:
            return [i for o in d.of for i in self._inputs(self.defs[o])]
        if d.kind == "cobb":
            return self._cobb_corners(d, self._cobb_kept(d))
        return list(d.landmarks)

    def _period(self, d: _Def) -> float | None:
        return period_of(d)

    def _tolerance(self, d: _Def, m: Measurement) -> float:
        if m.unit == "px":  # spacing unknown: relative to the length (2 mm on a 100 mm length)
            ref = abs(m.value) if not d.of else max(abs(self.get(o).value) for o in d.of)
            return RELATIVE_PX_TOLERANCE * ref
        if d.tolerance is not None:
            return d.tolerance
        return TOLERANCE["cobb"] if d.kind == "cobb" else TOLERANCE[m.unit]

    def _confidence(self, d: _Def, m: Measurement):
        unknown = [i for i in m.rests_on if not np.isfinite(self.ere[i])]
        if unknown:
            m.uncertain = True
            m.doubt = f"uncertain: the expected error of {self._weak_names(unknown)[0]} is unknown"
            return
        inputs = self._inputs(d)
        if not np.any(self.ere[inputs] > 0):  # all pinned (or exact): no spread at all
            m.expected_error = 0.0
            return
        dev = self._samples(d) - m.value
        period = self._period(d)
        if period is not None:
            dev = (dev + period / 2) % period - period / 2
        dev = np.abs(dev[np.isfinite(dev)])
        if dev.size < MC_SAMPLES // 2:
            raise ValueError("the measurement is undefined for most plausible landmark positions")
        m.expected_error = float(dev.mean())
        scale = None if self.doubt_scales is None else self.doubt_scales.scale(d.name)
        if scale is not None:  # the ± as a level-probability interval (module docstring, "Doubt scales")
            m.expected_error *= scale
            m.error_level = float(self.doubt_scales.level)
        tol = self._tolerance(d, m)
        if m.expected_error <= tol:
            return
        m.uncertain = True
        candidates, extra = list(m.rests_on), ""
        if d.kind == "cobb":
            alt, share, names = self._cobb_alternatives(d, m)
            candidates += alt
            # a vertebra elsewhere that is far less certain than these can move the curve's ends (through the
            # main curve): name it too
            known = self.ere[candidates]
            ref = float(np.max(known[np.isfinite(known)], initial=0.0))
            e = self.ere[inputs]
            candidates += np.asarray(inputs)[np.isfinite(e) & (e > 2 * ref)].tolist()
            if share >= DOUBT_SHARE:
                alts = ", ".join(names[:4]) + (", …" if len(names) > 4 else "")
                extra = (f"; its end vertebrae change in {100 * share:.0f} % of plausible placements"
                         + (f" (also {alts})" if names else ""))
        who, top = self._weak_names(candidates)
        level = "" if m.error_level is None else f" ({100 * m.error_level:g} %)"
        spread = f"± {format_spread(m.expected_error, m.unit)}{level}; tolerance {format_value(tol, m.unit)}"
        if who:
            m.doubt = f"uncertain: {who}, ERE {'up to ' if ', ' in who or '–' in who else ''}{top} ({spread}){extra}"
        else:
            m.doubt = f"uncertain ({spread}){extra}"

    def _cobb_alternatives(self, d: _Def, m: Measurement) -> tuple[list[int], float, list[str]]:
        """For an uncertain Cobb angle: the corners of vertebrae that end the curve in ≥ DOUBT_SHARE of the
        samples besides its own ends, the share of samples whose ends differ, and those vertebrae's names."""
        b = self._cobb_batch(d)
        k = self._cobb_curve_index(d, b)
        ends = b.ends[np.arange(len(k)), k]  # (N, 2)
        groups = list(d.options["groups"])
        own = (groups.index(m.details["upper_end"]), groups.index(m.details["lower_end"]))
        share = float(np.mean((ends[:, 0] != own[0]) | (ends[:, 1] != own[1])))
        freq = np.bincount(ends.ravel(), minlength=len(groups)) / len(ends)
        alt = [v for v in range(len(groups)) if v not in own and freq[v] >= DOUBT_SHARE]
        return [i for v in alt for i in d.landmarks[4 * v:4 * v + 4]], share, [groups[v] for v in alt]

    def _weak_names(self, idx) -> tuple[str, str]:
        """The weakest of the landmarks ``idx`` in words — those within a factor 2 of the largest ERE, at most
        3, vertebra corners named by vertebra ("T11–T12 corners") — and the largest ERE formatted ("90 px",
        "9.0 mm"). Unknown (NaN) EREs count as weakest."""
        all_ere = np.where(np.isnan(self.ere), np.inf, self.ere).tolist()
        idx = list(dict.fromkeys(int(i) for i in idx))
        ere = [all_ere[i] for i in idx]
        if not idx or max(ere) <= 0:
            return "", ""
        top = max(ere)
        weak = [i for i, e in zip(idx, ere) if e > 0 and e >= 0.5 * top]
        group_at = {}
        for g_pos, (g, members) in enumerate(self.schema.groups.items()):
            if len(members) == 4:
                for i in members:
                    group_at.setdefault(i, (g_pos, g))
        units = {}  # (schema position, name, is_group) -> largest ERE
        for i in weak:
            key = (group_at[i] + (True,)) if i in group_at else (len(self.schema.groups) + i, self.schema.full_name(i), False)
            units[key] = max(units.get(key, 0.0), all_ere[i])
        keep = sorted(sorted(units, key=lambda u: -units[u])[:3])
        parts, run = [], []
        for key in keep + [None]:  # consecutive vertebrae as one range: "T11–T12"
            if key is not None and key[2] and run and key[0] == run[-1][0] + 1:
                run.append(key)
                continue
            if run:
                parts.append(run[0][1] if len(run) == 1 else f"{run[0][1]}–{run[-1][1]}")
            run = [key] if key is not None and key[2] else []
            if key is not None and not key[2]:
                parts.append(key[1])
        if any(k[2] for k in keep):
            if all(k[2] for k in keep):
                parts[-1] += " corners"
        if not np.isfinite(top):
            return ", ".join(parts), "unknown"
        if self.spacing is not None:
            return ", ".join(parts), f"{top * float(np.mean(self.spacing)):.1f} mm"
        return ", ".join(parts), f"{top:.0f} px" if top >= 10 else f"{top:.1f} px"
