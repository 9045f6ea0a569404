"""A study (issue 36): a folder of films annotated one after another, every change saved at once, resumable after a
killed process, refusing a corrupted store without overwriting it, and exported in formats other tools read."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from skimage.io import imsave

from napari_interactive_landmarks.data.phantom import make_phantom
from napari_interactive_landmarks.io.annotations import load_generic_annotations
from napari_interactive_landmarks.study import STORE_DIR, Study, StudyError, StudyReadOnlyError, StudyStoreError

MODEL = "phantom-spine"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.fixture
def films(tmp_path):
    root = tmp_path / "study"
    (root / "day2").mkdir(parents=True)
    for i in range(4):
        img, _ = make_phantom(np.random.default_rng(i), shape=(512, 256), num_vertebrae=6)
        imsave(root / ("day2" if i == 3 else "") / f"film{i}.png", (img * 255).astype(np.uint8), check_contrast=False)
    return root


def _index(root):
    return json.loads((root / STORE_DIR / "study.json").read_text())


def test_films_are_listed_opened_corrected_and_saved_at_once(films):
    with Study.open(films, model=MODEL) as st:
        assert [f.path for f in st.films] == ["day2/film3.png", "film0.png", "film1.png", "film2.png"]
        assert all(f.status == "not opened" for f in st.films)
        s = st.next()
        assert st.current == 0 and s.detected
        target = tuple(s.coords[5] + [7.0, -4.0])
        s.correct(5, target)
        # the drag is in the store before anything else happens: the film's file and the index
        saved = json.loads(st.annotation_path(0).read_text())
        assert saved["points"][5]["pinned"] and saved["points"][5]["row"] == pytest.approx(target[0])
        assert _index(films)["films"][0]["corrected"] == 1
        assert st.films[0].describe() == "in progress: 1 point corrected"
        st.mark_reviewed()
        assert _index(films)["films"][0]["status"] == "reviewed"
        st.next()
        assert st.current == 1 and _index(films)["current"] == 1


def test_a_killed_process_loses_nothing_and_the_study_resumes_where_it_was(films):
    """The process is killed (SIGKILL: no clean-up of any kind) right after a correction; reopening the study finds
    the correction, the reviewed film, and the film the user was on — and the lock of the dead process is gone."""
    script = textwrap.dedent(f"""
        import os, signal
        from napari_interactive_landmarks.study import Study
        st = Study.open({str(films)!r}, model={MODEL!r})
        s = st.next()
        s.correct(2, (100.0, 120.0))
        st.mark_reviewed()
        s = st.next()
        s.correct(7, (300.0, 90.5))
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with Study.open(films, model=MODEL) as st:
        assert not st.read_only  # the dead process's lock went with it
        assert [f.status for f in st.films[:3]] == ["reviewed", "in progress", "not opened"]
        assert st.resume_index() == 1
        s = st.open_film(st.resume_index())
        assert s.pinned[7] and tuple(s.coords[7]) == (300.0, 90.5)
        assert s.pinned.sum() == 1
        first = st.open_film(0)
        assert first.pinned[2] and tuple(first.coords[2]) == (100.0, 120.0)


def test_a_second_viewer_on_the_same_study_is_read_only_and_writes_nothing(films):
    with Study.open(films, model=MODEL) as first:
        s = first.next()
        s.correct(1, tuple(s.coords[1] + 5))
        before = (films / STORE_DIR / "study.json").read_bytes(), first.annotation_path(0).read_bytes()
        second = Study.open(films, model=MODEL)
        try:
            assert second.read_only and "read-only" in second.read_only_reason
            s2 = second.open_film(0)  # it can look
            assert s2.pinned[1]
            s2.correct(3, tuple(s2.coords[3] + 9))  # but what it changes is not saved
            with pytest.raises(StudyReadOnlyError):
                second.mark_reviewed()
        finally:
            second.close()
        assert (films / STORE_DIR / "study.json").read_bytes() == before[0]
        assert first.annotation_path(0).read_bytes() == before[1]


