"""Tests for the click protocol, metrics and plots (fake predictor, no model, fast)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pytest

from napari_interactive_landmarks.evaluation.metrics import failure_rate, mre, noc, radial_errors, sdr
from napari_interactive_landmarks.evaluation.protocol import (
    ImageTrace,
    evaluate_dataset,
    format_report,
    manual_revision,
    run_click_protocol,
)

# Ground truth (row, col) and fixed prediction offsets: radial errors 4, 8, 2, 2 (MRE 4).
GT = np.array([[10.0, 10.0], [20.0, 30.0], [40.0, 15.0], [50.0, 50.0]])
OFFSETS = np.array([[4.0, 0.0], [0.0, -8.0], [2.0, 0.0], [0.0, 2.0]])


@dataclass
class FakePrediction:
    coords: np.ndarray
    scores: np.ndarray
    ere: np.ndarray | None = None
    spread: np.ndarray | None = None

    def uncertainty_map(self, include=None):
        return np.zeros((2, 2), np.float32)


@dataclass
class FakePrepared:
    name: str
    original_shape: tuple = (100, 100)


class FakeSchema:
    def __init__(self, k):
        self.num_landmarks = k

    def index(self, key):
        return int(key)


@dataclass
class FakeSample:
    name: str
    coords: np.ndarray
    spacing: float | None = None
    extra: dict = field(default_factory=dict)

    def load_image(self):
        # the image carries the sample name so the fake predictor can find its ground truth
        return {"name": self.name}


class FakePredictor:
    """Prediction = GT + offsets; clicked landmarks are pinned at the click, every other
    landmark's offset is multiplied by 0.5 ** (number of clicks)."""

    def __init__(self, gts: dict, offsets: dict, ere=None):
        self.gts, self.offsets, self.ere = gts, offsets, ere
        self.num_landmarks = next(iter(gts.values())).shape[0]
        self.prepare_calls = 0
        self.predict_calls = []

        self.schema = FakeSchema(self.num_landmarks)  # what the LandmarkSession needs of a predictor

    def prepare(self, image):
        self.prepare_calls += 1
        return FakePrepared(image["name"])

    def _check_clicks(self, updates, shape):
        return {int(i): (float(r), float(c)) for i, (r, c) in updates.items()}

    def predict(self, prepared, clicks, previous=None):
        clicks = dict(clicks or {})
        self.predict_calls.append((dict(clicks), None if previous is None else previous.copy()))
        prepared = getattr(prepared, "name", prepared)
        coords = self.gts[prepared] + self.offsets[prepared] * 0.5 ** len(clicks)
        for i, (r, c) in clicks.items():
            coords[i] = (r, c)
        ere = None if self.ere is None else np.asarray(self.ere, dtype=float).copy()
        return FakePrediction(coords=coords, scores=np.ones(len(coords)), ere=ere)


def make(n=1, ere=None, offsets=OFFSETS, spacing=None):
    samples = [FakeSample(f"img{i}", GT.copy(), spacing) for i in range(n)]
    pred = FakePredictor({s.name: GT.copy() for s in samples}, {s.name: offsets * (i + 1) for i, s in enumerate(samples)}, ere)
    return pred, samples


# ------------------------------------------------------------------ metrics


def test_radial_errors_and_mm():
    pred = GT + OFFSETS
    np.testing.assert_allclose(radial_errors(pred, GT), [4, 8, 2, 2])
    np.testing.assert_allclose(radial_errors(pred, GT, spacing=0.1), [0.4, 0.8, 0.2, 0.2])
    # anisotropic (row, col) spacing scales each axis
    np.testing.assert_allclose(radial_errors([[3.0, 4.0]], [[0.0, 0.0]], spacing=(2.0, 1.0)), [np.hypot(6, 4)])


def test_mre_ignores_missing_gt():
    gt = GT.copy()
    gt[1] = np.nan
    e = radial_errors(GT + OFFSETS, gt)
    assert np.isnan(e[1])
    assert mre(e) == pytest.approx((4 + 2 + 2) / 3)
    assert np.isnan(mre([np.nan, np.nan]))


def test_sdr():
    e = [0.5, 1.0, 2.5, np.nan, 4.0]
    np.testing.assert_allclose(sdr(e, [1, 2, 4]), [50.0, 50.0, 100.0])  # inclusive, NaN excluded


