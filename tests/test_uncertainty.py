import math
import warnings

import numpy as np
import pytest
import torch

from napari_interactive_landmarks.codecs.uncertainty import (
    expected_radial_error,
    grid_scale,
    hottest_points,
    max_confidence,
    softmax_maps,
)
from napari_interactive_landmarks.evaluation.calibration_stats import (
    auroc,
    binned_correlation,
    calibration_bins,
    correct_within,
    expected_calibration_error,
    fit_temperatures,
    good_erroneous_table,
    spearman,
    target_nll,
    threshold_at_tpr,
)


# ---------------------------------------------------------------- softmax maps


def test_softmax_maps_sum_to_one_and_temperature_and_types():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 8, 6))
    p = softmax_maps(logits)
    assert isinstance(p, np.ndarray) and p.shape == logits.shape
    np.testing.assert_allclose(p.sum(axis=(-2, -1)), 1.0, atol=1e-12)
    t = np.array([0.5, 1.0, 2.0])
    pt = softmax_maps(torch.from_numpy(logits).float(), t)
    assert torch.is_tensor(pt)
    ref = softmax_maps(logits / t[:, None, None])
    np.testing.assert_allclose(pt.numpy(), ref, atol=1e-6)
    # scalar temperature; all-equal logits -> uniform
    u = softmax_maps(np.full((1, 4, 5), 3.0), 2.0)
    np.testing.assert_allclose(u, 1 / 20)
    with pytest.raises(ValueError):
        softmax_maps(logits, [1.0, -1.0, 1.0])


def test_softmax_maps_non_finite_policy():
    x = np.zeros((4, 3, 3))
    x[0, 1, 1] = np.nan  # NaN -> channel NaN
    x[1, :, :] = -np.inf  # all -inf -> channel NaN
    x[2, 0, 0] = np.inf  # +inf -> mass shared by the +inf pixels
    x[2, 2, 2] = np.inf
    x[3, 0, :] = -np.inf  # masked pixels -> 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = softmax_maps(x)
    assert np.isnan(p[0]).all() and np.isnan(p[1]).all()
    assert p[2, 0, 0] == 0.5 and p[2, 2, 2] == 0.5 and p[2].sum() == 1.0
    np.testing.assert_allclose(p[3, 0], 0.0)
    np.testing.assert_allclose(p[3, 1:], 1 / 6)
    ere = expected_radial_error(p, np.ones((4, 2)))
    assert np.isnan(ere[0]) and np.isnan(ere[1]) and np.isfinite(ere[2:]).all()


# ---------------------------------------------------------------- ERE


def test_ere_two_deltas_exact():
    prob = np.zeros((1, 20, 20))
    prob[0, 5, 5] = 0.6  # prediction (hottest)
    prob[0, 5, 9] = 0.3  # 4 px to the right
    prob[0, 8, 5] = 0.1  # 3 px down
    pred = hottest_points(prob)
    np.testing.assert_array_equal(pred, [[5, 5]])
    ere = expected_radial_error(prob, pred)
    np.testing.assert_allclose(ere, [0.3 * 4 + 0.1 * 3], rtol=1e-12)
    # anisotropic scale: rows x2, cols x3 -> distances 12 (col) and 6 (row)
    ere_s = expected_radial_error(torch.from_numpy(prob).float(), pred, scale=(2.0, 3.0))
    np.testing.assert_allclose(ere_s, [0.3 * 12 + 0.1 * 6], rtol=1e-6)
    # unnormalised maps give the same answer (only relative values matter)
    np.testing.assert_allclose(expected_radial_error(prob * 7, pred), ere)
    # a sub-pixel prediction outside the grid is fine
    far = expected_radial_error(prob, np.array([[-10.0, 5.0]]))
    np.testing.assert_allclose(far, [0.6 * 15 + 0.3 * math.hypot(15, 4) + 0.1 * 18])


