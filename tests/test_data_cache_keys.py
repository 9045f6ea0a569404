"""Issue 20 item 4 ("Your own data"): the preprocessing cache is keyed by content (image bytes, labels, spacing,
preprocessing), so fixed annotations and changed films reach the next training run; a generic folder without a
split file gets a seeded split written next to the run."""

import csv
import json
import logging

import numpy as np
import pytest

from .test_cli import _generic_folder

N = 6


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("NAPARI_LANDMARKS_CACHE", str(d))
    return d / "preproc"


def _config(root, split_file=True, **extra):
    from napari_interactive_landmarks.data.phantom import phantom_schema_dict

    cfg = {"name": "own", "dataset": "generic", "root": str(root), "data_split": ".",
           "schema": phantom_schema_dict(4), "input_size": [128, 64], "sigma": 3.0,
           "model": {"preset": "hrnet-tiny"}, "device": "cpu", **extra}
    if split_file:
        split = {"seed": 0, "train": [f"img{i}.png" for i in range(N - 2)], "val": [f"img{i}.png" for i in range(N - 2, N)]}
        (root / "split.json").write_text(json.dumps(split))
        cfg["split_file"] = str(root / "split.json")
    return cfg


def _sets(cfg):
    from napari_interactive_landmarks.schemas import load_schema
    from napari_interactive_landmarks.training.trainer import merged_config, raw_dataset_sets

    cfg = merged_config(cfg)
    return raw_dataset_sets(cfg, tuple(cfg["input_size"]), load_schema(cfg["schema"]), progress=False)


def _folder(tmp_path, name, seed):
    root = tmp_path / name
    root.mkdir()
    return _generic_folder(root, N, seed=seed)