def test_noc_and_fr_hand_computed():
    m = np.array(
        [
            [5.0, 3.0, 1.0],  # reached at k=2
            [1.0, 0.5, 0.2],  # already at k=0 -> 0 clicks
            [5.0, 4.0, 3.0],  # never -> alpha=2, failure
            [2.0, 9.0, 9.0],  # exactly the target at k=0 (inclusive) -> 0
        ]
    )
    assert noc(m, 2.0, 2) == pytest.approx((2 + 0 + 2 + 0) / 4)
    assert failure_rate(m, 2.0, 2) == pytest.approx(25.0)
    # truncate to alpha = 1: row 0 now fails too
    assert noc(m, 2.0, 1) == pytest.approx((1 + 0 + 1 + 0) / 4)
    assert failure_rate(m, 2.0, 1) == pytest.approx(50.0)
    # alpha = 0: NoC is 0 for everyone, FR = images above target at 0 clicks
    assert noc(m, 2.0, 0) == 0.0
    assert failure_rate(m, 2.0, 0) == pytest.approx(50.0)
    # default alpha = columns - 1; an all-NaN image is dropped
    m2 = np.vstack([m, np.full(3, np.nan)])
    assert noc(m2, 2.0) == pytest.approx(1.0)
    assert failure_rate(m2, 2.0) == pytest.approx(25.0)
    with pytest.raises(ValueError):
        noc(m, 2.0, 3)


# ------------------------------------------------------------------ protocol


def test_worst_order_model_and_manual():
    pred, (s,) = make()
    tr = run_click_protocol(pred, s, max_clicks=5, order="worst")
    assert isinstance(tr, ImageTrace)
    assert pred.prepare_calls == 1
    # step errors: [4,8,2,2] -> click 1 (worst) -> others halved [2,0,1,1] -> click 0 -> [0,0,.5,.5]
    # -> tie between 2 and 3: lowest index -> [0,0,0,.25] -> click 3 -> 0 -> nothing left (carried)
    assert tr.clicked == [1, 0, 2, 3]
    np.testing.assert_allclose(tr.errors[0], [4, 8, 2, 2])
    np.testing.assert_allclose(tr.errors[1], [2, 0, 1, 1])
    np.testing.assert_allclose(tr.mre_model, [4.0, 1.0, 0.25, 1 / 16, 0.0, 0.0])
    # manual: replace worst by GT, no re-run
    assert tr.manual_clicked == [1, 0, 2, 3]
    np.testing.assert_allclose(tr.mre_manual, [4.0, 2.0, 1.0, 0.5, 0.0, 0.0])
    assert not np.allclose(tr.mre_model, tr.mre_manual)
    # the predictor got all clicks at GT and previous = last step's coords
    assert len(pred.predict_calls) == 5  # step 0 + 4 clicks; no re-run once nothing is left
    clicks2, prev2 = pred.predict_calls[2]
    assert set(clicks2) == {1, 0}
    np.testing.assert_allclose(clicks2[0], GT[0])
    np.testing.assert_allclose(prev2, tr.coords[1])
    assert pred.predict_calls[0] == ({}, None)
    assert tr.coords.shape == (6, 4, 2) and tr.ere is None


def test_missing_gt_never_clicked():
    pred, (s,) = make()
    s.coords = GT.copy()
    s.coords[1] = np.nan
    tr = run_click_protocol(pred, s, max_clicks=3)
    assert 1 not in tr.clicked and 1 not in tr.manual_clicked
    assert tr.clicked == [0, 2, 3]
    assert tr.mre_model[0] == pytest.approx(8 / 3)


def test_ere_order_uses_ere_and_requires_it():
    ere = [0.1, 0.2, 5.0, 3.0]  # disagrees with the true errors [4, 8, 2, 2]
    pred, (s,) = make(ere=ere)
    tr = run_click_protocol(pred, s, max_clicks=2, order="ere")
    assert tr.clicked == [2, 3]
    assert tr.manual_clicked == [2, 3]
    assert tr.ere.shape == (3, 4)
    np.testing.assert_allclose(tr.ere[0], ere)

    pred_no, (s_no,) = make()
    with pytest.raises(ValueError, match="ere"):
        run_click_protocol(pred_no, s_no, max_clicks=2, order="ere")
    with pytest.raises(ValueError, match="order"):
        run_click_protocol(pred_no, s_no, order="best")
    with pytest.raises(ValueError, match="ere"):
        manual_revision(GT + OFFSETS, GT, 2, "ere")


