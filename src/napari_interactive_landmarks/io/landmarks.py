"""Landmark files: JSON (modelled on 3D Slicer's ``.mrk.json``) and CSV (a folder of annotated films, the generic
dataset: :mod:`.annotations`).

Formats are described in ``docs/data-format.md``. Coordinates are (row, col) in original-image pixels;
a missing landmark is a row of NaN in memory, ``null`` in JSON and empty cells in CSV.

Writers never clobber silently (``overwrite=False`` raises :class:`~.files.SaveExistsError`, a
``FileExistsError``) and write atomically (temporary file in the same folder, then :func:`os.replace`), so a
crash never leaves half a file; any other failure is a :class:`~.files.SaveError` naming the file. The
``format_landmarks_*`` functions give the text, to write several files all or none
(:func:`~.files.write_texts`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .files import write_texts

__all__ = [
    "SCHEMA_ID",
    "STATUSES",
    "CSV_COLUMNS",
    "LandmarkFileError",
    "MissingLandmarksWarning",
    "LandmarkFile",
    "write_landmarks_json",
    "read_landmarks_json",
    "write_landmarks_csv",
    "format_landmarks_json",
    "format_landmarks_csv",
    "read_landmarks_csv",
]

SCHEMA_ID = "napari-interactive-landmarks/landmarks/v1"
STATUSES = ("predicted", "corrected", "missing")
CSV_COLUMNS = ("index", "label", "row", "col", "pinned", "status", "score")
ERE_COLUMNS = ("expected_error_px", "expected_error_mm")  # written after CSV_COLUMNS when the points have an ERE
# each point's conformal region (written after those when the points come with regions; empty where none)
REGION_COLUMNS = ("region_level", "region_centre_row", "region_centre_col", "region_major_px", "region_minor_px",
                  "region_angle_deg", "region_area_px2", "region_area_mm2")
_REGION_KEYS = ("centre", "semi_axes_px", "angle_deg", "area_px2", "area_mm2")


class LandmarkFileError(ValueError):
    """A landmark file or annotation folder is malformed; the message names the file and the problem."""


class MissingLandmarksWarning(UserWarning):
    """Some images of a dataset lack some landmarks (they are NaN rows)."""


# --------------------------------------------------------------------------------------------------
# in-memory form


def _opt_float(v) -> float | None:
    if v is None:
        return None
    f = float(v)
    return None if math.isnan(f) else f


@dataclass
class LandmarkFile:
    """The content of a landmark file.

    Attributes:
        labels: K landmark names, in index order.
        coords: (K, 2) float64 (row, col) in original-image pixels; NaN rows for missing landmarks.
        pinned: (K,) bool, True where a person placed or confirmed the point.
        status: K strings from ``STATUSES``; default "corrected" if pinned, "missing" if NaN, else
            "predicted".
        scores: (K,) float64 confidence, NaN where unknown.
        landmark_set: name of the landmark schema (e.g. "isbi-ceph19"), or None.
        model: name of the model that predicted the points, or None.
        image_path, image_shape (H, W), spacing (row_mm, col_mm): the image the points belong to.
        measurements: free-form JSON-serialisable dict (e.g. Cobb angles).
        ere: (K,) expected radial error of each point in original pixels (0 where pinned, NaN where unknown), or
            None: a model's points carry it (written as ``expected_error_px`` and, with a spacing,
            ``expected_error_mm``: the px value times the mean spacing, the figure the viewer shows).
        regions: each point's conformal region, or None (not written): a dict with ``level`` (e.g. 0.95, None when
            the model has no regions), ``centre`` (K, 2) (row, col), ``semi_axes_px`` (K, 2) (major, minor),
            ``angle_deg`` (K,) (major axis, counter-clockwise from the column axis towards decreasing rows, as
            :func:`~napari_interactive_landmarks.regions.ellipses`), ``area_px2`` (K,) and ``area_mm2`` (K,; from
            the spacing when not given); NaN where a point has none — always for pinned and missing points.
            Written per point as ``region`` (JSON; null where none) or the ``region_*`` CSV columns.
    """

    labels: Sequence[str]
    coords: np.ndarray
    pinned: np.ndarray | None = None
    status: Sequence[str] | None = None
    scores: np.ndarray | None = None
    landmark_set: str | None = None
    model: str | None = None
    image_path: str | None = None
    image_shape: tuple[int, int] | None = None
    spacing: tuple[float, float] | None = None
    measurements: dict = field(default_factory=dict)
    ere: np.ndarray | None = None
    regions: dict | None = None
    # whether the film is like the films the model's doubt was calibrated on: {"unfamiliar": bool, "reasons": [str],
    # "region_level": the level the regions were drawn at}; None when not checked (not written)
    film_check: dict | None = None

    def __post_init__(self):
        self.labels = [str(x) for x in self.labels]
        k = len(self.labels)
        if len(set(self.labels)) != k:
            dup = sorted({x for x in self.labels if self.labels.count(x) > 1})
            raise ValueError(f"duplicate landmark labels: {dup}")
        coords = np.asarray(self.coords, dtype=np.float64)
        if coords.shape != (k, 2):
            raise ValueError(f"coords must have shape ({k}, 2) for {k} labels, got {coords.shape}")
        if np.isinf(coords).any():
            raise ValueError("coords contain infinite values")
        self.coords = coords
        missing = np.isnan(coords).any(axis=1)
        self.coords[missing] = np.nan
        self.pinned = (
            np.zeros(k, bool) if self.pinned is None else np.asarray(self.pinned, dtype=bool).reshape(-1)
        )
        if self.pinned.shape != (k,):
            raise ValueError(f"pinned must have {k} values, got {self.pinned.shape[0]}")
        self.scores = (
            np.full(k, np.nan) if self.scores is None
            else np.array([np.nan if s is None else float(s) for s in np.asarray(self.scores, dtype=object).reshape(-1)])
        )
        if self.scores.shape != (k,):
            raise ValueError(f"scores must have {k} values, got {self.scores.shape[0]}")
        if self.status is None:
            self.status = [
                "missing" if m else ("corrected" if p else "predicted") for m, p in zip(missing, self.pinned)
            ]
        else:
            self.status = [str(s) for s in self.status]
            if len(self.status) != k:
                raise ValueError(f"status must have {k} values, got {len(self.status)}")
            for i, (s, m) in enumerate(zip(self.status, missing)):
                if s not in STATUSES:
                    raise ValueError(f"point {i} '{self.labels[i]}': status '{s}' is not one of {list(STATUSES)}")
                if m and s != "missing":
                    raise ValueError(f"point {i} '{self.labels[i]}' has no position but status '{s}' (expected 'missing')")
                if s == "missing" and not m:
                    raise ValueError(f"point {i} '{self.labels[i]}' has status 'missing' but a position")
        if self.image_shape is not None:
            self.image_shape = tuple(int(v) for v in self.image_shape)
            if len(self.image_shape) != 2:
                raise ValueError(f"image_shape must be (H, W), got {self.image_shape}")
        if self.spacing is not None:
            self.spacing = tuple(float(v) for v in self.spacing)
            if len(self.spacing) != 2 or not all(math.isfinite(v) and v > 0 for v in self.spacing):
                raise ValueError(f"spacing must be two positive numbers (row_mm, col_mm), got {self.spacing}")
        if self.image_path is not None:
            self.image_path = os.fspath(self.image_path)
        self.measurements = dict(self.measurements or {})
        if self.ere is not None:
            self.ere = np.asarray(self.ere, dtype=np.float64).reshape(-1)
            if self.ere.shape != (k,):
                raise ValueError(f"ere must have {k} values, got {self.ere.shape[0]}")
        if self.regions is not None:
            self.regions = self._normalised_regions(self.regions, k)

    def _normalised_regions(self, regions: dict, k: int) -> dict:
        shapes = {"centre": (k, 2), "semi_axes_px": (k, 2), "angle_deg": (k,), "area_px2": (k,), "area_mm2": (k,)}
        out = {"level": _opt_float(regions.get("level"))}
        for key, shape in shapes.items():
            v = regions.get(key)
            arr = np.full(shape, np.nan) if v is None else np.array(v, dtype=np.float64).reshape(-1)
            if arr.size != int(np.prod(shape)):
                raise ValueError(f"regions['{key}'] must have shape {shape}, got {np.shape(v)}")
            out[key] = arr.reshape(shape)
        if self.spacing is not None and not np.isfinite(out["area_mm2"]).any():
            out["area_mm2"] = out["area_px2"] * self.spacing[0] * self.spacing[1]
        # a region belongs to a model's point: none for a person's point, a missing one, or without a level
        none = self.pinned | np.isnan(self.coords).any(axis=1) | ~np.isfinite(out["area_px2"])
        if out["level"] is None:
            none[:] = True
        for key in _REGION_KEYS:
            out[key][none] = np.nan
        return out

    def region(self, i: int) -> dict | None:
        """Point ``i``'s region as written in JSON (None where it has none)."""
        r = self.regions
        if r is None or not np.isfinite(r["area_px2"][i]):
            return None
        return {"level": r["level"], "centre": [float(v) for v in r["centre"][i]],
                "semi_axes_px": [float(v) for v in r["semi_axes_px"][i]], "angle_deg": _opt_float(r["angle_deg"][i]),
                "area_px2": _opt_float(r["area_px2"][i]), "area_mm2": _opt_float(r["area_mm2"][i])}

    def region_columns(self, i: int) -> tuple:
        """Point ``i``'s region as the ``REGION_COLUMNS`` cells (None where it has none); empty without regions."""
        if self.regions is None:
            return ()
        g = self.region(i)
        if g is None:
            return (None,) * len(REGION_COLUMNS)
        return (g["level"], *g["centre"], *g["semi_axes_px"], g["angle_deg"], g["area_px2"], g["area_mm2"])

    def ere_columns(self, i: int) -> dict:
        """Point ``i``'s expected error as written: ``expected_error_px`` and ``expected_error_mm`` (None without a
        spacing); empty without ERE."""
        if self.ere is None:
            return {}
        px = _opt_float(self.ere[i])
        mm = None if px is None or self.spacing is None else px * float(np.mean(self.spacing))
        return dict(zip(ERE_COLUMNS, (px, mm)))

    @property
    def num_landmarks(self) -> int:
        return len(self.labels)

    @property
    def missing(self) -> np.ndarray:
        return np.isnan(self.coords).any(axis=1)

    def to_dict(self) -> dict:
        points = []
        for i, label in enumerate(self.labels):
            r, c = self.coords[i]
            points.append({
                "index": i,
                "label": label,
                "row": _opt_float(r),
                "col": _opt_float(c),
                "pinned": bool(self.pinned[i]),
                "status": self.status[i],
                "score": _opt_float(self.scores[i]),
                **self.ere_columns(i),
                **({"region": self.region(i)} if self.regions is not None else {}),
            })
        return {
            "schema": SCHEMA_ID,
            "landmark_set": self.landmark_set,
            "model": self.model,
            "image": {
                "path": self.image_path,
                "shape": list(self.image_shape) if self.image_shape is not None else None,
                "spacing_mm": list(self.spacing) if self.spacing is not None else None,
            },
            "points": points,
            "measurements": self.measurements,
            **({"film_check": self.film_check} if self.film_check is not None else {}),
        }


