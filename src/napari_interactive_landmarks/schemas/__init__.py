"""Landmark sets as YAML schema files: names, left/right flip pairs, skeleton edges, groups, short labels,
measurements.

Optional keys besides ``name`` and ``landmarks``:

- ``abbreviations``: one short label per landmark, in landmark order (what the viewer writes next to a point;
  the full name is for hover/selection). Without it, :meth:`LandmarkSchema.short_label` is the full name.
- ``groups``: ``{group name: [landmark indices]}``. In the spine schemas each group is one vertebra with its 4
  corners in the order top-left, top-right, bottom-left, bottom-right; :meth:`LandmarkSchema.group_labels`
  gives the position at which to write a group's name once (its centre).
"""

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
    abbreviations: tuple[str, ...] = ()  # one short label per landmark, or () for none

    @property
    def num_landmarks(self) -> int:
        return len(self.landmarks)

    def short_label(self, i) -> str:
        """The landmark's short label (``abbreviations``; e.g. "Go" for gonion), or its name when the schema has
        none. ``i``: index or name."""
        i = self.index(i)
        return self.abbreviations[i] if self.abbreviations else self.landmarks[i]

    def full_name(self, i) -> str:
        """The landmark's name in words, for hover text: "lower incisal incision", "T9 top left"."""
        return self.landmarks[self.index(i)].replace("_", " ")

    @property
    def display_names(self) -> list[str]:
        """Short labels of all landmarks in order (names where the schema has no ``abbreviations``)."""
        return list(self.abbreviations) if self.abbreviations else list(self.landmarks)

    def group_of(self, i) -> str | None:
        """Name of the first group that contains landmark ``i`` (e.g. "T9"), or None."""
        i = self.index(i)
        for g, members in self.groups.items():
            if i in members:
                return g
        return None

    def group_labels(self, coords) -> list[tuple[str, tuple[float, float], tuple[int, ...]]]:
        """Where to write each group's name once: ``[(group name, (row, col) centre, member indices)]`` in the
        schema's group order — for the spine schemas one entry per vertebra ("T1" ... "L5") at the mean of
        its 4 corners. Missing (NaN) members are left out of the centre; a group with no finite member is
        left out of the list. Schemas without groups (``isbi-ceph19``) give []."""
        c = np.asarray(coords, dtype=np.float64)
        if c.shape != (self.num_landmarks, 2):
            raise ValueError(f"expected coords of shape ({self.num_landmarks}, 2) for '{self.name}', got {c.shape}")
        out = []
        for g, members in self.groups.items():
            pts = c[list(members)]
            pts = pts[np.all(np.isfinite(pts), axis=1)]
            if len(pts):
                r, col = pts.mean(axis=0)
                out.append((g, (float(r), float(col)), tuple(members)))
        return out

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
            **({"abbreviations": list(self.abbreviations)} if self.abbreviations else {}),
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
        groups = {}
        for g, v in (d.get("groups") or {}).items():
            try:
                members = tuple(int(i) for i in v)
            except (TypeError, ValueError):
                raise SchemaError(f"schema '{name}': group '{g}' must be a list of landmark indices") from None
            if not members or not all(0 <= i < k for i in members):
                raise SchemaError(f"schema '{name}': group '{g}' must list landmark indices in 0..{k - 1}, "
                                  f"got {list(v)}")
            groups[str(g)] = members
        abbrev = d.get("abbreviations")
        if abbrev is None:
            abbrev = ()
        elif not isinstance(abbrev, (list, tuple)) or len(abbrev) != k:
            got = f"{len(abbrev)} entries" if isinstance(abbrev, (list, tuple)) else type(abbrev).__name__
            raise SchemaError(f"schema '{name}': 'abbreviations' must list one short label per landmark ({k}), "
                              f"got {got}")
        elif not all(isinstance(a, str) and a.strip() for a in abbrev):
            raise SchemaError(f"schema '{name}': every entry of 'abbreviations' must be a non-empty string")
        return cls(
            name=name,
            landmarks=names,
            flip_pairs=flips,
            edges=pairs("edges"),
            allow_flip=bool(d.get("allow_flip", True)),
            description=str(d.get("description", "")),
            groups=groups,
            measurements=tuple(d.get("measurements") or ()),
            abbreviations=tuple(a.strip() for a in abbrev),
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
