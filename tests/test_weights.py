"""Weights manifest, fp16 safetensors I/O, hash checks and (mocked) downloads. No network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pooch
import pytest
import torch
import yaml
from torch import nn

from napari_interactive_landmarks import weights as W


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    monkeypatch.delenv(W.MANIFEST_ENV, raising=False)
    monkeypatch.setenv(W.CACHE_ENV, str(tmp_path / "cache"))


def tiny_state_dict():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    net.train()
    net(torch.randn(2, 1, 8, 8))  # bumps BatchNorm running stats and num_batches_tracked
    return net.state_dict()


def entry_fields(**over):
    e = {
        "description": "tiny test model",
        "schema": {"name": "tiny3", "landmarks": ["a", "b", "c"]},
        "config": {"arch": "tiny", "channels": [4, 2]},
        "input_size": [64, 32],
        "normalization": {"mode": "percentile", "low": 1.0, "high": 99.0},
        "morphology": {"pairs": [[0, 1], [1, 2]], "triplets": [[0, 1, 2]]},
        "temperatures": None,
        "metrics": {"val": {"mre_px": 1.25, "sdr_4px": 0.9}},
    }
    e.update(over)
    return e


@pytest.fixture
def registered(tmp_path, monkeypatch):
    """A model file in a fake package weights dir, registered in a tmp manifest."""
    wdir = tmp_path / "pkg_weights"
    monkeypatch.setattr(W, "weights_dir", lambda: wdir)
    f = W.save_weights(tiny_state_dict(), wdir / "tiny.safetensors", metadata={"model": "tiny"})
    man = tmp_path / "manifest.yaml"
    man.write_text("# my header\n# second line\nmodels: {}\n")
    W.register_model("tiny", entry_fields(), f, manifest_path=man)
    return man, f


def test_the_shape_models_tensors_stay_float32_when_the_network_is_written_in_fp16(tmp_path):
    """A card rewrite (calibrate) loads every tensor as float32 and writes the file again: the network goes back to
    fp16, the shape model's covariance must not (its entries are ~1e-5, subnormal in fp16)."""
    from safetensors import safe_open

    sd = {**tiny_state_dict(), "shape_model.cov": torch.full((4, 4), 1.2345e-5), "shape_model.mean": torch.rand(4)}
    path = W.save_weights(sd, tmp_path / "m.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert f.get_tensor("0.weight").dtype == torch.float16
        assert f.get_tensor("shape_model.cov").dtype == torch.float32
        assert float(f.get_tensor("shape_model.cov")[0, 0]) == np.float32(1.2345e-5)


def test_fp16_round_trip(tmp_path):
    sd = tiny_state_dict()
    path = W.save_weights(sd, tmp_path / "m.safetensors", metadata={"arch": "tiny", "epochs": 3})
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert f.get_tensor("0.weight").dtype == torch.float16
        assert f.get_tensor("1.num_batches_tracked").dtype == torch.int64
    loaded, meta = W.load_weights(path)
    assert meta["arch"] == "tiny" and meta["epochs"] == "3"
    assert set(loaded) == set(sd)
    for k, v in sd.items():
        if v.is_floating_point():
            assert loaded[k].dtype == torch.float32
            torch.testing.assert_close(loaded[k], v, atol=2e-3, rtol=2e-3)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    net.load_state_dict(loaded)


def test_batchnorm_counter_preserved(tmp_path):
    sd = tiny_state_dict()
    assert int(sd["1.num_batches_tracked"]) == 1
    path = W.save_weights(sd, tmp_path / "m.safetensors")
    loaded, _ = W.load_weights(path)
    assert loaded["1.num_batches_tracked"].dtype == torch.int64
    assert int(loaded["1.num_batches_tracked"]) == 1


def test_register_and_load_manifest(registered):
    man, f = registered
    text = man.read_text()
    assert text.startswith("# my header\n# second line\n")
    models = W.load_manifest(man)
    e = models["tiny"]
    assert e["file"] == "tiny.safetensors"
    assert e["sha256"] == W.sha256_file(f)
    assert e["size_bytes"] == f.stat().st_size
    assert e["input_size"] == [64, 32]
    assert e["morphology"]["triplets"] == [[0, 1, 2]]
    assert "input_size: [64, 32]" in text  # short lists in flow style
    # a second registration keeps the first entry and the header
    W.register_model("tiny2", entry_fields(schema="isbi-ceph19"), f, manifest_path=man)
    models = W.load_manifest(man)
    assert list(models) == ["tiny", "tiny2"]
    assert man.read_text().startswith("# my header\n")


def test_resolve_packaged_hashes_the_file_every_time(registered, monkeypatch):
    man, f = registered
    p = W.resolve_weights("tiny", manifest=man)
    assert p == f
    calls = []
    real = W.sha256_file
    monkeypatch.setattr(W, "sha256_file", lambda path: calls.append(path) or real(path))
    for _ in range(3):
        W.resolve_weights("tiny", manifest=W.load_manifest(man))
    assert calls == [f] * 3  # no cache: what is loaded is what was checked (5-15 ms for 4-12 MB)
    sd, meta = W.load_weights(p)
    assert meta["model"] == "tiny" and "0.weight" in sd


def test_a_file_edited_in_place_with_its_size_and_time_kept_is_refused(registered):
    """Issue 'no crash, no silent wrong answer', item 8g: the in-process hash cache was keyed by size and
    modification time, so a file changed in place with both restored (os.utime) was accepted, while a fresh
    process refused it."""
    import os

    man, f = registered
    W.resolve_weights("tiny", manifest=man)  # checked once in this process
    st = f.stat()
    data = bytearray(f.read_bytes())
    data[-5] ^= 0xFF
    with open(f, "r+b") as fh:  # in place: same inode, same size
        fh.write(bytes(data))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (f.stat().st_size, f.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    with pytest.raises(W.WeightsHashError, match="tiny.safetensors"):
        W.resolve_weights("tiny", manifest=man)


def test_corrupted_file_raises_hash_error(registered):
    man, f = registered
    expected = W.load_manifest(man)["tiny"]["sha256"]
    data = bytearray(f.read_bytes())
    data[-5] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(W.WeightsHashError) as ei:
        W.resolve_weights("tiny", manifest=man)
    msg = str(ei.value)
    assert expected in msg
    assert W.sha256_file(f) in msg
    assert "tiny.safetensors" in msg
    assert "napari-landmarks weights fetch tiny" in msg
    ok, report = W.cmd_verify(manifest=man)
    assert not ok and "FAILED" in report


@pytest.mark.parametrize("kind", ["truncated", "text", "empty"])
def test_bad_file_raises_weights_error(tmp_path, kind):
    path = tmp_path / "bad.safetensors"
    if kind == "truncated":
        good = W.save_weights(tiny_state_dict(), tmp_path / "good.safetensors")
        path.write_bytes(good.read_bytes()[:-64])
    elif kind == "text":
        path.write_text("this is not a safetensors file\n" * 10)
    else:
        path.write_bytes(b"")
    with pytest.raises(W.WeightsError, match="not a safetensors file") as ei:
        W.load_weights(path)
    assert "bad.safetensors" in str(ei.value)


def test_missing_file_raises(tmp_path):
    with pytest.raises(W.WeightsError, match="not found"):
        W.load_weights(tmp_path / "nope.safetensors")


def test_unknown_model_lists_available(registered):
    man, _ = registered
    with pytest.raises(W.WeightsError) as ei:
        W.get_entry("nope", W.load_manifest(man))
    assert "nope" in str(ei.value) and "tiny" in str(ei.value)


def test_manifest_validation_errors(tmp_path):
    man = tmp_path / "m.yaml"
    man.write_text(
        yaml.safe_dump({"models": {"a": {"file": "a.safetensors", "sha256": "xyz", "input_size": [1]}}})
    )
    with pytest.raises(W.WeightsError) as ei:
        W.load_manifest(man)
    msg = str(ei.value)
    assert "schema" in msg and "config" in msg and "sha256" in msg and "input_size" in msg
    man.write_text("models: [1, 2\n")
    with pytest.raises(W.WeightsError, match="not valid YAML"):
        W.load_manifest(man)
    with pytest.raises(W.WeightsError, match="not found"):
        W.load_manifest(tmp_path / "missing.yaml")


def _remote_manifest(tmp_path, sha, url="https://example.org/tiny-large.safetensors"):
    e = {"file": "tiny-large.safetensors", "sha256": sha, "size_bytes": 10, "url": url, **entry_fields()}
    return {"tiny-large": e}


def test_resolve_with_url_uses_pooch(tmp_path, monkeypatch):
    src = W.save_weights(tiny_state_dict(), tmp_path / "src.safetensors")
    sha = W.sha256_file(src)
    manifest = _remote_manifest(tmp_path, sha)
    seen = {}

    def fake_retrieve(url, known_hash=None, fname=None, path=None, **kw):
        seen.update(url=url, known_hash=known_hash, fname=fname, path=Path(path))
        out = Path(path) / fname
        out.write_bytes(src.read_bytes())
        return str(out)

    monkeypatch.setattr(pooch, "retrieve", fake_retrieve)

    with pytest.raises(W.WeightsError) as ei:
        W.resolve_weights("tiny-large", manifest=manifest)
    msg = str(ei.value)
    assert "napari-landmarks weights fetch tiny-large" in msg and "download=True" in msg
    assert seen == {}  # never downloads silently
    assert "remote" in W.cmd_list(manifest)
    ok, report = W.cmd_verify(manifest=manifest)
    assert ok and "not downloaded" in report

    p = W.resolve_weights("tiny-large", download=True, manifest=manifest)
    assert seen["known_hash"] == f"sha256:{sha}"
    assert seen["url"] == "https://example.org/tiny-large.safetensors"
    assert seen["fname"] == "tiny-large.safetensors"
    assert seen["path"] == W.cache_dir() == tmp_path / "cache"
    assert p == tmp_path / "cache" / "tiny-large.safetensors"
    # second call finds the cached copy without downloading
    seen.clear()
    assert W.resolve_weights("tiny-large", manifest=manifest) == p
    assert W.cmd_fetch("tiny-large", manifest=manifest) == p
    assert seen == {}
    assert "cached" in W.cmd_list(manifest)


def test_download_hash_mismatch(tmp_path, monkeypatch):
    manifest = _remote_manifest(tmp_path, "0" * 64)

    def fake_retrieve(url, known_hash=None, fname=None, path=None, **kw):
        raise ValueError("SHA256 hash of downloaded file does not match the known hash")

    monkeypatch.setattr(pooch, "retrieve", fake_retrieve)
    with pytest.raises(W.WeightsError, match="did not match"):
        W.resolve_weights("tiny-large", download=True, manifest=manifest)


def test_missing_packaged_file_without_url(registered):
    man, f = registered
    f.unlink()
    with pytest.raises(W.WeightsError, match="reinstall"):
        W.resolve_weights("tiny", manifest=man)
    ok, report = W.cmd_verify(manifest=man)
    assert not ok and "MISSING" in report


def test_manifest_env_override(registered, monkeypatch):
    man, f = registered
    monkeypatch.setenv(W.MANIFEST_ENV, str(man))
    assert W.manifest_path() == man
    assert "tiny" in W.load_manifest()
    assert W.resolve_weights("tiny") == f
    ok, report = W.cmd_verify()
    assert ok and "tiny: OK" in report
    # register_model without a path writes to the overridden manifest
    W.register_model("tiny3", entry_fields(), f)
    assert "tiny3" in W.load_manifest(man)


def test_cmd_list(registered):
    man, _ = registered
    table = W.cmd_list(man)
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["name", "schema", "landmarks"]
    row = lines[2].split()
    assert row[0] == "tiny" and row[1] == "tiny3" and row[2] == "3" and row[3] == "64x32"
    assert "local" in row and "val.mre_px=1.25" in row


def test_shipped_manifest_entries_load_and_hash():
    path = W.manifest_path()
    assert path.is_file(), f"packaged weights manifest missing: {path}"
    repo_manifest = Path(__file__).resolve().parents[1] / "weights_manifest.yaml"
    if repo_manifest.is_file():  # source checkout: the package copy is a symlink to the canonical file
        assert path.resolve() == repo_manifest.resolve()
    models = W.load_manifest(path)
    assert isinstance(models, dict)
    for name, entry in models.items():
        packaged = W.weights_dir() / entry["file"]
        if not packaged.is_file():
            assert entry.get("url"), f"model '{name}' has neither a packaged file ({packaged}) nor a url"
            continue
        assert packaged.stat().st_size <= 25 * 1024 * 1024, f"packaged model '{name}' is over 25 MB"
        p = W.resolve_weights(name, manifest=models)
        assert p == packaged
        if entry.get("size_bytes") is not None:
            assert p.stat().st_size == entry["size_bytes"]
        sd, _ = W.load_weights(p)
        assert sd and all(isinstance(t, torch.Tensor) for t in sd.values())


def test_every_shipped_model_builds_and_predicts():
    """Each manifest entry: hash matches, architecture config builds, weights load, and it predicts a
    full set of finite landmarks on a generated image."""
    
    from napari_interactive_landmarks.data.phantom import make_phantom
    from napari_interactive_landmarks.inference import Predictor
    from napari_interactive_landmarks.weights import load_manifest

    for name, entry in load_manifest().items():
        if entry.get("url") and not (W.weights_dir() / entry["file"]).is_file():
            continue  # downloadable variant, not shipped
        p = Predictor.from_name(name, device="cpu")
        h, w = entry["input_size"]
        img, _ = make_phantom(np.random.default_rng(0), shape=(2 * h, 2 * w))
        pred = p.predict(img)
        assert pred.coords.shape == (p.num_landmarks, 2) and np.isfinite(pred.coords).all(), name
        assert (pred.coords[:, 0] >= -0.5).all() and (pred.coords[:, 0] <= 2 * h).all(), name


def test_unregister_keeps_header_and_other_models(registered):
    man, f = registered
    W.register_model("tiny2", entry_fields(), f, manifest_path=man)
    assert W.unregister_model("tiny", manifest_path=man) is None  # entry gone, file kept
    assert f.is_file()
    text = man.read_text()
    assert text.startswith("# my header\n# second line\n")
    assert list(W.load_manifest(man)) == ["tiny2"]
    with pytest.raises(W.WeightsError, match="no model 'tiny'"):
        W.unregister_model("tiny", manifest_path=man)
    assert W.unregister_model("tiny2", manifest_path=man, delete_file=True) == f
    assert not f.exists() and W.load_manifest(man) == {}