# --------------------------------------------------------------------------------------------------
# atomic writing


def _atomic_write_text(path, text: str, overwrite: bool) -> Path:
    return write_texts({Path(path): text}, overwrite=overwrite)[0]


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def _nan_to_none(o):
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _nan_to_none(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_nan_to_none(v) for v in o]
    return o


def _as_file(coords, labels, fields: dict) -> LandmarkFile:
    if isinstance(coords, LandmarkFile):
        if labels is not None or any(v is not None for v in fields.values()):
            raise TypeError("pass either a LandmarkFile or coords + labels + fields, not both")
        return coords
    if labels is None:
        raise TypeError("labels are required when coords is an array")
    return LandmarkFile(labels=labels, coords=coords, **{k: v for k, v in fields.items() if v is not None})


def write_landmarks_json(
    path,
    coords,
    labels: Sequence[str] | None = None,
    *,
    landmark_set: str | None = None,
    model: str | None = None,
    image_path=None,
    image_shape=None,
    spacing=None,
    pinned=None,
    status=None,
    scores=None,
    measurements: dict | None = None,
    ere=None,
    regions: dict | None = None,
    overwrite: bool = False,
) -> Path:
    """Write landmarks as JSON (``SCHEMA_ID`` format). ``coords`` is (K, 2) row/col or a LandmarkFile; ``ere``
    (K,) the points' expected radial error in original pixels, when known.

    Raises FileExistsError if ``path`` exists and ``overwrite`` is False. Returns the path written.
    """
    text = format_landmarks_json(coords, labels, landmark_set=landmark_set, model=model, image_path=image_path,
                                 image_shape=image_shape, spacing=spacing, pinned=pinned, status=status,
                                 scores=scores, measurements=measurements, ere=ere, regions=regions)
    return _atomic_write_text(path, text, overwrite)


