"""Conformal regions (regions.py): coverage on data with a known distribution, the map spread they are shaped by,
their storage in the weights file and the refusals."""

import math

import numpy as np
import pytest

from napari_interactive_landmarks.codecs.uncertainty import spread_covariance
from napari_interactive_landmarks.regions import (RegionCalibration, RegionError, conformal_radius, contains, ellipse_polygon,
                                                  ellipses,
                                                  fit_regions, gaussian_radius, mahalanobis_radius, min_scores,
                                                  region_area)


def _gaussian_errors(rng, n, k, scale_true):
    """n images × k landmarks: a random spread Σ per point (what the model says) and a true error drawn from
    N(0, scale_true² Σ) (what happens: a model over-confident by ``scale_true``)."""
    a = rng.uniform(2, 12, (n, k))
    b = rng.uniform(2, 12, (n, k))
    th = rng.uniform(0, np.pi, (n, k))
    rot = np.stack([np.stack([np.cos(th), -np.sin(th)], -1), np.stack([np.sin(th), np.cos(th)], -1)], -2)
    cov = rot @ (np.eye(2) * np.stack([a, b], -1)[..., None] ** 2) @ np.swapaxes(rot, -1, -2)
    z = rng.standard_normal((n, k, 2))
    err = scale_true * np.einsum("nkij,nkj->nki", np.linalg.cholesky(cov), z)
    return err, cov


def test_fitted_regions_reach_the_nominal_coverage_where_the_maps_are_overconfident():
    rng = np.random.default_rng(0)
    err_cal, cov_cal = _gaussian_errors(rng, 800, 3, scale_true=3.0)
    cal = fit_regions(mahalanobis_radius(err_cal, cov_cal), 0.95)
    assert not cal.pooled and cal.radii.shape == (1, 3)
    err, cov = _gaussian_errors(rng, 20000, 3, scale_true=3.0)
    inside = contains(err, np.zeros(2), cov, cal.for_clicks(0))
    cover = inside.mean(axis=0)
    # conformal: 95 % in expectation over calibration sets; given one set of n = 800 the coverage varies with
    # sd sqrt(0.95 · 0.05 / 800) ≈ 0.8 % (and the 20 000 test points add 0.15 %): within ± 2.5 sd
    assert np.all(cover > 0.93) and np.all(cover < 0.97), cover
    # the exact answer for Gaussian errors: radius 3 · sqrt(χ²₂(0.95))
    np.testing.assert_allclose(cal.for_clicks(0), 3.0 * gaussian_radius(0.95), rtol=0.08)
    # the map's own 95 % ellipse, read as a Gaussian, covers far less (over-confident by 3×)
    gauss = contains(err, np.zeros(2), cov, gaussian_radius(0.95)).mean()
    assert gauss < 0.5


def test_pooled_radius_when_a_landmark_has_too_few_scores_and_one_line_when_the_pool_is_too_small():
    s = np.full((30, 2), np.nan)
    s[:30, 0] = np.arange(30.0)
    s[:5, 1] = 1.0  # 5 < 19 scores for landmark 1
    auto = fit_regions(s, 0.95)  # landmark 0 its own radius, landmark 1 the one pooled over both
    assert not auto.pooled
    assert auto.radii[0, 0] == conformal_radius(s[:, 0], 0.95) and auto.radii[0, 1] == conformal_radius(s.ravel(), 0.95)
    assert fit_regions(s, 0.95, pooled=True).pooled
    with pytest.raises(RegionError, match="landmark 1 has 5 calibration scores"):
        fit_regions(s, 0.95, pooled=False)
    with pytest.raises(RegionError, match="too few for a 95 % region"):
        fit_regions(np.ones((10, 1)), 0.95)
    assert min_scores(0.95) == 19 and min_scores(0.9) == 9


def test_conformal_rank_is_the_finite_sample_quantile():
    s = np.arange(1.0, 20.0)[:, None]  # 19 scores: rank ceil(20 · 0.95) = 19, the largest
    assert fit_regions(s, 0.95).for_clicks(0)[0] == 19.0
    s = np.arange(1.0, 40.0)[:, None]  # 39 scores: rank ceil(40 · 0.95) = 38
    assert fit_regions(s, 0.95).for_clicks(0)[0] == 38.0


def test_one_set_of_radii_per_click_count_so_the_regions_hold_before_and_after_clicks():
    """The maps are over-confident by 4× before any click and by 1.5× after: a radius pooled over click counts
    covers too little at 0 clicks and too much after; one per click count holds at each."""
    rng = np.random.default_rng(1)
    n, k = 600, 2
    cal_err = [_gaussian_errors(rng, n, k, s) for s in (4.0, 1.5, 1.5)]  # 0, 1, 2 clicks
    scores = np.stack([mahalanobis_radius(e, c) for e, c in cal_err], axis=1)  # (N, C, K)
    cal = fit_regions(scores, 0.95, clicks=[0, 1, 2])
    assert cal.radii.shape == (3, k) and cal.for_clicks(7).tolist() == cal.radii[2].tolist()
    pooled = fit_regions(scores.reshape(-1, k), 0.95)
    for c, s in enumerate((4.0, 1.5, 1.5)):
        err, cov = _gaussian_errors(rng, 20000, k, s)
        assert 0.93 < contains(err, np.zeros(2), cov, cal.for_clicks(c)).mean() < 0.97
        got_pooled = contains(err, np.zeros(2), cov, pooled.for_clicks(0)).mean()
        assert (got_pooled < 0.90) if c == 0 else (got_pooled > 0.98)


