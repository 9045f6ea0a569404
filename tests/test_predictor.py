import json
import warnings

import numpy as np
import pytest
import torch

from napari_interactive_landmarks.data.phantom import make_phantom
from napari_interactive_landmarks.inference import PredictionError, Predictor
from napari_interactive_landmarks.io.images import ImageError
from napari_interactive_landmarks.schemas import load_schema


@pytest.fixture(scope="module")
def predictor(tiny_run):
    trainer, _, _ = tiny_run
    return Predictor(trainer.model, load_schema(trainer.cfg["schema"]), trainer.cfg["input_size"],
                     trainer.cfg["sigma"], name="tiny", device="cpu")


@pytest.fixture(scope="module")
def phantom():
    # an "original" image 3 × larger than the network input, with its own aspect ratio
    return make_phantom(np.random.default_rng(42), shape=(384, 160), num_vertebrae=4)


def test_predict_returns_original_pixel_coordinates(predictor, phantom):
    img, gt = phantom
    pred = predictor.predict(img)
    assert pred.coords.shape == (16, 2) and pred.scores.shape == (16,)
    err = np.linalg.norm(pred.coords - gt, axis=1)
    assert np.median(err) < 15, err  # original pixels (3× the network scale)
    assert ((pred.scores >= 0) & (pred.scores <= 1)).all()
    assert pred.heatmaps().shape == (16, 128, 64)


def test_clicked_landmarks_come_back_exactly_where_put(predictor, phantom):
    img, gt = phantom
    first = predictor.predict(img)
    clicks = {3: (float(gt[3, 0]) + 0.25, float(gt[3, 1]) - 0.5), "V4_bottom_right": (float(gt[15, 0]), float(gt[15, 1]))}
    pred = predictor.predict(img, clicks=clicks, previous=first.coords)
    assert tuple(pred.coords[3]) == clicks[3]
    assert tuple(pred.coords[15]) == clicks["V4_bottom_right"]
    assert pred.clicked.sum() == 2 and pred.clicked[3] and pred.clicked[15]


def test_prepared_image_gives_identical_results(predictor, phantom):
    img, _ = phantom
    prep = predictor.prepare(img)
    np.testing.assert_array_equal(predictor.predict(prep).coords, predictor.predict(img).coords)


def test_rgb_and_16bit_images_are_accepted(predictor, phantom):
    img, _ = phantom
    base = predictor.predict(img).coords
    rgb = np.dstack([(img * 255).astype(np.uint8)] * 3)
    u16 = (img * 65535).astype(np.uint16)
    assert np.abs(predictor.predict(rgb).coords - base).max() < 2.0
    assert np.abs(predictor.predict(u16).coords - base).max() < 2.0


@pytest.mark.parametrize("bad,match", [
    (np.zeros((40, 30)), "64"),
    (np.full((200, 100), np.nan), "NaN"),
    (np.zeros((3, 200, 100)), "stack|2-D|channel"),
    (np.ones((200, 100)), "constant"),
    ("not an image", "image"),
])
def test_bad_images_are_refused_clearly(predictor, bad, match):
    with pytest.raises(ImageError, match=match):
        predictor.predict(bad)


def test_huge_image_is_refused_without_allocating(predictor):
    huge = np.broadcast_to(np.uint8(7), (10_001, 80))
    with pytest.raises(ImageError, match="10"):
        predictor.predict(huge)


@pytest.mark.parametrize("clicks,match", [
    ({16: (5.0, 5.0)}, "out of range"),
    ({-1: (5.0, 5.0)}, "out of range"),
    ({"nose": (5.0, 5.0)}, "not a landmark"),
    ({0: (-40.0, 5.0)}, "outside the image"),
    ({0: (5.0, 9999.0)}, "outside the image"),
    ({0: (float("nan"), 5.0)}, "finite"),
    ({0: "here"}, r"\(row, col\)"),
])
def test_bad_clicks_are_refused_clearly(predictor, phantom, clicks, match):
    with pytest.raises(PredictionError, match=match):
        predictor.predict(phantom[0], clicks=clicks)


def test_previous_with_wrong_shape_is_refused(predictor, phantom):
    with pytest.raises(PredictionError, match=r"\(16, 2\)"):
        predictor.predict(phantom[0], clicks={0: (10.0, 10.0)}, previous=np.zeros((68, 2)))


