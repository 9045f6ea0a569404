"""Landmarks as a DICOM Comprehensive SR (TID 1500) referencing the film (issue 37 item 1): written, validated by
dciodvfy, read by a second reader (pydicom's content tree), and loaded back with the same points and pinned flags."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from napari_interactive_landmarks.data.phantom import make_phantom
from napari_interactive_landmarks.inference import LandmarkSession, Predictor
from napari_interactive_landmarks.inference.session import SessionError
from napari_interactive_landmarks.io.images import read_image

from .test_io import _write_dicom

pytest.importorskip("highdicom", reason="highdicom comes with the 'all' and 'testing' extras")
MODEL = "phantom-spine"


@pytest.fixture
def dicom_film(tmp_path):
    img, _ = make_phantom(np.random.default_rng(3), shape=(512, 256), num_vertebrae=6)
    path = _write_dicom(tmp_path / "film.dcm", (img * 4000).astype(np.uint16), imager_spacing=(0.15, 0.15))
    ds = pydicom.dcmread(path)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName = "TEST-1", "Phantom^Film"
    ds.save_as(path)
    return path


def _session(path):
    film = read_image(path)
    s = LandmarkSession(Predictor.from_name(MODEL), film.array, spacing=film.spacing, image_path=path)
    s.detect()
    return s


def test_a_structured_report_round_trips_and_validates(dicom_film, tmp_path):
    s = _session(dicom_film)
    s.correct(5, tuple(s.coords[5] + [11.3, -7.9]))
    out = s.save(tmp_path / "film.sr.dcm")
    sr = pydicom.dcmread(out)
    assert sr.Modality == "SR" and sr.StudyInstanceUID == pydicom.dcmread(dicom_film).StudyInstanceUID
    assert "ImagerPixelSpacing" in sr.SeriesDescription  # which spacing the lengths rest on
    # a second reader: the content tree holds one measurement group per landmark, each a POINT on the film
    report = sr.ContentSequence[-1]
    groups = [item for item in report.ContentSequence if item.ValueType == "CONTAINER"]
    assert len(groups) >= s.num_landmarks
    names = {str(it.TextValue) for g in groups for it in g.ContentSequence
             if it.ValueType == "TEXT" and it.ConceptNameCodeSequence[0].CodeMeaning == "Tracking Identifier"}
    assert set(s.schema.landmarks) <= names
    # the same file back into a new session on the same film: the points and who placed them
    again = _session(dicom_film)
    again.load(out)
    np.testing.assert_allclose(again.coords, s.coords, atol=0.01)
    assert np.array_equal(again.pinned, s.pinned) and again.pinned[5]
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian's dicom3tools) is not installed: the report was not validated")
    checked = subprocess.run(["dciodvfy", str(out)], capture_output=True, text=True)
    errors = [line for line in (checked.stdout + checked.stderr).splitlines() if line.startswith("Error")]
    assert errors == []


def test_a_report_is_refused_for_a_film_that_is_not_dicom(tmp_path):
    from skimage.io import imsave

    img, _ = make_phantom(np.random.default_rng(4), shape=(512, 256), num_vertebrae=6)
    imsave(tmp_path / "film.png", (img * 255).astype(np.uint8), check_contrast=False)
    s = _session(tmp_path / "film.png")
    with pytest.raises(SessionError, match="not a DICOM file.*json or .csv"):
        s.save(tmp_path / "film.sr.dcm")
    assert not (tmp_path / "film.sr.dcm").exists()


def test_a_report_on_another_film_is_refused(dicom_film, tmp_path):
    s = _session(dicom_film)
    out = s.save(tmp_path / "a.sr.dcm")
    other = tmp_path / "other.dcm"
    shutil.copy(dicom_film, other)
    ds = pydicom.dcmread(other)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(other)
    t = _session(other)
    before = t.coords.copy()
    with pytest.raises(SessionError, match="another film"):
        t.load(out)
    assert np.array_equal(t.coords, before)


def test_predict_writes_a_report_for_a_dicom_film_and_refuses_a_png(dicom_film, tmp_path, capsys):
    from skimage.io import imsave

    from napari_interactive_landmarks.cli import main

    png = tmp_path / "other.png"
    img, _ = make_phantom(np.random.default_rng(5), shape=(512, 256), num_vertebrae=6)
    imsave(png, (img * 255).astype(np.uint8), check_contrast=False)
    rc = main(["predict", str(dicom_film), str(png), "--model", MODEL, "--format", "sr", "--out", str(tmp_path / "o"),
               "--no-fit-check"])
    assert rc == 1  # the PNG failed, in one line; the DICOM film got its report
    assert (tmp_path / "o" / "film.landmarks.sr.dcm").is_file() and not (tmp_path / "o" / "other.landmarks.sr.dcm").exists()
    assert "not a DICOM file" in capsys.readouterr().err
