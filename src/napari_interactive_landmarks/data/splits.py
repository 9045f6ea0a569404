"""Reproducible train/validation splits: committed JSON files under ``data/splits/`` for the public datasets,
and for a dataset without one (a user's own folder) a seeded split made from its image names and written next
to the run (:func:`resolve_split`)."""

from __future__ import annotations

import json
import logging
import os
from importlib import resources
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# the committed split of each public dataset, used when a config names none
SHIPPED_SPLITS = {"aasce": "aasce_seed0", "isbi2015": "isbi_seed0", "isbi": "isbi_seed0"}
# a dataset without a split file and without a shipped split: this share of its images (rounded, at least one,
# never all) is the validation part, drawn with this fixed seed from the sorted image names
GENERATED_SPLIT_SEED = 0
GENERATED_VAL_FRACTION = 0.2


def make_split(names, num_val: int, seed: int) -> dict:
    names = sorted(names)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(names))
    val = sorted(names[i] for i in perm[:num_val])
    train = sorted(names[i] for i in perm[num_val:])
    return {"seed": seed, "num_train": len(train), "num_val": len(val), "train": train, "val": val}


def split_path(name: str) -> Path:
    return Path(str(resources.files(__package__).joinpath("splits", f"{name}.json")))


def load_split(name_or_path) -> dict:
    p = Path(name_or_path)
    if not p.is_file():
        p = split_path(str(name_or_path))
    if not p.is_file():
        raise FileNotFoundError(f"no split file '{name_or_path}'")
    return json.loads(p.read_text())


def apply_split(samples, split: dict, part: str):
    wanted = set(split[part])
    out = [s for s in samples if s.name in wanted]
    missing = wanted - {s.name for s in out}
    if missing:
        raise ValueError(f"split lists {len(missing)} images not in the dataset, e.g. {sorted(missing)[:3]}")
    return out


def generated_split(names) -> dict:
    """The seeded split of a dataset that has no split file: :data:`GENERATED_VAL_FRACTION` of the images
    (rounded; at least one, and at least one left for training) for validation, drawn with
    :data:`GENERATED_SPLIT_SEED` from the sorted names. The same names always give the same split."""
    from collections import Counter

    names = [str(n) for n in names]
    dup = sorted(n for n, c in Counter(names).items() if c > 1)
    if dup:
        raise ValueError(f"two images are both named '{dup[0]}' (in different subfolders): rename one, or give a split file")
    if len(names) < 2:
        raise ValueError(f"a train/validation split needs at least 2 annotated images; the dataset has {len(names)}")
    num_val = min(len(names) - 1, max(1, round(GENERATED_VAL_FRACTION * len(names))))
    split = make_split(names, num_val, GENERATED_SPLIT_SEED)
    split.update(generated=True, val_fraction=GENERATED_VAL_FRACTION)
    return split


def resolve_split(split_file, dataset: str, names, dest=None, write: bool = True) -> tuple[dict, str | None]:
    """The train/validation split of a training run and where it is: ``split_file`` when given (a name under
    ``data/splits`` or a path); else the dataset's committed split (:data:`SHIPPED_SPLITS`); else a
    :func:`generated_split` of ``names``, written as JSON to ``dest`` (when ``write``; the path is logged) so the
    run can be repeated and evaluated on the same validation images. Returns (split, its file or name)."""
    if split_file:
        return load_split(split_file), str(split_file)
    shipped = SHIPPED_SPLITS.get(str(dataset).lower())
    if shipped:
        return load_split(shipped), shipped
    split = generated_split(names)
    if dest is None:
        return split, None
    dest = Path(os.path.abspath(dest))
    if write:
        from ..io.files import replaced_atomically

        text = json.dumps(split, indent=1) + "\n"
        if dest.is_file() and dest.read_text() != text:
            log.warning("replacing the different split in %s", dest)
        with replaced_atomically(dest, suffix=".tmp.json") as tmp:
            Path(tmp).write_text(text)
        log.warning("no split file for the '%s' dataset: made a seeded split (seed %d, %d %% validation): %d training "
                    "and %d validation images, written to %s (set split_file to it to reuse it)", dataset,
                    GENERATED_SPLIT_SEED, round(100 * GENERATED_VAL_FRACTION), split["num_train"], split["num_val"], dest)
    return split, str(dest)