def test_weights_file_round_trip_and_wrong_landmark_set(tiny_run, tmp_path, phantom):
    from napari_interactive_landmarks.training.export import register_run
    from napari_interactive_landmarks.weights import load_manifest

    trainer, out, _ = tiny_run
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text("models: {}\n")
    entry = register_run("tiny-phantom", out, description="test", target_dir=tmp_path, manifest_path=manifest)
    assert load_manifest(manifest)["tiny-phantom"]["sha256"] == entry["sha256"]
    p = Predictor.from_file(tmp_path / "tiny-phantom.safetensors")
    assert p.schema.num_landmarks == 16 and p.input_size == (128, 64)
    ref = Predictor(trainer.model, load_schema(trainer.cfg["schema"]), (128, 64), 3.0, device="cpu")
    # fp16 storage changes the answer by far less than a pixel
    assert np.abs(p.predict(phantom[0]).coords - ref.predict(phantom[0]).coords).max() < 1.0
    with pytest.raises(PredictionError, match="different landmark set|not 'aasce-spine68'"):
        Predictor.from_file(tmp_path / "tiny-phantom.safetensors", schema="aasce-spine68")


def test_ere_is_returned_with_every_update_and_zero_for_clicks(predictor, phantom):
    img, gt = phantom
    first = predictor.predict(img)
    assert first.ere.shape == (16,) and np.isfinite(first.ere).all() and (first.ere > 0).all()
    pred = predictor.predict(img, clicks={2: tuple(gt[2])}, previous=first.coords)
    assert pred.ere[2] == 0.0 and (np.delete(pred.ere, 2) > 0).all()
    probs = pred.probabilities()
    np.testing.assert_allclose(probs.reshape(16, -1).sum(1), 1.0, atol=1e-4)
    u = pred.uncertainty_map(include=~pred.clicked)
    assert u.shape == probs.shape[1:] and 0.0 <= u.min() and u.max() <= 1.0 + 1e-6

def test_maps_are_handed_on_contiguous_although_the_network_runs_channels_last(predictor, phantom):
    """Every full-map step after the network reads one map at a time: from channels-last memory the argmax, softmax
    and ERE of a stride-1 model took 3-7 x longer (docs/history.md, issue 12)."""
    pred = predictor.predict(phantom[0])
    assert pred.logits.is_contiguous() and pred.logits.ndim == 3


class _Broken(torch.nn.Module):
    """Wraps a model and spoils some output channels: NaN logits (landmark 0), all-equal logits — an
    all-zero heatmap after any monotone activation (landmark 1) — and a peak pushed to the image corner,
    where most of the blob would lie outside the image (landmark 2)."""

    def __init__(self, model):
        super().__init__()
        self.inner = model
        self.num_landmarks = model.num_landmarks
        self.heatmap = getattr(model, "heatmap", "sigmoid")
        self.hint_sigma = model.hint_sigma

    def forward(self, x, hints=None, **interaction):
        out = dict(self.inner(x, hints, **interaction))
        lg = out["logits"].clone()
        lg[:, 0] = float("nan")
        lg[:, 1] = -20.0
        lg[:, 2] = -20.0
        lg[:, 2, 0, 0] = 10.0
        out["logits"] = lg
        return out


def test_bad_heatmaps_give_defined_results_without_a_crash(predictor, phantom):
    """Documented policy (codecs/uncertainty.py): a NaN map of a landmark the model must place is an error — a
    result with non-finite coordinates is never returned (issue 11) — while a landmark the user placed keeps
    its point (ERE 0) whatever its map; a flat map → a finite, large ERE (uniform mass); mass at the border → a
    finite ERE; the display map skips what is undefined. Other landmarks are untouched."""
    from napari_interactive_landmarks.inference.session import LandmarkSession

    img, _ = phantom
    good = predictor.predict(img)
    bad = Predictor(_Broken(predictor.model), predictor.schema, predictor.input_size, predictor.sigma, "broken", "cpu")
    with pytest.raises(PredictionError, match=r"non-finite coordinates for 1 landmark \(V1_top_left\).*corrupt"):
        bad.predict(img)
    s = LandmarkSession(bad)
    s.set_image(img)
    with pytest.raises(PredictionError, match="non-finite"):
        s.detect()
    assert not s.detected  # nothing half-merged
    click = {0: (50.0, 50.0)}  # the user places the broken landmark by hand: it stays where they put it
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning leaks either
        pred = bad.predict(img, clicks=click, previous=good.coords)
    assert tuple(pred.coords[0]) == (50.0, 50.0) and pred.ere[0] == 0.0
    assert np.isfinite(pred.ere[1:]).all()
    # flat map: every cell equally likely → ERE = mean distance of the image's pixels to the prediction
    h, w = img.shape
    rr, cc = np.mgrid[0:h, 0:w]
    mean_dist = np.hypot(rr - pred.coords[1, 0], cc - pred.coords[1, 1]).mean()
    assert pred.ere[1] == pytest.approx(mean_dist, rel=0.05)
    assert pred.coords[2, 0] < 10 and pred.coords[2, 1] < 10  # peak at the corner, inside the image
    ref = predictor.predict(img, clicks=click, previous=good.coords)
    np.testing.assert_allclose(pred.coords[3:], ref.coords[3:], atol=1e-4)
    u = pred.uncertainty_map()
    assert np.isfinite(u).all() and u.max() <= 1.0 + 1e-6


