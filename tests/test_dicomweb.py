"""Films from a PACS and structured reports back over DICOMweb (issue 37 items 2-3), against a real Orthanc with its
DICOMweb plugin, started on free ports with a temporary storage folder and stopped after."""

from __future__ import annotations

import time

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from napari_interactive_landmarks.cli import main
from napari_interactive_landmarks.data.phantom import make_phantom

from ._orthanc import PASSWORD, USER, free_port, missing, running_orthanc
from .test_io import _write_dicom

pytest.importorskip("dicomweb_client", reason="dicomweb-client comes with the 'all' and 'testing' extras")
pytest.importorskip("highdicom", reason="highdicom comes with the 'all' and 'testing' extras")
MODEL = "phantom-spine"


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    why = missing()
    if why:
        pytest.skip(why)
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


@pytest.fixture
def credentials(monkeypatch):
    monkeypatch.setenv("NAPARI_LANDMARKS_DICOMWEB_USER", USER)
    monkeypatch.setenv("NAPARI_LANDMARKS_DICOMWEB_PASSWORD", PASSWORD)


def _upload_film(orthanc, tmp_path, seed=0):
    import requests

    img, _ = make_phantom(np.random.default_rng(seed), shape=(512, 256), num_vertebrae=6)
    path = _write_dicom(tmp_path / f"film{seed}.dcm", (img * 4000).astype(np.uint16), pixel_spacing=(0.2, 0.2))
    ds = pydicom.dcmread(path)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.StudyDate, ds.StudyTime = f"P{seed}", "Phantom^Film", "20261207", "120000"
    ds.save_as(path)
    r = requests.post(f"{orthanc['url']}/instances", data=path.read_bytes(), auth=orthanc["auth"], timeout=30)
    r.raise_for_status()
    return ds


def test_predict_fetches_a_study_and_stores_its_report_back(orthanc, credentials, tmp_path, capsys):
    from dicomweb_client.api import DICOMwebClient
    from requests import Session

    from napari_interactive_landmarks.io.dicom_sr import read_landmarks_sr
    from napari_interactive_landmarks.schemas import load_schema

    film = _upload_film(orthanc, tmp_path)
    t0 = time.perf_counter()
    rc = main(["predict", "--dicomweb", orthanc["dicomweb"], "--study", film.StudyInstanceUID, "--store-sr",
               "--model", MODEL, "--no-fit-check", "--out", str(tmp_path / "out")])
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert rc == 0, err
    assert PASSWORD not in err and "stored 1 report(s)" in err
    local = next((tmp_path / "out").glob("*.sr.dcm"))
    # read back from the PACS: the study now holds the report, with the same points
    session = Session()
    session.auth = orthanc["auth"]
    client = DICOMwebClient(url=orthanc["dicomweb"], session=session)
    series = client.search_for_series(film.StudyInstanceUID, search_filters={"Modality": "SR"})
    assert len(series) == 1
    (sr,) = client.retrieve_series(film.StudyInstanceUID, series[0]["0020000E"]["Value"][0])
    sr.save_as(tmp_path / "from-pacs.dcm", enforce_file_format=True)
    labels = list(load_schema("phantom-spine24").landmarks)
    a, b = read_landmarks_sr(local, labels), read_landmarks_sr(tmp_path / "from-pacs.dcm", labels)
    np.testing.assert_allclose(a["coords"], b["coords"], atol=0.01)
    assert b["referenced_sop_instance_uid"] == str(film.SOPInstanceUID)
    print(f"fetch + predict + store of one study: {seconds:.2f} s")


def test_wrong_credentials_and_an_unreachable_pacs_are_one_line_without_the_password(orthanc, monkeypatch, tmp_path,
                                                                                      capsys):
    film = _upload_film(orthanc, tmp_path, seed=1)
    monkeypatch.setenv("NAPARI_LANDMARKS_DICOMWEB_USER", USER)
    monkeypatch.setenv("NAPARI_LANDMARKS_DICOMWEB_PASSWORD", "wrong-" + PASSWORD)
    assert main(["predict", "--dicomweb", orthanc["dicomweb"], "--study", film.StudyInstanceUID, "--model", MODEL]) == 2
    err = capsys.readouterr().err
    assert "401" in err and "credentials" in err and PASSWORD not in err and len(err.strip().splitlines()) == 1
    port = free_port()
    assert main(["predict", "--dicomweb", f"http://127.0.0.1:{port}/dicom-web", "--study", "1.2.3", "--model",
                 MODEL]) == 2
    assert "cannot be reached" in capsys.readouterr().err
    assert main(["predict", "--dicomweb", f"http://{USER}:{PASSWORD}@127.0.0.1:{port}/dicom-web", "--study", "1.2.3",
                 "--model", MODEL]) == 2
    err = capsys.readouterr().err
    assert "not in the URL" in err and PASSWORD not in err


