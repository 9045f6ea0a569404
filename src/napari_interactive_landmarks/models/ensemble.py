"""Several trained networks of one landmark set served as one model: their logits averaged (``arch: ensemble``).

Each member keeps the input size and hint sigma it was trained with. The ensemble takes the image at its own input
size (the card's), gives every member the image resized to the member's size (antialiased bilinear, as the
preprocessing resizes) and the clicks / previous prediction in the member's pixels (pixel-centre convention of
``codecs.geometry``), brings each member's logits to the ensemble's grid (bilinear, ``align_corners=False``: the
same extent of the film) and returns their weighted mean. For softmax-trained members that mean of logits is a
product of their maps (a geometric mean of the distributions, renormalised by the 2-D softmax): a point only
scores high where every member puts mass. Everything downstream — decoding, temperatures, ERE, the shape prior,
regions — reads the mean logits like any model's, so an ensemble is calibrated and evaluated like one network.

An ensemble is assembled from trained models (``napari-landmarks ensemble``), never trained as one.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F


def _check_members(cfg: dict) -> None:
    members = cfg.get("members")
    if not isinstance(members, list) or not members:
        raise ValueError("an ensemble config needs 'members': a list of {config, input_size, sigma[, weight]}")
    for i, m in enumerate(members):
        if not isinstance(m, dict) or not {"config", "input_size", "sigma"} <= set(m):
            raise ValueError(f"ensemble member {i} needs 'config', 'input_size' and 'sigma'")
        if (m["config"].get("arch") or "") == "ensemble":
            raise ValueError(f"ensemble member {i} is itself an ensemble: list its members instead")
        size = m["input_size"]
        if len(size) != 2 or min(int(v) for v in size) < 1:
            raise ValueError(f"ensemble member {i}: input_size must be [H, W], got {size!r}")
        weight = float(m.get("weight", 1.0))
        if not weight > 0:
            raise ValueError(f"ensemble member {i}: weight must be positive, got {weight}")


def resolve_ensemble_config(cfg: dict, resolve_member) -> dict:
    """``cfg`` with every member's config resolved (``resolve_member``: the single-network resolver), its
    landmark count, decoding and hint sigma filled in; one ValueError when the members do not agree."""
    _check_members(cfg)
    k = cfg.get("num_landmarks")
    out = copy.deepcopy(cfg)
    members = []
    for i, m in enumerate(cfg["members"]):
        mc = resolve_member({**m["config"], "num_landmarks": k or m["config"].get("num_landmarks"),
                             "hint_sigma": float(m["sigma"])})
        members.append({**copy.deepcopy(m), "config": mc, "input_size": [int(v) for v in m["input_size"]],
                        "sigma": float(m["sigma"]), "weight": float(m.get("weight", 1.0))})
    ks = {m["config"]["num_landmarks"] for m in members}
    heat = {m["config"]["heatmap"] for m in members}
    if len(ks) != 1:
        raise ValueError(f"ensemble members predict different landmark counts: {sorted(ks)}")
    if len(heat) != 1:
        raise ValueError(f"ensemble members decode differently ({sorted(heat)}): their logits cannot be averaged")
    out["members"] = members
    out["num_landmarks"] = ks.pop()
    out["heatmap"] = heat.pop()
    if cfg.get("heatmap") not in (None, out["heatmap"]):
        raise ValueError(f"the ensemble says heatmap '{cfg['heatmap']}' but its members are '{out['heatmap']}'")
    return out


class LogitEnsemble(nn.Module):
    """Weighted mean of the members' logits on the ensemble's grid; same call and outputs as every model here."""

    aux_stride = None

    def __init__(self, config: dict, build_member, member_stride):
        super().__init__()
        self.config = config
        self.num_landmarks = config["num_landmarks"]
        self.heatmap = config["heatmap"]
        self.hint_sigma = None if config.get("hint_sigma") is None else float(config["hint_sigma"])
        strides = {int(member_stride(m["config"])) for m in config["members"]}
        if len(strides) != 1:
            raise ValueError(f"ensemble members have different output strides {sorted(strides)}: not supported")
        self.output_stride = strides.pop()
        self.members = nn.ModuleList(build_member(m["config"]) for m in config["members"])
        self.member_sizes = [tuple(m["input_size"]) for m in config["members"]]
        total = sum(m["weight"] for m in config["members"])
        self.member_weights = [m["weight"] / total for m in config["members"]]
        self.classifier_weight = "members.0." + self.members[0].classifier_weight
        # the members that run (None: all), their weights renormalised: e.g. one member after a click (issue 39)
        self.active: list[int] | None = None

    @staticmethod
    def _rescale(coords, scale):
        """Network-pixel (row, col) of one input size → another's (pixel centres stay centres; NaN stays NaN)."""
        return None if coords is None else (coords + 0.5) * scale - 0.5

    def forward(self, image, hints=None, *, clicks=None, clicked=None, previous=None):
        h, w = image.shape[-2:]
        grid = (-(-h // self.output_stride), -(-w // self.output_stride))
        total = None
        use = range(len(self.members)) if self.active is None else self.active
        norm = sum(self.member_weights[i] for i in use)
        for i in use:
            member, size, weight = self.members[i], self.member_sizes[i], self.member_weights[i] / norm
            if size == (h, w):
                x, c, p, hh = image, clicks, previous, hints
            else:
                shrink = size[0] < h or size[1] < w
                x = F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=shrink)
                scale = image.new_tensor([size[0] / h, size[1] / w])
                c, p = self._rescale(clicks, scale), self._rescale(previous, scale)
                hh = None if hints is None else F.interpolate(hints, size=((size[0] + 1) // 2, (size[1] + 1) // 2),
                                                              mode="bilinear", align_corners=False)
            logits = member(x, hh, clicks=c, clicked=clicked, previous=p)["logits"].float()
            if tuple(logits.shape[-2:]) != grid:
                logits = F.interpolate(logits, size=grid, mode="bilinear", align_corners=False)
            total = logits * weight if total is None else total + logits * weight
        return {"logits": total, "aux": None}


def assemble_ensemble(member_files, out, *, name: str | None = None, input_size=None, weights=None) -> dict:
    """Write ``out``: one weights file serving the models in ``member_files`` (self-describing safetensors files,
    e.g. training runs' ``best.safetensors``) as one ensemble. The members must share their landmark set, input
    normalisation and decoding. ``input_size`` (default: the largest member's) is the ensemble's input; its sigma
    is that member's, else the first member's scaled with the rows. The first member carrying a shape model lends
    it (arrays and settings). The ensemble has no temperatures, regions or doubt scales: fit them on its own
    logits (``napari-landmarks calibrate``). Returns the card's entry."""
    from pathlib import Path

    from ..model_card import ModelCard
    from ..shape_model import TENSOR_PREFIX
    from ..weights import load_weights, save_weights

    files = [Path(f) for f in member_files]
    if len(files) < 2:
        raise ValueError("an ensemble needs at least two member files")
    cards, states = [], []
    for f in files:
        state, meta = load_weights(f)
        meta = dict(meta)
        meta.setdefault("name", f.stem)
        cards.append(ModelCard.from_metadata(meta, source=f.name))
        states.append(state)
    first = cards[0]
    for f, c in zip(files[1:], cards[1:]):
        if c.schema_name != first.schema_name or c.num_landmarks != first.num_landmarks:
            raise ValueError(f"{f.name} is for the landmark set '{c.schema_name}', {files[0].name} for "
                             f"'{first.schema_name}': an ensemble serves one landmark set")
        if c.normalization != first.normalization:
            raise ValueError(f"{f.name} normalises its input differently from {files[0].name}")
        if c.heatmap != first.heatmap:
            raise ValueError(f"{f.name} decodes '{c.heatmap}' logits, {files[0].name} '{first.heatmap}'")
        if (c.config.get("arch") or "") == "ensemble":
            raise ValueError(f"{f.name} is itself an ensemble: give its members")
    if weights is None:
        weights = [1.0] * len(files)
    if len(weights) != len(files) or not all(float(w) > 0 for w in weights):
        raise ValueError(f"give one positive weight per member ({len(files)}), got {list(weights)}")
    if input_size is None:
        input_size = max((c.input_size for c in cards), key=lambda s: s[0] * s[1])
    input_size = tuple(int(v) for v in input_size)
    same = [c for c in cards if tuple(c.input_size) == input_size]
    sigma = same[0].sigma if same else first.sigma * input_size[0] / first.input_size[0]
    members = [{"name": c.name, "config": c.config, "input_size": list(c.input_size), "sigma": c.sigma,
                "weight": float(w)} for c, w in zip(cards, weights)]
    config = {"arch": "ensemble", "num_landmarks": first.num_landmarks, "heatmap": first.heatmap,
              "members": members}
    state = {}
    for i, s in enumerate(states):
        state.update({f"members.{i}.{k}": v for k, v in s.items() if not k.startswith(TENSOR_PREFIX)})
    lender = next((i for i, s in enumerate(states) if any(k.startswith(TENSOR_PREFIX) for k in s)), None)
    shape_prior = None
    if lender is not None:
        state.update({k: v for k, v in states[lender].items() if k.startswith(TENSOR_PREFIX)})
        shape_prior = cards[lender].shape_prior
    card = ModelCard(name=name or Path(out).stem, schema=first.schema, config=config, input_size=input_size,
                     sigma=sigma, normalization=first.normalization, heatmap=first.heatmap,
                     morphology=first.morphology,
                     training={"ensemble_of": [{"name": c.name, "file": f.name, "training": c.training,
                                                "metrics": c.metrics} for c, f in zip(cards, files)]},
                     shape_prior=shape_prior)
    save_weights(state, out, metadata=card.to_metadata())
    return {"name": card.name, **card.to_entry()}
