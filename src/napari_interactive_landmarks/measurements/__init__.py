"""Clinical measurements from landmarks: generic distances and angles defined in the schema files, Cobb angles
(AASCE 2019 method) and cephalometric angles (ISBI 2015 landmarks)."""

from .cobb import CobbCurve, CobbError, CobbResult, cobb_angles, is_s_curve, smape
from .core import (
    GeometryError,
    Measurement,
    angle_at,
    compute_measurements,
    format_value,
    line_angle,
    validate_definitions,
)

__all__ = [
    "CobbCurve", "CobbError", "CobbResult", "GeometryError", "Measurement", "angle_at", "cobb_angles",
    "compute_measurements", "format_value", "is_s_curve", "line_angle", "smape", "validate_definitions",
]
