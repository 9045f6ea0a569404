"""Doubt scales (issue 20 item 7, measurements/doubt.py): the fitted scale makes a measurement's ± hold the true value
at the stated level on data with a known error distribution; the scales travel in the weights file and reach the
session's measurements; a model without them behaves as before; too few samples is one line."""

import numpy as np
import pytest

from napari_interactive_landmarks.measurements import compute_measurements
from napari_interactive_landmarks.measurements.doubt import (DoubtScaleError, DoubtScales, coverage_table,
                                                             fit_doubt_scales, measurement_records)
from tests.test_measurements import cephalo

SPACING = 0.1  # mm per pixel, as on an ISBI film


def _images(rng, n, ere_px, overconfidence):
    """n cephalograms: the true landmarks (the reference layout jittered), and the model's landmarks, off by an
    isotropic Gaussian whose mean radial error is ``overconfidence`` × the ERE the model states."""
    base = cephalo()
    sigma = overconfidence * ere_px / np.sqrt(np.pi / 2)
    out = []
    for _ in range(n):
        gt = base + rng.normal(0, 15, base.shape)
        pred = gt + rng.normal(0, 1, base.shape) * sigma[:, None]
        out.append((gt, pred))
    return out


def _records(images, ere, scales=None):
    return [measurement_records("isbi-ceph19", pred, gt, ere, SPACING, (2400, 1935), scales) for gt, pred in images]


def test_fitted_scales_make_the_shown_interval_reach_its_level_where_the_ere_is_overconfident():
    rng = np.random.default_rng(0)
    ere = rng.uniform(8, 30, 19)  # 0.8–3 mm, stated
    cal, test = _images(rng, 300, ere, 2.0), _images(rng, 300, ere, 2.0)  # the truth: twice as far off
    before = _records(test, ere)
    scales = fit_doubt_scales(_records(cal, ere), 0.9, fitted_on="synthetic")
    assert not scales.pooled and set(scales.scales) == set(before[0])
    after = _records(test, ere, scales)
    table = coverage_table(before, scales, after)
    cov_before = np.array([r["coverage_before"] for r in table])
    cov_after = np.array([r["coverage_after"] for r in table])
    # the unscaled ± (a mean error of an over-confident ERE) covers far less than 90 %
    assert cov_before.max() < 50
    # scaled: 90 % within sampling error (binomial SE on 300 test images ≈ 1.7 %, plus the calibration quantile's)
    assert abs(cov_after.mean() - 90) < 2.5, cov_after
    assert np.all(np.abs(cov_after - 90) < 7), cov_after
    # about 2 × (mean → 90 % quantile of a folded normal: 1.645 / 0.798 ≈ 2.06), so ≈ 4
    s = np.array(list(scales.scales.values()))
    assert np.all((s > 3.0) & (s < 5.5)), scales.scales
    # the measurement itself says what its ± now means, and ⚠ compares the scaled ± with the tolerance
    gt, pred = test[0]
    m0 = compute_measurements("isbi-ceph19", pred, SPACING, ere=ere)
    m1 = compute_measurements("isbi-ceph19", pred, SPACING, ere=ere, doubt_scales=scales.to_card())
    for k in m0:
        assert m0[k].error_level is None and m1[k].error_level == 0.9
        assert m1[k].expected_error == pytest.approx(scales.scales[k] * m0[k].expected_error, rel=1e-4)
        assert m1[k].uncertain == (m1[k].expected_error > (0.02 if m1[k].unit == "ratio" else 2.0))
    assert any(m1[k].uncertain and not m0[k].uncertain for k in m0)
    doubt = next(m.doubt for m in m1.values() if m.uncertain)
    assert "(90 %)" in doubt


def test_a_model_without_scales_keeps_todays_unscaled_interval():
    p, ere = cephalo(), np.full(19, 20.0)
    today = compute_measurements("isbi-ceph19", p, SPACING, ere=ere)
    none = compute_measurements("isbi-ceph19", p, SPACING, ere=ere, doubt_scales=None)
    other = compute_measurements("isbi-ceph19", p, SPACING, ere=ere,
                                 doubt_scales=DoubtScales(0.9, {"not_a_measurement": 3.0}))
    for k in today:
        assert today[k].to_dict() == none[k].to_dict() == other[k].to_dict()
        assert today[k].error_level is None
    # through a session: a model whose card has no doubt scales gives the unscaled ±; with scales, the scaled one
    from napari_interactive_landmarks.data.phantom import make_phantom
    from napari_interactive_landmarks.inference import LandmarkSession
    from napari_interactive_landmarks.inference.predictor import Predictor

    pred = Predictor.from_name("phantom-spine", device="cpu")
    assert pred.card.doubt_scales is None
    img, _ = make_phantom(np.random.default_rng(5), shape=(512, 256), num_vertebrae=6)
    s = LandmarkSession(pred, img)
    s.detect()
    plain = compute_measurements(pred.schema, s.coords, s.spacing, image_shape=s.image_shape, ere=s.ere)
    shown = s.measurements()
    assert all(shown[k].to_dict() == plain[k].to_dict() for k in plain)
    name = next(k for k, m in plain.items() if m.expected_error)
    pred.card.doubt_scales = {"level": 0.9, "scales": {name: 2.5}}
    scaled = s.measurements()
    assert scaled[name].expected_error == pytest.approx(2.5 * plain[name].expected_error)
    assert scaled[name].error_level == 0.9
    assert all(scaled[k].to_dict() == plain[k].to_dict() for k in plain if k != name)


