"""The stated expected error (issue 34): read from the doubt maps (the network's calibrated map times the anatomy's
envelope), then calibrated per landmark and click count and bounded by the landmark's real errors."""

import numpy as np
import pytest
import torch

from napari_interactive_landmarks.ere_calibration import (
    EreCalibration,
    EreCalibrationError,
    fit_ere_calibration,
)
from napari_interactive_landmarks.inference import Predictor
from napari_interactive_landmarks.model_card import ModelCard, ModelCardError
from napari_interactive_landmarks.shape_model import fit_from_labels


@pytest.fixture(scope="module")
def phantom():
    from napari_interactive_landmarks.data.phantom import make_phantom, phantom_set

    pred = Predictor.from_name("phantom-spine", device="cpu")
    _, cs = phantom_set(60, 11, shape=(1024, 512), num_vertebrae=6)
    sm, _ = fit_from_labels([(str(i), c, (1024, 512)) for i, c in enumerate(cs)], pred.schema.name)
    img, gt = make_phantom(np.random.default_rng(5), shape=(1024, 512), num_vertebrae=6)
    return pred, sm, img, gt


class _FarEndEcho(torch.nn.Module):
    """The real network, with the last landmark's map given a second, weaker mode across the top rows of the film —
    what the spine model does at the chain's ends (L5's map keeps a few per cent of its mass near T1)."""

    def __init__(self, model, temperature: float, rows: int = 2, below_peak: float = 2.0):
        super().__init__()
        self.inner = model
        self.rows, self.below_peak = rows, below_peak * temperature  # 2 below the peak after temperature scaling
        for name in ("num_landmarks", "heatmap", "output_stride", "hint_sigma"):
            if hasattr(model, name):
                setattr(self, name, getattr(model, name))

    def forward(self, x, **kw):
        out = dict(self.inner(x, **kw))
        logits = out["logits"].clone()
        last = logits[0, -1]
        last[: self.rows] = last.max() - self.below_peak
        out["logits"] = logits
        return out


def _echoed(pred, sm):
    t = 1.0 if pred.temperatures is None else float(pred.temperatures[-1])
    p = Predictor(_FarEndEcho(pred.model, t), pred.schema, pred.input_size, pred.sigma, "far-end-echo", "cpu",
                  temperatures=pred.temperatures)
    p.set_shape_model(sm)
    p.use_shape_prior = False  # the points are the network's; only the doubt is under test
    return p


def test_a_chain_ends_echo_at_the_films_other_end_does_not_make_its_expected_error_absurd(phantom):
    pred, sm, img, gt = phantom
    p = _echoed(pred, sm)
    out = p.predict(img)
    err = np.hypot(*(out.coords - gt).T)
    assert err[-1] < 20  # the point itself is well placed: only its map has the far echo
    p.envelope_weight = 0.0  # the network's map alone (the code before issue 34): the echo dominates the ERE
    alone = p.predict(img)
    np.testing.assert_array_equal(alone.coords, out.coords)
    assert alone.ere[-1] > 150, alone.ere[-1]
    # with the anatomy's envelope the last corner states an error like its neighbours', not one the film's height
    others = np.median(out.ere[:-1])
    assert out.ere[-1] < 3 * max(others, err[-1]), (out.ere[-1], others, err[-1])
    # and its region is no longer the film's height
    axes, _, _ = out.regions() or (None, None, None)
    if axes is not None:
        assert axes[-1, 0] < img.shape[0] / 2


