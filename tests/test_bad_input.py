"""Issue 11, bad input (items 4–8, 11): every case ends with one clear error of a package type, the user's
corrected (pinned) points untouched, and nothing on disk half-written. Headless: no napari, no Qt."""

from __future__ import annotations

import csv
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from napari_interactive_landmarks.data.phantom import make_phantom


@pytest.fixture(scope="module")
def predictor():
    from napari_interactive_landmarks.inference import Predictor

    return Predictor.from_name("phantom-spine", device="cpu")  # shipped, 24 landmarks, fast


@pytest.fixture(scope="module")
def image():
    img, _ = make_phantom(np.random.default_rng(5), shape=(512, 256), num_vertebrae=6)
    return img.astype(np.float32)


@pytest.fixture
def session(predictor, image):
    from napari_interactive_landmarks.inference.session import LandmarkSession

    s = LandmarkSession(predictor, image)
    s.detect()
    return s


def _snapshot(s):
    return dict(coords=s.coords, pinned=s.pinned, undo=len(s._undo), redo=len(s._redo), gen=s.generation,
                dirty=s.dirty)


def _assert_unchanged(s, snap):
    np.testing.assert_array_equal(s.coords, snap["coords"])
    np.testing.assert_array_equal(s.pinned, snap["pinned"])
    assert (len(s._undo), len(s._redo), s.generation, s.dirty) == (snap["undo"], snap["redo"], snap["gen"],
                                                                    snap["dirty"])


# ---------------------------------------------------------------- item 4: the session is importable where it lives


def test_the_session_is_importable_from_the_inference_package():
    from napari_interactive_landmarks.inference import LandmarkSession, SessionError
    from napari_interactive_landmarks.inference.session import LandmarkSession as S, SessionError as E

    assert LandmarkSession is S and SessionError is E


# ---------------------------------------------------------------- item 6: non-finite results are errors


def test_huge_but_finite_pixels_do_not_overflow_the_normalisation(predictor, image):
    """float32 pixels spanning ±3e38: (hi - lo) overflows float32; every landmark came back NaN."""
    from napari_interactive_landmarks.io.images import normalise_intensity

    small = image * 2 - 1
    huge = small * np.float32(3e38)
    assert np.isfinite(huge).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning either
        norm = normalise_intensity(huge)
    assert np.isfinite(norm).all() and norm.min() == 0.0 and norm.max() == 1.0
    np.testing.assert_allclose(norm, normalise_intensity(small), atol=1e-5)  # the scale does not matter
    pred = predictor.predict(huge)
    assert np.isfinite(pred.coords).all()
    np.testing.assert_allclose(pred.coords, predictor.predict(small).coords, atol=0.05)


@pytest.mark.parametrize("bad,match", [
    ("nan", "NaN"),
    ("inf", "infinite"),
    ("constant", "constant"),
])
def test_unusable_images_are_prediction_errors(predictor, image, bad, match):
    from napari_interactive_landmarks.inference import PredictionError
    from napari_interactive_landmarks.io.images import ImageError

    a = image.copy()
    if bad == "nan":
        a[10:20, 10:20] = np.nan
    elif bad == "inf":
        a[5, 5] = np.inf
    else:
        a[:] = 0.25
    with pytest.raises(PredictionError, match=match) as exc:
        predictor.predict(a)
    assert isinstance(exc.value, ImageError)  # still the image error it always was


def _nan_model(predictor):
    import copy

    import torch

    model = copy.deepcopy(predictor.model).float()
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if n.endswith("weight")).fill_(float("nan"))
    return model


def test_a_model_that_returns_non_finite_coordinates_is_an_error(predictor, image):
    from napari_interactive_landmarks.inference import LandmarkSession, PredictionError, Predictor

    broken = Predictor(_nan_model(predictor), predictor.schema, predictor.input_size, predictor.sigma, "broken", "cpu")
    with pytest.raises(PredictionError, match="non-finite coordinates for 24 landmarks.*corrupt"):
        broken.predict(image)
    s = LandmarkSession(broken, image)
    with pytest.raises(PredictionError, match="non-finite"):
        s.detect()
    assert not s.detected  # nothing merged


