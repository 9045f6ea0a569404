"""Reproducible train/validation splits, committed as JSON files under ``data/splits/``."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np


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
