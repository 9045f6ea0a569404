"""Adapt a model to a new site's films (issue 36 item 3): ``napari-landmarks finetune``.

The user's annotated films (a study's generic export, or any generic-format folder) are split, with a fixed seed,
into films to train on and films **held aside**; every network of the model (each member of an ensemble) is
fine-tuned on the first at its own input size, starting from its own weights, on the CPU in the trainer's
background-friendly way (bf16 where native, a checkpoint every epoch, ``--resume``). The last epoch is kept: the
held-aside films choose nothing, so the figures on them (base vs adapted, at 0 / 1 / 3 worst-first corrections) are
what a user can expect on the site's next films. Everything else of the model — the refiner, the shape prior, the
hold, the temperatures, the calibrated expected errors and regions, the familiarity check — is kept from the base
model: they are fitted from data, and a few films cannot re-fit them honestly (the card says so, and with how many
films each could be re-fitted). The written weights file's card records its lineage: the base model and its hash,
the films trained on and held aside, the date, the settings and the time taken, and the held-aside figures.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["FinetuneError", "FinetuneReport", "finetune", "MIN_FILMS"]

MIN_FILMS = 5  # four to train on and one held aside, at the least
HELD_ASIDE_FRACTION = 0.2
# fitted from data and kept from the base model: how many films each would need to be re-fitted from the user's
REFIT_NEEDS = {"temperatures": 25, "regions and calibrated expected errors": 64, "familiarity check": 49,
               "shape prior": None}  # None: one more film than landmarks (set per model below)


class FinetuneError(ValueError):
    """Finetuning cannot start or finish; the message says why (and, for too few films, how many are needed)."""


@dataclass
class FinetuneReport:
    out: Path
    base: str
    trained_on: list[str]
    held_aside: list[str]
    minutes: float
    figures: dict = field(default_factory=dict)  # {"base": {clicks: MRE}, "adapted": {...}, "unit": "px"|"mm"}
    members: list[dict] = field(default_factory=list)

    def lines(self) -> list[str]:
        unit = self.figures.get("unit", "px")
        out = [f"adapted '{self.base}' on {len(self.trained_on)} films in {self.minutes:.1f} min → {self.out}"]
        if self.figures:
            clicks = sorted(self.figures["base"], key=int)
            out.append(f"held-aside films ({len(self.held_aside)}), MRE ({unit}) at "
                       + " / ".join(str(c) for c in clicks) + " worst-first corrections:")
            for which in ("base", "adapted"):
                out.append(f"  {which:>8}: " + " / ".join(f"{self.figures[which][c]:.2f}" for c in clicks))
            if not self.better:
                out.append(f"the adapted model is not better than the base on the films held aside before any "
                           f"correction: keep the base model (or adapt on more films; {len(self.held_aside)} held "
                           f"aside is a small measure)")
        return out

    @property
    def better(self) -> bool:
        """Whether the adapted model's error before any correction is below the base's on the films held aside
        (True when nothing was measured)."""
        if not self.figures:
            return True
        return self.figures["adapted"][0] < self.figures["base"][0]


def _network_prefixes(config: dict) -> list[str]:
    """The key prefix of each network the model runs: ``members.<i>.`` of an ensemble, or ``""``."""
    if config.get("arch") == "ensemble":
        return [f"members.{i}." for i in range(len(config["members"]))]
    return [""]


def _is_network_key(key: str, prefix: str) -> bool:
    from .models.refiner import REFINER_PREFIX
    from .shape_model import TENSOR_PREFIX

    if prefix:
        return key.startswith(prefix)
    return not (key.startswith(REFINER_PREFIX) or key.startswith(TENSOR_PREFIX))


def _split(names: list[str], seed: int, fraction: float) -> tuple[list[str], list[str]]:
    order = np.random.default_rng(seed).permutation(len(names))
    n_aside = max(1, int(round(fraction * len(names))))
    aside = sorted(names[i] for i in order[:n_aside])
    return sorted(names[i] for i in order[n_aside:]), aside


def _mre_after_clicks(pred, films, clicks=(0, 1, 3)) -> dict[int, float]:
    """Mean radial error over ``films`` after 0..max(clicks) worst-first corrections at the annotation."""
    out = {c: [] for c in clicks}
    for s in films:
        gt = np.asarray(s.coords, float)
        prepared = pred.prepare(s.load_image())
        done: dict = {}
        coords = pred.predict(prepared).coords
        for c in range(max(clicks) + 1):
            err = np.hypot(*(coords - gt).T)
            if c in out:
                out[c].append(float(np.nanmean(err)))
            if c == max(clicks):
                break
            err[list(done)] = -1
            k = int(np.nanargmax(np.nan_to_num(err, nan=-1.0)))
            done[k] = tuple(gt[k])
            coords = pred.predict(prepared, clicks=dict(done), previous=coords).coords
    return {c: float(np.mean(v)) for c, v in out.items()}


def finetune(base: str, root, out, *, epochs: int = 12, time_budget_min: float | None = None, lr: float = 3e-4,
             held_aside: float = HELD_ASIDE_FRACTION, seed: int = 0, work_dir=None, resume: bool = False,
             threads: int | None = None, progress: bool = True, evaluate: bool = True,
             on_progress=None) -> FinetuneReport:
    """Fine-tune ``base`` (a manifest name or a weights file) on the generic-format films under ``root`` and write
    the adapted model to ``out`` (module doc). ``on_progress(fraction, text)`` is called as it goes."""
    import torch

    from .data.datasets import load_dataset
    from .inference import Predictor
    from .io.files import replaced_atomically
    from .io.landmarks import LandmarkFileError
    from .model_card import ModelCard
    from .schemas import load_schema
    from .training.trainer import DEFAULT_CONFIG, Trainer
    from .weights import get_entry, load_manifest, load_weights, resolve_weights, save_weights, sha256_file

    t0 = time.time()
    say = on_progress or (lambda fraction, text: None)
    out = Path(out)
    if out.suffix != ".safetensors":
        raise FinetuneError(f"--out {out}: the adapted model is a .safetensors file")
    if threads:
        torch.set_num_threads(int(threads))
    # the base model: its tensors and its card
    if Path(base).suffix == ".safetensors" or Path(base).is_file():
        base_path = Path(base)
        state, meta = load_weights(base_path)
        card = ModelCard.from_metadata(meta, source=str(base_path))
        base_name = card.name
    else:
        if base not in load_manifest():
            raise FinetuneError(f"no model '{base}' in the manifest (or give a weights file)")
        base_path = resolve_weights(base)
        state, _ = load_weights(base_path)
        card = ModelCard.from_mapping(get_entry(base), name=base)
        base_name = base
    if out.resolve() == base_path.resolve():
        raise FinetuneError(f"--out {out} is the base model's own file: write the adapted model to a new file")
    schema = load_schema(card.schema) if isinstance(card.schema, str) else load_schema(card.schema_name)
    # the user's films: the model's landmark set, enough of them
    try:
        films = load_dataset("generic", root, "all", schema.landmarks)
    except (LandmarkFileError, ValueError) as exc:
        raise FinetuneError(f"{root}: {exc} (the model '{base_name}' places the '{schema.name}' landmarks)") from None
    if len(films) < MIN_FILMS:
        raise FinetuneError(f"{root}: {len(films)} annotated film(s); fine-tuning needs at least {MIN_FILMS} "
                            f"({MIN_FILMS - 1} to train on and one held aside to measure the result)")
    missing = [s.name for s in films if not np.isfinite(s.coords).all()]
    if len(missing) == len(films):
        raise FinetuneError(f"{root}: no film has all {schema.num_landmarks} landmarks")
    names = [s.name for s in films]
    train_names, aside_names = _split(names, seed, held_aside)
    work = Path(work_dir) if work_dir else out.with_name(out.stem + ".finetune")
    work.mkdir(parents=True, exist_ok=True)
    split_file = work / "split.json"
    split_text = json.dumps({"train": train_names, "val": aside_names, "seed": seed,
                             "note": "val: held aside, never chosen on (the last epoch is kept)"}, indent=1)
    if resume and split_file.is_file() and json.loads(split_file.read_text())["train"] != train_names:
        raise FinetuneError(f"--resume: {split_file} holds another split of the films; start without --resume")
    with replaced_atomically(split_file) as tmp:
        Path(tmp).write_text(split_text)

    # each network fine-tuned at its own input size; the time budget shared by their pixels per image
    config = card.config
    prefixes = _network_prefixes(config)
    members = config["members"] if config.get("arch") == "ensemble" else [
        {"name": card.name, "config": config, "input_size": list(card.input_size), "sigma": card.sigma}]
    pixels = [float(np.prod(m["input_size"])) for m in members]
    adapted = dict(state)
    member_reports = []
    for i, (prefix, member) in enumerate(zip(prefixes, members)):
        mcfg = dict(member["config"])
        sigma = float(member.get("sigma") or mcfg.get("hint_sigma") or card.sigma)
        run = work / f"network{i}"
        init = work / f"network{i}-base.safetensors"
        net = {k[len(prefix):]: v for k, v in state.items() if _is_network_key(k, prefix)}
        if not init.is_file() or not resume:
            save_weights(net, init, dtype=torch.float32)
        cfg = dict(DEFAULT_CONFIG)
        cfg.update({
            "name": f"{base_name}-adapted-network{i}", "dataset": "generic", "root": str(root), "data_split": "all",
            "split_file": str(split_file), "val_part": "val", "schema": schema.name,
            "input_size": list(member["input_size"]), "sigma": sigma, "model": mcfg,
            "heatmap_loss": "softmax_nll" if card.heatmap == "softmax" else "bce", "nll_sigma": 1.0,
            "epochs": int(epochs), "batch_size": 4, "lr": float(lr), "lr_schedule": "cosine", "patience": 10 ** 6,
            "val_every": int(epochs),  # the held-aside films measure, they do not choose: the last epoch is kept
            "val_clicks": [0], "max_initial_clicks": 12, "max_iterative_rounds": 2,
            "morphology": {"pairs": 15, "triplets": 15, "weight": 0.01}, "loss_stride": 2,
            "fg_weight": 40.0, "seed": seed, "init_weights": str(init), "amp": "bf16",
            "num_threads": threads, "out_dir": str(run),
            "time_budget_min": None if time_budget_min is None else time_budget_min * pixels[i] / sum(pixels),
            "num_workers": 0,
        })
        if not _native_bf16():
            cfg["amp"] = "none"
        say(sum(pixels[:i]) / sum(pixels), f"fine-tuning network {i + 1} of {len(members)} "
                                           f"({member['input_size'][0]} × {member['input_size'][1]})")
        trainer = Trainer(cfg, load_init=not (resume and (run / "checkpoint.pt").exists()))
        trainer.load_data()
        result = trainer.fit(resume=resume and (run / "checkpoint.pt").exists(), progress=progress)
        if result["epochs"] < 1:
            raise FinetuneError(f"network {i + 1}: the time budget ran out before one epoch; give more minutes")
        if result["best_epoch"] != result["epochs"]:  # stopped by the time budget: the last epoch reached is kept
            trainer.export_best({})
        tuned, _ = load_weights(run / "best.safetensors")
        for k, v in tuned.items():
            if k.startswith(("shape_model.",)):
                continue
            if prefix + k not in adapted:
                raise FinetuneError(f"network {i + 1}: the fine-tuned tensors do not match the base model's ({k})")
            adapted[prefix + k] = v
        member_reports.append({"network": i, "input_size": list(member["input_size"]), "epochs": result["epochs"],
                               "held_aside_mre_0_clicks": round(float(result["best"]), 3)})

    minutes = (time.time() - t0) / 60
    k = schema.num_landmarks
    lineage = {
        "base": base_name, "base_sha256": sha256_file(base_path), "date": time.strftime("%Y-%m-%d %H:%M"),
        "films": str(Path(root).resolve()), "trained_on": train_names, "held_aside": aside_names, "seed": seed,
        "epochs": int(epochs), "lr": float(lr), "minutes": round(minutes, 2), "networks": member_reports,
        "kept_from_base": {what: (n if n is not None else k + 1) for what, n in REFIT_NEEDS.items()},
        "kept_from_base_note": "fitted from data and kept from the base model: films needed to re-fit each",
    }
    new_card = ModelCard.from_mapping({**card.to_dict(), "name": out.stem,
                                       "training": {**(card.training or {}), "finetune": lineage}})
    tmp_out = work / "adapted.safetensors"
    save_weights(adapted, tmp_out, metadata=new_card.to_metadata())
    figures = {}
    if evaluate:
        say(0.95, "measuring base and adapted on the held-aside films")
        aside = [s for s in films if s.name in set(aside_names)]
        unit_mm = all(s.spacing is not None for s in aside)
        base_pred = Predictor.from_name(base) if base_path != Path(base) and base in load_manifest() \
            else Predictor.from_file(base_path)
        new_pred = Predictor.from_file(tmp_out)
        for p in (base_pred, new_pred):
            p.set_precision("auto")
        figures = {"unit": "px", "base": _mre_after_clicks(base_pred, aside), "adapted": _mre_after_clicks(new_pred, aside)}
        if unit_mm:
            mm = float(np.mean([np.mean(s.spacing) for s in aside]))
            figures = {"unit": "mm", **{w: {c: v * mm for c, v in figures[w].items()} for w in ("base", "adapted")}}
        lineage["held_aside_figures"] = {w: {str(c): round(v, 3) for c, v in figures[w].items()}
                                         for w in ("base", "adapted")} | {"unit": figures["unit"]}
        new_card = ModelCard.from_mapping({**new_card.to_dict(), "training": {**(card.training or {}),
                                                                             "finetune": lineage}})
        save_weights(adapted, tmp_out, metadata=new_card.to_metadata())
    Predictor.from_file(tmp_out)  # the written file loads before it is shipped
    out.parent.mkdir(parents=True, exist_ok=True)
    with replaced_atomically(out) as tmp:  # nothing half-written at --out, even when the disk fills
        shutil.copyfile(tmp_out, tmp)
    say(1.0, "done")
    return FinetuneReport(out, base_name, train_names, aside_names, (time.time() - t0) / 60, figures, member_reports)


def _native_bf16() -> bool:
    from .inference.predictor import native_cpu_bf16

    return native_cpu_bf16()

