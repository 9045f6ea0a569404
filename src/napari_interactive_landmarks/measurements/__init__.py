"""Clinical measurements from landmarks: generic distances and angles defined in the schema files, Cobb angles
(AASCE 2019 method) and cephalometric angles (ISBI 2015 landmarks), each with its confidence from the
landmarks' expected radial error; vertebra outlines in drawable corner order."""

from .cobb import (
    CobbBatch,
    CobbCurve,
    CobbError,
    CobbResult,
    cobb_angles,
    cobb_angles_batch,
    is_s_curve,
    smape,
    vertebra_problems,
)
from .core import (
    TOLERANCE,
    GeometryError,
    Measurement,
    angle_at,
    compute_measurements,
    format_value,
    line_angle,
    validate_definitions,
)
from .outline import (
    corner_order_problems,
    corners_out_of_order,
    is_twisted,
    outline_order,
    vertebra_outline,
    vertebra_outlines,
)

__all__ = [
    "TOLERANCE", "CobbBatch", "CobbCurve", "CobbError", "CobbResult", "GeometryError", "Measurement", "angle_at",
    "cobb_angles", "cobb_angles_batch", "compute_measurements", "corner_order_problems", "corners_out_of_order",
    "format_value", "is_s_curve", "is_twisted", "line_angle", "outline_order", "smape", "validate_definitions",
    "vertebra_outline", "vertebra_outlines", "vertebra_problems",
]
