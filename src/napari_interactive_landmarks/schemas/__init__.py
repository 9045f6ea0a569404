"""Landmark sets as YAML schema files: names, left/right flip pairs, skeleton edges, measurements."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

BUILTIN = {"aasce-spine68": "aasce_spine68.yaml", "isbi-ceph19": "isbi_ceph19.yaml", "phantom-spine24": "phantom_spine24.yaml"}


class SchemaError(ValueError):
    """A landmark schema file is missing or malformed."""


@dataclass(frozen=True)
class LandmarkSchema:
    name: str
    landmarks: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...] = ()
    edges: tuple[tuple[int, int], ...] = ()
    allow_flip: bool = True
    description: str = ""
    groups: dict = field(default_factory=dict)
    measurements: tuple = ()

    @property
    def num_landmarks(self) -> int:
        return len(self.landmarks)

    def flip_permutation(self) -> np.ndarray:
        """Index permutation to apply after a horizontal flip (left <-> right)."""
        perm = np.arange(self.num_landmarks)
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    def index(self, name_or_index) -> int:
        if isinstance(name_or_index, (int, np.integer)):
            i = int(name_or_index)
            if not 0 <= i < self.num_landmarks:
                raise IndexError(
                    f"landmark index {i} is out of range for '{self.name}' ({self.num_landmarks} landmarks, 0..{self.num_landmarks - 1})"
                )
            return i
        try:
            return self.landmarks.index(name_or_index)
        except ValueError:
            raise KeyError(f"'{name_or_index}' is not a landmark of '{self.name}'") from None

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "landmarks": list(self.landmarks),
            "flip_pairs": [list(p) for p in self.flip_pairs],
            "allow_flip": self.allow_flip,
            "edges": [list(e) for e in self.edges],
            "groups": {k: list(v) for k, v in self.groups.items()},
            "measurements": list(self.measurements),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "LandmarkSchema":
        try:
            names = tuple(str(n) for n in d["landmarks"])
            name = str(d["name"])
        except (KeyError, TypeError) as exc:
            raise SchemaError(f"a landmark schema needs 'name' and 'landmarks' (missing {exc})") from None
        if len(set(names)) != len(names):
            raise SchemaError(f"schema '{name}' has duplicate landmark names")
        k = len(names)

        def pairs(key):
            out = []
            for p in d.get(key) or []:
                a, b = (int(v) for v in p)
                if not (0 <= a < k and 0 <= b < k):
                    raise SchemaError(f"schema '{name}': {key} entry {p} refers to a landmark outside 0..{k - 1}")
                out.append((a, b))
            return tuple(out)

        flips = pairs("flip_pairs")
        seen = [i for p in flips for i in p]
        if len(seen) != len(set(seen)):
            raise SchemaError(f"schema '{name}': a landmark appears in more than one flip pair")
        return cls(
            name=name,
            landmarks=names,
            flip_pairs=flips,
            edges=pairs("edges"),
            allow_flip=bool(d.get("allow_flip", True)),
            description=str(d.get("description", "")),
            groups={str(g): tuple(int(i) for i in v) for g, v in (d.get("groups") or {}).items()},
            measurements=tuple(d.get("measurements") or ()),
        )


def load_schema(name_or_path) -> LandmarkSchema:
    """Load a built-in schema by name (``aasce-spine68``, ``isbi-ceph19``) or a YAML file by path."""
    if isinstance(name_or_path, LandmarkSchema):
        return name_or_path
    if isinstance(name_or_path, dict):
        return LandmarkSchema.from_dict(name_or_path)
    key = str(name_or_path)
    if key in BUILTIN:
        text = resources.files(__name__).joinpath(BUILTIN[key]).read_text()
    else:
        path = Path(key)
        if not path.is_file():
            raise SchemaError(
                f"unknown landmark schema '{key}': not a built-in ({', '.join(BUILTIN)}) and no such file"
            )
        text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SchemaError(f"landmark schema '{key}' is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SchemaError(f"landmark schema '{key}' must be a mapping")
    return LandmarkSchema.from_dict(data)