def test_random_order_reproducible():
    pred, (s,) = make()
    a = run_click_protocol(pred, s, max_clicks=3, order="random", rng=np.random.default_rng(123))
    b = run_click_protocol(pred, s, max_clicks=3, order="random", rng=np.random.default_rng(123))
    assert a.clicked == b.clicked
    assert len(set(a.clicked)) == 3
    assert a.manual_clicked == a.clicked  # manual replays the model's random sequence
    np.testing.assert_allclose(a.mre_model, b.mre_model)
    pred4, samples = make(n=6)
    r1 = evaluate_dataset(pred4, samples, max_clicks=3, order="random", seed=7, progress=False)
    r2 = evaluate_dataset(pred4, samples, max_clicks=3, order="random", seed=7, progress=False)
    assert [p["clicked"] for p in r1["per_image"]] == [p["clicked"] for p in r2["per_image"]]
    assert len({tuple(p["clicked"]) for p in r1["per_image"]}) > 1  # images draw independently


# ------------------------------------------------------------------ dataset level


def test_evaluate_dataset_px_and_json(tmp_path):
    pred, samples = make(n=2, ere=[1.0, 2.0, 3.0, 4.0])  # offsets x1 and x2
    r = evaluate_dataset(pred, samples, max_clicks=4, targets=(1, 2.5), sdr_radii=(1, 4), progress=False)
    json.dumps(r, allow_nan=False)
    assert r["unit"] == "px" and r["num_images"] == 2 and r["max_clicks"] == 4 and r["order"] == "worst"
    per1 = np.array([4.0, 1.0, 0.25, 1 / 16, 0.0])
    np.testing.assert_allclose(r["per_image"][0]["mre_model"], per1)
    np.testing.assert_allclose(r["per_image"][1]["mre_model"], 2 * per1)
    np.testing.assert_allclose(r["mre_model"], 1.5 * per1)
    np.testing.assert_allclose(r["mre_manual"], 1.5 * np.array([4.0, 2.0, 1.0, 0.5, 0.0]))
    # image 0 curve 4,1,...: <=1 at k=1; image 1 curve 8,2,0.5: <=1 at k=2
    assert r["noc"]["1"] == pytest.approx(1.5)
    assert r["fr"]["1"] == 0.0
    # target 2.5: image 0 at k=1, image 1 at k=1
    assert r["noc"]["2.5"] == pytest.approx(1.0)
    # manual: image 0 4,2,1 -> k=2 ; image 1 8,4,2,1 -> k=3
    assert r["noc_manual"]["1"] == pytest.approx(2.5)
    # SDR at 0 clicks: errors [4,8,2,2] and [8,16,4,4]: <=1 none; <=4: 3 + 2 of 8
    assert r["sdr"]["1"][0] == 0.0
    assert r["sdr"]["4"][0] == pytest.approx(100 * 5 / 8)
    assert r["sdr"]["4"][-1] == 100.0
    assert r["sdr_manual"]["4"][1] == pytest.approx(100 * 7 / 8)  # [4,0,2,2] and [8,0,4,4]
    np.testing.assert_allclose(r["errors_0"], [[4, 8, 2, 2], [8, 16, 4, 4]])
    np.testing.assert_allclose(r["ere_0"], [[1, 2, 3, 4]] * 2)
    text = format_report(r)
    assert "NoC" in text and "SDR" in text and "MRE model" in text

    from napari_interactive_landmarks.evaluation.plots import plot_mre_curves

    out = plot_mre_curves({"fake": r, "fake2": r}, tmp_path / "sub" / "mre.png", title="test")
    assert out.exists() and out.stat().st_size > 1000


def test_region_areas_in_mm2_use_the_square_of_a_scalar_pixel_spacing():
    """A map spread of 4 px² on each axis and a pixel of 0.5 mm: the map's 95 % ellipse is π q² · 4 px² =
    π q² · 1 mm² (q = the χ² radius); a scalar spacing once counted as the pixel's area gave twice that here (and 10×
    for ISBI's 0.1 mm)."""
    from napari_interactive_landmarks.regions import gaussian_radius

    pred, samples = make(n=2, spacing=0.5)
    real = pred.predict

    def with_spread(prepared, clicks, previous=None):
        out = real(prepared, clicks, previous)
        out.spread = np.tile(np.diag([4.0, 4.0]), (len(out.coords), 1, 1))
        return out

    pred.predict = with_spread
    r = evaluate_dataset(pred, samples, max_clicks=1, unit="mm", progress=False)
    want = np.pi * gaussian_radius(0.95) ** 2 * 4.0 * 0.25
    np.testing.assert_allclose(r["regions"]["heatmap_gaussian"]["median_area_per_click"], [want, want])
    assert r["regions"]["area_unit"] == "mm^2"


