import numpy as np
import pytest

from napari_interactive_landmarks.data.augment import AugmentConfig, affine_matrix, apply_affine, augment, flip_horizontal
from napari_interactive_landmarks.data.clicks import initial_click_probabilities, sample_initial_clicks, worst_unclicked
from napari_interactive_landmarks.losses import select_morphology_sets
from napari_interactive_landmarks.schemas import SchemaError, load_schema

from .conftest import DATASETS


def test_spine_schema_flip_swaps_left_and_right_corners():
    s = load_schema("aasce-spine68")
    assert s.num_landmarks == 68 and s.landmarks[0] == "T1_top_left" and s.landmarks[-1] == "L5_bottom_right"
    perm = s.flip_permutation()
    assert perm[0] == 1 and perm[1] == 0 and perm[2] == 3 and perm[3] == 2 and perm[66] == 67
    assert sorted(perm) == list(range(68))


def test_flip_moves_landmarks_with_the_image_and_swaps_indices():
    s = load_schema("aasce-spine68")
    img = np.zeros((64, 32), np.float32)
    coords = np.zeros((68, 2))
    coords[:, 0] = np.repeat(np.arange(17) * 3 + 5, 4) + np.tile([0, 0, 2, 2], 17)
    coords[:, 1] = np.tile([4.0, 20.0, 4.0, 20.0], 17)  # left corners at col 4, right at col 20
    img[int(coords[0, 0]), 4] = 1.0  # mark T1 top-left
    out, pts = flip_horizontal(img, coords, s.flip_permutation())
    # after the flip the top-left landmark (index 0) is still on the left: it is the old top-right corner
    assert pts[0, 1] < pts[1, 1] and pts[2, 1] < pts[3, 1]
    np.testing.assert_allclose(pts[0], [coords[1, 0], 31 - 20.0])
    assert out[int(coords[0, 0]), 31 - 4] == 1.0  # the image itself moved


def test_affine_moves_points_like_pixels():
    img = np.zeros((101, 61), np.float32)
    img[20, 15] = 1.0
    m = affine_matrix(img.shape, angle_deg=12.0, scale=1.1)
    out, pts = apply_affine(img, np.array([[20.0, 15.0]]), m, order=1)
    r, c = np.unravel_index(np.argmax(out), out.shape)
    assert abs(r - pts[0, 0]) <= 1 and abs(c - pts[0, 1]) <= 1


def test_augment_keeps_shapes_and_is_reproducible():
    rng1, rng2 = np.random.default_rng(3), np.random.default_rng(3)
    img = np.random.default_rng(0).random((64, 32)).astype(np.float32)
    pts = np.array([[10.0, 5.0], [10.0, 25.0]])
    perm = np.array([1, 0])
    a = augment(img, pts, rng1, AugmentConfig(), perm)
    b = augment(img, pts, rng2, AugmentConfig(), perm)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[0].shape == img.shape and a[0].min() >= 0 and a[0].max() <= 1


def test_augment_translation_moves_image_and_landmarks_together():
    img = np.zeros((64, 32), np.float32)
    img[20, 15] = 1.0
    cfg = AugmentConfig(rotate_p=0.0, scale_p=0.0, flip_p=0.0, intensity_p=0.0, translate=0.2, translate_p=1.0)
    moved = 0
    for seed in range(5):
        out, pts = augment(img, np.array([[20.0, 15.0]]), np.random.default_rng(seed), cfg, None)
        r, c = np.unravel_index(np.argmax(out), out.shape)
        assert abs(r - pts[0, 0]) <= 1 and abs(c - pts[0, 1]) <= 1
        assert abs(pts[0, 0] - 20) <= 0.2 * 64 + 1e-9 and abs(pts[0, 1] - 15) <= 0.2 * 32 + 1e-9
        moved += np.hypot(pts[0, 0] - 20, pts[0, 1] - 15) > 1
    assert moved >= 4


def test_augment_without_translation_keeps_its_random_stream():
    # translate_p 0 draws nothing: configs written before translation existed augment exactly as they did
    img = np.random.default_rng(0).random((64, 32)).astype(np.float32)
    pts = np.array([[10.0, 5.0], [10.0, 25.0]])
    a = augment(img, pts, np.random.default_rng(7), AugmentConfig(), np.array([1, 0]))
    b = augment(img, pts, np.random.default_rng(7), AugmentConfig(translate=0.3, translate_p=0.0), np.array([1, 0]))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_click_count_distribution_matches_reference():
    p = initial_click_probabilities(12)
    assert p[0] == pytest.approx(1 / 8) and p[1] == pytest.approx(1 / 2) and p[2] == pytest.approx(1 / 4)
    assert p[3] == pytest.approx(1 / 16) and p[-1] == p[-2]
    assert p.sum() == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    counts = np.bincount([len(sample_initial_clicks(rng, 68)) for _ in range(8000)], minlength=13)
    freq = counts / counts.sum()
    np.testing.assert_allclose(freq[:4], p[:4], atol=0.02)
    # drawn without replacement, and only among annotated landmarks
    valid = np.zeros(68, bool)
    valid[:3] = True
    for _ in range(200):
        idx = sample_initial_clicks(rng, 68, valid=valid)
        assert len(set(idx)) == len(idx) and all(i < 3 for i in idx)


