"""Readable labels in the landmark schemas: short labels (abbreviations) with the full name for hover, one label
per vertebra at its centre, and their validation and round trip."""

import numpy as np
import pytest

from napari_interactive_landmarks.schemas import BUILTIN, LandmarkSchema, SchemaError, load_schema

ISBI_ABBREVIATIONS = ["S", "N", "Or", "Po", "A", "B", "Pog", "Me", "Gn", "Go", "L1 tip", "U1 tip", "UL", "LL", "Sn",
                      "Pog'", "PNS", "ANS", "Ar"]


def test_cephalometric_points_have_their_usual_abbreviations():
    s = load_schema("isbi-ceph19")
    assert s.display_names == ISBI_ABBREVIATIONS
    assert s.short_label("gonion") == "Go" and s.short_label(0) == "S"
    assert s.full_name("lower_incisal_incision") == "lower incisal incision" and s.short_label(10) == "L1 tip"
    assert s.full_name(15) == "soft tissue pogonion" and s.short_label(15) == "Pog'"
    assert len(set(s.display_names)) == s.num_landmarks  # unambiguous
    with pytest.raises(KeyError):
        s.short_label("nope")


def test_spine_corners_are_labelled_by_vertebra_and_corner():
    s = load_schema("aasce-spine68")
    assert s.short_label(33) == "T9 TR" and s.full_name(33) == "T9 top right"
    assert s.display_names[-4:] == ["L5 TL", "L5 TR", "L5 BL", "L5 BR"]
    assert s.group_of(33) == "T9" and s.group_of("L5_bottom_right") == "L5"
    p = load_schema("phantom-spine24")
    assert p.short_label(0) == "V1 TL" and p.group_of(23) == "V6"
    assert load_schema("isbi-ceph19").group_of(0) is None


def test_group_labels_one_per_vertebra_at_its_centre():
    s = load_schema("aasce-spine68")
    rng = np.random.default_rng(0)
    c = rng.uniform(0, 1000, (68, 2))
    labels = s.group_labels(c)
    assert [g for g, _, _ in labels] == [f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)]
    g, centre, members = labels[8]
    assert g == "T9" and members == (32, 33, 34, 35)
    assert centre == pytest.approx(tuple(c[32:36].mean(axis=0)))
    c[33] = np.nan  # a missing corner: the centre of the others
    assert s.group_labels(c)[8][1] == pytest.approx(tuple(c[[32, 34, 35]].mean(axis=0)))
    c[32:36] = np.nan  # a vertebra with no corner: no label
    assert "T9" not in [g for g, _, _ in s.group_labels(c)] and len(s.group_labels(c)) == 16
    assert load_schema("isbi-ceph19").group_labels(np.zeros((19, 2))) == []
    assert len(load_schema("phantom-spine24").group_labels(np.zeros((24, 2)))) == 6
    with pytest.raises(ValueError, match="shape"):
        s.group_labels(np.zeros((19, 2)))


def test_round_trip_and_fallback():
    for name in BUILTIN:
        s = load_schema(name)
        assert s.abbreviations and len(s.abbreviations) == s.num_landmarks
        assert LandmarkSchema.from_dict(s.to_dict()) == s
    plain = load_schema({"name": "t", "landmarks": ["a_b", "c"]})
    assert plain.abbreviations == () and "abbreviations" not in plain.to_dict()
    assert plain.display_names == ["a_b", "c"] and plain.short_label(0) == "a_b" and plain.full_name(0) == "a b"
    assert LandmarkSchema.from_dict(plain.to_dict()) == plain


@pytest.mark.parametrize("abbrev, msg", [
    (["x"], "one short label per landmark \\(2\\), got 1 entries"),
    (["x", "y", "z"], "got 3 entries"),
    ("xy", "got str"),
    (["x", ""], "non-empty string"),
    (["x", 3], "non-empty string"),
])
def test_bad_abbreviations_are_refused(abbrev, msg):
    with pytest.raises(SchemaError, match=msg):
        load_schema({"name": "t", "landmarks": ["a", "b"], "abbreviations": abbrev})


def test_bad_groups_are_refused():
    with pytest.raises(SchemaError, match="group 'g' must list landmark indices in 0..1"):
        load_schema({"name": "t", "landmarks": ["a", "b"], "groups": {"g": [0, 2]}})
    with pytest.raises(SchemaError, match="group 'g'"):
        load_schema({"name": "t", "landmarks": ["a", "b"], "groups": {"g": ["a"]}})