def test_too_few_samples_for_the_level_is_one_line():
    rec = [{"SNA": (1.0, 0.5, False)}] * 5
    with pytest.raises(DoubtScaleError) as exc:
        fit_doubt_scales(rec, 0.9)
    msg = str(exc.value)
    assert "\n" not in msg and msg == ("5 calibration samples of the measurements are too few for a 90 % ± "
                                       "(at least 9 are needed): calibrate on more images")
    # a measurement with too few of its own takes the pooled scale
    rec = [{"SNA": (float(i), 1.0, False), "SNB": (1.0, 1.0, False)} for i in range(20)] + [{"ANB": (1.0, 2.0, False)}]
    s = fit_doubt_scales(rec, 0.9)
    assert s.pooled == ["ANB"] and s.num_samples == {"SNA": 20, "SNB": 20, "ANB": 1}
    assert s.scales["SNA"] == 18.0 and s.scales["SNB"] == 1.0  # scores 0..19: the ⌈21 · 0.9⌉ = 19th smallest
    with pytest.raises(DoubtScaleError, match="positive and finite"):
        DoubtScales.from_card({"level": 0.9, "scales": {"SNA": 0.0}})


def test_calibrate_stores_the_scales_in_the_weights_file_and_the_session_applies_them(tmp_path, capsys):
    import shutil

    from napari_interactive_landmarks.cli import main
    from napari_interactive_landmarks.data.phantom import make_phantom
    from napari_interactive_landmarks.inference import LandmarkSession
    from napari_interactive_landmarks.inference.predictor import Predictor
    from napari_interactive_landmarks.model_card import ModelCard, ModelCardError
    from napari_interactive_landmarks.weights import load_weights, resolve_weights

    w = tmp_path / "phantom.safetensors"
    shutil.copy(resolve_weights("phantom-spine"), w)
    before = w.read_bytes()
    common = ["calibrate", "--weights", str(w), "--dataset", "phantom", "--split", "calib", "--no-regions",
              "--no-familiarity", "--no-progress", "--device", "cpu"]
    assert main(common + ["--limit", "1", "--region-clicks", "0", "--measurement-level", "0.99"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no measurement doubt scales fitted:" in err[0] and "too few for a 99 % ±" in err[0]
    assert w.read_bytes() == before  # refused: nothing written
    # not asked for (the default level): a note in one line, and the temperatures are stored without scales
    assert main(common + ["--limit", "1", "--region-clicks", "0"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("the measurements' ± stays unscaled")
    assert ModelCard.from_metadata(load_weights(w)[1]).doubt_scales is None
    assert main(common + ["--limit", "3", "--region-clicks", "2"]) == 0  # 3 images × 0..2 clicks: 9 samples
    assert "measurement doubt scales" in capsys.readouterr().out
    card = ModelCard.from_metadata(load_weights(w)[1])
    assert card.doubt_scales["level"] == 0.9 and card.doubt_scales["scales"]
    assert card.doubt_scales["fitted_on"].startswith("phantom calib (3 images")
    p = Predictor.from_file(w, device="cpu")
    assert p.card.doubt_scales == card.doubt_scales
    img, _ = make_phantom(np.random.default_rng(5), shape=(512, 256), num_vertebrae=6)
    s = LandmarkSession(p, img)
    s.detect()
    ms = s.measurements()
    plain = compute_measurements(p.schema, s.coords, s.spacing, image_shape=s.image_shape, ere=s.ere)
    for k, m in ms.items():
        if m.expected_error is not None and k in card.doubt_scales["scales"]:
            assert m.error_level == 0.9
            assert m.expected_error == pytest.approx(card.doubt_scales["scales"][k] * plain[k].expected_error, rel=1e-4)
    # a malformed stored field is refused when the card is read, naming it
    with pytest.raises(ModelCardError, match="doubt_scales"):
        ModelCard.from_mapping({**card.to_dict(), "doubt_scales": {"level": 2}})