def test_worst_unclicked_skips_clicked_and_nan():
    err = np.array([5.0, 9.0, np.nan, 7.0])
    assert worst_unclicked(err, np.array([False, True, False, False])) == 3
    assert worst_unclicked(err, np.array([True, True, False, True])) == -1


def test_morphology_selection_prefers_rigid_relations():
    """Landmarks 0-1 form a rigid bar; landmark 2 and 3 wander. The least-varying distance must be (0, 1),
    and the least-varying angle must be the rigid right angle 0-1-4 (4 moves with the bar)."""
    rng = np.random.default_rng(0)
    n = 200
    coords = np.zeros((n, 5, 2))
    base = rng.uniform(0.2, 0.4, size=(n, 2))
    coords[:, 0] = base
    coords[:, 1] = base + [0.1, 0.0]
    coords[:, 4] = base + [0.1, 0.1]
    coords[:, 2] = rng.uniform(0, 1, size=(n, 2))
    coords[:, 3] = rng.uniform(0, 1, size=(n, 2))
    pairs, triplets = select_morphology_sets(coords, 2, 1)
    assert set(pairs) == {(0, 1), (1, 4)}
    assert triplets[0] in [(0, 1, 4), (4, 0, 1), (0, 4, 1), (1, 0, 4), (1, 4, 0), (4, 1, 0)]
    # ... and it is the angle at the vertex 1 or an equally rigid one, never one involving 2 or 3
    assert not {2, 3} & set(triplets[0])


def test_schema_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nlandmarks: [a, b]\nflip_pairs: [[0, 5]]\n")
    with pytest.raises(SchemaError, match="outside"):
        load_schema(bad)
    with pytest.raises(SchemaError, match="unknown landmark schema"):
        load_schema("no-such-schema")


needs_shared = pytest.mark.skipif(not DATASETS.is_dir(), reason=f"real datasets not found at {DATASETS}")


@needs_shared
def test_aasce_loader_reads_real_training_split():
    from napari_interactive_landmarks.data.datasets import load_aasce
    from napari_interactive_landmarks.data.splits import apply_split, load_split

    samples = load_aasce(DATASETS / "aasce", "training")
    assert len(samples) == 481
    s = samples[0]
    assert s.coords.shape == (68, 2) and s.spacing is None
    h, w = s.image_shape
    assert (s.coords[:, 0] >= 0).all() and (s.coords[:, 0] <= h - 1).all() and (s.coords[:, 1] <= w - 1).all()
    # corners: top-left is left of top-right, top above bottom, T1 above L5
    assert (s.coords[0::4, 1] < s.coords[1::4, 1]).mean() > 0.95
    assert (s.coords[0::4, 0] < s.coords[2::4, 0]).mean() > 0.95
    assert s.coords[0, 0] < s.coords[-1, 0]
    assert len(s.extra["cobb_angles"]) == 3
    split = load_split("aasce_seed0")
    assert split["num_val"] == 128 and split["num_train"] == 353
    assert not set(split["train"]) & set(split["val"])
    assert len(apply_split(samples, split, "val")) == 128


@needs_shared
def test_isbi_loader_averages_senior_and_junior():
    from napari_interactive_landmarks.data.datasets import load_isbi2015

    samples = load_isbi2015(DATASETS / "isbi2015", "TrainingData")
    assert len(samples) == 150 and samples[0].spacing == 0.1 and samples[0].image_shape == (2400, 1935)
    root = DATASETS / "isbi2015" / "AnnotationsByMD"
    sen = np.loadtxt(root / "400_senior" / "001.txt", delimiter=",", max_rows=19)
    jun = np.loadtxt(root / "400_junior" / "001.txt", delimiter=",", max_rows=19)
    np.testing.assert_allclose(samples[0].coords, ((sen + jun) / 2)[:, ::-1])
    assert len(load_isbi2015(DATASETS / "isbi2015", "Test1Data")) == 150


