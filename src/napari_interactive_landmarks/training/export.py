"""Turn a training run's best weights into a shipped model: fp16 safetensors inside the package, with
self-describing metadata, and an entry in weights_manifest.yaml (sha256, config, schema, metrics)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from ..weights import load_weights, register_model, save_weights, weights_dir

MAX_SHIPPED_MB = 25.0


def metadata_for(name: str, entry: dict) -> dict[str, str]:
    """What a weights file carries about itself, so ``Predictor.from_file`` needs nothing else."""
    keys = ("schema", "config", "input_size", "sigma", "normalization", "morphology", "temperatures")
    meta = {"name": name, "format": "napari-interactive-landmarks/weights/v1"}
    for k in keys:
        if entry.get(k) is not None:
            v = entry[k]
            meta[k] = v if isinstance(v, str) else json.dumps(v)
    return meta


def register_run(name: str, run_dir: Path, description: str = "", extra_metrics: dict | None = None,
                 target_dir: Path | None = None, manifest_path=None) -> dict:
    run_dir = Path(run_dir)
    best, info = run_dir / "best.safetensors", run_dir / "best.yaml"
    if not best.is_file() or not info.is_file():
        raise FileNotFoundError(f"{run_dir} has no best.safetensors + best.yaml (has the run validated yet?)")
    entry = yaml.safe_load(info.read_text())
    state, _ = load_weights(best)
    target_dir = Path(target_dir) if target_dir else weights_dir()
    target_dir.mkdir(parents=True, exist_ok=True)
    dest = target_dir / f"{name}.safetensors"
    save_weights(state, dest, metadata=metadata_for(name, entry))
    size_mb = dest.stat().st_size / 2**20
    if size_mb > MAX_SHIPPED_MB:
        dest.unlink()
        raise ValueError(f"{name}: {size_mb:.1f} MB is over the {MAX_SHIPPED_MB:.0f} MB limit for shipped weights; "
                         "publish it with a url instead")
    if extra_metrics:
        entry.setdefault("metrics", {}).update(extra_metrics)
    entry = {"file": dest.name, "url": None, "description": description, **entry}
    return register_model(name, entry, dest, manifest_path=manifest_path)


def store_temperatures(name: str, temperatures, info: dict, manifest_path=None) -> dict:
    """Put fitted temperatures into a shipped model's manifest entry and its weights file's metadata (the
    file is rewritten, so its sha256 in the manifest is updated too)."""
    from ..weights import get_entry, load_manifest, resolve_weights

    manifest = load_manifest(manifest_path)
    entry = dict(get_entry(name, manifest))
    path = resolve_weights(name, manifest=manifest)
    state, meta = load_weights(path)
    entry["temperatures"] = [round(float(t), 5) for t in temperatures]
    entry["calibration"] = info
    meta = dict(meta)
    meta["temperatures"] = json.dumps(entry["temperatures"])
    save_weights(state, path, metadata=meta)
    for key in ("sha256", "size_bytes"):
        entry.pop(key, None)
    return register_model(name, entry, path, manifest_path=manifest_path)
