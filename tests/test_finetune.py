"""`napari-landmarks finetune` (issue 36 item 3): a model adapted to a site's own films, its lineage in its card,
refused with the reason on too few films or another landmark set, and never half-written."""

from __future__ import annotations

import csv
import errno

import numpy as np
import pytest
from skimage.io import imsave

from napari_interactive_landmarks.data.phantom import make_phantom
from napari_interactive_landmarks.finetune import MIN_FILMS, FinetuneError, finetune
from napari_interactive_landmarks.inference import Predictor
from napari_interactive_landmarks.schemas import load_schema
from napari_interactive_landmarks.weights import load_weights, resolve_weights

MODEL = "phantom-spine"


def _generic_folder(root, n, labels=None, seed=0):
    root.mkdir(parents=True)
    names = labels or list(load_schema("phantom-spine24").landmarks)
    with open(root / "landmarks.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "label", "row", "col"])
        for i in range(n):
            img, coords = make_phantom(np.random.default_rng(seed + i), shape=(512, 256), num_vertebrae=6)
            imsave(root / f"site-{i:02d}.png", (img * 255).astype(np.uint8), check_contrast=False)
            for name, (r, c) in zip(names, coords):
                w.writerow([f"site-{i:02d}.png", name, f"{r:.2f}", f"{c:.2f}"])
    return root


def test_finetune_adapts_the_networks_keeps_the_rest_and_records_its_lineage(tmp_path):
    films = _generic_folder(tmp_path / "site", 7)
    out = tmp_path / "adapted.safetensors"
    report = finetune(MODEL, films, out, epochs=2, threads=1, progress=False)
    assert len(report.trained_on) == 6 and len(report.held_aside) == 1 and set(report.held_aside).isdisjoint(
        report.trained_on)
    assert set(report.figures["base"]) == {0, 1, 3} and all(np.isfinite(v) for v in report.figures["adapted"].values())
    pred = Predictor.from_file(out)
    lineage = pred.card.training["finetune"]
    assert lineage["base"] == MODEL and lineage["held_aside"] == report.held_aside and lineage["epochs"] == 2
    assert len(lineage["base_sha256"]) == 64 and "held_aside_figures" in lineage
    base, _ = load_weights(resolve_weights(MODEL))
    new, _ = load_weights(out)
    assert set(base) == set(new)
    network = [k for k in base if not k.startswith(("shape_model.", "refiner."))]
    changed = [k for k in network if base[k].is_floating_point() and not np.allclose(base[k], new[k], atol=1e-3)]
    assert len(changed) > len(network) // 4  # the network learned
    for k in (k for k in base if k.startswith(("shape_model.", "refiner."))):
        assert np.array_equal(base[k].numpy(), new[k].numpy())  # the rest is the base model's
    base_card = Predictor.from_name(MODEL).card
    assert pred.card.temperatures == base_card.temperatures and pred.card.regions == base_card.regions
    assert pred.predict(np.asarray(make_phantom(np.random.default_rng(99), shape=(512, 256))[0])).coords.shape == (24, 2)


def test_too_few_films_are_refused_with_the_number_needed(tmp_path):
    films = _generic_folder(tmp_path / "site", MIN_FILMS - 2)
    with pytest.raises(FinetuneError, match=f"3 annotated film.*at least {MIN_FILMS}"):
        finetune(MODEL, films, tmp_path / "x.safetensors", epochs=1, progress=False)
    assert not (tmp_path / "x.safetensors").exists()


def test_films_of_another_landmark_set_are_refused(tmp_path):
    ceph = list(load_schema("isbi-ceph19").landmarks)
    films = tmp_path / "ceph"
    films.mkdir()
    imsave(films / "a.png", np.zeros((256, 256), np.uint8), check_contrast=False)
    (films / "landmarks.csv").write_text("image,label,row,col\n" + "".join(f"a.png,{n},10,10\n" for n in ceph))
    with pytest.raises(FinetuneError, match="phantom-spine24"):
        finetune(MODEL, films, tmp_path / "x.safetensors", epochs=1, progress=False)


def test_a_disk_that_fills_during_the_write_leaves_nothing_at_out(tmp_path, monkeypatch):
    import napari_interactive_landmarks.finetune as F

    films = _generic_folder(tmp_path / "site", 5)
    out = tmp_path / "adapted.safetensors"

    def full(src, dst):
        with open(dst, "wb") as fh:
            fh.write(b"\0" * 100)  # part of it, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(F.shutil, "copyfile", full)
    with pytest.raises(OSError, match="No space"):
        finetune(MODEL, films, out, epochs=1, progress=False, evaluate=False)
    assert not out.exists() and not list(tmp_path.glob("adapted.safetensors.*"))