def format_landmarks_json(
    coords,
    labels: Sequence[str] | None = None,
    *,
    landmark_set: str | None = None,
    model: str | None = None,
    image_path=None,
    image_shape=None,
    spacing=None,
    pinned=None,
    status=None,
    scores=None,
    measurements: dict | None = None,
    ere=None,
    regions: dict | None = None,
    film_check: dict | None = None,
) -> str:
    """The text :func:`write_landmarks_json` writes (same arguments, without ``path`` and ``overwrite``)."""
    lf = _as_file(coords, labels, dict(
        landmark_set=landmark_set, model=model, image_path=image_path, image_shape=image_shape,
        spacing=spacing, pinned=pinned, status=status, scores=scores, measurements=measurements, ere=ere,
        regions=regions, film_check=film_check,
    ))
    d = _nan_to_none(json.loads(json.dumps(lf.to_dict(), default=_json_default)))
    return json.dumps(d, indent=2, allow_nan=False) + "\n"


def write_landmarks_csv(
    path,
    coords,
    labels: Sequence[str] | None = None,
    *,
    pinned=None,
    status=None,
    scores=None,
    ere=None,
    spacing=None,
    regions: dict | None = None,
    overwrite: bool = False,
) -> Path:
    """Write landmarks as CSV with columns ``index,label,row,col,pinned,status,score`` (and, with ``ere``,
    ``expected_error_px,expected_error_mm``; the mm column needs ``spacing``; with ``regions``, the
    ``REGION_COLUMNS`` after those).

    Missing positions and unknown scores are empty cells. Image and model metadata are not stored in
    CSV; use JSON to keep them. Raises FileExistsError if ``path`` exists and ``overwrite`` is False.
    """
    return _atomic_write_text(path, format_landmarks_csv(coords, labels, pinned=pinned, status=status, scores=scores,
                                                         ere=ere, spacing=spacing, regions=regions), overwrite)


