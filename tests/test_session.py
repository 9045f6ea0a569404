import numpy as np
import pytest

from napari_interactive_landmarks.data.phantom import make_phantom
from napari_interactive_landmarks.inference import PredictionError, Predictor
from napari_interactive_landmarks.inference.session import LandmarkSession, SessionError
from napari_interactive_landmarks.schemas import load_schema


@pytest.fixture
def session(tiny_run):
    trainer, _, _ = tiny_run
    p = Predictor(trainer.model, load_schema(trainer.cfg["schema"]), (128, 64), 3.0, name="tiny", device="cpu")
    img, gt = make_phantom(np.random.default_rng(5), shape=(256, 128), num_vertebrae=4)
    s = LandmarkSession(p, img)
    s.gt = gt
    s.detect()
    return s


def test_correct_pins_one_point_and_moves_the_others(session):
    after = session.correct(4, (100.0, 40.0))
    assert tuple(after[4]) == (100.0, 40.0) and session.pinned[4] and session.pinned.sum() == 1
    # the model re-ran with the click and the others show its answer (how far a click moves them is a property
    # of the model, tested in test_training.py on the unclicked landmarks)
    pred = session.last_prediction
    assert set(np.flatnonzero(pred.clicked)) == {4}
    np.testing.assert_array_equal(np.delete(after, 4, axis=0), np.delete(pred.coords, 4, axis=0))
    assert np.isnan(session.scores[4])  # a person's point has no model score


def test_a_prediction_never_overwrites_a_pinned_point(session):
    session.correct(1, (50.0, 20.0))
    session.correct(9, (150.0, 90.0))
    session.detect()  # refine again: pins stay
    assert tuple(session.coords[1]) == (50.0, 20.0) and tuple(session.coords[9]) == (150.0, 90.0)


def test_stale_results_are_dropped(session):
    req = session.request()
    result = session.compute(req)
    session.pin({2: (60.0, 30.0)})  # the user acted after the request was made
    snapshot = session.coords
    assert session.apply(result) is False
    np.testing.assert_array_equal(session.coords, snapshot)
    # ... and a result computed for the newest state is applied, keeping the pin
    assert session.apply(session.compute(session.request())) is True
    assert tuple(session.coords[2]) == (60.0, 30.0)


def test_undo_redo_reset_unpin(session):
    auto = session.coords
    c1 = session.correct(0, (20.0, 20.0))
    session.correct(5, (90.0, 50.0))
    assert session.undo() and np.allclose(session.coords, c1) and session.pinned.sum() == 1
    assert session.undo() and np.allclose(session.coords, auto) and not session.pinned.any()
    assert not session.undo()
    assert session.redo() and np.allclose(session.coords, c1)
    session.unpin(0)
    assert not session.pinned.any()
    session.correct(3, (70.0, 10.0))
    session.reset()
    np.testing.assert_allclose(session.coords, auto)
    assert not session.can_redo and session.undo()  # reset is itself undoable


def test_save_load_round_trip_and_wrong_set(session, tmp_path):
    session.correct(6, (120.0, 70.0))
    assert session.dirty
    path = session.save(tmp_path / "a.json")
    assert not session.dirty
    with pytest.raises(FileExistsError):
        session.save(path)
    want_c, want_p = session.coords, session.pinned
    session.reset()
    session.load(path)
    np.testing.assert_allclose(session.coords, want_c)
    np.testing.assert_array_equal(session.pinned, want_p)
    from napari_interactive_landmarks.io.landmarks import write_landmarks_json

    other = write_landmarks_json(tmp_path / "b.json", np.zeros((19, 2)), list(load_schema("isbi-ceph19").landmarks),
                                 landmark_set="isbi-ceph19")
    with pytest.raises(SessionError, match="isbi-ceph19"):
        session.load(other)
    np.testing.assert_allclose(session.coords, want_c)  # nothing lost


def test_points_are_in_landmark_order(session):
    pts = session.points()
    assert [p["index"] for p in pts] == list(range(16))
    assert pts[0]["label"] == "V1_top_left"


def test_bad_corrections_are_refused_and_lose_nothing(session):
    before = session.coords
    with pytest.raises(PredictionError, match="outside the image"):
        session.correct(0, (-100.0, 5.0))
    with pytest.raises(PredictionError, match="out of range"):
        session.correct(99, (5.0, 5.0))
    np.testing.assert_array_equal(session.coords, before)
    assert not session.can_undo and not session.pinned.any()  # nothing was pinned, no undo step was made


