"""Exports of annotated films that other tools read (issue 36), written from the project's landmark files.

For each landmark set among the films, in folder ``out``:

- ``generic``: ``<set>/landmarks.csv`` — the project's generic dataset (``docs/data-format.md``), which ``napari-landmarks
  train`` and ``finetune`` read as is (``--dataset generic --root out/<set>``): columns ``image,label,row,col`` plus
  ``pinned`` and, where known, ``spacing_row_mm,spacing_col_mm``; ``image`` is the film's path relative to that folder
  (or, with ``copy_images``, a copy under ``<set>/images/``);
- ``csv``: ``<set>.csv`` — one row per film and landmark: ``image,index,label,row,col,pinned,status,expected_error_px``;
- ``coco``: ``<set>.coco.json`` — COCO keypoints (what MMPose, DeepLabCut's converters and CVAT read): one image and one
  annotation per film, one category per landmark set with its keypoint names and skeleton (the landmark set's edges,
  1-based). A keypoint is ``[x, y, v]`` = ``[col, row, 2]`` in original pixels (pixel centres at integers, as in the
  project's files), ``[0, 0, 0]`` where missing; each annotation also carries ``pinned`` (1 where a person placed the
  point, 0 where the model did) and ``expected_error_px``, which COCO readers ignore.

Every file is written all or nothing (``io.files.write_texts``); an existing one is refused unless ``overwrite``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .files import SaveError, write_texts
from .landmarks import read_landmarks_json

__all__ = ["EXPORT_FORMATS", "export_films", "coco_keypoints"]

EXPORT_FORMATS = ("generic", "csv", "coco")


def _num(v) -> str:
    return "" if v is None or not np.isfinite(v) else f"{float(v):.3f}"


def _relpath(target: Path, start: Path) -> str:
    try:
        return Path(os.path.relpath(target.resolve(), start.resolve())).as_posix()
    except ValueError:  # another drive (Windows)
        return str(target.resolve())


def coco_keypoints(records: Sequence[dict], landmark_set: str, labels: Sequence[str], edges=()) -> dict:
    """The COCO keypoints dict of ``records`` (each: ``file_name``, ``shape`` (H, W), ``coords`` (K, 2) row/col with
    NaN rows where missing, ``pinned`` (K,), ``ere`` (K,) or None)."""
    images, annotations = [], []
    for n, r in enumerate(records, start=1):
        h, w = (int(v) for v in r["shape"])
        images.append({"id": n, "file_name": r["file_name"], "height": h, "width": w})
        coords = np.asarray(r["coords"], float)
        ok = np.isfinite(coords).all(1)
        kp = []
        for (row, col), present in zip(coords, ok):
            kp += [round(float(col), 3), round(float(row), 3), 2] if present else [0, 0, 0]
        if ok.any():
            lo, hi = coords[ok].min(0), coords[ok].max(0)
            bbox = [round(float(lo[1]), 3), round(float(lo[0]), 3), round(float(hi[1] - lo[1]), 3),
                    round(float(hi[0] - lo[0]), 3)]
        else:
            bbox = [0.0, 0.0, 0.0, 0.0]
        ere = r.get("ere")
        annotations.append({
            "id": n, "image_id": n, "category_id": 1, "iscrowd": 0, "keypoints": kp, "num_keypoints": int(ok.sum()),
            "bbox": bbox, "area": round(bbox[2] * bbox[3], 3),
            "pinned": [int(bool(p)) for p in r["pinned"]],
            "expected_error_px": None if ere is None else [None if not np.isfinite(e) else round(float(e), 3)
                                                           for e in ere],
        })
    category = {"id": 1, "name": landmark_set, "supercategory": "anatomy", "keypoints": list(labels),
                "skeleton": [[int(a) + 1, int(b) + 1] for a, b in edges]}
    return {"info": {"description": f"{landmark_set} landmarks exported by napari-interactive-landmarks",
                     "version": "1.0"},
            "licenses": [], "images": images, "annotations": annotations, "categories": [category]}


def export_films(films: Iterable[tuple], out, *, formats: Iterable[str] = EXPORT_FORMATS, copy_images: bool = False,
                 overwrite: bool = False) -> dict[str, list[Path]]:
    """Write ``films`` — ``(image path, name in the study, landmark file)`` — into folder ``out`` in ``formats``
    (module doc). Returns {format: [paths written]}."""
    from ..schemas import load_schema

    formats = list(formats)
    bad = [f for f in formats if f not in EXPORT_FORMATS]
    if bad or not formats:
        raise ValueError(f"unknown export format(s) {bad}; choose from {list(EXPORT_FORMATS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    by_set: dict[str, list[dict]] = {}
    for image, name, annotation in films:
        lf = read_landmarks_json(annotation)
        if not lf.landmark_set:
            raise SaveError(f"{annotation}: the landmark file names no landmark set; cannot export it", annotation)
        shape = lf.image_shape
        if shape is None:
            raise SaveError(f"{annotation}: the landmark file has no image size; cannot export it", annotation)
        by_set.setdefault(lf.landmark_set, []).append(
            {"image": Path(image), "name": name, "coords": np.asarray(lf.coords, float),
             "pinned": np.asarray(lf.pinned, bool), "status": list(lf.status), "labels": list(lf.labels),
             "shape": tuple(shape), "spacing": lf.spacing, "ere": lf.ere})
    texts: dict[Path, str] = {}
    copies: list[tuple[Path, Path]] = []
    written: dict[str, list[Path]] = {f: [] for f in formats}
    for landmark_set, records in by_set.items():
        schema = load_schema(landmark_set)
        labels = list(schema.landmarks)
        for r in records:
            if r["labels"] != labels:
                raise SaveError(f"{r['name']}: its landmarks are not those of '{landmark_set}' in order", None)
        if "generic" in formats:
            folder = out / landmark_set
            folder.mkdir(exist_ok=True)
            buf = io.StringIO()
            wr = csv.writer(buf, lineterminator="\n")
            wr.writerow(["image", "label", "row", "col", "pinned", "spacing_row_mm", "spacing_col_mm"])
            for r in records:
                if copy_images:
                    target = folder / "images" / r["name"]
                    copies.append((r["image"], target))
                    image = target.relative_to(folder).as_posix()
                else:
                    image = _relpath(r["image"], folder)
                sp = r["spacing"] or (None, None)
                for label, (row, col), pin in zip(labels, r["coords"], r["pinned"]):
                    wr.writerow([image, label, _num(row), _num(col), "true" if pin else "false", _num(sp[0]),
                                 _num(sp[1])])
            texts[folder / "landmarks.csv"] = buf.getvalue()
            written["generic"].append(folder / "landmarks.csv")
        if "csv" in formats:
            buf = io.StringIO()
            wr = csv.writer(buf, lineterminator="\n")
            wr.writerow(["image", "index", "label", "row", "col", "pinned", "status", "expected_error_px"])
            for r in records:
                ere = r["ere"] if r["ere"] is not None else np.full(len(labels), np.nan)
                for i, (label, (row, col)) in enumerate(zip(labels, r["coords"])):
                    wr.writerow([r["name"], i, label, _num(row), _num(col), "true" if r["pinned"][i] else "false",
                                 r["status"][i], _num(ere[i])])
            texts[out / f"{landmark_set}.csv"] = buf.getvalue()
            written["csv"].append(out / f"{landmark_set}.csv")
        if "coco" in formats:
            recs = [{"file_name": (Path("images") / r["name"]).as_posix() if copy_images else _relpath(r["image"], out),
                     "shape": r["shape"], "coords": r["coords"], "pinned": r["pinned"], "ere": r["ere"]}
                    for r in records]
            if copy_images and "generic" not in formats:
                copies += [(r["image"], out / "images" / r["name"]) for r in records]
            elif copy_images:  # the COCO file points at the generic folder's copies
                recs = [{**rec, "file_name": f"{landmark_set}/images/{r['name']}"} for rec, r in zip(recs, records)]
            doc = coco_keypoints(recs, landmark_set, labels, schema.edges)
            texts[out / f"{landmark_set}.coco.json"] = json.dumps(doc, indent=1)
            written["coco"].append(out / f"{landmark_set}.coco.json")
    for src, dst in copies:  # images first: a table never names a film that is not there
        if dst.exists() and not overwrite:
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copy2(src, dst)
        except OSError as exc:
            raise SaveError(f"cannot copy {src} to {dst}: {exc.strerror or exc}", dst) from None
    write_texts(texts, overwrite=overwrite)
    return written