def test_evaluate_dataset_never_reached_and_mm():
    pred, samples = make(n=1, spacing=0.5)
    r = evaluate_dataset(pred, samples, max_clicks=2, targets=(0.1, 2.0), unit="mm", progress=False)
    np.testing.assert_allclose(r["mre_model"], [2.0, 0.5, 0.125])
    np.testing.assert_allclose(r["errors_0"], [[2, 4, 1, 1]])
    assert r["ere_0"] is None
    assert r["noc"]["0.1"] == 2.0 and r["fr"]["0.1"] == 100.0  # never reached -> alpha, failure
    assert r["noc"]["2"] == 0.0 and r["fr"]["2"] == 0.0  # reached with 0 clicks
    assert "sdr" not in r
    json.dumps(r, allow_nan=False)

    pred, samples = make(n=1)
    with pytest.raises(ValueError, match="spacing"):
        evaluate_dataset(pred, samples, unit="mm", progress=False)


def test_missing_gt_is_json_null():
    pred, samples = make(n=1)
    samples[0].coords = GT.copy()
    samples[0].coords[3] = np.nan
    r = evaluate_dataset(pred, samples, max_clicks=1, progress=False)
    assert r["errors_0"][0][3] is None
    json.dumps(r, allow_nan=False)


def test_click_noise_moves_the_clicked_points_off_the_ground_truth_for_model_and_manual_alike():
    pred, samples = make(n=3)
    exact = evaluate_dataset(pred, samples, max_clicks=2, progress=False)
    noisy = evaluate_dataset(pred, samples, max_clicks=2, progress=False, click_noise_px=3.0)
    assert noisy["click_noise_px"] == 3.0 and exact["click_noise_px"] == 0.0
    assert noisy["mre_model"][0] == exact["mre_model"][0]  # no click yet
    assert noisy["mre_model"][2] != exact["mre_model"][2] and noisy["mre_manual"][2] != exact["mre_manual"][2]


# ------------------------------------------------------------------ does a click help the others? (issue 22)


class _GrowingPredictor(FakePredictor):
    """Like FakePredictor, but each image's offsets are multiplied by its own factor per click (< 1 helps the
    unclicked landmarks, > 1 harms them)."""

    def __init__(self, gts, offsets, factors):
        super().__init__(gts, offsets)
        self.factors = factors

    def predict(self, prepared, clicks, previous=None):
        clicks = dict(clicks or {})
        name = getattr(prepared, "name", prepared)
        coords = self.gts[name] + self.offsets[name] * self.factors[name] ** len(clicks)
        for i, (r, c) in clicks.items():
            coords[i] = (r, c)
        return FakePrediction(coords=coords, scores=np.ones(len(coords)))


def test_others_delta_and_harm_rate_computed_by_hand():
    """The fake predictor halves every unclicked offset per click. Image 0 errors [4, 8, 2, 2]: click 1
    (landmark 1, the worst) leaves [2, 0, 1, 1], so the others (0, 2, 3) change by (-2 - 1 - 1) / 3 = -4/3;
    click 2 (landmark 0): (2, 3) by -1/2; click 3 (landmark 2): (3) by -1/4; click 4 leaves no other landmark.
    Image 1 has twice the offsets: twice the deltas. No click harms."""
    pred, samples = make(n=2)
    r = evaluate_dataset(pred, samples, max_clicks=4, progress=False)
    one = evaluate_dataset(pred, samples[:1], max_clicks=4, progress=False)
    np.testing.assert_allclose(one["others_delta"][:3], [-4 / 3, -1 / 2, -1 / 4])
    assert one["others_delta"][3] is None
    np.testing.assert_allclose(r["others_delta"][:3], [-2.0, -0.75, -0.375])  # mean of x1 and x2
    assert r["others_delta"][3] is None
    assert r["harm_rate"][:3] == [0.0, 0.0, 0.0] and r["harm_rate"][3] is None and r["harm_rate_all"] == 0.0

    # image 1's offsets now grow by half per click: errors [8, 16, 4, 4] -> click on 1: [12, 0, 6, 6], the
    # others +8/3; click on 0: [0, 0, 9, 9], the others +3. Image 0 still halves: harm in 1 of 2 images.
    grow = _GrowingPredictor(pred.gts, pred.offsets, {"img0": 0.5, "img1": 1.5})
    r = evaluate_dataset(grow, samples, max_clicks=2, progress=False)
    np.testing.assert_allclose(r["others_delta"], [(-4 / 3 + 8 / 3) / 2, (-1 / 2 + 3) / 2])
    assert r["harm_rate"] == [50.0, 50.0] and r["harm_rate_all"] == 50.0
    assert "harm" in format_report(r)