def format_landmarks_csv(coords, labels: Sequence[str] | None = None, *, pinned=None, status=None,
                         scores=None, ere=None, spacing=None, regions=None) -> str:
    """The text :func:`write_landmarks_csv` writes (same arguments, without ``path`` and ``overwrite``)."""
    lf = _as_file(coords, labels, dict(pinned=pinned, status=status, scores=scores, ere=ere, spacing=spacing,
                                       regions=regions))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS + (ERE_COLUMNS if lf.ere is not None else ())
               + (REGION_COLUMNS if lf.regions is not None else ()))
    for i, label in enumerate(lf.labels):
        r, c = lf.coords[i]
        s = lf.scores[i]
        w.writerow([
            i, label,
            "" if np.isnan(r) else repr(float(r)),
            "" if np.isnan(c) else repr(float(c)),
            "true" if lf.pinned[i] else "false",
            lf.status[i],
            "" if np.isnan(s) else repr(float(s)),
            *("" if v is None else repr(v) for v in lf.ere_columns(i).values()),
            *("" if v is None else repr(v) for v in lf.region_columns(i)),
        ])
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------
# reading


def _num(value, what: str, where: str, allow_none: bool = True) -> float:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        if allow_none:
            return math.nan
        raise LandmarkFileError(f"{where}: {what} is missing")
    if isinstance(value, bool):
        raise LandmarkFileError(f"{where}: {what} must be a number, got {value!r}")
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise LandmarkFileError(f"{where}: {what} must be a number, got {value!r}") from None
    if math.isinf(f):
        raise LandmarkFileError(f"{where}: {what} is infinite")
    return f