def test_the_stated_error_is_scaled_per_landmark_and_click_count_and_capped():
    rng = np.random.default_rng(0)
    n, c, k = 400, 2, 3
    raw = rng.uniform(5, 60, (n, c, k))
    # the true mean error grows like raw ** 0.6 (large raw EREs overstate), with a different factor per landmark
    factor = np.array([[1.0, 2.0, 0.5], [0.8, 1.5, 3.0]])
    err = factor[None] * raw ** 0.6 * rng.uniform(0.5, 1.5, (n, c, k))
    cal = fit_ere_calibration(raw, err, clicks=[0, 1])
    np.testing.assert_allclose(cal.exponents, 0.6, atol=0.1)
    for j in range(c):
        stated, wide = cal.apply(raw[:, j], j)
        # on average right for every landmark (the shrinkage toward the pooled ratio costs a few per cent at most)
        np.testing.assert_allclose(stated.mean(0), err[:, j].mean(0), rtol=0.08)
        # and right within the deciles of the raw ERE, not only on average
        lo, hi = raw[:, j] < np.percentile(raw[:, j], 20), raw[:, j] > np.percentile(raw[:, j], 80)
        for sel in (lo, hi):
            assert abs(stated[sel].mean() / err[:, j][sel].mean() - 1) < 0.15
    np.testing.assert_allclose(cal.caps, np.percentile(err, 99, axis=0), rtol=1e-9)
    stated, wide = cal.apply(np.array([10.0, 10.0, np.nan]), 0)
    np.testing.assert_allclose(stated[:2], cal.scales[0, :2] * 10.0 ** cal.exponents[0])
    assert np.isnan(stated[2]) and not wide.any()
    # beyond the cap: the cap, unless the raw map itself is spread wider (then the raw value, marked wide)
    q = cal.caps[1, 2]
    huge = (q / cal.scales[1, 2]) ** (1 / cal.exponents[1]) * 1.01  # its scaled value just passes the cap
    stated, wide = cal.apply(np.array([1.0, 1.0, min(huge, q * 0.99)]), 5)  # 5 clicks: the last row serves
    assert stated[2] <= q + 1e-9 and not wide[2]
    stated, wide = cal.apply(np.array([1.0, 1.0, q * 2.0]), 1)
    assert stated[2] == pytest.approx(min(q * 2.0, cal.scales[1, 2] * (q * 2.0) ** cal.exponents[1])) and wide[2]
    # by hand: scale 2, cap 10 px. 4 px → 8; 8 px → 10 (the cap, not 16); 12 px → 12 (its own map is spread wider
    # than the landmark's errors ever were: stated unscaled, marked wide)
    hand = EreCalibration(scales=[[2.0, 2.0, 2.0]], caps=[[10.0, 10.0, 10.0]], exponents=[1.0])
    stated, wide = hand.apply(np.array([4.0, 8.0, 12.0]), 0)
    np.testing.assert_allclose(stated, [8.0, 10.0, 12.0])
    assert wide.tolist() == [False, False, True]
    # a landmark clicked on most films (too few errors of its own) takes the pooled scale and cap
    err2 = err.copy()
    err2[5:, 0, 1] = np.nan
    cal2 = fit_ere_calibration(raw, err2)
    x = np.where(np.isfinite(err2[:, 0]), raw[:, 0], np.nan) ** cal2.exponents[0]
    assert cal2.scales[0, 1] == pytest.approx(np.nansum(err2[:, 0]) / np.nansum(x))
    with pytest.raises(EreCalibrationError, match="too few"):
        fit_ere_calibration(raw[:3], err[:3])


def test_a_malformed_ere_calibration_is_refused_naming_the_file():
    good = fit_ere_calibration(np.ones((20, 1, 2)), np.ones((20, 1, 2)) * 3).to_card()
    back = EreCalibration.from_card(good, 2, "x.safetensors")
    np.testing.assert_allclose(back.scales, 3.0)
    for bad, why in ((dict(good, scales=[[1.0, -1.0]]), "positive"), (dict(good, caps=[[1.0]]), "do not fit"),
                     (dict(good, envelope_weight=1.0), "envelope_weight"), ({"scales": 1}, "malformed")):
        with pytest.raises(EreCalibrationError, match=why):
            EreCalibration.from_card(bad, 2, "x.safetensors")
    card = Predictor.from_name("phantom-spine", device="cpu").card.to_dict()
    card["ere_calibration"] = dict(good, scales=[[float("nan")] * 2])
    with pytest.raises(ModelCardError, match="my.safetensors"):
        ModelCard.from_mapping(card, source="my.safetensors")


class _FlatLast(_FarEndEcho):
    """The real network with the last landmark's map flat (a film cut off where that landmark should be)."""

    def forward(self, x, **kw):
        out = dict(self.inner(x, **kw))
        logits = out["logits"].clone()
        logits[0, -1] = 0.0
        out["logits"] = logits
        return out


def test_a_flat_map_states_an_honest_finite_error_and_is_marked_unplaceable(phantom):
    """Issue 34, bad input: a map with no peak (the landmark is not on the film). The doubt map is then the anatomy's
    envelope alone: a finite, film-bounded expected error, stated unscaled and marked as spread wider than the
    landmark's real errors ever were; the session and the panel carry the mark; no NaN anywhere."""
    from napari_interactive_landmarks.inference.session import LandmarkSession

    pred, sm, img, gt = phantom
    p = Predictor(_FlatLast(pred.model, 1.0), pred.schema, pred.input_size, pred.sigma, "flat-last", "cpu",
                  temperatures=pred.temperatures)
    p.set_shape_model(sm)
    k = p.num_landmarks
    normal = Predictor(pred.model, pred.schema, pred.input_size, pred.sigma, "normal", "cpu",
                       temperatures=pred.temperatures)
    normal.set_shape_model(sm)
    usual = normal.predict(img).ere_raw  # each landmark's caps: twice what its map states on this film
    p.ere_calibration = EreCalibration(scales=np.ones((1, k)), caps=2 * usual[None], exponents=[1.0])
    out = p.predict(img)
    assert np.isfinite(out.ere).all() and np.isfinite(out.coords).all() and np.isfinite(out.spread).all()
    assert out.ere_wide[-1] and out.ere[-1] == pytest.approx(out.ere_raw[-1])
    assert out.ere[-1] < np.hypot(*img.shape)  # bounded by the film, not by a map spread over nothing
    assert not out.ere_wide[:-1].any()
    s = LandmarkSession(p, img)
    s.detect()
    assert s.spread_wide[-1] and not s.spread_wide[:-1].any()


