"""Image reading / validation and landmark file formats (no napari, no Qt)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from napari_interactive_landmarks.io.images import (
    ImageData,
    ImageError,
    as_greyscale_2d,
    normalise_intensity,
    read_image,
    read_spacing,
)
from napari_interactive_landmarks.io.annotations import load_generic_annotations
from napari_interactive_landmarks.io.landmarks import (
    SCHEMA_ID,
    LandmarkFile,
    LandmarkFileError,
    MissingLandmarksWarning,
    read_landmarks_csv,
    read_landmarks_json,
    write_landmarks_csv,
    write_landmarks_json,
)

iio = pytest.importorskip("imageio.v3")
tifffile = pytest.importorskip("tifffile")


def ramp(h=80, w=96, dtype=np.uint8, hi=255):
    a = np.linspace(0, hi, h * w).reshape(h, w)
    return np.rint(a).astype(dtype)


# ---------------------------------------------------------------- raster files


def test_png_8bit(tmp_path):
    a = ramp()
    f = tmp_path / "a.png"
    iio.imwrite(f, a)
    img = read_image(f)
    assert isinstance(img, ImageData)
    assert img.array.dtype == np.float32 and img.array.shape == (80, 96)
    np.testing.assert_array_equal(img.array, a)
    assert img.spacing is None and img.path == str(f)
    assert img.metadata["original_dtype"] == "uint8" and img.metadata["was_rgb"] is False


def test_png_16bit_keeps_range(tmp_path):
    a = ramp(dtype=np.uint16, hi=65535)
    f = tmp_path / "a16.png"
    iio.imwrite(f, a)
    img = read_image(f)
    assert img.array.max() == 65535
    np.testing.assert_array_equal(img.array, a.astype(np.float32))
    assert img.metadata["bit_depth"] == 16


def test_tiff_16bit_and_miniswhite(tmp_path):
    a = ramp(dtype=np.uint16, hi=4095)
    f = tmp_path / "a.tif"
    tifffile.imwrite(f, a)
    np.testing.assert_array_equal(read_image(f).array, a)
    g = tmp_path / "w.tiff"
    tifffile.imwrite(g, a, photometric="miniswhite")
    img = read_image(g)
    assert img.metadata["inverted"] is True
    np.testing.assert_array_equal(img.array, 4095 - a.astype(np.float32))


def test_rgb_jpeg_and_equal_channel_png(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (70, 80, 3), dtype=np.uint8)
    f = tmp_path / "c.jpg"
    iio.imwrite(f, rgb)
    img = read_image(f)
    assert img.array.shape == (70, 80) and img.metadata["was_rgb"]
    assert not img.metadata["rgb_channels_equal"]
    grey = ramp(70, 80)
    g = tmp_path / "grey_rgb.png"
    iio.imwrite(g, np.stack([grey] * 3, -1))
    img = read_image(g)
    assert img.metadata["rgb_channels_equal"]
    np.testing.assert_array_equal(img.array, grey)


def test_rgba_and_bmp(tmp_path):
    grey = ramp(70, 80)
    rgba = np.dstack([grey, grey, grey, np.full_like(grey, 128)])
    f = tmp_path / "a.png"
    iio.imwrite(f, rgba)
    img = read_image(f)
    np.testing.assert_array_equal(img.array, grey)
    assert img.metadata["had_alpha"]
    b = tmp_path / "a.bmp"
    iio.imwrite(b, grey)
    np.testing.assert_array_equal(read_image(b).array, grey)


def test_text_file_named_png(tmp_path):
    f = tmp_path / "notes.png"
    f.write_text("this is not an image")
    with pytest.raises(ImageError, match="notes.png.*not a readable image"):
        read_image(f)


def test_truncated_png(tmp_path):
    f = tmp_path / "cut.png"
    iio.imwrite(f, ramp())
    f.write_bytes(f.read_bytes()[:60])
    with pytest.raises(ImageError, match="cut.png"):
        read_image(f)


def test_missing_empty_and_folder(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        read_image(tmp_path / "empty.png")
    with pytest.raises(ImageError, match="folder"):
        read_image(tmp_path)


def test_three_frame_tiff(tmp_path):
    f = tmp_path / "stack.tif"
    tifffile.imwrite(f, np.stack([ramp()] * 3), photometric="minisblack")
    with pytest.raises(ImageError, match=r"only 2-D radiographs.*3 frames"):
        read_image(f)


def test_singleton_frame_tiff_is_squeezed(tmp_path):
    f = tmp_path / "one.tif"
    tifffile.imwrite(f, ramp()[None], photometric="minisblack")
    assert read_image(f).array.shape == (80, 96)


def test_validate_flag(tmp_path):
    f = tmp_path / "small.png"
    iio.imwrite(f, ramp(40, 30))
    with pytest.raises(ImageError, match="40 × 30 px"):
        read_image(f)
    assert read_image(f, validate=False).array.shape == (40, 30)


# ---------------------------------------------------------------- DICOM


def _write_dicom(path, pixels, *, photometric="MONOCHROME2", slope=None, intercept=None,
                 pixel_spacing=None, imager_spacing=None, frames=None, preamble=True):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128 if preamble else None)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    if frames:
        ds.NumberOfFrames = frames
        ds.Rows, ds.Columns = pixels.shape[1:]
    else:
        ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    if slope is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
    if pixel_spacing:
        ds.PixelSpacing = list(pixel_spacing)
    if imager_spacing:
        ds.ImagerPixelSpacing = list(imager_spacing)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=preamble)
    return path


def test_dicom_monochrome1_spacing_rescale(tmp_path):
    px = ramp(80, 96, np.uint16, 4000)
    f = _write_dicom(tmp_path / "x.dcm", px, photometric="MONOCHROME1", slope=2, intercept=-100,
                     imager_spacing=(0.15, 0.16))
    img = read_image(f)
    expected = px.astype(np.float64) * 2 - 100
    expected = expected.max() + expected.min() - expected
    np.testing.assert_allclose(img.array, expected)
    assert img.spacing == pytest.approx((0.15, 0.16))
    assert img.metadata["photometric"] == "MONOCHROME1" and img.metadata["inverted"]
    assert img.metadata["spacing_source"] == "ImagerPixelSpacing"
    assert img.metadata["bit_depth"] == 16
    assert read_spacing(f) == pytest.approx((0.15, 0.16))


def test_dicom_without_extension_prefers_pixel_spacing(tmp_path):
    px = ramp(80, 96, np.uint16, 65535)
    f = _write_dicom(tmp_path / "IM0001", px, pixel_spacing=(0.1, 0.1), imager_spacing=(0.2, 0.2))
    img = read_image(f)
    np.testing.assert_array_equal(img.array, px)  # 16-bit values kept
    assert img.spacing == pytest.approx((0.1, 0.1))
    assert img.metadata["spacing_source"] == "PixelSpacing"
    assert read_spacing(tmp_path / "nothing.png") is None


def test_dicom_multiframe_refused(tmp_path):
    px = np.stack([ramp(80, 96, np.uint16)] * 4)
    f = _write_dicom(tmp_path / "multi.dcm", px, frames=4)
    with pytest.raises(ImageError, match=r"multi.dcm.*only 2-D radiographs.*4 frames"):
        read_image(f)


def test_corrupt_dicom(tmp_path):
    f = tmp_path / "bad.dcm"
    f.write_bytes(b"\0" * 128 + b"DICM" + b"\x13\x37" * 10)
    with pytest.raises(ImageError, match="bad.dcm"):
        read_image(f)


# ---------------------------------------------------------------- arrays


def test_as_greyscale_shapes_and_dtypes():
    g = ramp()
    for a in (g, g[..., None], g[None], np.dstack([g] * 3), np.dstack([g] * 3 + [g])):
        out = as_greyscale_2d(a)
        assert out.dtype == np.float32 and out.shape == (80, 96)
        np.testing.assert_array_equal(out, g)
    b = as_greyscale_2d(g > 100)
    assert b.dtype == np.float32 and set(np.unique(b)) == {0.0, 1.0}
    assert as_greyscale_2d(g.astype(np.int32) - 1000).min() == -1000
    rgb = np.dstack([g, np.zeros_like(g), np.zeros_like(g)])
    np.testing.assert_allclose(as_greyscale_2d(rgb), np.rint(g * 0.299), atol=0.5)


def test_as_greyscale_refusals():
    g = ramp().astype(np.float64)
    bad = g.copy()
    bad[0, :3] = np.nan
    bad[1, 0] = np.inf
    with pytest.raises(ImageError, match=r"4 of .* not finite \(3 NaN, 1 infinite\)"):
        as_greyscale_2d(bad, name="scan")
    with pytest.raises(ImageError, match="empty"):
        as_greyscale_2d(np.zeros((0, 5)))
    with pytest.raises(ImageError, match=r"stack of 5 frames"):
        as_greyscale_2d(np.zeros((5, 80, 96)))
    with pytest.raises(ImageError, match="channels-first"):
        as_greyscale_2d(np.zeros((3, 80, 96)))
    with pytest.raises(ImageError, match="image is 40 × 30 px; at least 64 px on each side is needed"):
        as_greyscale_2d(np.arange(1200).reshape(40, 30))
    with pytest.raises(ImageError, match=r"10001 × 70 px.*Downsample"):
        as_greyscale_2d(np.zeros((10001, 70), np.uint8))
    # a huge colour image is refused before any conversion allocates memory
    huge = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (20000, 20000, 3))
    with pytest.raises(ImageError, match="at most 10000"):
        as_greyscale_2d(huge)
    with pytest.raises(ImageError, match="constant.*7"):
        as_greyscale_2d(np.full((80, 80), 7, np.uint16))
    with pytest.raises(ImageError, match="not supported"):
        as_greyscale_2d(np.zeros((80, 80), complex))


def test_normalise_intensity_comparable_across_bit_depths():
    g8 = ramp()
    g16 = g8.astype(np.uint16) * 257
    n8, n16 = normalise_intensity(g8), normalise_intensity(g16)
    assert n8.dtype == np.float32 and n8.min() == 0 and n8.max() == 1
    np.testing.assert_allclose(n8, n16, atol=1e-6)
    spiky = g8.astype(np.float32)
    spiky[0, 0] = 1e6  # one hot pixel must not squash the contrast
    assert np.median(normalise_intensity(spiky)) > 0.4
    assert not normalise_intensity(np.full((70, 70), 3.0)).any()
    with pytest.raises(ImageError):
        normalise_intensity(np.array([[np.nan, 1.0]]))


# ---------------------------------------------------------------- landmark files

LABELS = ["sella", "nasion", "orbitale"]


def _example(**kw):
    coords = np.array([[10.5, 20.25], [np.nan, np.nan], [30.0, 40.0]])
    return dict(coords=coords, labels=LABELS, pinned=[True, False, False], scores=[0.9, None, 0.5], **kw)


def test_json_round_trip(tmp_path):
    f = tmp_path / "a.json"
    write_landmarks_json(f, landmark_set="isbi-ceph19", model="m1", image_path="img.png",
                         image_shape=(100, 120), spacing=(0.1, 0.1),
                         measurements={"SNA": np.float64(82.5)}, **_example())
    d = json.loads(f.read_text())
    assert d["schema"] == SCHEMA_ID and d["image"]["shape"] == [100, 120]
    assert d["points"][1] == {"index": 1, "label": "nasion", "row": None, "col": None,
                              "pinned": False, "status": "missing", "score": None}
    assert d["points"][0]["status"] == "corrected" and d["points"][2]["status"] == "predicted"
    lf = read_landmarks_json(f)
    assert lf.labels == LABELS and lf.landmark_set == "isbi-ceph19" and lf.model == "m1"
    np.testing.assert_array_equal(lf.coords, _example()["coords"])
    assert lf.pinned.tolist() == [True, False, False]
    assert lf.status == ["corrected", "missing", "predicted"]
    np.testing.assert_array_equal(lf.scores, [0.9, np.nan, 0.5])
    assert lf.spacing == (0.1, 0.1) and lf.image_shape == (100, 120) and lf.image_path == "img.png"
    assert lf.measurements == {"SNA": 82.5}
    # a LandmarkFile writes back identically
    g = tmp_path / "b.json"
    write_landmarks_json(g, lf)
    assert json.loads(g.read_text()) == d


def test_json_overwrite_refused_and_atomic(tmp_path):
    f = tmp_path / "a.json"
    write_landmarks_json(f, **_example())
    before = f.read_text()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_landmarks_json(f, **_example())
    assert f.read_text() == before
    write_landmarks_json(f, np.zeros((3, 2)), LABELS, overwrite=True)
    assert read_landmarks_json(f).coords.sum() == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]  # no temp files left behind


def test_json_with_names_and_errors(tmp_path):
    f = tmp_path / "a.json"
    write_landmarks_json(f, np.array([[1.0, 2.0], [3.0, 4.0]]), ["orbitale", "sella"])
    lf = read_landmarks_json(f, landmark_names=LABELS)
    np.testing.assert_array_equal(lf.coords, [[3, 4], [np.nan, np.nan], [1, 2]])
    assert lf.status == ["predicted", "missing", "predicted"]
    with pytest.raises(LandmarkFileError, match=r"unknown landmark labels \['orbitale'\]"):
        read_landmarks_json(f, landmark_names=["sella", "nasion"])

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(LandmarkFileError, match="bad.json: not valid JSON"):
        read_landmarks_json(bad)
    d = json.loads(f.read_text())
    d["schema"] = "something/else"
    bad.write_text(json.dumps(d))
    with pytest.raises(LandmarkFileError, match="'schema'"):
        read_landmarks_json(bad)
    d["schema"] = SCHEMA_ID
    d["points"][0]["row"] = "abc"
    bad.write_text(json.dumps(d))
    with pytest.raises(LandmarkFileError, match=r"points\[0\].*row must be a number"):
        read_landmarks_json(bad)
    d["points"][0]["row"] = None
    bad.write_text(json.dumps(d))
    with pytest.raises(LandmarkFileError, match="status is 'predicted'"):
        read_landmarks_json(bad)
    with pytest.raises(ValueError, match="status 'missing' but a position"):
        LandmarkFile(labels=["a"], coords=[[1.0, 2.0]], status=["missing"])


def test_csv_round_trip(tmp_path):
    f = tmp_path / "a.csv"
    write_landmarks_csv(f, **_example())
    lines = f.read_text().splitlines()
    assert lines[0] == "index,label,row,col,pinned,status,score"
    assert lines[2] == "1,nasion,,,false,missing,"
    lf = read_landmarks_csv(f)
    assert lf.labels == LABELS and lf.status == ["corrected", "missing", "predicted"]
    np.testing.assert_array_equal(lf.coords, _example()["coords"])
    np.testing.assert_array_equal(lf.scores, [0.9, np.nan, 0.5])
    with pytest.raises(FileExistsError):
        write_landmarks_csv(f, **_example())
    (tmp_path / "b.csv").write_text("label,row\nsella,1\n")
    with pytest.raises(LandmarkFileError, match=r"missing column\(s\) \['col'\]"):
        read_landmarks_csv(tmp_path / "b.csv")


# ---------------------------------------------------------------- generic datasets


def _two_images(root):
    for name in ("p1.png", "p2.png"):
        iio.imwrite(root / name, ramp())


def test_generic_csv_with_missing_landmark(tmp_path):
    _two_images(tmp_path)
    (tmp_path / "landmarks.csv").write_text(
        "image,label,row,col\n"
        "p1.png,sella,1,2\np1.png,nasion,3,4\np1.png,orbitale,5,6\n"
        "p2.png,sella,7,8\np2.png,orbitale,9,10\n"
    )
    with pytest.warns(MissingLandmarksWarning, match=r"p2.png: nasion"):
        ann = load_generic_annotations(tmp_path, LABELS)
    assert [a.image_path.name for a in ann] == ["p1.png", "p2.png"]
    np.testing.assert_array_equal(ann[0].coords, [[1, 2], [3, 4], [5, 6]])
    np.testing.assert_array_equal(ann[1].coords, [[7, 8], [np.nan, np.nan], [9, 10]])
    assert ann[0].coords.dtype == np.float64 and ann[0].spacing is None
    img, coords, spacing = ann[0]  # plain tuple unpacking works


def test_generic_csv_unknown_label_and_missing_image(tmp_path):
    _two_images(tmp_path)
    csv = tmp_path / "landmarks.csv"
    csv.write_text("image,label,row,col\np1.png,sella,1,2\np1.png,menton,3,4\np2.png,chin,1,1\n")
    with pytest.raises(LandmarkFileError, match=r"unknown landmark labels \['chin', 'menton'\]"):
        load_generic_annotations(tmp_path, LABELS)
    csv.write_text("image,label,row,col\np3.png,sella,1,2\n")
    with pytest.raises(LandmarkFileError, match="image 'p3.png' not found"):
        load_generic_annotations(tmp_path, LABELS)


def test_generic_json_sidecars_with_dicom_spacing(tmp_path):
    iio.imwrite(tmp_path / "p1.png", ramp())
    _write_dicom(tmp_path / "p2.dcm", ramp(80, 96, np.uint16), pixel_spacing=(0.2, 0.25))
    write_landmarks_json(tmp_path / "p1.json", np.ones((3, 2)), LABELS, spacing=(0.1, 0.1))
    write_landmarks_json(tmp_path / "p2.json", np.ones((2, 2)), ["sella", "orbitale"])
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ann = load_generic_annotations(tmp_path, LABELS)
    assert any(issubclass(w.category, MissingLandmarksWarning) and "p2.dcm: nasion" in str(w.message)
               for w in rec)
    assert ann[0].spacing == (0.1, 0.1)
    assert ann[1].spacing == pytest.approx((0.2, 0.25))
    assert np.isnan(ann[1].coords[1]).all()
    (tmp_path / "landmarks.csv").write_text("image,label,row,col\n")
    with pytest.raises(LandmarkFileError, match="both"):
        load_generic_annotations(tmp_path, LABELS)


def test_generic_no_annotations(tmp_path):
    _two_images(tmp_path)
    with pytest.raises(LandmarkFileError, match="no annotations found"):
        load_generic_annotations(tmp_path, LABELS)
