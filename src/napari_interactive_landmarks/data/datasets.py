"""Dataset loaders: AASCE (BoostNet layout), ISBI 2015 cephalometric, and a user's own generic folder.

Every loader returns a list of :class:`LandmarkSample`, whose coordinates are (row, col) in original-image
pixels. Images are decoded lazily (``sample.load_image()``), so listing a dataset is cheap.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

AASCE_SPLITS = ("training", "test")
ISBI_SPLITS = {"TrainingData": "TrainingData", "Test1Data": "Test1Data", "Test2Data": "Test2Data",
               "train": "TrainingData", "training": "TrainingData", "test1": "Test1Data", "test2": "Test2Data"}
ISBI_SPACING_MM = 0.1


class DatasetError(ValueError):
    """A dataset folder is missing, incomplete or malformed."""


@dataclass
class LandmarkSample:
    name: str
    image_path: Path
    coords: np.ndarray  # (K, 2) float64 (row, col) original pixels; NaN rows = landmark not annotated
    image_shape: tuple[int, int]  # (H, W) original pixels
    spacing: float | None = None  # mm per pixel, isotropic
    extra: dict = field(default_factory=dict)

    def load_image(self) -> np.ndarray:
        if "array" in self.extra:  # generated in memory (phantom)
            return self.extra["array"]
        from ..io.images import read_image

        return read_image(self.image_path).array


def _image_size(path: Path) -> tuple[int, int] | None:
    """(rows, cols) from the file's header; a file PIL cannot open is read whole by content
    (:func:`~napari_interactive_landmarks.io.images.read_image`); None when nothing can read it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
        return h, w
    except (OSError, UnidentifiedImageError, ValueError):
        pass
    from ..io.images import ImageError, read_image

    try:
        return tuple(int(v) for v in read_image(path).array.shape[:2])
    except (ImageError, OSError, ValueError) as exc:
        log.warning("skipped %s: it cannot be read as an image (%s)", path.name, exc)
        return None


def _clip_to_image(coords: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, int]:
    h, w = shape
    clipped = coords.copy()
    clipped[:, 0] = np.clip(clipped[:, 0], 0, h - 1)
    clipped[:, 1] = np.clip(clipped[:, 1], 0, w - 1)
    moved = int(np.sum(np.any(np.abs(clipped - coords) > 1e-9, axis=1)))
    return clipped, moved


def _aasce_root(root: Path) -> Path:
    root = Path(root)
    for cand in (root, root / "boostnet_labeldata", root / "aasce" / "boostnet_labeldata"):
        if (cand / "labels").is_dir() and (cand / "data").is_dir():
            return cand
    raise DatasetError(
        f"no AASCE 'boostnet_labeldata' layout (data/<split>/*.jpg + labels/<split>/*.mat) under {root}"
    )


def load_aasce(root, split: str = "training") -> list[LandmarkSample]:
    """AASCE 2019 spine set. Landmarks from ``labels/<split>/<image>.mat`` (variable ``p2``, 68 × (x, y)),
    Cobb angles from ``angles.csv`` (row order = ``filenames.csv``) into ``sample.extra['cobb_angles']``.

    Landmarks lying outside the image (a few in the public release) are **clipped** to the image border;
    the number of clipped points is logged and stored in ``sample.extra['clipped']``.
    """
    from scipy.io import loadmat

    if split not in AASCE_SPLITS:
        raise DatasetError(f"unknown AASCE split '{split}'; expected one of {AASCE_SPLITS}")
    base = _aasce_root(root)
    img_dir, lab_dir = base / "data" / split, base / "labels" / split
    if not img_dir.is_dir() or not lab_dir.is_dir():
        raise DatasetError(f"AASCE split '{split}' not found: expected {img_dir} and {lab_dir}")
    angles = {}
    fn_csv, ang_csv = lab_dir / "filenames.csv", lab_dir / "angles.csv"
    if fn_csv.is_file() and ang_csv.is_file():
        names = [r[0].strip() for r in csv.reader(fn_csv.open()) if r]
        rows = [[float(v) for v in r] for r in csv.reader(ang_csv.open()) if r]
        if len(names) != len(rows):
            raise DatasetError(f"{fn_csv} has {len(names)} rows but {ang_csv} has {len(rows)}")
        angles = dict(zip(names, rows))
    samples, total_clipped = [], 0
    for img_path in sorted(img_dir.glob("*.jpg")):
        mat = lab_dir / (img_path.name + ".mat")
        if not mat.is_file():
            raise DatasetError(f"no label file {mat.name} for image {img_path.name}")
        p2 = np.asarray(loadmat(str(mat))["p2"], dtype=np.float64)
        if p2.shape != (68, 2):
            raise DatasetError(f"{mat}: expected p2 of shape (68, 2), got {p2.shape}")
        # .mat is (x, y) with a 1-based MATLAB convention in some tools; the published code uses it as
        # 0-based pixel coordinates, and so do we.
        coords = p2[:, ::-1].copy()
        shape = _image_size(img_path)
        if shape is None:  # reported; the other images are used
            continue
        coords, moved = _clip_to_image(coords, shape)
        total_clipped += moved
        extra = {"clipped": moved}
        if img_path.name in angles:
            extra["cobb_angles"] = angles[img_path.name]
        samples.append(LandmarkSample(img_path.name, img_path, coords, shape, None, extra))
    if not samples:
        raise DatasetError(f"no images in {img_dir}")
    if total_clipped:
        log.info("AASCE %s: clipped %d landmarks lying outside their image", split, total_clipped)
    return samples


