"""Training of the local refiner (:mod:`models.refiner`): crops around the true landmarks, shifted as a first stage errs.

Each step takes ``batch_images`` training films and one crop per landmark of each, centred on the true point plus
a random shift (a mixture of two isotropic Gaussians, ``jitter`` px with probability ``1 - wide_p`` and
``wide_jitter`` px otherwise: the first stage's errors are mostly small with a heavy tail), rotated by up to
``rotate_deg`` and scaled by up to ``scale``, with a random gamma and contrast. The loss is the softmax NLL of
every landmark whose true point lies in the crop (most crops hold several), as the first stage's.

Validation: the first stage (``first_stage``: a weights file) places the points of the held-out films at 0 clicks
once; the refiner re-finds them; the epoch with the lowest MRE of the points as shipped (``val_blend`` of the
refined place and the rest of the first stage's) is kept (``best.safetensors``, a
self-describing file: :func:`save_refiner`). Every epoch writes ``last.safetensors``, a line of ``metrics.csv`` and
``last.ckpt`` (weights, optimiser, schedule, random streams, best so far): ``resume=True`` (``train-refiner
--resume``) continues from it exactly — a run killed inside an epoch redoes that epoch from its start with the same
random draws, so no crop is repeated or skipped in the weights it ends with. A checkpoint of another run (config,
landmark count, data, code version) is refused in one line before anything is written.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

from ..data.datasets import load_dataset
from ..data.splits import apply_split, load_split
from ..io.images import as_greyscale_2d, normalise_intensity
from ..losses import heatmap_softmax_nll
from ..models.refiner import EXPECTED_ERROR_BLEND, LocalRefiner, fine_image, refine_points, sample_crops, to_crop

log = logging.getLogger(__name__)

DEFAULTS = {
    "name": "refiner",
    "dataset": "isbi2015",
    "data_split": "TrainingData",
    "split_file": "isbi_seed0",
    "val_part": "val",  # the split file's part that chooses the epoch (e.g. "calib", keeping "eval" unseen)
    "first_stage": None,
    "val_jitter": None,  # without a first stage: validate on the true points shifted by this Gaussian (px, seed 0)
    "skip_films": [],  # training films left out (e.g. ones whose labels are known to be defective)
    "refiner": {"widths": [24, 48, 96, 160], "size": 64, "step": 3.5, "window": 9},
    "epochs": 40,
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "batch_images": 2,
    "crops_per_landmark": 1,
    "jitter": 12.0,
    "wide_jitter": 35.0,
    "wide_p": 0.3,
    "rotate_deg": 10.0,
    "scale": 0.1,
    "nll_sigma": 1.0,
    "val_blend": 1.0,  # the epoch is chosen on each point at this weight of the refined place and the rest of the
                       # first stage's (the blend attach-refiner will ship); 1: the refined points alone
    "amp": "bf16",
    "seed": 0,
    "num_threads": 2,
}


def save_refiner(refiner: LocalRefiner, path, metadata: dict) -> None:
    """fp16 safetensors of the refiner, its config and ``metadata`` in the header (BatchNorm counters dropped)."""
    from ..weights import save_weights

    state = {k: v for k, v in refiner.state_dict().items() if not k.endswith("num_batches_tracked")}
    save_weights(state, path, metadata={"refiner": refiner.config(), **metadata})


def load_refiner(path) -> tuple[LocalRefiner, dict]:
    """A refiner written by :func:`save_refiner` (no pickle), in eval mode, float32; with its header's metadata."""
    from ..weights import load_weights

    state, meta = load_weights(path)
    if "refiner" not in meta:
        raise ValueError(f"{path} holds no refiner (its header has no 'refiner' config)")
    decoded = {}
    for k, v in meta.items():
        try:
            decoded[k] = json.loads(v)
        except (TypeError, ValueError):
            decoded[k] = v
    refiner = LocalRefiner.from_config(decoded.pop("refiner"))
    own = {k for k in refiner.state_dict() if not k.endswith("num_batches_tracked")}
    if own != set(state):
        raise ValueError(f"{path}: the refiner's tensors do not match its config")
    refiner.load_state_dict(state, strict=False)
    return refiner.eval(), decoded


