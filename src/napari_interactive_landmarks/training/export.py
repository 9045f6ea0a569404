"""Turn a training run's best weights into a shipped model: fp16 safetensors inside the package, with
self-describing metadata, and an entry in weights_manifest.yaml (sha256, config, schema, metrics)."""

from __future__ import annotations

from pathlib import Path

import yaml

from ..weights import load_weights, register_model, save_weights, weights_dir

MAX_SHIPPED_MB = 25.0


def metadata_for(name: str, entry: dict) -> dict[str, str]:
    """What a weights file carries about itself: the whole model card, so ``Predictor.from_file`` needs nothing
    else (a missing field is an error, see :mod:`..model_card`)."""
    from ..model_card import ModelCard

    return ModelCard.from_mapping(entry, name=name).to_metadata()


def register_run(name: str, run_dir: Path, description: str = "", extra_metrics: dict | None = None,
                 target_dir: Path | None = None, manifest_path=None) -> dict:
    run_dir = Path(run_dir)
    from ..model_card import FORMAT_V1, ModelCard

    best, info = run_dir / "best.safetensors", run_dir / "best.yaml"
    if not best.is_file():
        raise FileNotFoundError(f"{run_dir} has no best.safetensors (has the run validated yet?)")
    state, meta = load_weights(best)
    entry = yaml.safe_load(info.read_text()) if info.is_file() else {}
    if meta.get("format", FORMAT_V1) != FORMAT_V1 or not entry:
        # the weights carry their whole card (trainers since weights/v2; e.g. a file brought back from a GPU
        # machine without its best.yaml): the card in the file wins, and a missing field is an error
        entry = {**entry, **ModelCard.from_metadata(meta, source=str(best)).to_entry()}
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


def store_temperatures(name: str, temperatures, info: dict, manifest_path=None, regions: dict | None = None,
                       doubt_scales: dict | None = None, ere_calibration: dict | None = None,
                       familiarity: dict | None = None) -> dict:
    """Put fitted temperatures into a shipped model's manifest entry and its weights file's metadata (the
    file is rewritten, so its sha256 in the manifest is updated too)."""
    from ..weights import get_entry, load_manifest, resolve_weights

    from ..model_card import ModelCard

    manifest = load_manifest(manifest_path)
    entry = dict(get_entry(name, manifest))
    path = resolve_weights(name, manifest=manifest)
    card = _with_temperatures(ModelCard.from_mapping(entry, name=name), temperatures, info, regions, doubt_scales,
                              ere_calibration, familiarity)
    entry.update(temperatures=card.temperatures, calibration=info)
    entry.pop("ere_calibration", None)  # (fitted with these temperatures: stale ones go)
    if ere_calibration is not None:
        entry["ere_calibration"] = ere_calibration
    if regions is not None:
        entry["regions"] = regions
    entry.pop("familiarity", None)  # (read from these temperatures' maps: stale ones go)
    if familiarity is not None:
        entry["familiarity"] = familiarity
    entry.pop("doubt_scales", None)  # (fitted with these temperatures: stale ones go)
    if card.doubt_scales is not None:
        entry["doubt_scales"] = card.doubt_scales
    _rewrite_card(path, card)
    for key in ("sha256", "size_bytes"):
        entry.pop(key, None)
    return register_model(name, entry, path, manifest_path=manifest_path)


def store_temperatures_in_file(path, temperatures, info: dict, regions: dict | None = None,
                               doubt_scales: dict | None = None, ere_calibration: dict | None = None,
                               familiarity: dict | None = None) -> Path:
    """Put fitted temperatures into a self-describing weights file's model card (rewritten atomically; the
    tensors are unchanged). For a file that is not in the manifest (``calibrate --weights FILE``)."""
    from ..model_card import ModelCard

    path = Path(path)
    card = ModelCard.from_metadata(load_weights(path)[1], source=path.name)
    _rewrite_card(path, _with_temperatures(card, temperatures, info, regions, doubt_scales, ere_calibration,
                                           familiarity))
    return path


def _with_temperatures(card, temperatures, info: dict, regions: dict | None = None, doubt_scales: dict | None = None,
                       ere_calibration: dict | None = None, familiarity: dict | None = None):
    card.temperatures = [round(float(t), 5) for t in temperatures]
    card.ere_calibration = ere_calibration  # (fitted with these temperatures, like the regions)
    card.familiarity = familiarity  # (read from these temperatures' maps)
    card.calibration = info
    if regions is not None:  # (fitted with these temperatures: a re-calibration without regions drops stale ones)
        card.regions = regions
    else:
        card.regions = None
    card.doubt_scales = doubt_scales  # (fitted with these temperatures, like the regions)
    if doubt_scales is not None:
        from ..measurements.scales import as_doubt_scales

        card.doubt_scales = as_doubt_scales(doubt_scales, card.name).to_card()
    return card


def _rewrite_card(path, card) -> None:
    """Write ``card`` as the metadata of the weights file at ``path`` (atomically; tensors unchanged)."""
    state, _ = load_weights(path)
    save_weights(state, path, metadata=card.to_metadata())