def test_model_without_temperatures_uses_t_equal_one(predictor, phantom):
    img, _ = phantom
    assert predictor.temperatures is None
    plain = predictor.predict(img)
    calibrated = Predictor(predictor.model, predictor.schema, predictor.input_size, predictor.sigma, "t1", "cpu",
                           temperatures=np.ones(16))
    np.testing.assert_allclose(calibrated.predict(img).ere, plain.ere, rtol=1e-6)
    hot = Predictor(predictor.model, predictor.schema, predictor.input_size, predictor.sigma, "t3", "cpu",
                    temperatures=np.full(16, 3.0))
    assert (hot.predict(img).ere > plain.ere).all()  # flatter maps, larger expected error
    with pytest.raises(PredictionError, match="temperatures"):
        Predictor(predictor.model, predictor.schema, predictor.input_size, predictor.sigma, "t", "cpu",
                  temperatures=np.ones(5))


@pytest.mark.parametrize("name", ["phantom-spine", "aasce-spine"])
def test_shipped_models_predict_as_before_the_model_drew_its_own_click_maps(name):
    """A regression pin, not a check of correctness: the interaction now enters the model as coordinates; the
    shipped weights must give the predictions they gave before (reference computed with the earlier code,
    tests/data/reference_predictions.json). Whether those predictions are right is checked independently by
    ``test_the_shipped_phantom_model_finds_the_true_corners``."""
    from pathlib import Path

    from napari_interactive_landmarks.data.phantom import make_phantom

    from napari_interactive_landmarks import weights

    ref = json.loads((Path(__file__).parent / "data" / "reference_predictions.json").read_text())
    shipped = weights.get_entry(name, weights.load_manifest())["sha256"]
    assert ref[name]["sha256"] == shipped, (
        f"'{name}' ships other weights than the reference was computed with: after checking that the old weights "
        "still match, recompute its entry (and sha256) with the new weights")
    p = Predictor.from_name(name, device="cpu")
    p.use_shape_prior = False  # the reference is the network's (the shape prior has its own tests)
    p.hold = 0.0  # and so is every move after the click (the card's hold has its own tests)
    p.EXCLUSION = 0.0  # and every place a landmark may be decoded (the exclusion zone has its own tests)
    p.envelope_weight = 0.0  # and its ERE is the network's map's, uncalibrated (the envelope has its own tests)
    p.ere_calibration = None
    img, _ = make_phantom(np.random.default_rng(5), shape=(1024, 512), num_vertebrae=6)
    auto = p.predict(img)
    clicks = {int(k): tuple(v) for k, v in ref["clicks"].items()}  # the pin's reference, not true positions
    clicked = p.predict(img, clicks=clicks, previous=auto.coords)
    np.testing.assert_allclose(auto.coords, ref[name]["auto"], atol=0.02)
    np.testing.assert_allclose(clicked.coords, ref[name]["clicked"], atol=0.02)
    np.testing.assert_allclose(clicked.ere, ref[name]["ere"], rtol=1e-3, atol=0.02)