@needs_shared
def test_a_split_file_of_test1data_halves_selects_test1data_films():
    """isbi_test1_halves names its own part of the dataset (data_split: Test1Data): 'calib' and 'eval' are disjoint
    halves of Test1Data's 150 films, and the CLI's --split calib --split-file isbi_test1_halves loads those films,
    not TrainingData ones (the model's own training data)."""
    from types import SimpleNamespace

    from napari_interactive_landmarks.cli import _dataset_samples
    from napari_interactive_landmarks.data.splits import load_split
    from napari_interactive_landmarks.inference import Predictor

    split = load_split("isbi_test1_halves")
    assert split["data_split"] == "Test1Data" and len(split["calib"]) == len(split["eval"]) == 75
    assert not set(split["calib"]) & set(split["eval"])
    pred = Predictor.from_name("isbi-ceph", device="cpu")
    args = SimpleNamespace(split="calib", dataset="isbi2015", root=DATASETS / "isbi2015",
                           split_file="isbi_test1_halves", limit=None)
    samples = _dataset_samples(args, pred)
    assert sorted(s.name for s in samples) == sorted(split["calib"])
    assert all(151 <= int(s.name.split(".")[0]) <= 300 for s in samples)  # Test1Data is 151-300


def test_loaders_refuse_missing_folders(tmp_path):
    from napari_interactive_landmarks.data.datasets import DatasetError, load_aasce, load_isbi2015

    with pytest.raises(DatasetError, match="boostnet_labeldata"):
        load_aasce(tmp_path, "training")
    with pytest.raises(DatasetError, match="split"):
        load_aasce(tmp_path, "validation")
    with pytest.raises(DatasetError, match="ISBI"):
        load_isbi2015(tmp_path, "TrainingData")


def test_one_clicker_for_training_and_evaluation():
    """The batched choice (training, validation) and the per-image choice (evaluation) pick the same landmark."""
    import torch

    from napari_interactive_landmarks.data.clicks import Clicker

    rng = np.random.default_rng(0)
    err = rng.uniform(0, 50, size=(6, 10))
    err[0, 3] = np.nan  # no ground truth: never clicked
    err[1] = np.nan  # nothing left to click
    clicked = rng.random((6, 10)) < 0.3
    ere = rng.uniform(0, 20, size=(6, 10))
    ere[2, :5] = np.nan
    for order in ("worst", "ere"):
        c = Clicker(order)
        mask = c.choose_batch(torch.tensor(err), torch.tensor(clicked), torch.tensor(ere)).numpy()
        for b in range(6):
            i = c.choose(err[b], clicked[b], ere[b])
            assert (i is None and not mask[b].any()) or (mask[b].sum() == 1 and mask[b, i]), (order, b)
    assert Clicker("worst").choose(err[0], clicked[0]) != 3
    assert Clicker("worst").choose(err[1], clicked[1]) is None
    picks = {Clicker("random", rng=s).choose(err[3], clicked[3]) for s in range(40)}
    assert picks == set(np.flatnonzero(~clicked[3] & np.isfinite(err[3])))
    with pytest.raises(ValueError, match="order"):
        Clicker("best")


def test_a_noisy_simulated_user_places_points_near_the_ground_truth_inside_the_image():
    from napari_interactive_landmarks.data.clicks import Clicker

    exact = Clicker("worst")
    assert exact.position((10.0, 20.0)) == (10.0, 20.0)
    noisy = Clicker("worst", noise_px=5.0, rng=0)
    pts = np.array([noisy.position((50.0, 60.0), (100, 100)) for _ in range(2000)])
    assert np.allclose(pts.mean(0), (50, 60), atol=0.5) and np.allclose(pts.std(0), 5.0, rtol=0.1)
    edge = np.array([noisy.position((0.0, 99.0), (100, 100)) for _ in range(200)])
    assert edge.min() >= -0.5 and edge.max() <= 99.5


def test_an_image_nothing_can_read_is_skipped_with_a_warning(tmp_path, caplog):
    """A dataset with one file that no reader can open: the loader says which and keeps the others (evaluate
    then runs on the rest instead of stopping)."""
    import logging

    from PIL import Image

    from napari_interactive_landmarks.data.datasets import load_isbi2015

    base = tmp_path / "isbi"
    (base / "RawImage" / "Test1Data").mkdir(parents=True)
    for who in ("400_senior", "400_junior"):
        (base / "AnnotationsByMD" / who).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for stem in ("151", "152"):
        pts = "\n".join(f"{10 + i},{20 + i}" for i in range(19)) + "\n1\n"
        for who in ("400_senior", "400_junior"):
            (base / "AnnotationsByMD" / who / f"{stem}.txt").write_text(pts)
    Image.fromarray(rng.integers(0, 255, (128, 96)).astype(np.uint8)).save(base / "RawImage" / "Test1Data" / "151.bmp")
    (base / "RawImage" / "Test1Data" / "152.jpg").write_bytes(b"not an image at all")
    with caplog.at_level(logging.WARNING):
        samples = load_isbi2015(base, "Test1Data")
    assert [s.name for s in samples] == ["151.bmp"]
    assert any("152.jpg" in r.getMessage() for r in caplog.records)
