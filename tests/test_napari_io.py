"""napari plugin I/O: reader, writer, sample data, layer conventions and the npe2 manifest."""

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")

from napari_interactive_landmarks.io.images import ImageError  # noqa: E402
from napari_interactive_landmarks.io.landmarks import write_landmarks_json  # noqa: E402
from napari_interactive_landmarks.napari._layers import (  # noqa: E402
    META_KEY,
    PINNED_COLOR,
    PREDICTED_COLOR,
    LandmarkLayerError,
    layer_to_landmarks,
    points_layer_kwargs,
    skeleton_shapes,
)
from napari_interactive_landmarks.napari._reader import get_reader  # noqa: E402
from napari_interactive_landmarks.napari._sample_data import phantom_spine  # noqa: E402
from napari_interactive_landmarks.napari._writer import write_landmarks  # noqa: E402

PLUGIN = "napari-interactive-landmarks"
MANIFEST = Path(__import__("napari_interactive_landmarks.napari", fromlist=["x"]).__file__).with_name("napari.yaml")

LABELS = ["sella", "nasion", "orbitale", "porion", "menton"]
COORDS = np.array([[10.25, 20.5], [30.0, 40.125], [np.nan, np.nan], [50.5, 60.75], [70.0, 80.333333]])
PINNED = np.array([True, False, False, True, False])
SCORES = np.array([np.nan, 0.93, np.nan, 0.5, 0.25])


def _ramp(h, w, dtype=np.uint8):
    return (np.add.outer(np.arange(h), np.arange(w)) % 200).astype(dtype)


def _write_dicom(path, pixels, pixel_spacing):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelSpacing = list(pixel_spacing)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _read(path):
    reader = get_reader(str(path))
    assert reader is not None, f"no reader for {path}"
    layers = reader(str(path))
    assert len(layers) == 1
    return layers[0]


# ------------------------------------------------------------------------------------------- reader


def test_reader_declines_unrelated_files(tmp_path):
    plain = tmp_path / "config.json"
    plain.write_text(json.dumps({"schema": "something-else", "points": []}))
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    table = tmp_path / "table.csv"
    table.write_text("a,b\n1,2\n")
    assert get_reader(str(plain)) is None
    assert get_reader(str(txt)) is None
    assert get_reader(str(table)) is None
    assert get_reader(str(tmp_path)) is None
    assert get_reader([str(plain), str(txt)]) is None


def test_reader_png_and_dicom_with_spacing(tmp_path):
    import imageio.v3 as iio

    png = tmp_path / "xray.png"
    iio.imwrite(png, _ramp(80, 96))
    data, kw, kind = _read(png)
    assert kind == "image" and data.shape == (80, 96) and data.dtype == np.float32
    assert kw["name"] == "xray" and kw["colormap"] == "gray" and tuple(kw["scale"]) == (1.0, 1.0)
    assert kw["metadata"][META_KEY]["spacing_mm"] is None
    assert kw["metadata"][META_KEY]["image_path"] == str(png)
    # a list of one path is accepted too
    assert get_reader([str(png)]) is not None

    dcm = _write_dicom(tmp_path / "scan.dcm", _ramp(80, 96, np.uint16), pixel_spacing=(0.2, 0.25))
    data, kw, kind = _read(dcm)
    assert kind == "image" and data.shape == (80, 96)
    assert tuple(kw["scale"]) == pytest.approx((0.2, 0.25))
    assert kw["metadata"][META_KEY]["spacing_mm"] == pytest.approx([0.2, 0.25])


