"""Training targets in anatomical order (``label_order: anatomical``, data/label_order.py)."""

import numpy as np
import pytest

from napari_interactive_landmarks.data.label_order import anatomical_permutation
from napari_interactive_landmarks.data.phantom import phantom_schema_dict
from napari_interactive_landmarks.schemas import LandmarkSchema

from .conftest import phantom_cached

SCHEMA = LandmarkSchema.from_dict(phantom_schema_dict(6))


def _spine(tilts_deg, height=40.0, width=80.0, gap=70.0):
    """A vertical column of vertebrae, each a width × height rectangle turned by its tilt: corners TL, TR, BL, BR."""
    out = []
    for v, tilt in enumerate(np.radians(tilts_deg)):
        centre = np.array([100.0 + gap * v, 200.0])
        rot = np.array([[np.cos(tilt), np.sin(tilt)], [-np.sin(tilt), np.cos(tilt)]])  # (row, col)
        local = np.array([[-height / 2, -width / 2], [-height / 2, width / 2],
                          [height / 2, -width / 2], [height / 2, width / 2]])
        out.append(centre + local @ rot.T)
    return np.concatenate(out)


def test_labels_in_order_are_left_alone_even_on_strongly_tilted_vertebrae():
    # at 35-40° the top-right corner of an 80 × 40 vertebra lies below its bottom-left one: a sort of the corners
    # by row would mislabel it; the edge-midpoint tests must not
    clean = _spine([0, 10, 35, 40, -38, 5])
    assert clean[9, 0] > clean[10, 0]  # V3's TR is below its BL indeed
    perm, changes = anatomical_permutation(SCHEMA, clean)
    assert changes == [] and np.array_equal(perm, np.arange(24))


def test_swapped_upside_down_and_mirrored_vertebrae_are_mended():
    clean = _spine([0, 10, 35, 40, -38, 5])
    bad = clean.copy()
    bad[16:20], bad[20:24] = clean[20:24], clean[16:20]  # the last vertebra listed above the one before it
    bad[4:8] = clean[4:8][[2, 3, 0, 1]]  # V2 upside down
    bad[8:12] = clean[8:12][[1, 0, 3, 2]]  # V3 mirrored (at 35°)
    perm, changes = anatomical_permutation(SCHEMA, bad)
    np.testing.assert_allclose(bad[perm], clean)
    assert "V2 upside down" in changes and "V3 left and right swapped" in changes
    assert any("out of order along the spine" in c and "re-assigned by height" in c for c in changes)


def test_a_landmark_set_without_vertebrae_is_refused():
    with pytest.raises(ValueError, match="4-corner groups"):
        anatomical_permutation("isbi-ceph19", np.zeros((19, 2)))


def test_the_trainer_reorders_the_training_targets_only(tmp_path):
    from napari_interactive_landmarks.training.trainer import Trainer

    cfg = {"schema": phantom_schema_dict(4), "input_size": [128, 64], "model": {"preset": "hrnet-tiny"},
           "out_dir": str(tmp_path), "device": "cpu", "morphology": {"weight": 0}, "label_order": "anatomical"}
    train, val = phantom_cached(6, 0), phantom_cached(4, 1)
    clean_train, clean_val = train.coords.copy(), val.coords.copy()
    for s in (train, val):  # image 2 of each: vertebrae 3 and 4 listed the wrong way round, in both frames
        for a in (s.coords, s.orig_coords):
            a[2, 8:12], a[2, 12:16] = a[2, 12:16].copy(), a[2, 8:12].copy()
    t = Trainer(cfg)
    t.load_data(train, val)
    np.testing.assert_allclose(t.train_set.coords, clean_train)
    np.testing.assert_allclose(t.train_set.orig_coords[2, 8:16], np.concatenate([train.orig_coords[2, 12:16],
                                                                                train.orig_coords[2, 8:12]]))
    assert not np.allclose(t.val_set.coords, clean_val)  # validation keeps the published labels
    assert np.allclose(train.coords[2, 8:12], clean_train[2, 12:16])  # the caller's set is not edited in place
    with pytest.raises(ValueError, match="label_order"):
        Trainer({**cfg, "label_order": "sorted"})
