"""Cephalometric measurements on the 19 landmarks of the ISBI 2015 challenge (``isbi-ceph19`` schema).

The schema file's ``measurements:`` list is the source of truth (:func:`cephalometric_measurements` computes
it); the functions below compute the same values directly from the indices, as a readable reference and a
cross-check of the YAML definitions. All take (19, 2) (row, col) coordinates and return degrees (or the
unit named), and raise ``GeometryError`` (a ValueError) on missing or coincident points.

Orientation: the ISBI images are lateral cephalograms with the face to the right (nasion's column >
sella's). Every angle here is unsigned, so the values are the same for a left-facing (mirrored) image.

Definitions (landmark numbers 1-based as in the challenge):

- SNA = angle S(1)–N(2)–A(5) at nasion; SNB = angle S–N–B(6); ANB = SNA − SNB (signed; Steiner 1953).
- FMA = angle between Frankfort horizontal Po(4)→Or(3) and the mandibular plane Go(10)→Me(8) (Tweed 1954).
- Facial angle = angle between the Frankfort horizontal Po→Or and the facial line Pog(7)→N, i.e. Downs'
  inferior inside angle between FH and N–Pog (Downs 1948); > 90° when the chin is forward of nasion.
- SN–MP = angle between S→N and Go→Me (Steiner 1953).
- Gonial angle = angle Ar(19)–Go–Me at gonion (Björk 1969).
- Y-axis = angle between Po→Or and S→Gn(9) (Downs 1948).
- FHI = posterior face height S–Go / anterior face height N–Me (Jarabak; as used by Wang et al. 2016).
"""

from __future__ import annotations

import numpy as np

from .core import GeometryError, Measurement, angle_at, compute_measurements, line_angle

SCHEMA = "isbi-ceph19"

SELLA, NASION, ORBITALE, PORION, SUBSPINALE, SUPRAMENTALE, POGONION, MENTON, GNATHION, GONION = range(10)
LOWER_INCISAL_INCISION, UPPER_INCISAL_INCISION, UPPER_LIP, LOWER_LIP, SUBNASALE, SOFT_TISSUE_POGONION = range(10, 16)
POSTERIOR_NASAL_SPINE, ANTERIOR_NASAL_SPINE, ARTICULARE = range(16, 19)
A_POINT, B_POINT = SUBSPINALE, SUPRAMENTALE


def _pts(coords, *idx):
    c = np.asarray(coords, dtype=np.float64)
    if c.shape != (19, 2):
        raise ValueError(f"expected (19, 2) cephalometric landmarks, got {c.shape}")
    out = [c[i] for i in idx]
    if any(not np.all(np.isfinite(p)) for p in out):
        raise GeometryError("a landmark needed for this measurement is missing")
    return out


def sna(coords) -> float:
    s, n, a = _pts(coords, SELLA, NASION, A_POINT)
    return angle_at(s, n, a)


def snb(coords) -> float:
    s, n, b = _pts(coords, SELLA, NASION, B_POINT)
    return angle_at(s, n, b)


def anb(coords) -> float:
    return sna(coords) - snb(coords)


def fma(coords) -> float:
    po, orb, go, me = _pts(coords, PORION, ORBITALE, GONION, MENTON)
    return line_angle(po, orb, go, me, directed=True)


def facial_angle(coords) -> float:
    po, orb, pog, n = _pts(coords, PORION, ORBITALE, POGONION, NASION)
    return line_angle(po, orb, pog, n, directed=True)


def sn_mp(coords) -> float:
    s, n, go, me = _pts(coords, SELLA, NASION, GONION, MENTON)
    return line_angle(s, n, go, me, directed=True)


def gonial_angle(coords) -> float:
    ar, go, me = _pts(coords, ARTICULARE, GONION, MENTON)
    return angle_at(ar, go, me)


def y_axis(coords) -> float:
    po, orb, s, gn = _pts(coords, PORION, ORBITALE, SELLA, GNATHION)
    return line_angle(po, orb, s, gn, directed=True)


def facial_height_index(coords) -> float:
    s, go, n, me = _pts(coords, SELLA, GONION, NASION, MENTON)
    afh = float(np.hypot(*(me - n)))
    if afh == 0:
        raise GeometryError("nasion and menton coincide")
    return float(np.hypot(*(go - s))) / afh


def faces_right(coords) -> bool | None:
    """True when the profile faces right (nasion's column greater than sella's); None if either is missing."""
    c = np.asarray(coords, dtype=np.float64)
    if not (np.all(np.isfinite(c[SELLA])) and np.all(np.isfinite(c[NASION]))):
        return None
    return bool(c[NASION, 1] > c[SELLA, 1])


def cephalometric_measurements(coords, spacing=None) -> dict[str, Measurement]:
    """All measurements of the ``isbi-ceph19`` schema (SNA, SNB, ANB, FMA, facial angle, ...)."""
    return compute_measurements(SCHEMA, coords, spacing)