def test_ere_threshold_removes_small_mass():
    prob = np.zeros((1, 10, 10))
    prob[0, 2, 2] = 0.9
    prob[0, 2, 6] = 0.04  # 0.04 / 0.9 = 4.4 % <= 5 %: removed
    prob[0, 7, 2] = 0.06  # 6.7 %: kept, 5 px away
    ere = expected_radial_error(prob, np.array([[2.0, 2.0]]))
    np.testing.assert_allclose(ere, [0.06 / 0.96 * 5], rtol=1e-12)
    ere0 = expected_radial_error(prob, np.array([[2.0, 2.0]]), threshold=0.0)
    np.testing.assert_allclose(ere0, [0.04 * 4 + 0.06 * 5], rtol=1e-12)
    # exactly at the threshold is removed (<= 5 %)
    prob[0, 7, 2] = 0.045
    np.testing.assert_allclose(expected_radial_error(prob, np.array([[2.0, 2.0]])), [0.0])


def test_ere_bad_maps_are_nan_without_warnings():
    prob = np.zeros((4, 6, 6))
    prob[1, 0, 0] = np.nan
    prob[1, 3, 3] = 1.0
    prob[2, 3, 3] = 1.0
    prob[3] = -1.0  # no positive value
    pred = np.array([[0.0, 0.0], [3.0, 3.0], [np.nan, 3.0], [0.0, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ere = expected_radial_error(prob, pred)
        assert np.isnan(hottest_points(prob)[[0, 1, 3]]).all()
        assert np.isnan(max_confidence(prob)[1])
    assert np.isnan(ere).all()


def test_grid_scale_matches_to_original():
    from napari_interactive_landmarks.codecs.geometry import to_original

    sy, sx = grid_scale((2400, 1935), (200, 160))
    a, b = to_original(np.array([[10.0, 20.0], [13.0, 24.0]]), (2400, 1935), (200, 160))
    np.testing.assert_allclose(b - a, [3 * sy, 4 * sx])


# ---------------------------------------------------------------- temperature fit


def _sample_targets(logits, t_true, rng):
    p = softmax_maps(logits, t_true)
    n, k, h, w = p.shape
    flat = p.reshape(n, k, h * w)
    cum = flat.cumsum(-1)
    u = rng.random((n, k, 1))
    idx = np.minimum((cum < u).sum(-1), h * w - 1)
    return np.stack([idx // w, idx % w], -1).astype(np.float64)


def test_fit_temperatures_recovers_known_temperature():
    rng = np.random.default_rng(1)
    n, k, h, w = 600, 3, 12, 12
    logits = rng.normal(size=(n, k, h, w)) * 2.0
    t_true = np.array([0.5, 1.0, 2.0])
    targets = _sample_targets(logits, t_true, rng)
    targets[:5, 0] = np.nan  # ignored
    targets[5:10, 1] = [40.0, 3.0]  # outside the grid: ignored
    lt = torch.from_numpy(logits).float()
    t = fit_temperatures(lt, targets, chunk=64)
    assert t.shape == (3,)
    np.testing.assert_allclose(t, t_true, rtol=0.1)
    tn = fit_temperatures(lt, targets, subpixel="nearest", chunk=1000)
    np.testing.assert_allclose(tn, t, rtol=1e-4)  # integer targets: identical objective
    shared = fit_temperatures(lt[:, 1:2], targets[:, 1:2], per_landmark=False)
    np.testing.assert_allclose(shared, [1.0], rtol=0.1)



def test_target_nll_is_the_objective_the_fitted_temperatures_minimise():
    rng = np.random.default_rng(2)
    logits = torch.from_numpy(rng.normal(size=(200, 2, 9, 9)) * 2.0).float()
    targets = _sample_targets(logits.numpy(), np.array([0.7, 1.5]), rng)
    targets[:3, 0] = np.nan  # ignored, as by the fit
    t = fit_temperatures(logits, targets)
    best = target_nll(logits, targets, t)
    for factor in (0.8, 1.25):
        assert best < target_nll(logits, targets, t * factor)
    assert best < target_nll(logits, targets)  # T = 1
    # an integer target: −log of the softmax at that pixel
    one = torch.zeros(1, 1, 3, 3)
    one[0, 0, 1, 2] = 2.0
    want = -float(torch.log_softmax(one.flatten() / 2.0, 0)[5])
    assert target_nll(one, np.array([[[1.0, 2.0]]]), [2.0]) == pytest.approx(want, rel=1e-9)

def test_fit_temperatures_without_usable_targets_is_identity():
    logits = torch.zeros(4, 2, 5, 5)
    logits[:, 1] = float("nan")
    targets = np.full((4, 2, 2), 2.0)
    targets[:, 0] = np.nan
    np.testing.assert_array_equal(fit_temperatures(logits, targets), [1.0, 1.0])


# ---------------------------------------------------------------- calibration


def test_ece_perfect_and_miscalibrated():
    conf = np.r_[np.full(4, 0.25), np.full(4, 0.75)]
    corr = np.array([1, 0, 0, 0, 1, 1, 1, 0], bool)
    assert expected_calibration_error(conf, corr) == pytest.approx(0.0, abs=1e-12)
    # over-confident: confidence 0.85, accuracy 0.6
    assert expected_calibration_error(np.full(10, 0.85), np.arange(10) < 6) == pytest.approx(0.25)
    # two bins, equal weight: |0.2 - 0.35| and |1.0 - 0.95|
    conf = np.r_[np.full(10, 0.35), np.full(10, 0.95), np.nan]
    corr = np.r_[np.arange(10) < 2, np.ones(10, bool), True]
    bins = calibration_bins(conf, corr)
    assert bins["ece"] == pytest.approx(0.5 * 0.15 + 0.5 * 0.05)
    assert bins["n"] == 20 and bins["counts"][3] == 10 and bins["counts"][9] == 10
    assert np.isnan(bins["accuracy"][0])
    # the paper's binning over [0, max confidence]
    b = calibration_bins([0.05, 0.2], [True, False], n_bins=2, upper="max")
    assert b["upper"] == 0.2 and list(b["counts"]) == [1, 1]
    assert math.isnan(expected_calibration_error([], []))


def test_correct_within():
    pred = np.array([[5.0, 5.0], [5.0, 5.0], [5.0, 5.0], [np.nan, 0.0]])
    tgt = np.array([[5.4, 4.6], [5.6, 5.0], [5.7, 5.7], [0.0, 0.0]])
    np.testing.assert_array_equal(correct_within(pred, tgt), [True, False, False, False])
    np.testing.assert_array_equal(correct_within(pred, tgt, radius=1.0, norm="euclidean"),
                                  [True, True, True, False])


def test_calibrated_maps_have_low_ece_and_tempered_ones_do_not():
    rng = np.random.default_rng(2)
    n, k, h, w = 400, 2, 8, 8
    logits = rng.normal(size=(n, k, h, w)) * 2.5
    targets = _sample_targets(logits, 1.0, rng)
    def ece(t):
        p = softmax_maps(logits, t)
        return expected_calibration_error(max_confidence(p), correct_within(hottest_points(p), targets))
    assert ece(1.0) < 0.05
    assert ece(3.0) > 0.1  # under-confident after a wrong temperature


# ---------------------------------------------------------------- ERE as an error predictor


def test_auroc_cases():
    y = np.array([False, False, True, True])
    assert auroc([1, 2, 3, 4], y) == 1.0
    assert auroc([4, 3, 2, 1], y) == 0.0
    assert auroc([1, 1, 1, 1], y) == 0.5
    assert auroc([1, 3, 2, 4], y) == 0.75
    assert math.isnan(auroc([1, 2], [True, True]))
    assert auroc([1, 2, np.nan], [False, True, False]) == 1.0
    assert auroc([1, 2, np.nan], [False, False, True], nan_policy="max") == 1.0


def test_spearman_and_binned_correlation():
    x = np.arange(100.0)
    assert spearman(x, x**3) == pytest.approx(1.0)
    assert spearman(np.r_[x, np.nan], np.r_[-x, 1.0]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1.0, 1.0], [1.0, 2.0]))
    rng = np.random.default_rng(3)
    ere = rng.permutation(np.arange(360.0))
    r, be, br = binned_correlation(ere, 2.0 * ere + 1.0, group_size=36)
    assert r == pytest.approx(1.0) and be.size == 10
    np.testing.assert_allclose(be, np.arange(10) * 36 + 17.5)
    np.testing.assert_allclose(br, 2 * be + 1)
    r2, be2, _ = binned_correlation(np.arange(40.0), np.arange(40.0), group_size=36, keep_partial=False)
    assert be2.size == 1 and math.isnan(r2)


def test_threshold_and_good_erroneous_table():
    ere = np.array([0.5, 0.6, 0.7, 1.0, 1.2, 1.5, 2.0, 3.0])
    err = np.array([0.5, 1.0, 3.0, 0.8, 2.5, 1.0, 4.0, 5.0])
    thr = threshold_at_tpr(ere, err, error_threshold=2.0, tpr=0.5)  # large: ERE 0.7, 1.2, 2.0, 3.0
    assert thr == pytest.approx((2.0 + 1.5) / 2)
    tab = good_erroneous_table(np.r_[ere, np.nan], np.r_[err, 2.1], thr, error_threshold=2.0, radii=(2.0,))
    assert tab["overall"]["n"] == 9
    assert tab["erroneous"]["n"] == 3  # ERE 2.0, 3.0 and the NaN ERE
    assert tab["erroneous"]["mre"] == pytest.approx((4.0 + 5.0 + 2.1) / 3)
    assert tab["good"]["mre"] == pytest.approx(np.mean(err[:6]))
    assert tab["caught"] == pytest.approx(3 / 5) and tab["false_alarm"] == 0.0 and tab["precision"] == 1.0
    assert tab["good"]["sdr"][2.0] == pytest.approx(100 * 4 / 6)


# ---------------------------------------------------------------- plots


def test_calibration_plots_write_pngs(tmp_path):
    from napari_interactive_landmarks.evaluation.calibration_plots import plot_ere_vs_error, plot_reliability

    rng = np.random.default_rng(4)
    conf = rng.random(200)
    b0 = calibration_bins(conf, rng.random(200) < conf * 0.7)
    b1 = calibration_bins(conf, rng.random(200) < conf)
    p = plot_reliability(b0, b1, tmp_path / "rel.png", title="test")
    assert p.stat().st_size > 1000
    r, be, br = binned_correlation(conf, conf + rng.normal(0, 0.05, 200), group_size=20)
    q = plot_ere_vs_error(be, br, r, tmp_path / "sub" / "ere.png", title="ERE", unit="mm")
    assert q.stat().st_size > 1000


def test_ere_float32_tensor_path_matches_float64_reference():
    """The predictor computes ERE from float32 tensors; it must agree with the float64 numpy reference."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 40, 30, generator=g) * 3
    prob = softmax_maps(logits)
    pred = np.random.default_rng(0).uniform(0, 29, size=(5, 2))
    ref = expected_radial_error(prob.double().numpy(), pred, scale=(2.0, 3.0))
    fast = expected_radial_error(prob.float(), pred, scale=(2.0, 3.0))
    np.testing.assert_allclose(fast, ref, rtol=1e-4)
    bad = prob.clone()
    bad[1, 3, 3] = math.nan
    bad[2] = 0.0
    out = expected_radial_error(bad, pred)
    assert np.isnan(out[1]) and np.isnan(out[2]) and np.isfinite(out[[0, 3, 4]]).all()


def _ere_by_definition(prob, pred, scale, threshold=0.05):
    """The paper's Eq. 4 transcribed pixel by pixel (float64): normalise by the maximum, cut at 5 %, renormalise."""
    out = np.full(prob.shape[:-2], np.nan)
    for idx in np.ndindex(*prob.shape[:-2]):
        p = np.clip(prob[idx], 0, None)
        if not np.isfinite(prob[idx]).all() or p.max() <= 0:
            continue
        q = np.where(p / p.max() > threshold, p, 0.0)
        q = q / q.sum()
        yy, xx = np.mgrid[: p.shape[0], : p.shape[1]]
        out[idx] = (q * np.hypot((yy - pred[idx][0]) * scale[0], (xx - pred[idx][1]) * scale[1])).sum()
    return out


@pytest.mark.parametrize("width", [1.5, 40.0])  # peaked maps (kept pixels indexed) and broad ones (dense sum)
def test_ere_of_peaked_and_broad_maps_follows_the_definition(width):
    g = np.random.default_rng(1)
    yy, xx = np.mgrid[:48, :40]
    centres = g.uniform(5, 35, size=(2, 3, 2))
    logits = -((yy - centres[..., 0, None, None]) ** 2 + (xx - centres[..., 1, None, None]) ** 2) / (2 * width**2)
    prob = softmax_maps(torch.from_numpy(logits + g.normal(0, 0.2, logits.shape)).float())
    prob[1, 2] = prob[1, 2].clone().fill_(0.0)  # a map without mass: NaN, the others unaffected
    pred = centres + g.normal(0, 1.0, centres.shape)
    want = _ere_by_definition(prob.double().numpy(), pred, (2.0, 3.0))
    got = expected_radial_error(prob, pred, scale=(2.0, 3.0))
    assert got.shape == (2, 3) and np.isnan(got[1, 2]) and np.isfinite(np.delete(got.ravel(), 5)).all()
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_softmax_of_finite_logits_whose_sum_overflows_is_still_a_distribution():
    x = torch.zeros(2, 4, 4)
    x[0, 1, 1] = x[0, 2, 2] = 3e38  # finite, but their float32 sum is inf: the element-wise path decides
    p = softmax_maps(x)
    assert torch.isfinite(p).all() and p[0, 1, 1] == 0.5 and p[0, 2, 2] == 0.5
    torch.testing.assert_close(p.sum(dim=(-2, -1)), torch.ones(2))


def test_softmax_nll_loss_known_answers():
    """Cross-entropy against the normalised Gaussian target: equals the target's entropy when the logits
    are its log (the minimum), is larger for any other map, and ignores landmarks without a target."""
    from napari_interactive_landmarks.codecs.heatmaps import gaussian_heatmaps
    from napari_interactive_landmarks.losses import heatmap_softmax_nll

    coords = torch.tensor([[[10.3, 7.6], [math.nan, math.nan], [-500.0, -500.0]]])
    t = gaussian_heatmaps(coords[:, :1], (24, 20), 1.5)[0, 0]
    t = t / t.sum()
    entropy = float(-(t * torch.log(t.clamp_min(1e-30))).sum())
    logits = torch.zeros(1, 3, 24, 20)
    logits[0, 0] = torch.log(t.clamp_min(1e-30)) + 4.0  # a constant shift does not change the softmax
    loss = heatmap_softmax_nll(logits, coords, 1.5)
    assert float(loss) == pytest.approx(entropy, rel=1e-4)
    worse = logits.clone()
    worse[0, 0] = worse[0, 0].roll(2, dims=0)
    assert float(heatmap_softmax_nll(worse, coords, 1.5)) > entropy + 0.5
    uniform = heatmap_softmax_nll(torch.zeros(1, 3, 24, 20, requires_grad=True), coords, 1.5)
    assert float(uniform.detach()) == pytest.approx(math.log(24 * 20), rel=1e-5)
    nothing = heatmap_softmax_nll(torch.zeros(1, 2, 24, 20, requires_grad=True), coords[:, 1:], 1.5)
    assert float(nothing) == 0.0
    nothing.backward()  # still a graph: a batch without targets does not break training


def test_softmax_decoding_recovers_a_subpixel_peak():
    """Softmax-trained logits decode through the local softmax of the logits themselves: a log-Gaussian
    map at a sub-pixel position comes back at that position (full-resolution network pixels)."""
    from napari_interactive_landmarks.codecs.heatmaps import decode_strided_logits

    h4, w4, size = 32, 24, (128, 96)
    true = np.array([[53.3, 40.8], [10.0, 80.2]])  # network pixels
    grid = (true + 0.5) / 4 - 0.5
    ys, xs = np.arange(h4)[:, None], np.arange(w4)[None, :]
    logits = np.stack([-((ys - r) ** 2 + (xs - c) ** 2) / (2 * 1.2**2) for r, c in grid])[None]
    coords, peak = decode_strided_logits(torch.tensor(logits, dtype=torch.float32), size, heatmap="softmax")
    np.testing.assert_allclose(coords[0].numpy(), true, atol=0.6)
    sig, _ = decode_strided_logits(torch.tensor(logits, dtype=torch.float32), size)  # the BCE reading
    assert np.abs(sig[0].numpy() - true).max() < 2.5  # usable but not the decoding this model was trained for
    with pytest.raises(ValueError, match="heatmap"):
        decode_strided_logits(torch.tensor(logits, dtype=torch.float32), size, heatmap="relu")


def test_evaluation_with_known_temperatures_keeps_no_logits_and_gives_the_same_metrics():
    """`evaluate` streams: with the temperatures known it keeps each image's statistics, not its logits (a
    stride-1 model's are ~39 MB an image), and the calibration metrics are the same as from the logits."""
    from napari_interactive_landmarks.data.datasets import load_phantom
    from napari_interactive_landmarks.evaluation import calibration as cal
    from napari_interactive_landmarks.inference import Predictor

    predictor = Predictor.from_name("phantom-spine", device="cpu")
    samples = load_phantom("eval", n=4)
    temps = predictor.temperatures
    kept = cal.collect(predictor, samples, progress=False)
    streamed = cal.collect(predictor, samples, progress=False, temperatures=temps)
    assert "logits" in kept and "logits" not in streamed
    a, b = cal.metrics(kept, temps, 20.0), cal.metrics(streamed, temps, 20.0)
    for key in ("ece_before", "ece_after", "ere_spearman", "mean_ere", "mre"):
        assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12), key
    with pytest.raises(ValueError, match="other temperatures"):
        cal.metrics(streamed, temps * 2, 20.0)
    with pytest.raises(ValueError, match="needs the logits"):
        cal.fit(streamed)


def test_calibration_collect_and_fit_recover_the_temperature_the_data_was_drawn_with():
    """Issue 22: the calibrate command's own path (calibration.collect → calibration.fit), not only the fitting
    routine: a fake model's logits on 300 films of 96 x 64 (grid 12 x 8) whose true landmarks were drawn from
    softmax(logits / T) with T = (0.6, 1.0, 2.5); the fitted temperatures must come back within 15 %."""
    from types import SimpleNamespace

    from napari_interactive_landmarks.codecs.codec import LandmarkCodec
    from napari_interactive_landmarks.codecs.geometry import to_original
    from napari_interactive_landmarks.evaluation import calibration as cal

    rng = np.random.default_rng(4)
    n, k, shape, codec = 300, 3, (96, 64), LandmarkCodec((48, 32), 2.0, "softmax")
    logits = rng.normal(size=(n, k) + codec.grid) * 2.0
    t_true = np.array([0.6, 1.0, 2.5])
    truth = to_original(_sample_targets(logits, t_true, rng), shape, codec.grid)  # grid pixels -> the film's

    class Fake:
        compute_ere = True

        def __init__(self):
            self.codec, self.i = codec, -1

        def predict(self, img):
            self.i = int(img[0, 0])
            return SimpleNamespace(logits=torch.from_numpy(logits[self.i]).float(), coords=truth[self.i] + 1.0)

    samples = [SimpleNamespace(name=str(i), coords=truth[i], spacing=None,
                               load_image=lambda i=i: np.full(shape, float(i))) for i in range(n)]
    data = cal.collect(Fake(), samples, progress=False)
    t = cal.fit(data)
    assert t.shape == (k,)
    np.testing.assert_allclose(t, t_true, rtol=0.15)