def _edit_label(root, image, index, new_row):
    rows = list(csv.reader((root / "landmarks.csv").open()))
    hits = [r for r in rows[1:] if r[0] == image]
    hits[index][2] = f"{new_row:.2f}"
    with (root / "landmarks.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)


def test_an_edited_label_reaches_the_next_training_set(tmp_path, cache_dir):
    root = _folder(tmp_path, "own", 5)
    cfg = _config(root)
    train, _ = _sets(cfg)
    old = float(train.orig_coords[0, 2, 0])
    _edit_label(root, "img0.png", 2, old + 17.25)
    train2, val2 = _sets(cfg)  # the same folder, names and input size: only a label differs
    assert train2.names[0] == "img0.png"
    assert train2.orig_coords[0, 2, 0] == pytest.approx(old + 17.25)
    from napari_interactive_landmarks.codecs.geometry import to_network

    np.testing.assert_allclose(train2.coords[0], to_network(train2.orig_coords[0], (256, 128), (128, 64)), atol=1e-4)
    assert train2.coords[0, 2, 0] != pytest.approx(train.coords[0, 2, 0])  # network pixels too
    np.testing.assert_array_equal(np.delete(train2.orig_coords, 0, axis=0), np.delete(train.orig_coords, 0, axis=0))
    # the superseded entry of this folder's train part is replaced, not kept beside the new one
    assert len([p for p in cache_dir.glob("*train*.npz")]) == 1, sorted(p.name for p in cache_dir.iterdir())


def test_changed_pixels_reach_the_preprocessed_sample(tmp_path, cache_dir):
    from skimage.io import imread, imsave

    from napari_interactive_landmarks.data.cache import preprocess

    root = _folder(tmp_path, "own", 5)
    cfg = _config(root)
    train, _ = _sets(cfg)
    img = imread(root / "img1.png")
    imsave(root / "img1.png", (255 - img).astype(np.uint8), check_contrast=False)  # same name, size and labels
    train2, _ = _sets(cfg)
    fresh = np.clip(np.round(preprocess((255 - img).astype(np.float32), (128, 64)) * 255), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(train2.images[1], fresh)
    assert np.abs(train2.images[1].astype(int) - train.images[1].astype(int)).mean() > 20
    np.testing.assert_array_equal(train2.images[0], train.images[0])


def test_two_folders_with_the_same_file_names_do_not_share_cache_entries(tmp_path, cache_dir):
    a, b = _folder(tmp_path, "a", 1), _folder(tmp_path, "b", 2)
    train_a, val_a = _sets(_config(a))
    train_b, val_b = _sets(_config(b))
    assert train_a.names == train_b.names and val_a.names == val_b.names  # identical file names
    for part_b, folder_b in ((train_b, b), (val_b, b)):
        from napari_interactive_landmarks.data.datasets import load_generic
        from napari_interactive_landmarks.data.phantom import phantom_schema_dict

        truth = {s.name: s.coords for s in load_generic(folder_b, phantom_schema_dict(4)["landmarks"])}
        for name, coords in zip(part_b.names, part_b.orig_coords):
            np.testing.assert_allclose(coords, truth[name])
    assert not np.array_equal(train_a.images, train_b.images)
    # a's entries are kept beside b's: asking for a again is answered from them, unchanged
    files = sorted(cache_dir.glob("*.npz"))
    assert len(files) == 4, [p.name for p in files]
    again, _ = _sets(_config(a))
    np.testing.assert_array_equal(again.images, train_a.images)
    assert sorted(cache_dir.glob("*.npz")) == files


def test_a_generic_folder_without_a_split_file_gets_a_seeded_split_in_the_run_folder(tmp_path, cache_dir, caplog):
    from napari_interactive_landmarks.data import splits
    from napari_interactive_landmarks.training.trainer import Trainer

    root = _folder(tmp_path, "own", 4)
    runs = []
    for run in ("run1", "run2"):
        t = Trainer(_config(root, split_file=False, out_dir=str(tmp_path / run)))
        with caplog.at_level(logging.INFO, logger="napari_interactive_landmarks"):
            t.load_data()
        written = tmp_path / run / "split.json"
        assert written.is_file()
        assert str(written) in caplog.text  # the log says where
        split = json.loads(written.read_text())
        assert t.train_set.names == split["train"] and t.val_set.names == split["val"]
        assert t.model_card({}).training["split_file"] == str(written)  # the weights name the split they used
        runs.append(split)
        caplog.clear()
    assert runs[0]["train"] == runs[1]["train"] and runs[0]["val"] == runs[1]["val"]  # deterministic
    split = runs[0]
    assert split["seed"] == splits.GENERATED_SPLIT_SEED and split["generated"] is True
    assert sorted(split["train"] + split["val"]) == sorted(f"img{i}.png" for i in range(N))
    assert len(split["val"]) == max(1, round(splits.GENERATED_VAL_FRACTION * N))


def test_val_part_validates_on_that_part_only_and_refuses_a_missing_or_overlapping_one(tmp_path, cache_dir):
    # issue 18: the epoch is chosen on "calib" so that "eval" stays unseen by the choice
    root = _folder(tmp_path, "own", 9)
    cfg = _config(root)
    split = json.loads((root / "split.json").read_text())
    split.update(calib=[f"img{N - 2}.png"], eval=[f"img{N - 1}.png"], overlapping=["img0.png"])
    (root / "split.json").write_text(json.dumps(split))
    train, calib = _sets({**cfg, "val_part": "calib"})
    assert list(calib.names) == [f"img{N - 2}.png"] and len(train.names) == N - 2
    _, ev = _sets({**cfg, "val_part": "eval"})  # a different part is not served from the other's cache entry
    assert list(ev.names) == [f"img{N - 1}.png"]
    _, val = _sets(cfg)
    assert sorted(val.names) == [f"img{N - 2}.png", f"img{N - 1}.png"]
    with pytest.raises(ValueError, match="no such validation part.*'calib', 'eval'"):
        _sets({**cfg, "val_part": "tune"})
    with pytest.raises(ValueError, match="shares 1 images with its train part"):
        _sets({**cfg, "val_part": "overlapping"})
    with pytest.raises(ValueError, match="no such validation part"):
        _sets({**cfg, "val_part": "train"})