def _isbi_root(root: Path) -> Path:
    root = Path(root)
    for cand in (root, root / "isbi2015"):
        if (cand / "RawImage").is_dir() and (cand / "AnnotationsByMD").is_dir():
            return cand
    raise DatasetError(f"no ISBI 2015 layout (RawImage/ + AnnotationsByMD/) under {root}")


def _read_isbi_txt(path: Path, k: int = 19) -> np.ndarray:
    pts = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        parts = line.split(",")
        if len(parts) != 2:
            break  # the original release appends classification lines after the 19 points
        pts.append((float(parts[0]), float(parts[1])))
        if len(pts) == k:
            break
    if len(pts) != k:
        raise DatasetError(f"{path}: expected {k} 'x,y' lines, found {len(pts)}")
    return np.asarray(pts, dtype=np.float64)


def load_isbi2015(root, split: str = "TrainingData") -> list[LandmarkSample]:
    """ISBI 2015 cephalometric set. Ground truth = mean of the senior and junior annotations
    (the challenge's definition); pixel spacing 0.1 mm. Images may be ``.bmp`` or ``.jpg``."""
    if split not in ISBI_SPLITS:
        raise DatasetError(f"unknown ISBI split '{split}'; expected one of TrainingData, Test1Data, Test2Data")
    split = ISBI_SPLITS[split]
    base = _isbi_root(root)
    img_dir = base / "RawImage" / split
    if not img_dir.is_dir():
        raise DatasetError(f"ISBI split '{split}' not found: expected {img_dir}")
    samples = []
    paths = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in (".bmp", ".jpg", ".jpeg", ".png"))
    for img_path in paths:
        stem = img_path.stem
        senior = base / "AnnotationsByMD" / "400_senior" / f"{stem}.txt"
        junior = base / "AnnotationsByMD" / "400_junior" / f"{stem}.txt"
        if not senior.is_file() or not junior.is_file():
            raise DatasetError(f"missing annotation for {img_path.name}: need {senior} and {junior}")
        xy = (_read_isbi_txt(senior) + _read_isbi_txt(junior)) / 2.0
        shape = _image_size(img_path)
        if shape is None:  # reported; the other images are used
            continue
        coords, moved = _clip_to_image(xy[:, ::-1].copy(), shape)
        samples.append(LandmarkSample(img_path.name, img_path, coords, shape, ISBI_SPACING_MM, {"clipped": moved}))
    if not samples:
        raise DatasetError(f"no images in {img_dir}")
    return samples


def load_generic(root, landmark_names) -> list[LandmarkSample]:
    """A user's own folder of images with ``landmarks.csv`` or per-image JSON (see docs/data-format.md)."""
    from ..io.annotations import load_generic_annotations

    out = []
    for image_path, coords, spacing in load_generic_annotations(root, landmark_names):
        image_path = Path(image_path)
        out.append(LandmarkSample(image_path.name, image_path, np.asarray(coords, float), _image_size(image_path), spacing))
    return out


PHANTOM_SPLIT_SEEDS = {"calib": 2000, "eval": 3000, "test": 4000}


def load_phantom(split: str = "eval", n: int = 40, shape=(1024, 512), num_vertebrae: int = 6) -> list[LandmarkSample]:
    """Generated phantom images (in memory), with seeds disjoint from the phantom model's training data."""
    from .phantom import make_phantom

    if split not in PHANTOM_SPLIT_SEEDS:
        raise DatasetError(f"unknown phantom split '{split}'; expected one of {', '.join(PHANTOM_SPLIT_SEEDS)}")
    rng = np.random.default_rng(PHANTOM_SPLIT_SEEDS[split])
    out = []
    for i in range(n):
        img, pts = make_phantom(rng, shape=shape, num_vertebrae=num_vertebrae)
        out.append(LandmarkSample(f"phantom_{split}_{i:03d}", Path(f"<phantom {split} {i}>"), pts, tuple(shape), None,
                                  {"array": img}))
    return out


def load_dataset(kind: str, root, split: str, landmark_names=None) -> list[LandmarkSample]:
    kind = kind.lower()
    if kind == "phantom":
        return load_phantom(split, num_vertebrae=len(landmark_names) // 4 if landmark_names else 6)
    if kind == "aasce":
        return load_aasce(root, split)
    if kind in ("isbi2015", "isbi"):
        return load_isbi2015(root, split)
    if kind == "generic":
        if landmark_names is None:
            raise DatasetError("the generic dataset needs the landmark names of a schema")
        return load_generic(Path(root) / split if (Path(root) / split).is_dir() else root, landmark_names)
    raise DatasetError(f"unknown dataset '{kind}'; expected aasce, isbi2015 or generic")
