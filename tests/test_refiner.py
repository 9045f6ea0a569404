"""The local second stage (``models/refiner.py``): crops sampled where the geometry says, a trained refiner pulls
shifted points back to the truth, a user's clicked point is never refined, and a weights file carries it (or a
broken one is said once and the first stage alone places the points)."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch

from napari_interactive_landmarks.inference import Predictor, PredictionError
from napari_interactive_landmarks.models.refiner import (LocalRefiner, fine_image, from_crop, refine_points,
                                                          sample_crops, to_crop)
from napari_interactive_landmarks.training.refiner import attach_refiner, load_refiner, save_refiner, train_refiner
from napari_interactive_landmarks.weights import load_weights, resolve_weights, save_weights

PHANTOM = "phantom-spine"


@pytest.mark.parametrize("step,angle", [(1.0, 0.0), (2.5, 0.0), (1.5, math.radians(25))])
def test_a_crop_shows_a_dot_where_to_crop_says_it_is(step, angle):
    shape = (200, 160)
    dot = (83.0, 121.0)  # original pixels
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    image = np.exp(-((rr - dot[0]) ** 2 + (cc - dot[1]) ** 2) / (2 * 3.0**2)).astype(np.float32)  # a blob
    fine = fine_image(image, 1.0)  # step 1: the film itself; the crops resample it
    centre = torch.tensor([[90.0, 110.0]])
    crop = sample_crops(fine, shape, centre, 33, step, torch.tensor([angle]))[0, 0]
    where = to_crop(torch.tensor([[dot]]), centre, 33, step, torch.tensor([angle]))[0, 0]
    w = torch.clamp(crop - 0.5 * crop.max(), min=0)  # the blob's centre of mass in the crop
    r, c = torch.meshgrid(torch.arange(33.0), torch.arange(33.0), indexing="ij")
    centre_of_mass = ((w * r).sum() / w.sum(), (w * c).sum() / w.sum())
    assert np.hypot(float(centre_of_mass[0] - where[0]), float(centre_of_mass[1] - where[1])) < 0.1
    if angle == 0.0:  # and back: the crop's pixel of the dot is the dot's original place
        back = from_crop(where[None], centre, 33, step)[0]
        np.testing.assert_allclose(back.numpy(), dot, atol=1e-4)


class _PeakAt(LocalRefiner):
    """A refiner whose every map peaks at a fixed crop offset from the centre (to test the decoding's geometry)."""

    def __init__(self, k, offset, **kw):
        super().__init__(k, widths=(4, 8), size=16, **kw)
        self.offset = offset

    def forward(self, crops):
        n, s = crops.shape[0], self.size
        r = torch.arange(s, dtype=torch.float32) - (s - 1) / 2
        rr, cc = torch.meshgrid(r, r, indexing="ij")
        logit = -((rr - self.offset[0]) ** 2 + (cc - self.offset[1]) ** 2) / 2.0
        return logit.expand(n, self.num_landmarks, s, s).clone()


def test_refined_points_move_by_the_maps_offset_times_the_step_and_only_those_asked_for():
    shape = (120, 90)
    fine = fine_image(np.random.default_rng(0).random(shape).astype(np.float32), 2.0)
    coords = np.array([[30.0, 40.0], [60.0, 20.0], [100.0, 70.0]])
    refiner = _PeakAt(3, (2.0, -1.0), step=2.0)
    expected = np.zeros(3)
    out = refine_points(refiner, fine, shape, coords, [0, 2], expected)
    np.testing.assert_allclose(out[[0, 2]], coords[[0, 2]] + [4.0, -2.0], atol=0.05)
    np.testing.assert_array_equal(out[1], coords[1])
    # each map is a Gaussian of σ = 1 crop pixel: the expected radial error is σ·√(π/2) crop pixels, times the step;
    # NaN for the landmark not refined
    np.testing.assert_allclose(expected[[0, 2]], 2.0 * math.sqrt(math.pi / 2), rtol=0.02)
    assert np.isnan(expected[1])


def _phantoms(n, split, seed_shift=0):
    from napari_interactive_landmarks.data.datasets import load_phantom

    return load_phantom(split, n=n, shape=(300, 140), num_vertebrae=6)


@pytest.fixture(scope="module")
def tiny_refiner(tmp_path_factory):
    """A refiner trained ~20 s on generated films, validated on points 4 px off the truth."""
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("refiner")
    train, val = _phantoms(24, "calib"), _phantoms(6, "eval")
    truth = np.stack([s.coords for s in val])
    first = truth + np.random.default_rng(0).normal(size=truth.shape) * 4.0
    best = train_refiner({"refiner": {"widths": [8, 16, 32], "size": 24, "step": 1.0, "window": 7}, "epochs": 20,
                          "lr": 3e-3, "batch_images": 4, "crops_per_landmark": 2, "jitter": 4.0, "wide_jitter": 6.0,
                          "amp": "none", "num_threads": 2}, None, out, samples=(train, val), first_points=first,
                         log_every=0)
    return out, best


def test_a_trained_refiner_pulls_shifted_points_back_towards_the_truth(tiny_refiner):
    out, best = tiny_refiner
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,train_loss") and rows[0].endswith(",val_blended") and len(rows) == 21
    first_loss, last_loss = float(rows[1].split(",")[1]), float(rows[-1].split(",")[1])
    assert last_loss < first_loss - 0.5
    # 4 px Gaussian shifts are ≈ 5 px off on average; a refiner that learned the corners gets under 3.5 px
    assert best["val_first_stage"] > 4.5 and best["val_refined"] < 3.5, best
    refiner, meta = load_refiner(out / "best.safetensors")
    assert meta["epoch"] == best["epoch"] and refiner.size == 24


def _base_with_refiner(tmp_path, tiny_refiner, **kw):
    out = tmp_path / "with-refiner.safetensors"
    attach_refiner(resolve_weights(PHANTOM), tiny_refiner[0] / "best.safetensors", out, **kw)
    return out


def test_the_predictor_refines_unclicked_points_and_never_a_clicked_one(tmp_path, tiny_refiner):
    path = _base_with_refiner(tmp_path, tiny_refiner)
    pred = Predictor.from_file(path)
    assert pred.refiner is not None and pred.refiner_problem is None
    film = _phantoms(1, "test")[0]
    image, truth = film.load_image(), film.coords
    prepared = pred.prepare(image)
    refined = pred.predict(prepared)
    pred.use_refiner = False
    first = pred.predict(prepared)
    plain = Predictor.from_file(resolve_weights(PHANTOM)).predict(image)
    np.testing.assert_allclose(first.coords, plain.coords, atol=1e-6)  # switched off: the first stage exactly
    assert refined.refined and not first.refined
    assert np.abs(refined.coords - first.coords).max() > 0.05  # it did something
    pred.use_refiner = True
    click = (float(truth[4][0]) + 0.3, float(truth[4][1]) - 0.2)
    after = pred.predict(prepared, clicks={4: click}, previous=refined.coords)
    assert tuple(after.coords[4]) == click and after.clicked[4]


def test_a_refiner_run_validates_from_the_first_stage_of_a_file_that_already_carries_a_refiner(tmp_path, tiny_refiner):
    # a second refiner trained for the shipped model must start from that model's first-stage points, not from the
    # points its current refiner already moved (else the validation, and the epoch it chooses, answer another question)
    from napari_interactive_landmarks.training.refiner import _first_stage_points

    path = _base_with_refiner(tmp_path, tiny_refiner)
    films = _phantoms(2, "test")
    plain = Predictor.from_file(resolve_weights(PHANTOM))
    expected = np.stack([plain.predict(f.load_image(), shape_prior=False).coords for f in films])
    np.testing.assert_allclose(_first_stage_points(path, films, 1), expected, atol=1e-6)


def test_a_refiner_stored_off_is_not_used_and_a_broken_one_is_said_once(tmp_path, tiny_refiner, caplog):
    off = Predictor.from_file(_base_with_refiner(tmp_path, tiny_refiner, enabled=False))
    assert off.refiner is None and off.refiner_problem is None
    state, meta = load_weights(_base_with_refiner(tmp_path, tiny_refiner))
    state = {k: v for k, v in state.items() if not k.startswith("refiner.head")}  # its last layer lost
    broken = tmp_path / "broken.safetensors"
    save_weights(state, broken, metadata=meta)
    with caplog.at_level(logging.WARNING):
        pred = Predictor.from_file(broken)
    assert pred.refiner is None and "refiner unusable" in pred.refiner_problem
    assert "first stage alone" in caplog.text
    film = _phantoms(1, "test")[0]
    plain = Predictor.from_file(resolve_weights(PHANTOM)).predict(film.load_image())
    np.testing.assert_allclose(pred.predict(film.load_image()).coords, plain.coords, atol=1e-6)


def test_an_image_prepared_by_a_model_without_the_refiner_is_refused(tmp_path, tiny_refiner):
    with_ref = Predictor.from_file(_base_with_refiner(tmp_path, tiny_refiner))
    prepared = Predictor.from_file(resolve_weights(PHANTOM)).prepare(_phantoms(1, "test")[0].load_image())
    with pytest.raises(PredictionError, match="prepared by a model without a refiner"):
        with_ref.predict(prepared)


def test_attach_refuses_a_refiner_for_another_landmark_count(tmp_path):
    other = LocalRefiner(5, widths=(4, 8), size=16)
    f = tmp_path / "r5.safetensors"
    save_refiner(other, f, {"name": "r5"})
    with pytest.raises(ValueError, match="refines 5 landmarks"):
        attach_refiner(resolve_weights(PHANTOM), f, tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_the_cli_attaches_a_refiner_and_evaluate_can_switch_it_off(tmp_path, tiny_refiner, capsys):
    from napari_interactive_landmarks.cli import main

    out = tmp_path / "cli.safetensors"
    assert main(["attach-refiner", str(resolve_weights(PHANTOM)), str(tiny_refiner[0] / "best.safetensors"),
                 "--out", str(out), "--passes", "2"]) == 0
    assert "2 passes" in capsys.readouterr().out
    _, meta = load_weights(out)
    assert json.loads(meta["refiner"])["passes"] == 2
    assert Predictor.from_file(out).refiner_passes == 2
    assert main(["attach-refiner", str(resolve_weights(PHANTOM)), str(tiny_refiner[0] / "best.safetensors"),
                 "--out", str(out)]) != 0  # exists: nothing overwritten without --overwrite
    assert json.loads(load_weights(out)[1]["refiner"])["passes"] == 2


def test_a_blended_refiner_puts_each_point_between_the_first_stage_and_the_refined_place(tmp_path, tiny_refiner):
    film = _phantoms(1, "test")[0]
    image = film.load_image()
    full = Predictor.from_file(_base_with_refiner(tmp_path, tiny_refiner))
    half_path = tmp_path / "half.safetensors"
    attach_refiner(resolve_weights(PHANTOM), tiny_refiner[0] / "best.safetensors", half_path, blend=0.25)
    half = Predictor.from_file(half_path)
    assert half.refiner_blend == 0.25
    first = Predictor.from_file(resolve_weights(PHANTOM)).predict(image).coords
    refined = full.predict(image).coords
    np.testing.assert_allclose(half.predict(image).coords, 0.25 * refined + 0.75 * first, atol=1e-4)
    with pytest.raises(ValueError, match="blend must be in"):
        attach_refiner(resolve_weights(PHANTOM), tiny_refiner[0] / "best.safetensors", tmp_path / "x.safetensors",
                       blend=0.0)


def _softmax_phantom(tmp_path):
    """The phantom model's file read as a softmax model (its logits then decode and give an ERE as a softmax
    model's do): a small first stage with calibrated-map errors for the expected-error blend."""
    from napari_interactive_landmarks.model_card import ModelCard

    state, meta = load_weights(resolve_weights(PHANTOM))
    card = ModelCard.from_metadata(meta, source="phantom")
    card.heatmap = "softmax"
    card.config = {**card.config, "heatmap": "softmax"}
    path = tmp_path / "phantom-softmax.safetensors"
    save_weights(state, path, metadata=card.to_metadata())
    return path


def test_an_expected_error_blend_weights_each_point_by_the_two_stages_errors(tmp_path, tiny_refiner):
    film = _phantoms(1, "test")[0]
    image = film.load_image()
    base = _softmax_phantom(tmp_path)
    first = Predictor.from_file(base).predict(image).coords
    out = {}
    for scale in (1e-4, 1.0, 1e4):
        path = tmp_path / f"ee-{scale:g}.safetensors"
        attach_refiner(base, tiny_refiner[0] / "best.safetensors", path, blend="expected-error", error_scale=scale)
        pred = Predictor.from_file(path)
        assert pred.refiner_blend is None and pred.refiner_error_scale == scale and pred.refiner_problem is None
        out[scale] = pred.predict(image).coords
    # a refiner trusted without bound gives its own points; one never trusted leaves the first stage's
    refined_sm = Predictor.from_file(_refined_softmax(tmp_path, base, tiny_refiner)).predict(image).coords
    np.testing.assert_allclose(out[1e-4], refined_sm, atol=1e-3)
    np.testing.assert_allclose(out[1e4], first, atol=1e-3)
    # in between: every point on the segment between its two estimates, at a weight of its own
    d = refined_sm - first
    moved = np.linalg.norm(d, axis=1) > 0.5
    w = ((out[1.0] - first) * d).sum(1)[moved] / (d * d).sum(1)[moved]
    np.testing.assert_allclose(out[1.0][moved], first[moved] + w[:, None] * d[moved], atol=1e-3)
    assert (w > -1e-3).all() and (w < 1 + 1e-3).all() and w.std() > 0.1, w  # not one weight for every point
    with pytest.raises(ValueError, match="softmax"):  # a BCE first stage has no calibrated ERE to weigh with
        attach_refiner(resolve_weights(PHANTOM), tiny_refiner[0] / "best.safetensors", tmp_path / "y.safetensors",
                       blend="expected-error")
    with pytest.raises(ValueError, match="error_scale"):
        attach_refiner(base, tiny_refiner[0] / "best.safetensors", tmp_path / "z.safetensors", blend=0.5,
                       error_scale=2.0)


def _refined_softmax(tmp_path, base, tiny_refiner):
    path = tmp_path / "softmax-refined.safetensors"
    attach_refiner(base, tiny_refiner[0] / "best.safetensors", path)
    return path


def _small_refiner_run(out, samples, first, resume=False, **changes):
    cfg = {"refiner": {"widths": [8, 16], "size": 16, "step": 1.5, "window": 5}, "epochs": 4, "lr": 3e-3,
           "batch_images": 4, "jitter": 3.0, "wide_jitter": 5.0, "amp": "none", "num_threads": 1, **changes}
    return train_refiner(cfg, None, out, samples=samples, first_points=first, log_every=0, resume=resume)


def test_a_refiner_run_killed_inside_an_epoch_resumes_to_the_weights_of_an_unbroken_run(tmp_path, monkeypatch):
    import napari_interactive_landmarks.training.refiner as refiner_training

    train, val = _phantoms(12, "calib"), _phantoms(4, "eval")
    truth = np.stack([s.coords for s in val])
    first = truth + np.random.default_rng(0).normal(size=truth.shape) * 3.0
    torch.manual_seed(0)
    whole = _small_refiner_run(tmp_path / "whole", (train, val), first)

    real, calls = refiner_training._gamma_contrast, []

    def killed_in_epoch_three(crops, rng):  # 3 steps an epoch: the 8th is the middle of epoch 3
        calls.append(1)
        if len(calls) == 8:
            raise KeyboardInterrupt
        return real(crops, rng)

    monkeypatch.setattr(refiner_training, "_gamma_contrast", killed_in_epoch_three)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        _small_refiner_run(tmp_path / "broken", (train, val), first)
    monkeypatch.setattr(refiner_training, "_gamma_contrast", real)
    torch.manual_seed(123)  # the torch stream comes from the checkpoint, not from whoever resumes
    resumed = _small_refiner_run(tmp_path / "broken", (train, val), first, resume=True)

    a, _ = load_weights(tmp_path / "whole" / "last.safetensors")
    b, _ = load_weights(tmp_path / "broken" / "last.safetensors")
    assert set(a) == set(b)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)
    assert resumed == whole
    epochs = [line.split(",")[0] for line in (tmp_path / "broken" / "metrics.csv").read_text().splitlines()[1:]]
    assert epochs == ["1", "2", "3", "4"]


def test_resuming_a_refiner_run_refuses_another_runs_checkpoint_and_overwrites_nothing(tmp_path):
    from napari_interactive_landmarks.training.refiner import RefinerResumeError

    train, val = _phantoms(8, "calib"), _phantoms(2, "eval")
    truth = np.stack([s.coords for s in val])
    out = tmp_path / "run"
    _small_refiner_run(out, (train, val), truth + 2.0, epochs=1)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(RefinerResumeError, match="its lr is 0.003, this config's is 0.001"):
        _small_refiner_run(out, (train, val), truth + 2.0, resume=True, epochs=2, lr=1e-3)
    with pytest.raises(RefinerResumeError, match="continue it with --resume"):
        _small_refiner_run(out, (train, val), truth + 2.0, epochs=2)
    with pytest.raises(RefinerResumeError, match="raise --epochs"):
        _small_refiner_run(out, (train, val), truth + 2.0, resume=True, epochs=1)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    with pytest.raises(FileNotFoundError, match="no refiner checkpoint"):
        _small_refiner_run(tmp_path / "empty", (train, val), truth + 2.0, resume=True)
    # a longer schedule for the same run goes on
    longer = _small_refiner_run(out, (train, val), truth + 2.0, resume=True, epochs=2)
    assert longer["epoch"] in (1, 2) and len((out / "metrics.csv").read_text().splitlines()) == 3