def attach_refiner(base, refiner_file, out, *, enabled: bool = True, passes: int = 1, blend: float | str = 1.0,
                   error_scale: float | None = None) -> dict:
    """Write ``out``: the model of ``base`` with the refiner of ``refiner_file`` (a refiner run's best.safetensors) as
    its second stage (tensors ``refiner.*``, the card's ``refiner`` section). A refiner already in ``base`` is
    replaced. ``blend`` < 1 puts each point at that weight of the refined place and the rest of the first stage's;
    ``blend="expected-error"`` weights each point by the inverse square of its stage's expected error (the first
    stage's calibrated ERE, the refiner's own times ``error_scale``). Returns the card's refiner section."""
    from ..model_card import ModelCard
    from ..models.refiner import REFINER_PREFIX
    from ..weights import load_weights, save_weights

    refiner, info = load_refiner(refiner_file)
    state, meta = load_weights(base)
    card = ModelCard.from_metadata(meta, source=Path(base).name)
    if card.num_landmarks != refiner.num_landmarks:
        raise ValueError(f"{Path(refiner_file).name} refines {refiner.num_landmarks} landmarks, {Path(base).name} "
                         f"predicts {card.num_landmarks}")
    if int(passes) < 1:
        raise ValueError(f"passes must be 1 or more, got {passes}")
    if blend == EXPECTED_ERROR_BLEND:
        error_scale = 1.0 if error_scale is None else float(error_scale)
        if not (math.isfinite(error_scale) and error_scale > 0):
            raise ValueError(f"error_scale must be a positive number, got {error_scale}")
        if card.heatmap != "softmax":
            raise ValueError(f"a blend by expected error needs calibrated softmax maps; {Path(base).name}'s are "
                             f"{card.heatmap}")
    else:
        if error_scale is not None:
            raise ValueError(f"error_scale goes with blend '{EXPECTED_ERROR_BLEND}', not with a fixed blend")
        try:
            blend = float(blend)
        except (TypeError, ValueError):
            raise ValueError(f"blend must be a number in (0, 1] or '{EXPECTED_ERROR_BLEND}', got {blend!r}") from None
        if not 0.0 < blend <= 1.0:
            raise ValueError(f"blend must be in (0, 1], got {blend}")
    state = {k: v for k, v in state.items() if not k.startswith(REFINER_PREFIX)}
    state.update({REFINER_PREFIX + k: v for k, v in refiner.state_dict().items()
                  if not k.endswith("num_batches_tracked")})
    card.refiner = {"config": refiner.config(), "enabled": bool(enabled), "passes": int(passes), "blend": blend,
                    "training": {"file": Path(refiner_file).name, **info}}
    if error_scale is not None:
        card.refiner["error_scale"] = error_scale
    save_weights(state, out, metadata=card.to_metadata())
    return card.refiner


class _Films:
    """The films of one part, normalised and resized for the crops, with their true points (original pixels)."""

    def __init__(self, samples, step: float):
        self.names, self.fine, self.shapes, self.coords, self.spacing = [], [], [], [], []
        for s in samples:
            grey = normalise_intensity(as_greyscale_2d(s.load_image()))
            self.names.append(s.name)
            self.fine.append(fine_image(grey, step))
            self.shapes.append(tuple(grey.shape))
            self.coords.append(np.asarray(s.coords, np.float64))
            self.spacing.append(s.spacing)

    def __len__(self):
        return len(self.names)


def _first_stage_points(first_stage, samples, threads: int) -> np.ndarray:
    from ..inference import Predictor

    pred = Predictor.from_file(first_stage)
    pred.compute_ere = False
    pred.use_refiner = False  # a file that already carries a refiner: its first stage's points, not its refined ones
    torch.set_num_threads(threads)
    return np.stack([pred.predict(s.load_image(), shape_prior=False).coords for s in samples])