def _bool(value, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    s = str(value).strip().lower()
    if s in ("true", "1", "yes", "y", "t"):
        return True
    if s in ("false", "0", "no", "n", "f", ""):
        return False
    raise LandmarkFileError(f"{where}: pinned must be true or false, got {value!r}")


def _assemble(points: list[dict], src: str, landmark_names: Sequence[str] | None) -> dict:
    """Points (dicts with index,label,row,col,pinned,status,score; 'where' for messages) -> arrays."""
    labels_seen = [p["label"] for p in points]
    dup = sorted({x for x in labels_seen if labels_seen.count(x) > 1})
    if dup:
        raise LandmarkFileError(f"{src}: duplicate landmark labels {dup}")
    if landmark_names is not None:
        names = [str(n) for n in landmark_names]
        unknown = [x for x in labels_seen if x not in names]
        if unknown:
            raise LandmarkFileError(
                f"{src}: unknown landmark labels {unknown}; expected names from: {names}"
            )
        slot = {n: i for i, n in enumerate(names)}
        order = [slot[p["label"]] for p in points]
        k = len(names)
        labels = names
    else:
        idx = [p["index"] for p in points]
        if any(i is None for i in idx):
            order = list(range(len(points)))
        else:
            if sorted(idx) != list(range(len(points))):
                raise LandmarkFileError(
                    f"{src}: point indices must be 0..{len(points) - 1}, each once; got {sorted(idx)}"
                )
            order = idx
        k = len(points)
        labels = [""] * k
        for p, j in zip(points, order):
            labels[j] = p["label"]
    coords = np.full((k, 2), np.nan)
    pinned = np.zeros(k, bool)
    scores = np.full(k, np.nan)
    status = ["missing"] * k
    for p, j in zip(points, order):
        where = p["where"]
        row = _num(p["row"], "row", where)
        col = _num(p["col"], "col", where)
        st = p["status"]
        has_pos = not (math.isnan(row) or math.isnan(col))
        if st in (None, ""):
            st = ("corrected" if p["pinned"] else "predicted") if has_pos else "missing"
        if st not in STATUSES:
            raise LandmarkFileError(f"{where}: status {st!r} is not one of {list(STATUSES)}")
        if st == "missing":
            coords[j] = np.nan
        elif not has_pos:
            raise LandmarkFileError(f"{where}: row/col missing but status is '{st}' (use status 'missing')")
        else:
            coords[j] = (row, col)
        pinned[j] = p["pinned"]
        scores[j] = _num(p["score"], "score", where)
        status[j] = st
    out = dict(labels=labels, coords=coords, pinned=pinned, status=status, scores=scores)
    if any("region" in p for p in points):  # a file written with regions (REGION_COLUMNS order, None where none)
        cells = np.full((k, len(REGION_COLUMNS)), np.nan)
        for p, j in zip(points, order):
            if p.get("region") is not None:
                cells[j] = [_num(v, name, p["where"]) for name, v in zip(REGION_COLUMNS, p["region"])]
        levels = cells[:, 0][np.isfinite(cells[:, 0])]
        out["regions"] = {"level": float(levels[0]) if len(levels) else None, "centre": cells[:, 1:3],
                          "semi_axes_px": cells[:, 3:5], "angle_deg": cells[:, 5], "area_px2": cells[:, 6],
                          "area_mm2": cells[:, 7]}
    return out


def read_landmarks_json(path, landmark_names: Sequence[str] | None = None) -> LandmarkFile:
    """Read and validate a landmark JSON file.

    Without ``landmark_names`` the points' indices must be 0..K-1. With ``landmark_names`` (e.g.
    ``schema.landmarks``) points are matched by label, unknown labels raise, absent ones become missing.

    Raises:
        LandmarkFileError: malformed content (the message names the file and the problem).
        FileNotFoundError: no such file.
        IsADirectoryError: ``path`` is a folder.
    """
    p = Path(path)
    _refuse_folder(p)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: landmark file not found")
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise LandmarkFileError(f"{p}: not a text file (JSON expected)") from None
    except json.JSONDecodeError as exc:
        raise LandmarkFileError(f"{p}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(d, dict):
        raise LandmarkFileError(f"{p}: expected a JSON object at the top level, got {type(d).__name__}")
    schema = d.get("schema")
    if schema != SCHEMA_ID:
        raise LandmarkFileError(
            f"{p}: 'schema' is {schema!r}, expected {SCHEMA_ID!r} (is this a landmark file of this package?)"
        )
    raw_points = d.get("points")
    if not isinstance(raw_points, list):
        raise LandmarkFileError(f"{p}: 'points' must be a list")
    points = []
    for n, rp in enumerate(raw_points):
        where = f"{p}: points[{n}]"
        if not isinstance(rp, dict):
            raise LandmarkFileError(f"{where} must be an object")
        label = rp.get("label")
        if label is None or str(label) == "":
            raise LandmarkFileError(f"{where} has no 'label'")
        index = rp.get("index")
        if index is not None and (isinstance(index, bool) or not isinstance(index, int)):
            raise LandmarkFileError(f"{where}: 'index' must be an integer, got {index!r}")
        points.append(dict(
            index=index, label=str(label), row=rp.get("row"), col=rp.get("col"),
            pinned=_bool(rp.get("pinned", False), where), status=rp.get("status"),
            score=rp.get("score"), where=f"{where} ('{label}')",
            **({"region": _json_region(rp["region"], where)} if "region" in rp else {}),
        ))
    arrays = _assemble(points, str(p), landmark_names)

    image = d.get("image") or {}
    if not isinstance(image, dict):
        raise LandmarkFileError(f"{p}: 'image' must be an object")
    shape = image.get("shape")
    if shape is not None:
        if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(v, int) and v > 0 for v in shape)):
            raise LandmarkFileError(f"{p}: image.shape must be [H, W] positive integers, got {shape!r}")
        shape = tuple(shape)
    spacing = image.get("spacing_mm")
    if spacing is not None:
        if not (isinstance(spacing, list) and len(spacing) == 2):
            raise LandmarkFileError(f"{p}: image.spacing_mm must be [row_mm, col_mm] or null, got {spacing!r}")
        spacing = tuple(_num(v, "image.spacing_mm", str(p), allow_none=False) for v in spacing)
        if not all(v > 0 for v in spacing):
            raise LandmarkFileError(f"{p}: image.spacing_mm must be positive, got {list(spacing)}")
    measurements = d.get("measurements") or {}
    if not isinstance(measurements, dict):
        raise LandmarkFileError(f"{p}: 'measurements' must be an object")
    img_path = image.get("path")
    film_check = d.get("film_check")
    if film_check is not None and not (isinstance(film_check, dict) and isinstance(film_check.get("unfamiliar"), bool)
                                       and isinstance(film_check.get("reasons", []), list)):
        raise LandmarkFileError(f"{p}: 'film_check' must be an object with 'unfamiliar' (true/false) and 'reasons' "
                                "(a list)")
    return LandmarkFile(
        film_check=film_check,
        landmark_set=None if d.get("landmark_set") is None else str(d["landmark_set"]),
        model=None if d.get("model") is None else str(d["model"]),
        image_path=None if img_path is None else str(img_path),
        image_shape=shape,
        spacing=spacing,
        measurements=measurements,
        **arrays,
    )