def test_the_ere_is_the_closed_form_on_the_softmax_of_logits_over_temperature():
    """Issue 22: ERE = Σ q · ‖pixel − point‖ in original pixels, with q the softmax of logits / T cut at 5 % of its
    maximum and renormalised (McCouat & Voiculescu, Eq. 4), computed here in numpy from the prediction's logits,
    for the shipped phantom model with temperatures that differ per landmark."""
    from napari_interactive_landmarks.data.phantom import make_phantom

    p = Predictor.from_name("phantom-spine", device="cpu")
    p.use_shape_prior = False
    k = p.num_landmarks
    img, _ = make_phantom(np.random.default_rng(9), shape=(600, 280), num_vertebrae=6)
    temps = np.linspace(0.5, 3.0, k)
    for t in (temps, None):
        p.temperatures = t
        pred = p.predict(img)
        logits = pred.logits.double().cpu().numpy()  # (K, h, w)
        z = logits / (np.ones(k) if t is None else t)[:, None, None]
        q = np.exp(z - z.max(axis=(1, 2), keepdims=True))
        q /= q.sum(axis=(1, 2), keepdims=True)  # the calibrated 2-D softmax
        q = q / q.max(axis=(1, 2), keepdims=True)
        q[q <= 0.05] = 0.0
        q /= q.sum(axis=(1, 2), keepdims=True)
        h, w = q.shape[1:]
        (H, W) = img.shape
        sy, sx = H / h, W / w
        rows, cols = np.mgrid[0:h, 0:w]
        point = (pred.coords + 0.5) * [h / H, w / W] - 0.5  # original pixels -> the logits' grid
        dist = np.hypot((rows[None] - point[:, 0, None, None]) * sy, (cols[None] - point[:, 1, None, None]) * sx)
        want = (q * dist).sum(axis=(1, 2))
        np.testing.assert_allclose(pred.ere, want, rtol=2e-3, atol=1e-3)
    p.temperatures = temps
    hot = p.predict(img).ere
    p.temperatures = None
    assert not np.allclose(hot, p.predict(img).ere, rtol=0.02)  # the temperatures do change it


def test_the_shipped_phantom_model_finds_the_true_corners():
    """Issue 22, beside the regression pin above: against the generated phantom's true corners (independent of
    any earlier output), the shipped phantom model places most corners within a few pixels (measured on this
    film: median 2.0 px at 1024 x 512, four times the network's input), and a click at a true corner is kept."""
    from napari_interactive_landmarks.data.phantom import make_phantom

    p = Predictor.from_name("phantom-spine", device="cpu")
    p.use_shape_prior = False
    img, gt = make_phantom(np.random.default_rng(5), shape=(1024, 512), num_vertebrae=6)
    auto = p.predict(img)
    err = np.linalg.norm(auto.coords - gt, axis=1)
    assert np.median(err) < 5.0 and (err < 10.0).mean() >= 0.6, np.round(err, 1)
    worst = int(np.argmax(err))
    fixed = p.predict(img, clicks={worst: tuple(gt[worst])}, previous=auto.coords)
    np.testing.assert_array_equal(fixed.coords[worst], gt[worst])
    others = np.delete(np.linalg.norm(fixed.coords - gt, axis=1), worst)
    assert np.median(others) < 5.0, np.round(others, 1)


def test_bf16_places_the_phantom_corners_as_fp32_does_and_a_bad_precision_is_refused(monkeypatch):
    """``--precision bf16`` runs the network under bf16 autocast and everything after it in float32: on the shipped
    phantom model the corners stay within a pixel of fp32's (1024 x 512 film, 4 x the input), a click is kept to
    the bit, the ERE stays finite; ``auto`` takes bf16 only where the CPU computes it natively."""
    from napari_interactive_landmarks.inference import predictor as predictor_module

    p = Predictor.from_name("phantom-spine", device="cpu")
    p.use_shape_prior = False
    img, gt = make_phantom(np.random.default_rng(5), shape=(1024, 512), num_vertebrae=6)
    ref = p.predict(img)
    assert p.set_precision("bf16") == "bf16"
    half = p.predict(img)
    assert not np.array_equal(half.coords, ref.coords)  # bf16 did run: the logits differ in their last bits
    assert np.abs(half.coords - ref.coords).max() < 1.0, np.abs(half.coords - ref.coords).max()
    assert np.isfinite(half.ere).all() and half.logits.dtype == torch.float32
    fixed = p.predict(img, clicks={3: (float(gt[3][0]), float(gt[3][1]))}, previous=half.coords)
    np.testing.assert_array_equal(fixed.coords[3], gt[3])
    with pytest.raises(PredictionError, match="precision must be"):
        p.set_precision("fp16")
    assert p.precision == "bf16"  # a refused value changes nothing
    monkeypatch.setattr(predictor_module, "native_cpu_bf16", lambda: False)
    assert p.set_precision("auto") == "fp32"
    monkeypatch.setattr(predictor_module, "native_cpu_bf16", lambda: True)
    assert p.set_precision("auto") == "bf16"