def test_a_corrupted_index_is_refused_never_overwritten_and_recovered_on_request(films):
    with Study.open(films, model=MODEL) as st:
        st.next().correct(0, (50.0, 60.0))
        st.mark_reviewed()
    index = films / STORE_DIR / "study.json"
    broken = index.read_text()[:-40]  # truncated, as by a hand edit gone wrong
    index.write_text(broken)
    with pytest.raises(StudyStoreError, match=r"cannot be read.*not changed.*last good copy"):
        Study.open(films, model=MODEL)
    assert index.read_text() == broken  # never overwritten
    with Study.open(films, model=MODEL, recover=True) as st:
        assert any("set aside" in n for n in st.notes)
        assert list((films / STORE_DIR).glob("study.json.corrupt-*"))[0].read_text() == broken
        assert st.films[0].corrected == 1  # the last good copy: after the correction
    # malformed but valid JSON: refused too
    index.write_text(json.dumps({"schema": "something else", "films": []}))
    with pytest.raises(StudyStoreError, match="malformed"):
        Study.open(films, model=MODEL)


def test_a_corrupted_film_file_is_refused_and_kept(films):
    with Study.open(films, model=MODEL) as st:
        st.next().correct(0, (50.0, 60.0))
        path = st.annotation_path(0)
    path.write_text('{"points": [')
    with Study.open(films, model=MODEL) as st:
        with pytest.raises(StudyStoreError, match="cannot be used.*nothing was overwritten"):
            st.open_film(0)
        assert path.read_text() == '{"points": ['


def test_unreadable_and_empty_files_are_listed_with_the_reason_and_the_rest_go_on(films):
    (films / "a-empty.png").write_bytes(b"")
    (films / "b-broken.png").write_bytes(b"this is not an image")
    with Study.open(films, model=MODEL) as st:
        names = [f.path for f in st.films]
        assert st.films[names.index("a-empty.png")].reason == "the file is empty (0 bytes)"
        opened = []
        while st.next() is not None:
            opened.append(st.films[st.current].path)
        assert "b-broken.png" not in opened and len(opened) == 4
        broken = st.films[names.index("b-broken.png")]
        assert broken.status == "skipped" and "not a readable image" in broken.reason
        assert str(films) not in broken.reason  # the film's name, not the absolute path, in the table
        assert st.status_counts() == {"not opened": 0, "in progress": 4, "reviewed": 0, "skipped": 2}


def test_exports_read_back_with_pycocotools_and_as_a_generic_training_set(films, tmp_path):
    coco_api = pytest.importorskip("pycocotools.coco", reason="pycocotools comes with the 'testing' extra")
    with Study.open(films, model=MODEL) as st:
        with pytest.raises(StudyError, match="no reviewed films"):
            st.export(tmp_path / "none")
        kept = {}
        for k in range(3):
            s = st.next()
            s.correct(k, tuple(s.coords[k] + [3.0, 4.0]))
            st.mark_reviewed()
            kept[st.films[st.current].path] = (s.coords.copy(), s.pinned.copy())
        st.next()  # opened, not reviewed: not exported
        schema = s.schema
        out = st.export(tmp_path / "export")
    coco = coco_api.COCO(str(out["coco"][0]))
    cat = coco.loadCats(coco.getCatIds())[0]
    assert cat["name"] == schema.name and cat["keypoints"] == list(schema.landmarks)
    assert cat["skeleton"] == [[a + 1, b + 1] for a, b in schema.edges]
    assert len(coco.getImgIds()) == 3
    for img in coco.loadImgs(coco.getImgIds()):
        name = Path(img["file_name"]).name
        coords, pinned = next(v for k, v in kept.items() if k.endswith(name))
        assert (tmp_path / "export" / img["file_name"]).resolve().is_file()
        assert (img["height"], img["width"]) == (512, 256)
        ann = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))[0]
        kp = np.asarray(ann["keypoints"], float).reshape(-1, 3)
        np.testing.assert_allclose(kp[:, [1, 0]], coords, atol=1e-3)  # x = col, y = row
        assert (kp[:, 2] == 2).all() and ann["num_keypoints"] == len(coords)
        assert ann["pinned"] == [int(p) for p in pinned]
    # the generic export is a training set as is
    generic = load_generic_annotations(out["generic"][0].parent, list(schema.landmarks))
    assert len(generic) == 3
    for a in generic:
        coords, _ = next(v for k, v in kept.items() if k.endswith(a.image_path.name))
        np.testing.assert_allclose(a.coords, coords, atol=1e-3)
    rows = out["csv"][0].read_text().splitlines()
    assert rows[0] == "image,index,label,row,col,pinned,status,expected_error_px" and len(rows) == 1 + 3 * len(coords)
    # an export does not overwrite unless asked
    with Study.open(films, model=MODEL) as st, pytest.raises(FileExistsError):
        st.export(tmp_path / "export")