def _json_region(r, where: str):
    """A point's ``region`` object → its ``REGION_COLUMNS`` values (None: the point has none)."""
    if r is None:
        return None
    if not isinstance(r, dict):
        raise LandmarkFileError(f"{where}: 'region' must be an object or null")
    pairs = {"centre": r.get("centre"), "semi_axes_px": r.get("semi_axes_px")}
    for key, v in pairs.items():
        if v is not None and not (isinstance(v, list) and len(v) == 2):
            raise LandmarkFileError(f"{where}: region.{key} must be [a, b] or null, got {v!r}")
    centre = pairs["centre"] or [None, None]
    axes = pairs["semi_axes_px"] or [None, None]
    return (r.get("level"), *centre, *axes, r.get("angle_deg"), r.get("area_px2"), r.get("area_mm2"))


def _refuse_folder(p: Path) -> None:
    if p.is_dir():
        raise IsADirectoryError(f"{p}: is a folder, not a landmark file; give the .json or .csv file inside it")


def _read_csv_rows(p: Path) -> tuple[list[str], list[dict]]:
    _refuse_folder(p)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: file not found")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise LandmarkFileError(f"{p}: not a UTF-8 text file (CSV expected)") from None
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    rows = []
    for row in reader:
        if all((v or "").strip() == "" for k, v in row.items() if k is not None):
            continue  # blank line
        if None in row:
            raise LandmarkFileError(f"{p}: line {reader.line_num} has more cells than the header")
        if any(v is None for v in row.values()):  # csv fills the cells a short line lacks with None
            n = sum(v is not None for v in row.values())
            raise LandmarkFileError(f"{p}: line {reader.line_num} has {n} of the header's {len(header)} cells "
                                    f"(fewer than the header: the file may be truncated)")
        rows.append({"_line": reader.line_num, **{k: (v or "").strip() for k, v in row.items()}})
    return header, rows


