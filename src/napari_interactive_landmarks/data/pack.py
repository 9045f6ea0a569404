"""Training packs: the preprocessed train and validation sets of one training config in one compressed file.

A pack lets training run where the raw dataset is not (a GPU machine that receives only the working tree):
``napari-landmarks pack --config C.yaml --out C.pack.npz`` here, ``napari-landmarks train --config C.yaml
--pack C.pack.npz`` there. It holds exactly what :func:`~.cache.build_cache` produces for the config — images
already intensity-normalised and resized to the network input, landmarks in network and original pixels,
original shapes, spacing — with the images JPEG-compressed (quality 95 by default: a mean absolute difference
well under one grey level of 255; AASCE + ISBI together ≈ 30 MB instead of ≈ 160 MB raw).

File layout: an uncompressed ``.npz`` (JPEG bytes do not compress further; read with ``allow_pickle=False``):

* ``header``: UTF-8 JSON — format, config name, dataset, data split, split file, the sorted image names' hash,
  landmark set, input size, preprocessing version, JPEG quality, counts;
* per part (``train``, ``val``): ``{part}_names``, ``{part}_jpeg`` (all images' JPEG bytes, concatenated),
  ``{part}_offsets`` (N + 1), ``{part}_coords``, ``{part}_orig_shapes``, ``{part}_orig_coords``, ``{part}_spacing``.

Before training, :func:`check_pack` compares the header with the config and refuses a pack made for another
landmark set, input size, dataset or split, naming the difference.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np

from ..io.files import replaced_atomically
from .cache import PREPROC_VERSION, CachedSet

PACK_FORMAT = "napari-interactive-landmarks/training-pack/v1"
PARTS = ("train", "val")


class PackError(ValueError):
    """A training pack is unreadable or was made for a different config."""


def _names_hash(names) -> str:
    return hashlib.sha1("\n".join(sorted(map(str, names))).encode()).hexdigest()[:16]


def _schema_identity(schema) -> tuple[str, int]:
    from ..schemas import load_schema

    s = load_schema(schema)
    return s.name, s.num_landmarks


def encode_jpeg(image_u8: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image_u8, dtype=np.uint8), mode="L").save(buf, "JPEG", quality=int(quality))
    return buf.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("L"), dtype=np.uint8)


def pack_header(cfg: dict, train_set: CachedSet, val_set: CachedSet, quality: int) -> dict:
    schema_name, k = _schema_identity(cfg["schema"])
    return {
        "format": PACK_FORMAT,
        "config_name": cfg.get("name"),
        "dataset": cfg.get("dataset"),
        "data_split": cfg.get("data_split"),
        "split_file": None if cfg.get("split_file") is None else Path(str(cfg["split_file"])).stem,
        "names_sha": {"train": _names_hash(train_set.names), "val": _names_hash(val_set.names)},
        "schema": schema_name,
        "num_landmarks": k,
        "input_size": [int(v) for v in cfg["input_size"]],
        "preproc_version": PREPROC_VERSION,
        "jpeg_quality": int(quality),
        "counts": {"train": len(train_set), "val": len(val_set)},
    }


def write_pack(path, cfg: dict, train_set: CachedSet, val_set: CachedSet, quality: int = 95,
               overwrite: bool = False) -> dict:
    """Write both sets as one pack (atomically); returns the header."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists (pass overwrite / --overwrite to replace it)")
    header = pack_header(cfg, train_set, val_set, quality)
    arrays = {"header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)}
    for part, data in zip(PARTS, (train_set, val_set)):
        blobs = [encode_jpeg(im, quality) for im in data.images]
        offsets = np.zeros(len(blobs) + 1, np.int64)
        offsets[1:] = np.cumsum([len(b) for b in blobs])
        arrays.update({
            f"{part}_names": np.array([str(n) for n in data.names]),
            f"{part}_jpeg": np.frombuffer(b"".join(blobs), dtype=np.uint8),
            f"{part}_offsets": offsets,
            f"{part}_coords": np.asarray(data.coords, np.float32),
            f"{part}_orig_shapes": np.asarray(data.orig_shapes, np.int64),
            f"{part}_orig_coords": np.asarray(data.orig_coords, np.float64),
            f"{part}_spacing": np.asarray(data.spacing, np.float64),
        })
    with replaced_atomically(path, suffix=".tmp.npz") as tmp:
        np.savez(tmp, **arrays)
    return header


def _open(path):
    path = Path(path)
    if not path.is_file():
        raise PackError(f"training pack not found: {path}")
    try:
        z = np.load(path, allow_pickle=False)
        header = json.loads(bytes(z["header"]).decode())
    except Exception as exc:  # not an npz, truncated, no header
        raise PackError(f"{path} is not a training pack (or is truncated): {exc}") from None
    if header.get("format") != PACK_FORMAT:
        raise PackError(f"{path} is not a training pack of this version (format {header.get('format')!r}, "
                        f"expected {PACK_FORMAT!r})")
    return z, header


def read_pack_header(path) -> dict:
    """The header alone (no image is decoded): to check a pack against a config before anything starts."""
    return _open(path)[1]


def read_pack(path) -> tuple[dict, CachedSet, CachedSet]:
    """(header, train set, validation set); images decoded back to uint8 at the network size."""
    z, header = _open(path)
    sets = []
    for part in PARTS:
        blob, off = z[f"{part}_jpeg"], z[f"{part}_offsets"]
        blob_bytes = blob.tobytes()
        images = np.stack([decode_jpeg(blob_bytes[off[i]:off[i + 1]]) for i in range(len(off) - 1)]) \
            if len(off) > 1 else np.zeros((0, *header["input_size"]), np.uint8)
        sets.append(CachedSet([str(n) for n in z[f"{part}_names"]], images, z[f"{part}_coords"],
                              z[f"{part}_orig_shapes"], z[f"{part}_orig_coords"], z[f"{part}_spacing"]))
    return header, sets[0], sets[1]


def check_pack(header: dict, cfg: dict, source="training pack") -> None:
    """Refuse a pack that was made for another landmark set, input size, dataset or split of the data."""
    schema_name, k = _schema_identity(cfg["schema"])
    problems = []
    if header.get("schema") != schema_name or header.get("num_landmarks") != k:
        problems.append(f"landmark set '{header.get('schema')}' ({header.get('num_landmarks')} landmarks), "
                        f"the config's is '{schema_name}' ({k})")
    if list(header.get("input_size", [])) != [int(v) for v in cfg["input_size"]]:
        problems.append(f"input size {header.get('input_size')}, the config's is {list(cfg['input_size'])}")
    if header.get("preproc_version") != PREPROC_VERSION:
        problems.append(f"preprocessing version {header.get('preproc_version')}, this package's is {PREPROC_VERSION}")
    if cfg.get("dataset") and cfg.get("dataset") != "phantom" and header.get("dataset") != cfg["dataset"]:
        problems.append(f"dataset '{header.get('dataset')}', the config's is '{cfg['dataset']}'")
    from .splits import SHIPPED_SPLITS, load_split

    split_name = cfg.get("split_file") or SHIPPED_SPLITS.get(str(cfg.get("dataset")).lower())  # none named: shipped
    if cfg.get("dataset") != "phantom" and split_name:
        try:
            split = load_split(split_name)
        except FileNotFoundError:
            split = None
        if split is not None:
            for part in PARTS:
                if part in split and header.get("names_sha", {}).get(part) != _names_hash(split[part]):
                    problems.append(f"a different '{part}' split than the config's split file '{split_name}'")
    if problems:
        raise PackError(f"{source} was made for another config: " + "; ".join(problems))


def load_pack_for(path, cfg: dict) -> tuple[CachedSet, CachedSet]:
    """Read a pack and check it against the config (see :func:`check_pack`)."""
    header, train_set, val_set = read_pack(path)
    check_pack(header, cfg, source=f"training pack {Path(path).name}")
    return train_set, val_set