def test_batch_norm_folded_for_inference_is_the_same_function_and_only_in_a_files_own_model():
    """Predictors of a weights file run their networks with each batch norm folded into the convolution before it
    (models/folding.py): the same outputs in fp32, no batch norm left in the shipped networks or refiner — and a
    model handed in by its trainer is never folded (its state dict must stay the file's)."""
    from napari_interactive_landmarks.models.interactive import build_model
    from napari_interactive_landmarks.models.folding import fold_batchnorm

    torch.manual_seed(0)
    model = build_model({"preset": "hrnet-tiny", "num_landmarks": 8, "gating": "max", "hint_fusion": True,
                         "hint_sigma": 2.0})
    for m in model.modules():  # running statistics far from the identity, so that folding them matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    model.eval()
    x = torch.rand(1, 1, 64, 32) * 2 - 1
    clicks = torch.zeros(1, 8, 2)
    clicks[0, 3] = torch.tensor([20.0, 11.0])
    clicked = torch.zeros(1, 8, dtype=torch.bool)
    clicked[0, 3] = True
    previous = torch.rand(1, 8, 2) * torch.tensor([64.0, 32.0])
    with torch.no_grad():
        before = model(x, clicks=clicks, clicked=clicked, previous=previous)["logits"]
        folded = fold_batchnorm(model)
        after = model(x, clicks=clicks, clicked=clicked, previous=previous)["logits"]
    assert folded > 10
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(build_model({"preset": "hrnet-tiny", "num_landmarks": 8}).train())

    for name in ("aasce-spine", "isbi-ceph"):
        p = Predictor.from_name(name)
        nets = [p.model] + ([p.refiner] if p.refiner is not None else [])
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for net in nets for m in net.modules()), name
    trained = build_model({"preset": "hrnet-tiny", "num_landmarks": 8, "hint_sigma": 2.0})
    from napari_interactive_landmarks.data.phantom import phantom_schema_dict
    from napari_interactive_landmarks.schemas import LandmarkSchema

    Predictor(trained, LandmarkSchema.from_dict(phantom_schema_dict(2)), (64, 32), 2.0, device="cpu")
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in trained.modules())


def test_the_hold_measures_a_move_in_cells_of_each_axis_on_a_film_whose_cells_are_not_square():
    """Issue 35: the hold rule was only tested on square cells, so swapping the row and column scales went
    unnoticed. A 1000 × 300 px film on the phantom model's 64 × 32 map: a cell is 15.6 px high and 9.4 px wide. With
    a hold of 0.6 cells, a 7 px move along the columns (0.75 of a cell) is a real move, a 7 px move along the rows
    (0.45 of a cell) is held."""
    p = Predictor.from_name("phantom-spine", device="cpu")
    shape, grid = (1000, 300), (64, 32)
    k = p.num_landmarks
    previous = np.tile([[500.0, 150.0]], (k, 1))
    coords = previous.copy()
    coords[1, 1] += 7.0  # along the columns
    coords[2, 0] += 7.0  # along the rows
    moved = coords.copy()
    p._hold_small_moves(p.codec.to_network(coords, shape), coords, previous, {0: (500.0, 150.0)}, shape, grid, 0.6)
    np.testing.assert_array_equal(coords[1], moved[1])  # 0.75 cells: it moves
    np.testing.assert_array_equal(coords[2], previous[2])  # 0.45 cells: held where it was shown


def test_a_network_left_in_training_mode_predicts_as_in_eval_mode_and_keeps_its_statistics(caplog):
    """A network switched to training mode by other code (``torch.onnx.export`` of a wrapper left in training mode
    does this) would answer from each film's batch statistics and overwrite its stored ones: the predictor puts it back
    in eval mode, says so, and answers as before."""
    import logging

    from napari_interactive_landmarks.data.phantom import make_phantom

    p = Predictor.from_name("phantom-spine", device="cpu")
    img, _ = make_phantom(np.random.default_rng(5), shape=(600, 280), num_vertebrae=6)
    before = p.predict(img).coords
    stats = {k: v.clone() for k, v in p.model.state_dict().items() if "running" in k}
    p.model.train()
    with caplog.at_level(logging.WARNING):
        after = p.predict(img).coords
    np.testing.assert_array_equal(after, before)
    assert not p.model.training and "training mode" in caplog.text
    assert all(torch.equal(v, p.model.state_dict()[k]) for k, v in stats.items())