def test_a_study_without_a_film_is_said_and_nothing_is_stored(orthanc, credentials, tmp_path, capsys):
    import requests

    film = _upload_film(orthanc, tmp_path, seed=2)
    # a study holding only a report: take the film's report, give it a study of its own
    assert main(["predict", str(tmp_path / "film2.dcm"), "--model", MODEL, "--no-fit-check", "--format", "sr",
                 "--out", str(tmp_path / "sr")]) == 0
    sr = pydicom.dcmread(next((tmp_path / "sr").glob("*.sr.dcm")))
    sr.StudyInstanceUID = generate_uid()
    sr.save_as(tmp_path / "lonely.dcm", enforce_file_format=True)
    requests.post(f"{orthanc['url']}/instances", data=(tmp_path / "lonely.dcm").read_bytes(), auth=orthanc["auth"],
                  timeout=30).raise_for_status()
    before = requests.get(f"{orthanc['url']}/instances", auth=orthanc["auth"], timeout=30).json()
    capsys.readouterr()
    assert main(["predict", "--dicomweb", orthanc["dicomweb"], "--study", sr.StudyInstanceUID, "--store-sr",
                 "--model", MODEL]) == 2
    err = capsys.readouterr().err
    assert "no image to detect landmarks on" in err and "a structured report, not a film" in err
    assert requests.get(f"{orthanc['url']}/instances", auth=orthanc["auth"], timeout=30).json() == before
    assert film.StudyInstanceUID != sr.StudyInstanceUID


def test_the_viewer_opens_a_series_from_the_pacs_and_sends_its_report_back(orthanc, credentials, tmp_path, qtbot,
                                                                          make_napari_viewer_proxy, monkeypatch):
    from dicomweb_client.api import DICOMwebClient
    from requests import Session

    from napari_interactive_landmarks.io.dicom_sr import read_landmarks_sr
    from napari_interactive_landmarks.napari import _widget as W
    from napari_interactive_landmarks.napari._demo import wait_until_idle
    from napari_interactive_landmarks.napari._widget import LandmarkWidget, simulate_drag

    monkeypatch.setattr(W, "show_warning", lambda msg: None)
    film = _upload_film(orthanc, tmp_path, seed=3)
    viewer = make_napari_viewer_proxy()
    w = LandmarkWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.pacs_search(orthanc["dicomweb"], patient_id="P3")
    qtbot.waitUntil(lambda: len(w.pacs_box.rows) == 1 and w.idle, timeout=60_000)
    assert w.pacs_box.rows[0]["study"] == film.StudyInstanceUID
    w.open_pacs_row(0)
    qtbot.waitUntil(lambda: w.image_combo.count() == 1 and w.idle, timeout=60_000)
    w.model_combo.setCurrentText(MODEL)
    w.detect()
    wait_until_idle(w, 120)
    assert w.session.spacing is not None  # the film's PixelSpacing came along
    simulate_drag(w.points_layer, w.layers.layer_point(2), (150.0, 120.0))
    wait_until_idle(w, 120)
    w.send_report_to_pacs()
    qtbot.waitUntil(lambda: w.pacs_sent is not None and w.idle, timeout=60_000)
    session = Session()
    session.auth = orthanc["auth"]
    client = DICOMwebClient(url=orthanc["dicomweb"], session=session)
    (series,) = client.search_for_series(film.StudyInstanceUID, search_filters={"Modality": "SR"})
    (sr,) = client.retrieve_series(film.StudyInstanceUID, series["0020000E"]["Value"][0])
    sr.save_as(tmp_path / "back.dcm", enforce_file_format=True)
    back = read_landmarks_sr(tmp_path / "back.dcm", list(w.session.schema.landmarks))
    assert back["pinned"][2] and np.allclose(back["coords"][2], (150.0, 120.0), atol=0.01)
    np.testing.assert_allclose(back["coords"], w.session.coords, atol=0.01)


def test_a_study_with_a_multi_frame_film_stores_nothing_and_says_which(orthanc, credentials, tmp_path, capsys):
    import requests

    film = _upload_film(orthanc, tmp_path, seed=4)
    frames = np.stack([np.asarray(pydicom.dcmread(tmp_path / "film4.dcm").pixel_array)] * 2)
    multi = _write_dicom(tmp_path / "multi.dcm", frames, frames=2, pixel_spacing=(0.2, 0.2))
    ds = pydicom.dcmread(multi)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = film.StudyInstanceUID, generate_uid()
    ds.PatientID, ds.PatientName, ds.StudyDate, ds.StudyTime = "P4", "Phantom^Film", "20261207", "120000"
    ds.save_as(multi)
    requests.post(f"{orthanc['url']}/instances", data=multi.read_bytes(), auth=orthanc["auth"],
                  timeout=30).raise_for_status()
    assert main(["predict", "--dicomweb", orthanc["dicomweb"], "--study", film.StudyInstanceUID, "--store-sr",
                 "--model", MODEL, "--no-fit-check", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{ds.SOPInstanceUID}.dcm: skipped:" in err and "holds 2 frames" in err  # the instance named, and why
    assert "1 film(s) failed; no report stored" in err
    from dicomweb_client.api import DICOMwebClient
    from requests import Session

    session = Session()
    session.auth = orthanc["auth"]
    client = DICOMwebClient(url=orthanc["dicomweb"], session=session)
    assert client.search_for_series(film.StudyInstanceUID, search_filters={"Modality": "SR"}) == []  # none half-stored
