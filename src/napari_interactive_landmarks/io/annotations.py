"""A folder of annotated films (the generic dataset, ``docs/data-format.md`` "Your own training data"): the images
under it, searched recursively, with their landmarks from ``landmarks.csv`` at its root or from a landmark JSON file
next to each image (:mod:`.landmarks` reads both formats).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from .images import IMAGE_EXTENSIONS, ImageError, read_spacing
from .landmarks import LandmarkFileError, MissingLandmarksWarning, _num, _read_csv_rows, read_landmarks_json

__all__ = ["GENERIC_CSV", "Annotation", "load_generic_annotations"]

GENERIC_CSV = "landmarks.csv"



class Annotation(NamedTuple):
    """One annotated image of a generic dataset."""

    image_path: Path
    coords: np.ndarray  # (K, 2) float64 row/col, NaN rows where missing
    spacing: tuple[float, float] | None


def _find_images(root: Path) -> list[Path]:
    return sorted(
        f for f in root.rglob("*")
        if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith(".")
    )


def _image_spacing(path: Path) -> tuple[float, float] | None:
    try:
        return read_spacing(path)
    except ImageError as exc:
        raise LandmarkFileError(str(exc)) from None


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _warn_missing(root: Path, out: list[Annotation], names: Sequence[str]) -> None:
    gaps = []
    for a in out:
        miss = np.isnan(a.coords).any(axis=1)
        if miss.any():
            gaps.append((a.image_path, [names[i] for i in np.flatnonzero(miss)]))
    if gaps:
        total = sum(len(g[1]) for g in gaps)
        shown = "; ".join(f"{_rel(g[0], root)}: {', '.join(g[1])}" for g in gaps[:5])
        more = f"; and {len(gaps) - 5} more images" if len(gaps) > 5 else ""
        warnings.warn(
            f"{root}: {total} landmarks missing in {len(gaps)} of {len(out)} images (kept as NaN): "
            f"{shown}{more}",
            MissingLandmarksWarning,
            stacklevel=3,
        )


def load_generic_annotations(root, landmark_names: Sequence[str]) -> list[Annotation]:
    """Load a user's own dataset: a folder of images plus ONE of

    * ``landmarks.csv`` in ``root``, long format with columns ``image,label,row,col`` (``image`` is the
      path relative to ``root``; optional ``spacing_row_mm,spacing_col_mm`` columns), or
    * one ``<image stem>.json`` (landmark JSON format) next to each image.

    Images are searched recursively under ``root`` (PNG, JPEG, TIFF, BMP, DICOM). Spacing comes from the
    CSV / JSON when given, else from the DICOM header, else None.

    Returns:
        ``Annotation(image_path, coords, spacing)`` tuples sorted by path; ``coords`` is
        (len(landmark_names), 2) float64 (row, col) with NaN rows for missing landmarks (a
        :class:`MissingLandmarksWarning` lists them).

    Raises:
        LandmarkFileError: unknown labels (named), both or neither annotation form, missing images,
            duplicate or malformed entries.
    """
    root = Path(root)
    names = [str(n) for n in landmark_names]
    if not root.is_dir():
        raise LandmarkFileError(f"{root}: dataset folder not found")
    images = _find_images(root)
    csv_path = root / GENERIC_CSV
    sidecars = {img: img.with_suffix(".json") for img in images if img.with_suffix(".json").is_file()}
    if csv_path.is_file() and sidecars:
        raise LandmarkFileError(
            f"{root}: found both {GENERIC_CSV} and per-image JSON files (e.g. "
            f"{next(iter(sidecars.values())).name}); keep only one form of annotation"
        )
    if csv_path.is_file():
        out = _load_generic_csv(root, csv_path, names, images)
    elif sidecars:
        out = []
        skipped = [img for img in images if img not in sidecars]
        for img, js in sorted(sidecars.items()):
            lf = read_landmarks_json(js, landmark_names=names)
            spacing = lf.spacing if lf.spacing is not None else _image_spacing(img)
            out.append(Annotation(img, lf.coords, spacing))
        if skipped:
            warnings.warn(
                f"{root}: {len(skipped)} images have no <stem>.json next to them and are skipped "
                f"(e.g. {_rel(skipped[0], root)})",
                UserWarning,
                stacklevel=2,
            )
    else:
        raise LandmarkFileError(
            f"{root}: no annotations found; expected {GENERIC_CSV} (columns image,label,row,col) or a "
            f"<image stem>.json next to each image ({len(images)} images found)"
        )
    if not out:
        raise LandmarkFileError(f"{root}: no annotated images found")
    _warn_missing(root, out, names)
    return out


def _load_generic_csv(root: Path, csv_path: Path, names: list[str], images: list[Path]) -> list[Annotation]:
    header, rows = _read_csv_rows(csv_path)
    need = {"image", "label", "row", "col"}
    if not need.issubset(header):
        raise LandmarkFileError(
            f"{csv_path}: missing column(s) {sorted(need - set(header))}; expected header image,label,row,col"
        )
    has_spacing = {"spacing_row_mm", "spacing_col_mm"}.issubset(header)
    unknown = sorted({r["label"] for r in rows} - set(names))
    if unknown:
        raise LandmarkFileError(
            f"{csv_path}: unknown landmark labels {unknown}; expected names from: {names}"
        )
    slot = {n: i for i, n in enumerate(names)}
    per_image: dict[Path, np.ndarray] = {}
    spacing: dict[Path, tuple | None] = {}
    seen: dict[tuple, int] = {}
    for r in rows:
        where = f"{csv_path}: line {r['_line']}"
        if not r["image"]:
            raise LandmarkFileError(f"{where}: empty image name")
        img = Path(r["image"])
        img = img if img.is_absolute() else root / img
        if not img.is_file():
            raise LandmarkFileError(f"{where}: image '{r['image']}' not found under {root}")
        key = (img, r["label"])
        if key in seen:
            raise LandmarkFileError(
                f"{where}: landmark '{r['label']}' of '{r['image']}' is listed twice (also line {seen[key]})"
            )
        seen[key] = r["_line"]
        coords = per_image.setdefault(img, np.full((len(names), 2), np.nan))
        row = _num(r["row"], "row", where)
        col = _num(r["col"], "col", where)
        if not (math.isnan(row) or math.isnan(col)):
            coords[slot[r["label"]]] = (row, col)
        if has_spacing and (r["spacing_row_mm"] or r["spacing_col_mm"]):
            sp = (_num(r["spacing_row_mm"], "spacing_row_mm", where, False),
                  _num(r["spacing_col_mm"], "spacing_col_mm", where, False))
            if not all(v > 0 for v in sp):
                raise LandmarkFileError(f"{where}: spacing must be positive, got {sp}")
            if spacing.get(img) not in (None, sp):
                raise LandmarkFileError(f"{where}: spacing {sp} differs from {spacing[img]} given earlier for '{r['image']}'")
            spacing[img] = sp
    unannotated = [img for img in images if img not in per_image]
    if unannotated:
        warnings.warn(
            f"{root}: {len(unannotated)} images are not listed in {GENERIC_CSV} and are skipped "
            f"(e.g. {_rel(unannotated[0], root)})",
            UserWarning,
            stacklevel=3,
        )
    return [
        Annotation(img, per_image[img], spacing.get(img) or _image_spacing(img))
        for img in sorted(per_image)
    ]
