"""The napari reader decides by content, not by name (issue 22, A).

Against the reader that decided by extension (an image extension, or ``.json`` whose first 64 KiB contain the
schema id) these fail: an extensionless DICOM got no reader (neither from ``get_reader`` nor from the manifest's
patterns, so napari said "no plugin found"); a JSON that only mentions the schema id was claimed as a landmark
file; an extensionless landmark file, and one re-saved with sorted keys so that ``"schema"`` comes after the
first 64 KiB, were not claimed.
"""

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("napari")

from napari_interactive_landmarks.io.landmarks import SCHEMA_ID, write_landmarks_json  # noqa: E402
from napari_interactive_landmarks.napari._layers import META_KEY, layer_to_landmarks  # noqa: E402
from napari_interactive_landmarks.napari._reader import get_reader  # noqa: E402

from .test_napari_io import MANIFEST, PLUGIN, _ramp, _write_dicom  # noqa: E402


def _manifest_readers(name):
    """The plugins napari would offer ``name`` to, with only this plugin installed (npe2's own matching)."""
    from npe2 import PluginManager, PluginManifest

    pm = PluginManager()
    pm.register(PluginManifest.from_file(MANIFEST))
    return {r.plugin_name for r in pm.iter_compatible_readers([f"/some/folder/{name}"])}


def test_extensionless_dicom_is_read(tmp_path):
    dcm = _write_dicom(tmp_path / "IM000001", _ramp(80, 96, np.uint16), pixel_spacing=(0.2, 0.25))
    reader = get_reader(str(dcm))
    assert reader is not None, "an extensionless DICOM (preamble + DICM) must be claimed"
    (data, kw, kind), = reader(str(dcm))
    assert kind == "image" and data.shape == (80, 96)
    assert tuple(kw["scale"]) == pytest.approx((0.2, 0.25))
    assert kw["metadata"][META_KEY]["spacing_mm"] == pytest.approx([0.2, 0.25])
    # a UUID-named one too (Orthanc stores files so), and a list of one path
    uuid = shutil.copy(dcm, tmp_path / "0a9b3153-2512774b-2d9580de-1fc3dcf6-3bd83918")
    assert get_reader([str(uuid)]) is not None


def test_manifest_offers_dotless_names_but_not_other_formats():
    for name in ("IM000001", "00000001", "0a9b3153-2512774b-2d9580de-1fc3dcf6-3bd83918", "x" * 64):
        assert _manifest_readers(name) == {PLUGIN}, name
    for name in ("film.png", "scan.DCM", "case.json", "case.csv"):
        assert _manifest_readers(name) == {PLUGIN}, name
    # "*" would make napari ask which plugin to use for every file its own reader opens
    for name in ("stack.npy", "volume.nii.gz", "data.zarr", "notes.txt", "script.py", "movie.mp4"):
        assert _manifest_readers(name) == set(), name


def test_viewer_opens_extensionless_dicom_without_naming_the_plugin(tmp_path, npe2pm):
    from napari.components import ViewerModel
    from npe2 import PluginManifest

    # napari's own reader and this plugin, as installed (npe2pm: no other plugin of this machine interferes)
    npe2pm.register(PluginManifest.from_distribution("napari"))
    npe2pm.register(PluginManifest.from_file(MANIFEST))
    dcm = _write_dicom(tmp_path / "IM000002", _ramp(80, 96, np.uint16), pixel_spacing=(0.2, 0.25))
    npy = tmp_path / "stack.npy"
    np.save(npy, _ramp(8, 8))
    viewer = ViewerModel()
    # plugin=None is what File › Open and drag and drop do: napari picks the plugin from the patterns
    layers = viewer.open(str(dcm), plugin=None)
    assert [ly.data.shape for ly in layers] == [(80, 96)]
    assert tuple(layers[0].scale) == pytest.approx((0.2, 0.25))
    # napari's own formats stay unambiguous (no "Multiple plugins found" for a .npy)
    assert [ly.data.shape for ly in viewer.open(str(npy), plugin=None)] == [(8, 8)]


def test_extensionless_non_images_are_not_claimed(tmp_path):
    text = tmp_path / "README"
    text.write_text("BM is where a bitmap starts; DICM is where DICOM's magic sits\n" * 10)
    blob = tmp_path / "blob"
    blob.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    for f in (text, blob, empty):
        assert get_reader(str(f)) is None, f.name


def test_json_that_only_mentions_the_schema_is_not_claimed(tmp_path):
    docs = {
        "comment.json": {"comment": f"converted to {SCHEMA_ID} by hand", "points": [{"label": "a", "row": 1,
                                                                                     "col": 2}]},
        "formats.json": {"supported_formats": [SCHEMA_ID, "csv"], "schema": "my-tool/v3"},
        "nested.json": {"cases": [{"schema": SCHEMA_ID, "points": []}]},
        "array.json": [{"schema": SCHEMA_ID, "points": []}],
        "string.json": SCHEMA_ID,
    }
    for name, doc in docs.items():
        (tmp_path / name).write_text(json.dumps(doc, indent=1))
    (tmp_path / "broken.json").write_text('{"schema": "%s", "points": [' % SCHEMA_ID)  # not JSON
    for name in list(docs) + ["broken.json"]:
        assert get_reader(str(tmp_path / name)) is None, name


def _layer_landmarks(path):
    reader = get_reader(str(path))
    assert reader is not None, f"{path.name}: a landmark file must be claimed"
    (data, kw, kind), = reader(str(path))
    assert kind == "points"
    return layer_to_landmarks(data, kw["features"], kw["metadata"])


def test_landmark_files_are_claimed_whatever_their_name_and_key_order(tmp_path):
    coords = [[5.0, 6.0], [7.0, 8.0], [9.5, 10.25]]
    f = write_landmarks_json(tmp_path / "case.json", coords, ["a", "b", "c"], pinned=[True, False, False])
    lm = _layer_landmarks(f)
    assert lm["labels"] == ["a", "b", "c"] and lm["pinned"].tolist() == [True, False, False]
    np.testing.assert_allclose(lm["coords"], coords)

    # the same file without its extension (copied off a share, renamed)
    bare = shutil.copy(f, tmp_path / "case001")
    np.testing.assert_allclose(_layer_landmarks(bare)["coords"], coords)

    # many points, re-saved with sorted keys (jq -S, json.dump(sort_keys=True)): "schema" comes last, far
    # beyond the first 64 KiB
    k = 600
    many = np.column_stack([np.arange(k) * 1.5, np.arange(k) * 0.5 + 3])
    big = write_landmarks_json(tmp_path / "many.json", many, [f"landmark_{i:04d}" for i in range(k)])
    doc = json.loads(big.read_text())
    big.write_text(json.dumps(doc, indent=4, sort_keys=True))
    assert big.read_bytes().find(b'"schema"') > 65536
    lm = _layer_landmarks(big)
    assert len(lm["labels"]) == k
    np.testing.assert_allclose(lm["coords"], many)
