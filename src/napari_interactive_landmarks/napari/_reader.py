"""npe2 reader: radiographs (PNG / JPEG / TIFF / BMP / DICOM) and this package's landmark files.

``get_reader(path)`` decides cheaply (extension; for JSON a peek for the schema id; for CSV the exact
header line) and returns a reader function, or None so that napari tries other readers. Errors found
while reading (corrupt image, malformed landmark file) are raised by the reader function with a message
naming the file and the problem; napari shows it as a notification.

Scale convention: an image layer gets ``scale`` = the pixel spacing from the file header (DICOM only; other
formats carry none, so (1, 1)). A landmark layer read from JSON gets ``scale`` = its ``spacing_mm`` only
when its ``image.path`` names a DICOM file, because only then is the image layer opened from that file
scaled the same way; otherwise the scale is (1, 1) and the spacing is kept in the metadata only.
"""

from __future__ import annotations

from pathlib import Path

from ..io.images import DICOM_EXTENSIONS, IMAGE_EXTENSIONS, is_dicom_file, read_image
from ..io.landmarks import CSV_COLUMNS, SCHEMA_ID, read_landmarks_csv, read_landmarks_json
from ._layers import META_KEY, points_layer_kwargs

__all__ = ["get_reader", "read_image_layer", "read_landmark_layer"]

_PEEK_BYTES = 65536


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
    if suffix == ".json" and _is_landmark_json(p):
        return read_landmark_layer
    if suffix == ".csv" and _is_landmark_csv(p):
        return read_landmark_layer
    return None


def _peek(p: Path, n: int = _PEEK_BYTES) -> str | None:
    try:
        with open(p, "rb") as fh:
            return fh.read(n).decode("utf-8", errors="replace")
    except OSError:
        return None


def _is_landmark_json(p: Path) -> bool:
    head = _peek(p)
    return head is not None and SCHEMA_ID in head


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