def test_reader_corrupt_image_raises_clear_error(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png at all")
    reader = get_reader(str(bad))
    with pytest.raises(ImageError, match="broken.png"):
        reader(str(bad))


def test_reader_builtin_schema_fills_all_landmarks(tmp_path):
    f = tmp_path / "001.json"
    write_landmarks_json(f, [[5.0, 6.0], [7.0, 8.0]], ["nasion", "sella"], landmark_set="isbi-ceph19",
                         pinned=[True, False])
    data, kw, kind = _read(f)
    assert kind == "points"
    lm = layer_to_landmarks(data, kw["features"], kw["metadata"])
    assert len(lm["labels"]) == 19 and lm["labels"][:2] == ["sella", "nasion"]
    np.testing.assert_allclose(lm["coords"][:2], [[7.0, 8.0], [5.0, 6.0]])
    assert np.isnan(lm["coords"][2:]).all()
    assert lm["pinned"][:2].tolist() == [False, True]


# ------------------------------------------------------------------------------------------- layers


def test_points_layer_kwargs_conventions():
    data, kw = points_layer_kwargs(COORDS, LABELS, pinned=PINNED, scores=SCORES, landmark_set="demo",
                                   image_shape=(1200, 960), spacing=(0.1, 0.2))
    assert data.shape == (4, 2)  # the missing landmark is not a point
    f = kw["features"]
    assert list(f.columns) == ["index", "label", "pinned", "score"]
    assert f["index"].tolist() == [0, 1, 3, 4] and f["label"].tolist() == ["sella", "nasion", "porion", "menton"]
    # 1200 px / 120 = 10 px; corrected (pinned) points are drawn 1.6x larger
    np.testing.assert_allclose(kw["size"], np.where(f["pinned"], 16.0, 10.0))
    assert tuple(kw["scale"]) == (0.1, 0.2)
    meta = kw["metadata"][META_KEY]
    assert meta["landmarks"] == LABELS and meta["spacing_mm"] == [0.1, 0.2] and meta["image_shape"] == [1200, 960]
    lm = layer_to_landmarks(data, f, kw["metadata"])
    np.testing.assert_allclose(lm["coords"], COORDS)
    assert lm["pinned"].tolist() == PINNED.tolist()
    np.testing.assert_allclose(lm["scores"], SCORES)
    assert lm["spacing"] == (0.1, 0.2) and lm["landmark_set"] == "demo"


def test_layer_to_landmarks_refuses_bad_labels():
    data, kw = points_layer_kwargs(COORDS, LABELS)
    f = kw["features"].copy()
    f.loc[1, "label"] = "bogus"
    with pytest.raises(LandmarkLayerError, match=r"'bogus'.*Rename them"):
        layer_to_landmarks(data, f, kw["metadata"])
    f = kw["features"].copy()
    f.loc[1, "label"] = "sella"
    with pytest.raises(LandmarkLayerError, match=r"'sella' 2× .*Delete the extra"):
        layer_to_landmarks(data, f, kw["metadata"])
    # a freshly clicked point (feature defaults: index -1, empty label) must be labelled first
    f = kw["features"].copy()
    f.loc[1, ["label", "index"]] = ["", -1]
    with pytest.raises(LandmarkLayerError, match="without a landmark label"):
        layer_to_landmarks(data, f, kw["metadata"])
    with pytest.raises(LandmarkLayerError, match="2-D"):
        layer_to_landmarks(np.zeros((2, 3)), None, {})


def test_skeleton_skips_missing():
    lines = skeleton_shapes(COORDS, [(0, 1), (1, 2), (3, 4)])
    assert len(lines) == 2 and all(ln.shape == (2, 2) for ln in lines)
    np.testing.assert_allclose(lines[1], COORDS[[3, 4]])


# ------------------------------------------------------------------------------------------- round trip


def test_round_trip_in_viewer(make_napari_viewer_proxy, tmp_path):
    viewer = make_napari_viewer_proxy()
    data, kw = points_layer_kwargs(COORDS, LABELS, pinned=PINNED, scores=SCORES, landmark_set="demo",
                                   model="m1", image_path="001.png", image_shape=(100, 120))
    layer = viewer.add_points(data, **kw)
    colours = np.asarray(layer.face_color)[:, :3]
    from napari.utils.colormaps.standardize_color import transform_color

    orange, cyan = transform_color(PINNED_COLOR)[0][:3], transform_color(PREDICTED_COLOR)[0][:3]
    np.testing.assert_allclose(colours[0], orange)  # sella pinned
    np.testing.assert_allclose(colours[1], cyan)  # nasion predicted
    np.testing.assert_allclose(colours[2], orange)  # porion pinned

    ldata, state, ltype = layer.as_layer_data_tuple()
    assert ltype == "points"
    out_json = write_landmarks(str(tmp_path / "a.json"), ldata, state)
    out_csv = write_landmarks(str(tmp_path / "a.csv"), ldata, state)
    assert out_json == [str(tmp_path / "a.json")] and out_csv == [str(tmp_path / "a.csv")]
    doc = json.loads((tmp_path / "a.json").read_text())
    assert [p["status"] for p in doc["points"]] == ["corrected", "predicted", "missing", "corrected", "predicted"]
    assert doc["landmark_set"] == "demo" and doc["model"] == "m1" and doc["image"]["shape"] == [100, 120]
    # overwriting is allowed (napari's save dialog asks first)
    write_landmarks(str(tmp_path / "a.json"), ldata, state)

    for name, has_meta in (("a.json", True), ("a.csv", False)):
        d, k, kind = _read(tmp_path / name)
        assert kind == "points"
        lm = layer_to_landmarks(d, k["features"], k["metadata"])
        np.testing.assert_allclose(lm["coords"], COORDS, atol=1e-6)  # NaN rows compare equal
        assert lm["pinned"].tolist() == PINNED.tolist()
        assert lm["labels"] == LABELS
        np.testing.assert_allclose(lm["scores"], SCORES, atol=1e-9)
        if has_meta:
            assert lm["landmark_set"] == "demo" and lm["image_path"] == "001.png"

    # through napari's own plugin machinery (npe2 manifest)
    opened = viewer.open(str(tmp_path / "a.json"), plugin=PLUGIN)
    lm = layer_to_landmarks(opened[0])
    np.testing.assert_allclose(lm["coords"], COORDS, atol=1e-6)
    layer.save(str(tmp_path / "b.csv"), plugin=PLUGIN)
    assert (tmp_path / "b.csv").read_text().splitlines()[0] == "index,label,row,col,pinned,status,score"


def test_writer_plain_points_layer(tmp_path):
    attrs = {"features": None, "metadata": {}, "name": "Points"}
    write_landmarks(str(tmp_path / "plain"), np.array([[1.0, 2.0], [3.0, 4.0]]), attrs)  # .json added
    doc = json.loads((tmp_path / "plain.json").read_text())
    assert [p["label"] for p in doc["points"]] == ["point_0", "point_1"]
    assert doc["landmark_set"] is None
    with pytest.raises(ValueError, match=r"\.json"):
        write_landmarks(str(tmp_path / "x.txt"), np.zeros((1, 2)), attrs)


# ------------------------------------------------------------------------------------------- sample, manifest


def test_sample_data():
    (img, kw, kind), = phantom_spine()
    assert kind == "image" and img.shape == (1024, 512) and img.dtype == np.float32
    assert kw["metadata"][META_KEY]["synthetic"] is True


def test_manifest_valid():
    from npe2 import PluginManifest

    pm = PluginManifest.from_file(MANIFEST)
    assert pm.name == PLUGIN and pm.display_name == "Interactive Landmarks"
    cmds = {c.id: c.python_name for c in pm.contributions.commands}
    assert cmds[f"{PLUGIN}.widget"] == "napari_interactive_landmarks.napari._widget:LandmarkWidget"
    assert pm.contributions.writers[0].layer_types == ["points"]
    assert pm.contributions.sample_data[0].key == "phantom_spine"
    import importlib

    for cid in (".get_reader", ".write_landmarks", ".sample_phantom"):
        mod, attr = cmds[PLUGIN + cid].split(":")
        assert callable(getattr(importlib.import_module(mod), attr))