def read_landmarks_csv(path, landmark_names: Sequence[str] | None = None) -> LandmarkFile:
    """Read a landmark CSV (columns ``index,label,row,col,pinned,status,score``; only ``label,row,col``
    are required). Matching rules as :func:`read_landmarks_json`."""
    p = Path(path)
    header, rows = _read_csv_rows(p)
    need = {"label", "row", "col"}
    if not need.issubset(header):
        raise LandmarkFileError(
            f"{p}: missing column(s) {sorted(need - set(header))}; expected header {','.join(CSV_COLUMNS)}"
        )
    points = []
    for r in rows:
        where = f"{p}: line {r['_line']}"
        if not r["label"]:
            raise LandmarkFileError(f"{where}: empty label")
        idx = r.get("index", "")
        if idx == "":
            idx = None
        else:
            try:
                idx = int(idx)
            except ValueError:
                raise LandmarkFileError(f"{where}: index must be an integer, got {idx!r}") from None
        points.append(dict(
            index=idx, label=r["label"], row=r["row"], col=r["col"],
            pinned=_bool(r.get("pinned", ""), where), status=r.get("status") or None,
            score=r.get("score", ""), where=f"{where} ('{r['label']}')",
            **({"region": tuple(r.get(c, "") for c in REGION_COLUMNS)} if "region_area_px2" in header else {}),
        ))
    return LandmarkFile(**_assemble(points, str(p), landmark_names))