def test_no_detection_yet_is_a_clear_error(tiny_run):
    trainer, _, _ = tiny_run
    p = Predictor(trainer.model, load_schema(trainer.cfg["schema"]), (128, 64), 3.0, device="cpu")
    s = LandmarkSession(p, np.random.default_rng(0).random((200, 100)))
    with pytest.raises(SessionError, match="detect"):
        s.correct(0, (5.0, 5.0))


@pytest.mark.parametrize("name", ["aasce-spine", "isbi-ceph", "phantom-spine"])
def test_every_shipped_model_runs_a_whole_session(name):
    """Each shipped model (sigmoid- or softmax-trained heads) gives per-landmark arrays of the right shape
    and goes through detect → correct → correct two → undo without error."""
    p = Predictor.from_name(name, device="cpu")
    k = p.num_landmarks
    img = np.random.default_rng(0).normal(128, 30, size=(700, 500)).clip(0, 255).astype(np.uint8)
    s = LandmarkSession(p, img)
    s.detect()
    assert s.coords.shape == (k, 2) and s.scores.shape == (k,) and s.ere.shape == (k,)
    assert np.isfinite(s.coords).all() and np.isfinite(s.ere).all()
    assert ((s.scores >= 0) & (s.scores <= 1)).all()
    s.correct(3, (350.0, 250.0))
    s.correct_many({5: (100.0, 100.0)})
    assert tuple(s.coords[3]) == (350.0, 250.0) and tuple(s.coords[5]) == (100.0, 100.0)
    assert np.isnan(s.scores[5]) and s.ere[3] == 0.0 and s.ere[5] == 0.0
    s.undo()
    assert not s.pinned[5] and tuple(s.coords[3]) == (350.0, 250.0)


def test_the_model_is_given_where_it_had_put_a_corrected_point_as_its_previous_prediction(session):
    """As in training (and the evaluation protocol): with a new click, the 'previous prediction' of that landmark
    is the model's own earlier position, not the user's; earlier corrections are previous at their place."""
    auto = session.coords
    session.pin({4: (100.0, 40.0)})
    req = session.request()
    np.testing.assert_allclose(req.previous[4], auto[4])  # where the model had it
    assert req.clicks[4] == (100.0, 40.0)
    session.apply(session.compute(req))
    session.pin({9: (150.0, 90.0)})
    req = session.request()
    assert tuple(req.previous[4]) == (100.0, 40.0)  # an earlier correction: at the user's position
    np.testing.assert_allclose(req.previous[9], session.last_prediction.coords[9])
    session.undo()  # back to before the second pin: the basis comes back with the state
    np.testing.assert_allclose(session.request().previous, session.coords)


def test_the_session_announces_every_change_so_views_can_follow(session):
    seen = []
    stop = session.subscribe(seen.append)
    session.correct(4, (100.0, 40.0))  # pinned by hand, then the model's result merged
    session.unpin(4)
    session.undo()
    session.redo()
    session.reset()
    assert seen == ["pinned", "result", "unpinned", "result", "undo", "redo", "reset"]
    stale = session.request()
    session.pin({2: (60.0, 30.0)})
    assert session.apply(session.compute(stale)) is False and seen[-1] == "pinned"  # a dropped result: silent
    stop()
    session.undo()
    assert seen[-1] == "pinned"  # unsubscribed


def test_edits_made_while_the_model_runs_are_merged_into_one_follow_up_run(session):
    """The session, not the GUI, schedules: one inference at a time; a result made stale by edits is dropped
    and one run on the newest state follows, with every edit as a click."""
    first = session.begin()
    assert first is not None and session.running
    assert session.begin() is None  # already running: asked for again later
    session.pin({2: (60.0, 30.0)})
    session.pin({7: (120.0, 40.0)})
    follow = session.finish(session.compute(first))  # stale: dropped, one follow-up for the newest state
    assert follow is not None and set(follow.clicks) == {2, 7}
    assert session.finish(session.compute(follow)) is None and not session.running
    assert tuple(session.coords[2]) == (60.0, 30.0) and set(np.flatnonzero(session.last_prediction.clicked)) == {2, 7}
    assert session.begin() is not None
    session.cancel()  # e.g. the worker failed: the session is free again
    assert not session.running and session.begin() is not None


# ---------------------------------------------------------------- the session itself keeps pins (issue 22)


class _ClickIgnoringPredictor:
    """A model that ignores clicks and never re-pins them: each call returns every point shifted by one more
    pixel. Whatever keeps a corrected point in place must then be the session."""

    def __init__(self):
        from napari_interactive_landmarks.data.phantom import phantom_schema_dict

        self.schema = load_schema(phantom_schema_dict(2))  # 8 landmarks
        k = self.schema.num_landmarks
        self.calls = []
        self.base = np.stack([np.arange(k) * 10.0 + 20.0, np.full(k, 50.0)], axis=1)

    def prepare(self, image):
        return type("P", (), {"original_shape": (200, 100)})()

    def _check_clicks(self, updates, shape):
        return {int(i): (float(r), float(c)) for i, (r, c) in updates.items()}

    def predict(self, prepared, clicks=None, previous=None):
        from types import SimpleNamespace

        self.calls.append(dict(clicks or {}))
        k = len(self.base)
        return SimpleNamespace(coords=self.base + len(self.calls), scores=np.full(k, 0.5), ere=None,
                               clicked=np.zeros(k, bool))


