"""npe2 reader: radiographs (PNG / JPEG / TIFF / BMP / DICOM) and this package's landmark files.

``get_reader(path)`` decides by content, cheaply, and returns a reader function, or None so that napari tries
other readers:

- a file named as an image (``.png``/``.jpg``/``.jpeg``/``.tif``/``.tiff``/``.bmp``/``.dcm``/``.dicom``) is
  claimed (the image reader recognises the format by content and explains a corrupt file);
- any other file is claimed as an image when its first bytes are DICOM's (the 128-byte preamble + ``DICM``:
  an extensionless DICOM as PACS and CD exports name them, ``IM000001``) or PNG / JPEG / TIFF's. DICOM
  without the preamble is left alone unless named ``.dcm``/``.dicom``: pydicom's ``force=True`` "reads"
  almost any file, so content alone would claim text files as images;
- a landmark JSON (any name but ``.csv``) is claimed when it parses as a JSON object whose top-level
  ``"schema"`` is this package's ``SCHEMA_ID``, as ``io.landmarks`` writes it; JSON that merely mentions
  the schema id (in a comment field, a list of formats…) is not;
- a ``.csv`` when its header line is exactly this package's landmark columns.

The manifest offers this reader ``*.json``, ``*.csv``, the image extensions, and names without a dot (one
pattern per length, 1 to 64 characters): not ``"*"``, because napari (0.9) decides from the patterns alone
whether several plugins could read a file, and then File › Open and drag and drop ask the user to pick one
(``viewer.open(path, plugin=None)`` refuses) — ``"*"`` would do that for every ``.npy``, ``.zarr``,
``.nii``… that napari's own reader opens today. Errors found while reading (corrupt image, malformed landmark file) are
raised by the reader function with a message naming the file and the problem; napari shows it as a
notification.

Scale convention: an image layer gets ``scale`` = the pixel spacing from the file header (DICOM only; other
formats carry none, so (1, 1)). A landmark layer read from JSON gets ``scale`` = its ``spacing_mm`` only
when its ``image.path`` names a DICOM file, because only then is the image layer opened from that file
scaled the same way; otherwise the scale is (1, 1) and the spacing is kept in the metadata only.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..io.images import DICOM_EXTENSIONS, IMAGE_EXTENSIONS, is_dicom_file, read_image, sniff_format
from ..io.landmarks import CSV_COLUMNS, SCHEMA_ID, read_landmarks_csv, read_landmarks_json
from ._layers import META_KEY, points_layer_kwargs

__all__ = ["get_reader", "read_image_layer", "read_landmark_layer"]

_PEEK_BYTES = 65536
#: A landmark file of 68 points is ~20 KB; JSON larger than this is not parsed to see whether it is one.
_MAX_JSON_BYTES = 32 * 2**20
#: Formats claimed by content whatever the file's name (BMP's two-byte "BM" is too weak a sign on its own).
_SNIFFED_IMAGE_FORMATS = ("dicom", "png", "jpeg", "tiff")


def get_reader(path):
    """Return a reader function for ``path``, or None if this plugin does not read it."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    try:
        p = Path(path)
    except TypeError:
        return None
    suffix = p.suffix.lower()
    if p.is_dir():
        return None
    if suffix in IMAGE_EXTENSIONS:
        return read_image_layer
    if suffix == ".csv":
        return read_landmark_layer if _is_landmark_csv(p) else None
    if not p.is_file():  # missing, or a pipe / device that reading would block on
        return None
    if suffix != ".json" and sniff_format(p) in _SNIFFED_IMAGE_FORMATS:
        return read_image_layer
    if _is_landmark_json(p):
        return read_landmark_layer
    return None


def _peek(p: Path, n: int = _PEEK_BYTES) -> str | None:
    try:
        with open(p, "rb") as fh:
            return fh.read(n).decode("utf-8", errors="replace")
    except OSError:
        return None


def _is_landmark_json(p: Path) -> bool:
    """A JSON object whose top-level ``"schema"`` is ``SCHEMA_ID`` (what ``write_landmarks_json`` writes).
    Malformed points are left to the reader function, which names the problem."""
    try:
        if p.stat().st_size > _MAX_JSON_BYTES:
            return False
        with open(p, "rb") as fh:
            raw = fh.read()
    except OSError:
        return False
    if raw.lstrip()[:1] != b"{":
        return False
    try:
        d = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False
    return isinstance(d, dict) and d.get("schema") == SCHEMA_ID


def _is_landmark_csv(p: Path) -> bool:
    head = _peek(p, 4096)
    if not head:
        return False
    first = head.lstrip("\ufeff").splitlines()[0] if head.strip() else ""
    return [c.strip() for c in first.split(",")] == list(CSV_COLUMNS)


def _one_path(path) -> Path:
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            raise ValueError(f"expected one file, got {len(path)}")
        path = path[0]
    return Path(path)


def read_image_layer(path) -> list[tuple]:
    """Read one radiograph into an image layer tuple (raises ImageError with a clear message)."""
    p = _one_path(path)
    img = read_image(p)
    spacing = None if img.spacing is None else [float(v) for v in img.spacing]
    meta = {
        META_KEY: {
            "image_path": str(p),
            "spacing_mm": spacing,
            "image_shape": [int(v) for v in img.array.shape],
            "source": dict(img.metadata),
        }
    }
    kwargs = {
        "name": p.stem,
        "scale": tuple(spacing) if spacing is not None else (1.0, 1.0),
        "metadata": meta,
        "colormap": "gray",
    }
    return [(img.array, kwargs, "image")]


def _names_for(landmark_set):
    """Landmark names of a built-in schema, or None (then the file's own indices and labels are used)."""
    if not landmark_set:
        return None
    from ..schemas import BUILTIN, load_schema

    if landmark_set not in BUILTIN:
        return None
    return list(load_schema(landmark_set).landmarks)


def _image_is_dicom(image_path, base: Path) -> bool:
    if not image_path:
        return False
    ip = Path(image_path)
    if ip.suffix.lower() in DICOM_EXTENSIONS:
        return True
    if not ip.is_absolute():
        ip = base / ip
    return ip.suffix == "" and ip.is_file() and is_dicom_file(ip)


def read_landmark_layer(path) -> list[tuple]:
    """Read a landmark JSON (or CSV) file into a points layer tuple (raises LandmarkFileError)."""
    p = _one_path(path)
    if p.suffix.lower() == ".csv":
        lf = read_landmarks_csv(p)
        scale = None
    else:
        lf = read_landmarks_json(p)
        names = _names_for(lf.landmark_set)
        if names is not None and list(lf.labels) != names:
            lf = read_landmarks_json(p, landmark_names=names)  # match by label to the schema's order
        scale = lf.spacing if (lf.spacing is not None and _image_is_dicom(lf.image_path, p.parent)) else (1.0, 1.0)
    data, kwargs = points_layer_kwargs(
        lf.coords, lf.labels, pinned=lf.pinned, scores=lf.scores, landmark_set=lf.landmark_set,
        model=lf.model, image_path=lf.image_path, image_shape=lf.image_shape, spacing=lf.spacing,
        name=f"{p.stem} landmarks", scale=scale,
    )
    if lf.measurements:
        kwargs["metadata"][META_KEY]["measurements"] = dict(lf.measurements)
    kwargs["metadata"][META_KEY]["source_file"] = str(p)
    return [(data, kwargs, "points")]