def _joint_films(rng, n, k=12):
    """Films whose worst errors are joint (a whole chain a level off: every point ~100 px out) on 30 % of them; each
    point's raw ERE is only a little larger there, and noisy: within a film it does not tell the shifted points."""
    shifted = rng.random(n) < 0.3
    raw = rng.lognormal(np.log(np.where(shifted, 30.0, 15.0))[:, None], 0.6, (n, k))
    err = np.where(shifted[:, None], rng.normal(100, 15, (n, k)), raw * rng.uniform(0.3, 1.7, (n, k)))
    return raw[:, None], np.abs(err)[:, None]


def _auroc(score, positive):
    from scipy.stats import mannwhitneyu

    return mannwhitneyu(score[positive], score[~positive]).statistic / (positive.sum() * (~positive).sum())


def test_a_film_whose_points_the_model_doubts_together_states_its_joint_error():
    rng = np.random.default_rng(3)
    raw, err = _joint_films(rng, 300)
    cal = fit_ere_calibration(raw, err)
    assert cal.film_terms[0] > 0, cal.film_terms
    # on fresh films the stated error ranks the points far off better than each point's own ERE does
    raw2, err2 = _joint_films(rng, 300)
    stated = np.array([cal.apply(r, 0)[0] for r in raw2[:, 0]])
    plain = EreCalibration(cal.scales, cal.caps, exponents=cal.exponents)  # the same, without the film term
    alone = np.array([plain.apply(r, 0)[0] for r in raw2[:, 0]])
    far = err2[:, 0] > 60
    assert _auroc(stated.ravel(), far.ravel()) > _auroc(alone.ravel(), far.ravel()) + 0.05
    # and on average it still states the films' real error (within 15 %)
    assert abs(stated.mean() / err2.mean() - 1) < 0.15
    # one film's term: A times its mean ere ** b against the calibration films' median, to the power g, added to
    # each of its points (so a film's own points keep their order: "check next" reads it)
    powered = raw2[0, 0] ** cal.exponents[0]
    term = cal.film_terms[0] * (powered.mean() / cal.film_refs[0]) ** cal.film_exponents[0]
    assert cal.film_term(powered, 0) == pytest.approx(term)
    np.testing.assert_allclose(cal.apply(raw2[0, 0], 0)[0],
                               np.minimum(cal.scales[0] * powered + term, np.maximum(cal.caps[0], raw2[0, 0])))
    order = np.argsort(cal.apply(raw2[0, 0], 0)[0])
    assert (order == np.argsort(np.minimum(cal.scales[0] * powered, np.maximum(cal.caps[0], raw2[0, 0])))).all()
    # errors independent between points: no film term
    ind_raw = rng.uniform(5, 60, (300, 1, 12))
    indep = fit_ere_calibration(ind_raw, ind_raw ** 0.8 * rng.uniform(0.5, 1.5, ind_raw.shape))
    assert indep.film_terms[0] == 0.0
    # the card keeps it; a card from before the factor reads as none; a malformed one is refused
    back = EreCalibration.from_card(cal.to_card(), 12, "x.safetensors")
    np.testing.assert_allclose(back.film_terms, cal.film_terms, rtol=1e-3)
    np.testing.assert_allclose(back.film_exponents, cal.film_exponents)
    np.testing.assert_allclose(back.apply(raw2[1, 0], 0)[0], cal.apply(raw2[1, 0], 0)[0], rtol=1e-3)
    old = {k: v for k, v in cal.to_card().items() if not k.startswith("film_")}
    assert EreCalibration.from_card(old, 12, "x.safetensors").film_terms.tolist() == [0.0]
    with pytest.raises(EreCalibrationError, match="film"):
        EreCalibration.from_card(dict(cal.to_card(), film_refs=[0.0]), 12, "x.safetensors")


def test_check_next_ranks_a_films_points_by_their_own_doubt_not_the_films_term(phantom):
    """The film term is the same for every point of a film: it must not steer "check next" (added to every point's
    stated error it would favour the points the anatomy links most: guided clicks to 20 px 1.70 → 1.84 on the spine's
    eval films when the gain read it)."""
    pred, sm, img, gt = phantom
    p = Predictor(pred.model, pred.schema, pred.input_size, pred.sigma, "phantom", "cpu",
                  temperatures=pred.temperatures)
    p.set_shape_model(sm)
    k = p.num_landmarks
    plain = EreCalibration(scales=np.ones((1, k)), caps=np.full((1, k), 1e4), exponents=[1.0])
    with_term = EreCalibration(scales=np.ones((1, k)), caps=np.full((1, k), 1e4), exponents=[1.0],
                               film_terms=[40.0], film_exponents=[1.0], film_refs=[1.0])
    p.ere_calibration = plain
    a = p.predict(img, clicks={3: tuple(gt[3])})
    p.ere_calibration = with_term
    b = p.predict(img, clicks={3: tuple(gt[3])})
    free = ~a.clicked
    assert (b.ere[free] > a.ere[free] + 39).all()  # the term is stated …
    np.testing.assert_allclose(b.gain[free], a.gain[free])  # … but the suggestion reads each point's own share