def test_spread_covariance_recovers_a_gaussian_maps_covariance_in_original_pixels():
    h, w = 96, 80
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    cy, cx = 40.0, 35.0
    cov_grid = np.array([[16.0, 6.0], [6.0, 9.0]])
    inv = np.linalg.inv(cov_grid)
    d = np.stack([yy - cy, xx - cx], -1)
    p = np.exp(-0.5 * np.einsum("hwi,ij,hwj->hw", d, inv, d))
    p /= p.sum()
    scale = (4.0, 2.0)  # original pixels per grid pixel along rows / columns
    got = spread_covariance(p[None], np.array([[cy, cx]]), scale=scale, threshold=0.0)[0]
    s = np.diag(scale)
    want = s @ cov_grid @ s + np.diag(np.square(scale)) / 12.0
    np.testing.assert_allclose(got, want, rtol=0.02)
    # about a shifted point the second moment grows by the shift's outer product
    off = spread_covariance(p[None], np.array([[cy + 3, cx]]), scale=scale, threshold=0.0)[0]
    assert off[0, 0] == pytest.approx(want[0, 0] + (3 * 4.0) ** 2, rel=0.02)
    # no usable mass → NaN, never a number
    assert np.isnan(spread_covariance(np.zeros((1, 8, 8)), np.zeros((1, 2)))).all()


def test_ellipse_axes_angle_area_and_outline_agree():
    cov = np.array([[25.0, 0.0], [0.0, 4.0]])  # long along rows (vertical on screen)
    axes, angle = ellipses(cov[None], 2.0)
    np.testing.assert_allclose(axes[0], [10.0, 4.0])
    assert abs(abs(angle[0]) - 90.0) < 1e-6
    assert region_area(cov, 2.0) == pytest.approx(math.pi * 10.0 * 4.0)
    poly = ellipse_polygon((100.0, 50.0), cov, 2.0, n=32)
    np.testing.assert_allclose(mahalanobis_radius(poly - (100.0, 50.0), np.broadcast_to(cov, (32, 2, 2))), 2.0,
                               rtol=1e-9)


def test_region_calibration_round_trips_and_refuses_malformed_cards():
    cal = RegionCalibration(0.95, np.array([[2.5, 3.0], [1.5, 2.0]]), False, [40, 40], [0, 1], "x")
    back = RegionCalibration.from_card(cal.to_card(), 2)
    np.testing.assert_allclose(back.radii, cal.radii)
    assert back.for_clicks(0).tolist() == [2.5, 3.0] and back.for_clicks(3).tolist() == [1.5, 2.0]
    # a card written with one row of radii (K,) serves every click count
    assert RegionCalibration.from_card({**cal.to_card(), "radii": [2.5, 3.0]}, 2).for_clicks(4).tolist() == [2.5, 3.0]
    assert back.level == 0.95 and back.clicks == [0, 1]
    with pytest.raises(RegionError, match="for 3 landmarks"):
        RegionCalibration.from_card(cal.to_card(), 3)
    with pytest.raises(RegionError, match="positive and finite"):
        RegionCalibration.from_card({**cal.to_card(), "radii": [[1.0, float("nan")]]}, 2)


def test_calibrate_stores_regions_in_the_weights_file_and_the_predictor_draws_them(tmp_path, capsys):
    """calibrate --weights on generated films: the radii land in the file's card (under its sha256 like the rest),
    the predictor loads them, a prediction carries a region for every unclicked point and none for a clicked one;
    too few films for the level is one line and nothing is written."""
    import shutil

    from napari_interactive_landmarks.cli import main
    from napari_interactive_landmarks.inference.predictor import Predictor
    from napari_interactive_landmarks.weights import load_weights, resolve_weights

    w = tmp_path / "phantom.safetensors"
    shutil.copy(resolve_weights("phantom-spine"), w)
    before = w.read_bytes()
    assert main(["calibrate", "--weights", str(w), "--dataset", "phantom", "--split", "calib", "--limit", "1",
                 "--region-clicks", "0", "--level", "0.999", "--pooled", "no", "--no-progress",
                 "--device", "cpu"]) == 2
    assert "no regions fitted: landmark 0 has 1 calibration scores, too few for a 99.9 % region" in \
        capsys.readouterr().err
    assert w.read_bytes() == before  # refused: nothing written
    assert main(["calibrate", "--weights", str(w), "--dataset", "phantom", "--split", "calib", "--limit", "3",
                 "--region-clicks", "1", "--no-progress", "--device", "cpu"]) == 0
    meta = load_weights(w)[1]
    assert '"level": 0.95' in meta["regions"]
    p = Predictor.from_file(w, device="cpu")
    assert p.regions is not None and p.regions.level == 0.95
    from napari_interactive_landmarks.data.phantom import make_phantom

    img, gt = make_phantom(np.random.default_rng(5), shape=(512, 256), num_vertebrae=6)
    pred = p.predict(img, clicks={0: tuple(gt[0])})
    axes, angle, area = pred.regions()
    assert np.isnan(area[0]) and np.isfinite(area[1:]).all() and (area[1:] > 0).all()
    assert (axes[1:, 0] >= axes[1:, 1]).all()
    # a weights file without regions still predicts, and says it has none
    plain = Predictor.from_name("phantom-spine", device="cpu")
    assert plain.regions is None and plain.predict(img).regions() is None