def test_the_session_keeps_pinned_points_even_when_the_model_moves_them():
    p = _ClickIgnoringPredictor()
    s = LandmarkSession(p, np.zeros((200, 100)))
    s.detect()
    s.correct(2, (77.0, 33.0))
    s.correct(4, (150.0, 10.0))
    s.detect()
    assert p.calls[-1] == {2: (77.0, 33.0), 4: (150.0, 10.0)}  # every pin went to the model as a click
    c = s.coords
    assert tuple(c[2]) == (77.0, 33.0) and tuple(c[4]) == (150.0, 10.0)
    free = [0, 1, 3, 5, 6, 7]
    np.testing.assert_array_equal(c[free], p.base[free] + len(p.calls))  # the others: the model's newest output
    assert np.isnan(s.scores[[2, 4]]).all() and (s.scores[free] == 0.5).all()
    s.unpin(2)
    assert tuple(s.coords[4]) == (150.0, 10.0) and tuple(s.coords[2]) == tuple(p.base[2] + len(p.calls))


def test_undo_history_is_capped_at_max_history():
    p = _ClickIgnoringPredictor()
    s = LandmarkSession(p, np.zeros((200, 100)), max_history=3)
    s.detect()
    assert not s.can_undo
    for i in range(5):
        s.pin({0: (10.0 + i, 20.0)})
    assert s.coords[0, 0] == 14.0
    for want in (13.0, 12.0, 11.0):  # the three newest steps come back ...
        assert s.undo() and s.coords[0, 0] == want
    assert not s.undo() and s.coords[0, 0] == 11.0  # ... older ones were dropped
    for want in (12.0, 13.0, 14.0):
        assert s.redo() and s.coords[0, 0] == want
    assert not s.redo()


def test_check_next_ranks_by_the_expected_gain():
    """Issue 34: "check next" is the point whose correction is expected to remove the most error — its own stated ERE
    plus the others' stated EREs weighted by the share of their variance the anatomy says it explains — not merely
    the highest ERE (a block of vertebrae one level off is fixed by a click in its middle)."""
    from napari_interactive_landmarks.data.phantom import phantom_set
    from napari_interactive_landmarks.shape_model import fit_from_labels

    p = Predictor.from_name("phantom-spine", device="cpu")
    _, cs = phantom_set(60, 11, shape=(1024, 512), num_vertebrae=6)
    p.set_shape_model(fit_from_labels([(str(i), c, (1024, 512)) for i, c in enumerate(cs)], p.schema.name)[0])
    img, gt = make_phantom(np.random.default_rng(5), shape=(1024, 512), num_vertebrae=6)
    s = LandmarkSession(p, img)
    s.detect()
    s.correct(int(np.argmax(np.hypot(*(s.coords - gt).T))), (300.0, 200.0))  # one correction: the gain given it
    ere, pinned = s.ere, s.pinned
    r = p.shape_model.informativeness(list(np.flatnonzero(pinned)))
    want = ere + r.T @ np.where(pinned, 0.0, ere)
    got = s.expected_gain
    np.testing.assert_allclose(got[~pinned], want[~pinned], rtol=1e-6)
    assert np.isnan(got[pinned]).all()
    assert s.suggest_next() == int(np.nanargmax(np.where(pinned, np.nan, want)))
    # a film where one lone corner states the largest ERE (30 px) and a whole vertebra states 25 px at each corner:
    # a click that tells the anatomy about that vertebra is expected to fix more than the lone corner's
    from dataclasses import replace

    made_up = np.full(len(ere), 2.0)
    made_up[23] = 30.0  # the last vertebra's last corner
    made_up[8:12] = 25.0  # the third vertebra
    made_up[pinned] = 0.0
    gain = p._expected_gain(made_up, {int(i): tuple(s.coords[i]) for i in np.flatnonzero(pinned)})
    s._state = replace(s._state, ere=made_up, gain=np.where(pinned, np.nan, gain))
    r = p.shape_model.informativeness(list(np.flatnonzero(pinned)))
    assert s.suggest_next() == int(np.nanargmax(np.where(pinned, np.nan, made_up + r.T @ made_up)))
    assert s.suggest_next() != 23  # not the largest ERE