def _gamma_contrast(crops: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    n = crops.shape[0]
    gamma = torch.as_tensor(np.exp(rng.uniform(-0.35, 0.35, n)), dtype=crops.dtype)[:, None, None, None]
    gain = torch.as_tensor(rng.uniform(0.8, 1.2, n), dtype=crops.dtype)[:, None, None, None]
    bias = torch.as_tensor(rng.uniform(-0.1, 0.1, n), dtype=crops.dtype)[:, None, None, None]
    x01 = ((crops + 1) / 2).clamp(0, 1) ** gamma
    return (x01 * 2 - 1) * gain + bias


CHECKPOINT_FORMAT = 1
# what may change between a run and its --resume: how long it goes on, how it logs, how many threads it uses
_RESUMABLE_CHANGES = ("epochs", "num_threads")


class RefinerResumeError(ValueError):
    """``--resume`` of a refiner checkpoint that another run wrote (one line; nothing is overwritten)."""


def _identity(cfg: dict, k: int) -> dict:
    """What a checkpoint must share with the run that resumes it: format, code version, landmark count and every
    setting but those in :data:`_RESUMABLE_CHANGES` (as JSON, so that it loads without pickle)."""
    from .. import __version__

    recipe = {key: v for key, v in cfg.items() if key not in _RESUMABLE_CHANGES}
    return {"checkpoint_format": CHECKPOINT_FORMAT, "code_version": __version__, "num_landmarks": int(k),
            "config": json.dumps(recipe, sort_keys=True, default=str)}


def _read_checkpoint(path: Path, identity: dict) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no refiner checkpoint at {path}")
    try:
        st = torch.load(path, map_location="cpu", weights_only=True)  # our own file; still no pickle
    except Exception as exc:  # truncated, not a checkpoint
        raise RefinerResumeError(f"--resume: {path} is not a refiner checkpoint ({exc}); start in a new --out-dir "
                                 "(nothing was overwritten)") from None
    theirs = st.get("identity") if isinstance(st, dict) else None
    if not isinstance(theirs, dict):
        raise RefinerResumeError(f"--resume: {path} is not a refiner checkpoint; start in a new --out-dir (nothing "
                                 "was overwritten)")
    for key in identity:
        if theirs.get(key) != identity[key]:
            if key == "config":
                a, b = json.loads(theirs["config"]), json.loads(identity["config"])
                diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                what = f"its {diff[0]} is {a.get(diff[0])!r}, this config's is {b.get(diff[0])!r}" + (
                    f" (and {len(diff) - 1} more differences)" if len(diff) > 1 else "")
            else:
                what = f"its {key.replace('_', ' ')} is {theirs.get(key)!r}, this run's is {identity[key]!r}"
            raise RefinerResumeError(f"--resume: {path} belongs to another run: {what}; start in a new --out-dir "
                                     "(nothing was overwritten)")
    return st


def train_refiner(cfg: dict, root, out_dir, log_every: int = 20, samples=None, first_points=None,
                  resume: bool = False) -> dict:
    """Train a refiner with ``cfg`` (over :data:`DEFAULTS`) on ``root``; writes the run folder ``out_dir``; returns
    the best epoch's metrics. ``samples`` = (training, validation) lists of ``LandmarkSample`` instead of the config's
    dataset and split; ``first_points`` (V, K, 2) the validation films' first-stage points instead of running
    ``first_stage``; ``resume``: continue from ``out_dir/last.ckpt`` (see the module docstring)."""
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"refiner training config: unknown keys {sorted(unknown)}")
    cfg = {**DEFAULTS, **cfg, "refiner": {**DEFAULTS["refiner"], **(cfg.get("refiner") or {})}}
    if not cfg["first_stage"] and first_points is None and not cfg["val_jitter"]:
        raise ValueError("refiner training needs 'first_stage' (the weights file whose points it validates on) or "
                         "'val_jitter' (validation on shifted true points)")
    torch.set_num_threads(int(cfg["num_threads"]))
    torch.manual_seed(int(cfg["seed"]))
    rng = np.random.default_rng(int(cfg["seed"]))
    out = Path(out_dir)
    if not resume and (out / "last.ckpt").is_file():
        raise RefinerResumeError(f"{out} holds a refiner run's checkpoint already: continue it with --resume or "
                                 "choose another --out-dir (nothing was overwritten)")
    if samples is None:
        films = load_dataset(cfg["dataset"], root, cfg["data_split"])
        split = load_split(cfg["split_file"])
        train_s, val_s = apply_split(films, split, "train"), apply_split(films, split, cfg["val_part"])
    else:
        train_s, val_s = samples
    skip = set(cfg["skip_films"])
    train_s = [s for s in train_s if s.name not in skip]
    k = train_s[0].coords.shape[0]
    identity = _identity(cfg, k)
    st = _read_checkpoint(out / "last.ckpt", identity) if resume else None  # refused before anything is written
    if st is not None and int(st["epoch"]) >= int(cfg["epochs"]):
        raise RefinerResumeError(f"--resume: {out / 'last.ckpt'} has run {int(st['epoch'])} epochs, all that epochs "
                                 f"= {cfg['epochs']} asks for; raise --epochs to go on (nothing was overwritten)")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg, indent=1))
    refiner = LocalRefiner.from_config({**cfg["refiner"], "num_landmarks": k})
    size, step = refiner.size, refiner.step
    t0 = time.perf_counter()
    train, val = _Films(train_s, step), _Films(val_s, step)
    val_true = np.stack(val.coords)
    if first_points is not None:
        first = np.asarray(first_points, np.float64)
    elif cfg["first_stage"]:
        first = _first_stage_points(cfg["first_stage"], val_s, int(cfg["num_threads"]))
    else:
        first = val_true + np.random.default_rng(0).normal(size=val_true.shape) * float(cfg["val_jitter"])
    spacing = val.spacing[0] or 1.0
    first_mre = float(np.nanmean(np.linalg.norm(first - val_true, axis=-1))) * spacing
    log.info("films loaded and first stage run in %.0f s; first stage MRE on val %.3f", time.perf_counter() - t0,
             first_mre)
    opt = torch.optim.AdamW(refiner.parameters(), lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"]))
    steps_per_epoch = math.ceil(len(train) / int(cfg["batch_images"]))
    total = steps_per_epoch * int(cfg["epochs"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    amp = cfg["amp"] == "bf16"
    best = None
    start = 1
    metrics_path = out / "metrics.csv"
    if st is not None:
        refiner.load_state_dict(st["refiner"])
        opt.load_state_dict(st["opt"])
        sched.load_state_dict(st["sched"])
        rng.bit_generator.state = st["numpy_rng"]
        torch.set_rng_state(st["torch_rng"])
        best = json.loads(st["best"]) if st["best"] else None
        start = int(st["epoch"]) + 1
        _keep_metric_rows(metrics_path, int(st["epoch"]))
        log.info("resumed from %s after epoch %d", out / "last.ckpt", start - 1)
    else:
        with open(metrics_path, "w", newline="") as fh:
            csv.writer(fh).writerow(["epoch", "train_loss", "val_first_stage", "val_refined", "val_refined_twice",
                                     "epoch_s", "val_blended"])
    for epoch in range(start, int(cfg["epochs"]) + 1):
        refiner.train()
        t_epoch = time.perf_counter()
        order = rng.permutation(len(train))
        losses = []
        for b in range(steps_per_epoch):
            films = order[b * int(cfg["batch_images"]):(b + 1) * int(cfg["batch_images"])]
            crops, targets = [], []
            for i in films:
                true = torch.as_tensor(train.coords[i], dtype=torch.float32)
                m = int(cfg["crops_per_landmark"]) * k
                lm = np.tile(np.arange(k), int(cfg["crops_per_landmark"]))
                wide = rng.random(m) < float(cfg["wide_p"])
                sd = np.where(wide, float(cfg["wide_jitter"]), float(cfg["jitter"]))
                centres = true[lm] + torch.as_tensor(rng.normal(size=(m, 2)) * sd[:, None], dtype=torch.float32)
                ok = torch.isfinite(centres).all(-1)
                centres, = (centres[ok],)
                stp = step * np.exp(rng.uniform(-1, 1, int(ok.sum())) * math.log1p(float(cfg["scale"])))
                ang = np.deg2rad(rng.uniform(-1, 1, int(ok.sum())) * float(cfg["rotate_deg"]))
                crops.append(sample_crops(train.fine[i], train.shapes[i], centres, size, stp, ang))
                targets.append(to_crop(true[None].expand(len(centres), k, 2), centres, size, stp, ang))
            x = _gamma_contrast(torch.cat(crops), rng)
            y = torch.cat(targets)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                logits = refiner(x)
            loss = heatmap_softmax_nll(logits.float(), y, float(cfg["nll_sigma"]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            if log_every and (b + 1) % log_every == 0:
                log.info("epoch %d step %d/%d loss %.4f", epoch, b + 1, steps_per_epoch, np.mean(losses[-log_every:]))
        refiner.eval()
        once, twice = [], []
        for i in range(len(val)):
            p1 = refine_points(refiner, val.fine[i], val.shapes[i], first[i], range(k))
            p2 = refine_points(refiner, val.fine[i], val.shapes[i], p1, range(k))
            once.append(p1)
            twice.append(p2)
        mre1 = float(np.nanmean(np.linalg.norm(np.stack(once) - val_true, axis=-1))) * spacing
        mre2 = float(np.nanmean(np.linalg.norm(np.stack(twice) - val_true, axis=-1))) * spacing
        w = float(cfg["val_blend"])
        mix = w * np.stack(once) + (1.0 - w) * first
        mre_mix = float(np.nanmean(np.linalg.norm(mix - val_true, axis=-1))) * spacing
        dt = time.perf_counter() - t_epoch
        with open(metrics_path, "a", newline="") as fh:
            csv.writer(fh).writerow([epoch, f"{np.mean(losses):.5f}", f"{first_mre:.4f}", f"{mre1:.4f}",
                                     f"{mre2:.4f}", f"{dt:.1f}", f"{mre_mix:.4f}"])
        log.info("epoch %d: loss %.4f, val MRE first stage %.4f, refined %.4f, twice %.4f, blend %.2f %.4f (%.0f s)",
                 epoch, np.mean(losses), first_mre, mre1, mre2, w, mre_mix, dt)
        meta = {"name": cfg["name"], "epoch": epoch, "val_first_stage": first_mre, "val_refined": mre1,
                "val_refined_twice": mre2, "val_blend": w, "val_blended": mre_mix,
                "first_stage": str(cfg["first_stage"]), "dataset": cfg["dataset"],
                "split_file": cfg["split_file"], "seed": int(cfg["seed"])}
        save_refiner(refiner, out / "last.safetensors", meta)
        if best is None or mre_mix < best["val_blended"]:
            best = meta
            save_refiner(refiner, out / "best.safetensors", meta)
        tmp = out / "last.ckpt.tmp"  # last: a kill before this line redoes the epoch, from the previous checkpoint
        torch.save({"identity": identity, "epoch": epoch, "refiner": refiner.state_dict(), "opt": opt.state_dict(),
                    "sched": sched.state_dict(), "numpy_rng": rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state(), "best": json.dumps(best)}, tmp)
        tmp.replace(out / "last.ckpt")
    (out / "best.json").write_text(json.dumps(best, indent=1))
    return best


def _keep_metric_rows(path: Path, last_epoch: int) -> None:
    """metrics.csv cut back to the header and the epochs up to ``last_epoch`` (a killed epoch's row, if any, goes)."""
    if not path.is_file():
        return
    rows = path.read_text().splitlines()
    kept = rows[:1] + [r for r in rows[1:] if r.split(",")[0].isdigit() and int(r.split(",")[0]) <= last_epoch]
    path.write_text("\n".join(kept) + "\n")