def test_calibrate_keep_temperatures_fits_regions_with_the_stored_temperatures(tmp_path, capsys):
    """calibrate --keep-temperatures: the temperatures in the card stay bit for bit (and their provenance), the
    regions are fitted with them on the given split, and the card says where the regions came from; a model
    without temperatures is refused in one line and nothing is written."""
    import json
    import shutil

    from napari_interactive_landmarks.cli import main
    from napari_interactive_landmarks.weights import load_weights, resolve_weights

    w = tmp_path / "phantom.safetensors"
    shutil.copy(resolve_weights("phantom-spine"), w)
    before = w.read_bytes()
    common = ["--weights", str(w), "--dataset", "phantom", "--split", "calib", "--no-progress", "--device", "cpu",
              "--region-clicks", "1", "--no-measurement-scales"]
    if "temperatures" not in load_weights(w)[1]:
        assert main(["calibrate", *common, "--limit", "3", "--keep-temperatures"]) == 2
        assert "has no temperatures to keep" in capsys.readouterr().err
        assert w.read_bytes() == before
        assert main(["calibrate", *common, "--limit", "3", "--no-regions"]) == 0  # temperatures first
    meta = load_weights(w)[1]
    temps = meta["temperatures"]
    assert main(["calibrate", *common, "--limit", "4", "--keep-temperatures"]) == 0
    after = load_weights(w)[1]
    assert after["temperatures"] == temps
    cal = json.loads(after["calibration"])
    assert cal["regions_and_doubt_scales"]["num_images"] == 4
    assert {k: v for k, v in cal.items() if k != "regions_and_doubt_scales"} == json.loads(meta.get("calibration", "{}"))
    assert json.loads(after["regions"])["level"] == 0.95


@pytest.mark.parametrize("deg", [30.0, -60.0])
def test_a_tilted_region_states_its_angle_counter_clockwise_from_the_column_axis_and_exports_it(deg, tmp_path):
    """Issue 35: every check of a region's angle used axis-aligned ellipses, so a flipped sign went unnoticed. A
    region whose major axis points up-right on screen (rows decreasing, columns increasing) at 30° from the column
    axis states +30°; down-right states −60°; and the JSON export writes that angle, read back equal (checked here
    against the angle built into the covariance, not against the session's own value)."""
    from napari_interactive_landmarks.io.landmarks import format_landmarks_json, read_landmarks_json

    t = math.radians(deg)
    major = np.array([-math.sin(t), math.cos(t)])  # (row, col): counter-clockwise on screen = towards smaller rows
    minor = np.array([math.cos(t), math.sin(t)])
    cov = 36.0 * np.outer(major, major) + 4.0 * np.outer(minor, minor)
    axes, angle = ellipses(cov[None], 2.0)
    np.testing.assert_allclose(axes[0], [12.0, 4.0])
    assert angle[0] == pytest.approx(deg)
    # the outline's farthest vertex lies along the stated angle
    poly = ellipse_polygon((0.0, 0.0), cov, 2.0, n=360)
    far = poly[np.argmax(np.hypot(*poly.T))]
    assert abs(abs(math.degrees(math.atan2(-far[0], far[1]))) - abs(deg)) < 1.5 or \
        abs(math.degrees(math.atan2(-far[0], far[1])) - deg) % 180 < 1.5
    regions = {"level": 0.95, "centre": np.array([[50.0, 60.0]]), "semi_axes_px": axes,
               "angle_deg": angle, "area_px2": np.array([region_area(cov, 2.0)])}
    text = format_landmarks_json(np.array([[50.0, 60.0]]), ["p"], pinned=np.zeros(1, bool), scores=np.ones(1),
                                 ere=np.ones(1), regions=regions)
    path = tmp_path / "r.landmarks.json"
    path.write_text(text)
    back = read_landmarks_json(path)
    assert back.regions["angle_deg"][0] == pytest.approx(deg, abs=1e-3)