def _weights_file(predictor, tmp_path, spoil):
    from napari_interactive_landmarks.weights import load_weights, resolve_weights, save_weights

    state, meta = load_weights(resolve_weights("phantom-spine"))
    key = spoil(state)
    out = tmp_path / "spoilt.safetensors"
    save_weights(state, out, metadata=meta)
    return out, key


def test_a_weights_file_with_nan_tensors_is_refused_naming_the_file(predictor, tmp_path):
    from napari_interactive_landmarks.inference import Predictor
    from napari_interactive_landmarks.weights import WeightsError

    def spoil(state):
        key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
        state[key][0] = float("nan")
        return key

    path, key = _weights_file(predictor, tmp_path, spoil)
    with pytest.raises(WeightsError, match=f"spoilt.safetensors.*{key}.*(NaN|not finite)"):
        Predictor.from_file(path)


def test_a_truncated_weights_file_is_refused_naming_the_file(tmp_path):
    from napari_interactive_landmarks.inference import Predictor
    from napari_interactive_landmarks.weights import WeightsError, resolve_weights

    data = resolve_weights("phantom-spine").read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="cut.safetensors.*truncated"):
        Predictor.from_file(cut)


def test_cli_predict_never_writes_a_file_of_non_finite_points(predictor, image, tmp_path, capsys):
    from napari_interactive_landmarks.cli import main

    from skimage.io import imsave

    img = tmp_path / "film.png"
    imsave(img, (image * 255).astype(np.uint8), check_contrast=False)
    weights, _ = _weights_file(predictor, tmp_path, lambda st: next(t for t in st.values() if t.is_floating_point())
                               .fill_(float("nan")))
    out = tmp_path / "out"
    rc = main(["predict", str(img), "--weights", str(weights), "--out", str(out), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc != 0 and "spoilt.safetensors" in err and "Traceback" not in err
    assert len([ln for ln in err.splitlines() if "spoilt" in ln]) == 1
    assert not out.exists() or not list(out.iterdir())


def test_cli_predict_reads_a_float_tiff_with_huge_values(image, tmp_path, capsys):
    import tifffile

    from napari_interactive_landmarks.cli import main
    from napari_interactive_landmarks.io.landmarks import read_landmarks_json

    f = tmp_path / "huge.tif"
    tifffile.imwrite(f, (image * 2 - 1) * np.float32(3e38))
    rc = main(["predict", str(f), "--model", "phantom-spine", "--out", str(tmp_path), "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    lf = read_landmarks_json(tmp_path / "huge.landmarks.json")
    assert np.isfinite(lf.coords).all() and "missing" not in lf.status


# ---------------------------------------------------------------- item 7: loading never loses pins


def _write_partial(session, path, keep):
    from napari_interactive_landmarks.io.landmarks import write_landmarks_json

    names = list(session.schema.landmarks)
    return write_landmarks_json(path, session.coords[keep] + 3.0, [names[i] for i in keep],
                                landmark_set=session.schema.name, pinned=np.ones(len(keep), bool))


def test_a_partial_landmark_file_is_refused_unless_merging_is_asked_for(session, tmp_path):
    from napari_interactive_landmarks.inference import SessionError

    session.correct(20, (400.0, 100.0))  # the user's correction, not in the file
    seen = []
    session.subscribe(seen.append)
    snap = _snapshot(session)
    keep = list(range(10))
    f = _write_partial(session, tmp_path / "part.json", keep)
    with pytest.raises(SessionError, match=r"14 of 24 landmarks.*merge_partial=True"):
        session.load(f)
    _assert_unchanged(session, snap)
    assert seen == []
    # with consent: only the file's points are merged, the user's pin stays where it is
    session.load(f, merge_partial=True)
    np.testing.assert_allclose(session.coords[keep], snap["coords"][keep] + 3.0)
    assert session.pinned[keep].all()
    assert session.pinned[20] and tuple(session.coords[20]) == (400.0, 100.0)
    np.testing.assert_array_equal(np.delete(session.coords, keep, 0), np.delete(snap["coords"], keep, 0))
    assert seen == ["loaded"] and session.can_undo
    assert session.undo()  # one undo step back to before the load
    np.testing.assert_array_equal(session.coords, snap["coords"])
    np.testing.assert_array_equal(session.pinned, snap["pinned"])


def test_a_truncated_csv_is_refused_and_changes_nothing(session, tmp_path):
    from napari_interactive_landmarks.inference import SessionError
    from napari_interactive_landmarks.io.landmarks import LandmarkFileError

    session.correct(3, (100.0, 50.0))
    full = tmp_path / "full.csv"
    session.save(full)
    text = full.read_text()
    snap = _snapshot(session)
    cut_mid_line = tmp_path / "cut.csv"
    cut_mid_line.write_text(text[: text.index("\n", len(text) // 2) + 12])  # stops inside a row
    with pytest.raises(LandmarkFileError, match=r"cut.csv.*line \d+.*(truncated|fewer)"):
        session.load(cut_mid_line)
    _assert_unchanged(session, snap)
    cut_at_line = tmp_path / "cut2.csv"
    cut_at_line.write_text("".join(text.splitlines(keepends=True)[:11]))  # header + 10 rows
    with pytest.raises(SessionError, match="14 of 24 landmarks"):
        session.load(cut_at_line)
    _assert_unchanged(session, snap)
    session.load(full)  # the whole file loads
    assert session.pinned[3] and tuple(session.coords[3]) == (100.0, 50.0)


def test_a_loaded_point_outside_the_image_is_refused_naming_it(session, tmp_path):
    from napari_interactive_landmarks.inference import SessionError
    from napari_interactive_landmarks.io.landmarks import write_landmarks_json

    coords = session.coords
    coords[5] = (900.0, 50.0)  # the image is 512 × 256
    pinned = np.zeros(24, bool)
    pinned[5] = True
    f = write_landmarks_json(tmp_path / "out.json", coords, list(session.schema.landmarks),
                             landmark_set=session.schema.name, pinned=pinned)
    snap = _snapshot(session)
    with pytest.raises(SessionError, match=r"outside the image.*V2_top_right"):
        session.load(f)
    _assert_unchanged(session, snap)
    session.correct(0, (30.0, 30.0))  # the session is not stuck


def test_unpinning_a_point_that_is_not_pinned_does_nothing(session, monkeypatch):
    calls, seen = [], []
    monkeypatch.setattr(session, "compute", lambda req: calls.append(req) or pytest.fail("the model was re-run"))
    session.subscribe(seen.append)
    snap = _snapshot(session)
    out = session.unpin(4)
    np.testing.assert_array_equal(out, snap["coords"])
    _assert_unchanged(session, snap)
    assert calls == [] and seen == []


# ---------------------------------------------------------------- item 8: saves are all-or-nothing


def test_a_csv_save_checks_every_target_before_writing_anything(session, tmp_path):
    from napari_interactive_landmarks.io.files import SaveError

    session.correct(3, (100.0, 50.0))
    (tmp_path / "x.measurements.csv").write_text("keep me\n")
    with pytest.raises(FileExistsError, match="x.measurements.csv") as exc:
        session.save(tmp_path / "x.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.measurements.csv"]  # x.csv not written
    assert isinstance(exc.value, SaveError)
    assert (tmp_path / "x.measurements.csv").read_text() == "keep me\n" and session.dirty
    (tmp_path / "x.measurements.csv").unlink()
    session.save(tmp_path / "x.csv")  # a retry works
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.csv", "x.measurements.csv"] and not session.dirty


@pytest.mark.parametrize("name,refused,target", [
    ("x.csv", "", "x.csv"),  # a read-only folder: every new file is refused
    ("x.json", "", "x.json"),
    ("x.csv", "measurements", "x.measurements.csv"),  # the second file fails after the first was written
])
def test_a_failed_save_names_the_target_and_leaves_nothing(session, tmp_path, monkeypatch, name, refused, target):
    """A folder that refuses new files (as a read-only one does; root may write anyway, so it is simulated where
    the temporary is made): neither file nor temporary is left, and the error names the file that could not be
    written, not the temporary."""
    import tempfile

    from napari_interactive_landmarks.io.files import SaveError

    session.correct(3, (100.0, 50.0))
    real = tempfile.mkstemp

    def refuse(prefix="", suffix="", dir=None, **kw):
        if refused in prefix:
            raise PermissionError(13, "Permission denied", os.path.join(dir, prefix + "abc" + suffix))
        return real(prefix=prefix, suffix=suffix, dir=dir, **kw)

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(SaveError, match=rf"cannot save \S*/{target}: Permission denied") as exc:
        session.save(tmp_path / name)
    assert "abc" not in str(exc.value) and exc.value.target == tmp_path / target
    assert list(tmp_path.iterdir()) == [] and session.dirty


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_a_read_only_folder_is_a_save_error_naming_the_target(session, tmp_path):
    """A real read-only folder. Root writes into one anyway (CI runs as root), so as root the save runs with the
    effective user switched to 'nobody' (and back), in a folder that user can reach (issue 22: was always
    skipped in CI)."""
    import contextlib
    import shutil
    import tempfile

    from napari_interactive_landmarks.io.files import SaveError

    as_root = os.geteuid() == 0
    base = Path(tempfile.mkdtemp(dir="/tmp")) if as_root else tmp_path
    base.chmod(0o755)
    session.save(base / "warm.json")  # everything save imports is loaded before any switch of user
    session.correct(3, (100.0, 50.0))
    ro = base / "ro"
    ro.mkdir()
    ro.chmod(0o555)

    @contextlib.contextmanager
    def unprivileged():
        if not as_root:
            yield
            return
        os.seteuid(65534)  # nobody; the real and saved ids stay root, so this is undone below
        try:
            yield
        finally:
            os.seteuid(0)

    try:
        with unprivileged(), pytest.raises(SaveError, match=r"a\.json"):
            session.save(ro / "a.json")
        assert list(ro.iterdir()) == [] and session.dirty
    finally:
        ro.chmod(0o755)
        if as_root:
            shutil.rmtree(base)


# ---------------------------------------------------------------- item 11: images are read by content


def test_a_jpeg_named_tif_is_read(tmp_path, image):
    import imageio.v3 as iio

    from napari_interactive_landmarks.io.images import read_image

    f = tmp_path / "film.tif"
    iio.imwrite(f, (image * 255).astype(np.uint8), extension=".jpg")
    assert f.read_bytes()[:3] == b"\xff\xd8\xff"
    img = read_image(f)
    assert img.shape == image.shape and img.metadata["format"] == "jpeg"
    g = tmp_path / "film.png"  # and a 16-bit TIFF named .png keeps its range
    import tifffile

    tifffile.imwrite(g, (image * 65535).astype(np.uint16))
    assert read_image(g).array.max() > 60000 and read_image(g).metadata["format"] == "tiff"


def test_evaluate_skips_unreadable_images_and_says_how_many(predictor, tmp_path, capsys):
    import imageio.v3 as iio

    from napari_interactive_landmarks.cli import main

    root = tmp_path / "data"
    root.mkdir()
    names = list(predictor.schema.landmarks)
    rng = np.random.default_rng(7)
    with (root / "landmarks.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "label", "row", "col"])
        for i, fname in enumerate(["a.png", "b.tif", "c.png", "d.png"]):
            img, pts = make_phantom(rng, shape=(512, 256), num_vertebrae=6)
            iio.imwrite(root / fname, (img * 255).astype(np.uint8), extension=".png" if i != 1 else ".jpg")
            for n, (r, c) in zip(names, pts):
                w.writerow([fname, n, f"{r:.2f}", f"{c:.2f}"])
    (root / "c.png").write_bytes((root / "c.png").read_bytes()[:60])  # cut off after its header
    out = tmp_path / "eval.json"
    rc = main(["evaluate", "--model", "phantom-spine", "--dataset", "generic", "--root", str(root), "--split", ".",
               "--clicks", "1", "--json", str(out), "--no-progress", "--device", "cpu"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    res = json.loads(out.read_text())
    assert res["num_images"] == 3 and res["num_skipped"] == 1
    assert [s["name"] for s in res["skipped"]] == ["c.png"] and "c.png" in res["skipped"][0]["reason"]
    assert "skipped 1 of 4" in cap.err + cap.out


# ---------------------------------------------------------------- issue "no crash, no silent wrong answer", item 8


def _weights_with_card(tmp_path, name, change):
    """The shipped phantom model's weights with its model card (safetensors metadata) changed by ``change``."""
    from napari_interactive_landmarks.weights import load_weights, resolve_weights, save_weights

    state, meta = load_weights(resolve_weights("phantom-spine"))
    meta = dict(meta)
    change(meta)
    return save_weights(state, tmp_path / name, metadata=meta)


def test_a_model_config_asking_for_terabytes_is_one_clear_line(image, tmp_path, capsys):
    """(a) The torch allocator's text ('[enforce fail at alloc_cpu.cpp] … DefaultCPUAllocator: can't allocate
    memory: you tried to allocate 14745600000000 bytes') became: what the config asks for, and why it is refused —
    before anything is allocated."""
    from skimage.io import imsave

    from napari_interactive_landmarks.cli import main
    from napari_interactive_landmarks.weights import get_entry

    def widen(meta):
        cfg = json.loads(meta["config"])
        cfg["backbone"]["widths"] = [8, 16, 32, 640000]  # a width typed with four extra zeros
        meta["config"] = json.dumps(cfg)

    weights = _weights_with_card(tmp_path, "wide.safetensors", widen)
    img = tmp_path / "film.png"
    imsave(img, (image * 255).astype(np.uint8), check_contrast=False)
    rc = main(["predict", str(img), "--weights", str(weights), "--out", str(tmp_path / "out"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "alloc" not in err.lower() and "Traceback" not in err
    assert "wide.safetensors" in err and "TB" in err and "640000" in err and "memory" in err
    from napari_interactive_landmarks.models.interactive import ModelTooLargeError, build_model, resolve_config

    cfg = dict(get_entry("phantom-spine")["config"])
    cfg["backbone"] = {**cfg["backbone"], "widths": [8, 16, 32, 640000]}
    with pytest.raises(ModelTooLargeError, match=r"parameters \(\d+\.\d TB"):  # the trainer builds it here too
        build_model(resolve_config(cfg))


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_a_weights_file_with_an_unusable_temperature_is_refused_at_load_naming_it(image, tmp_path, bad):
    """(b) It loaded, and then every prediction failed with a bare ValueError that blamed the image."""
    from napari_interactive_landmarks.inference import Predictor

    def spoil(meta):
        temps = [1.0] * 24
        temps[3] = bad
        meta["temperatures"] = json.dumps(temps)

    path = _weights_with_card(tmp_path, "hot.safetensors", spoil)
    with pytest.raises(ValueError, match=rf"hot.safetensors: the temperature of landmark 3 is {bad:g}.*positive and "
                                         "finite"):
        Predictor.from_file(path)


def test_loading_a_folder_as_a_landmark_file_says_it_is_a_folder(session, tmp_path):
    """(e) It said 'not found'."""
    from napari_interactive_landmarks.io.landmarks import read_landmarks_csv

    folder = tmp_path / "points.json"
    folder.mkdir()
    snap = _snapshot(session)
    with pytest.raises(IsADirectoryError, match="points.json: is a folder, not a landmark file"):
        session.load(folder)
    _assert_unchanged(session, snap)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        read_landmarks_csv(tmp_path)


def test_previous_coordinates_given_as_strings_are_a_clear_prediction_error(predictor, image):
    """(f) A bare ValueError ('could not convert string to float')."""
    from napari_interactive_landmarks.inference import PredictionError

    with pytest.raises(PredictionError, match=r"previous must be a \(24, 2\) array of \(row, col\) numbers"):
        predictor.predict(image, clicks={0: (10.0, 10.0)}, previous=[["812", "a"]] * 24)
