"""A measurement's doubt scales as the model card stores them: one factor per measurement that makes its ± hold the
true value with the stated probability (fitted by :mod:`.doubt`, read by :func:`.core.compute_measurements`). Kept
apart from the fitting so that core.py, which applies them, imports nothing that imports it.

Core module: numpy only, no napari / Qt.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

DEFAULT_LEVEL = 0.9
KIND = "split-conformal |true - measured| / expected_error"

__all__ = ["DEFAULT_LEVEL", "KIND", "DoubtScaleError", "DoubtScales", "as_doubt_scales", "min_samples"]


class DoubtScaleError(ValueError):
    """Too few calibration samples for the level, or a stored ``doubt_scales`` field that is malformed."""


def min_samples(level: float) -> int:
    """Fewest scores whose split-conformal quantile at ``level`` is finite: ``⌈1 / (1 − level)⌉ − 1``."""
    return max(1, math.ceil(1.0 / (1.0 - float(level)) - 1e-9) - 1)


def _quantile(scores, level: float) -> float:
    s = np.sort(np.asarray(scores, np.float64))
    rank = math.ceil((len(s) + 1) * float(level) - 1e-9)
    return float(s[rank - 1])


@dataclass
class DoubtScales:
    """One multiplicative scale per measurement name, making its ± hold the true value with probability ``level``."""

    level: float
    scales: dict  # name -> scale (> 0)
    pooled: list = field(default_factory=list)  # names that took the pooled scale (too few samples of their own)
    num_samples: dict = field(default_factory=dict)  # name -> calibration scores it was fitted on
    fitted_on: str = ""
    kind: str = KIND

    def scale(self, name: str) -> float | None:
        """The scale of measurement ``name``, or None when there is none (its ± then stays unscaled)."""
        s = self.scales.get(name)
        return None if s is None else float(s)

    def to_card(self) -> dict:
        return {"kind": self.kind, "level": float(self.level),
                "scales": {k: round(float(v), 5) for k, v in self.scales.items()}, "pooled": list(self.pooled),
                "num_samples": {k: int(v) for k, v in self.num_samples.items()}, "fitted_on": self.fitted_on}

    @classmethod
    def from_card(cls, data, source: str = "model card") -> "DoubtScales":
        if isinstance(data, DoubtScales):
            return data
        try:
            level = float(data["level"])
            scales = {str(k): float(v) for k, v in dict(data["scales"]).items()}
        except (KeyError, TypeError, ValueError):
            raise DoubtScaleError(f"{source}: its 'doubt_scales' field is malformed (needs a level and scales)") from None
        if data.get("kind", KIND) != KIND:
            raise DoubtScaleError(f"{source}: doubt scales of kind {data.get('kind')!r} are not known to this version")
        if not 0 < level < 1:
            raise DoubtScaleError(f"{source}: the doubt scales' level must be in (0, 1), got {level}")
        bad = [k for k, v in scales.items() if not (math.isfinite(v) and v > 0)]
        if bad:
            raise DoubtScaleError(f"{source}: the doubt scale of {bad[0]} is {scales[bad[0]]:g}; scales must be "
                                  "positive and finite")
        return cls(level, scales, list(data.get("pooled", [])), dict(data.get("num_samples", {})),
                   str(data.get("fitted_on", "")), str(data.get("kind", KIND)))


def as_doubt_scales(value, source: str = "model card") -> DoubtScales | None:
    """None, a :class:`DoubtScales` or its card form, as :class:`DoubtScales` (or None)."""
    if value is None:
        return None
    if isinstance(value, DoubtScales):
        return value
    if not isinstance(value, Mapping):
        raise DoubtScaleError(f"{source}: 'doubt_scales' must be a mapping with a level and scales")
    return DoubtScales.from_card(value, source)