def test_a_study_of_both_landmark_sets_gives_each_film_its_model(tmp_path):
    spine = sorted((SHARED / "aasce" / "boostnet_labeldata" / "data" / "training").glob("*.jpg"))[:1]
    ceph = sorted((SHARED / "isbi2015" / "RawImage" / "TrainingData").glob("*.jpg"))[:1]
    if not spine or not ceph:
        pytest.skip(f"needs the AASCE and ISBI films under {SHARED}")
    wide = tmp_path / "wide.png"
    imsave(wide, (np.random.default_rng(0).random((200, 900)) * 255).astype(np.uint8), check_contrast=False)
    with Study.open([spine[0], ceph[0], wide], store=tmp_path / "store") as st:
        while st.next() is not None:
            pass
        models = [f.model for f in st.films]
        assert models[:2] == ["aasce-spine", "isbi-ceph"]
        assert [f.landmark_set for f in st.films[:2]] == ["aasce-spine68", "isbi-ceph19"]
        assert st.films[2].status == "skipped"
        assert "200 × 900" in st.films[2].reason and "expects" in st.films[2].reason  # why no model fits
        assert str(tmp_path) not in st.films[2].reason


def test_the_study_command_lists_detects_and_exports(films, tmp_path, capsys):
    from napari_interactive_landmarks.cli import main

    (films / "broken.png").write_bytes(b"no image")
    assert main(["study", str(films), "--model", MODEL, "--detect", "--export", str(tmp_path / "out"),
                 "--include", "opened", "--format", "coco"]) == 0
    out = capsys.readouterr()
    assert "5 films: 0 reviewed, 4 in progress, 0 not opened, 1 skipped" in out.out
    assert "skipped: not a readable image" in out.out and "coco:" in out.out
    assert len(json.loads((tmp_path / "out" / "phantom-spine24.coco.json").read_text())["images"]) == 4
    # held by another process: refused, nothing written
    with Study.open(films, model=MODEL):
        assert main(["study", str(films), "--model", MODEL, "--export", str(tmp_path / "again")]) == 2
    assert "read-only" in capsys.readouterr().err and not (tmp_path / "again").exists()


def test_the_next_film_is_detected_in_the_background_on_its_own_predictor(films):
    """Next opens the film after the current one from a background detection, made on a predictor instance of its
    own (a predictor is not shared between threads); the session it hands over answers corrections with the
    foreground's instance."""
    with Study.open(films, model=MODEL) as st:
        first = st.next()
        assert set(st._prefetched) == {1}
        st._prefetched[1].result(timeout=120)  # done while the user works on film 0
        background = st._background_predictors[MODEL]
        assert background is not first.predictor
        second = st.next()
        assert st.current == 1 and second.detected
        assert second.predictor is first.predictor is st._predictors[MODEL]
        second.correct(0, tuple(second.coords[0] + 5))
        assert json.loads(st.annotation_path(1).read_text())["points"][0]["pinned"]


def test_a_drag_made_while_the_next_film_loads_is_saved_to_its_own_film(films):
    """The film on screen stays saved while the next one is detected (a drag made meanwhile is not lost), and a late
    change of the film left behind goes to that film's file, never to the new film's."""
    import threading
    import time as _time

    with Study.open(films, model=MODEL) as st:
        first = st.next()
        real = st._detect

        def slow(i, background=False):
            _time.sleep(1.0)
            return real(i, background)

        st._detect = slow
        st._prefetched.clear()
        opening = threading.Thread(target=st.open_film, args=(1,))
        opening.start()
        _time.sleep(0.2)
        first.correct(4, (120.0, 80.0))  # while film 1 loads
        opening.join(timeout=120)
        assert st.current == 1
        saved = json.loads(st.annotation_path(0).read_text())["points"][4]
        assert saved["pinned"] and (saved["row"], saved["col"]) == (120.0, 80.0)
        first.correct(5, (130.0, 90.0))  # late, after the switch: still film 0's
        assert json.loads(st.annotation_path(0).read_text())["points"][5]["pinned"]
        assert not any(p["pinned"] for p in json.loads(st.annotation_path(1).read_text())["points"])
