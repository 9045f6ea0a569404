"""Training loop for the interactive keypoint models (``model.arch``: HRNet-OCR, FARNet, the CHH U-Net): simulated
clicks, iterative training, a heatmap loss on both heads (BCE, EWC or 2-D softmax NLL), morphology-aware loss,
early stopping on validation MRE, CSV metrics, checkpoints and resume.

Everything is driven by one config dict (a YAML file for ``napari-landmarks train --config``); see
``configs/`` for the shipped models' configs.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from .. import losses
from ..codecs.codec import LandmarkCodec
from ..data.augment import AugmentConfig, augment
from ..data.cache import CachedSet, build_cache, preprocess
from ..data.clicks import Clicker, sample_initial_clicks
from ..data.datasets import load_dataset
from ..data.splits import apply_split, load_split, resolve_split
from ..inference.device import choose_device
from ..model_card import DEFAULT_NORMALIZATION, ModelCard
from ..models.interactive import build_model, check_input_size, resolve_config, upsample_logits
from ..schemas import BUILTIN, load_schema

log = logging.getLogger(__name__)

DEFAULT_CONFIG = {
    "name": "model",
    "dataset": "aasce",          # aasce | isbi2015 | generic
    "root": None,                 # dataset root (or env NAPARI_LANDMARKS_DATA)
    "data_split": "training",     # the dataset split the train/val split file refers to
    # committed split (name under data/splits or a path); null: the dataset's shipped split (aasce, isbi2015),
    # else a seeded split of the images written to <out_dir>/split.json (data.splits.resolve_split)
    "split_file": None,
    # the part of the split file that validation (early stopping, best checkpoint) uses: "val", or a part of it
    # such as "calib", so that another part ("eval") stays unseen by the choice of epoch
    "val_part": "val",
    "schema": "aasce-spine68",
    "input_size": [512, 256],
    "sigma": 7.5,
    "model": {"preset": "hrnet-w18s"},
    "epochs": 100,
    "batch_size": 4,
    "lr": 1e-3,
    "lr_schedule": "constant",    # constant | cosine (cosine over `epochs`)
    "weight_decay": 0.0,
    "patience": 50,               # early stopping: epochs without validation improvement
    "val_every": 1,
    "val_clicks": [0, 2],         # validation metric = mean MRE (original px) after these click counts
    "max_initial_clicks": 12,
    "max_iterative_rounds": 2,    # extra no-grad rounds: 0..max, uniformly
    "morphology": {"pairs": 70, "triplets": 70, "weight": 0.01},  # weight 0 = ablation without it
    "aux_weight": 1.0,
    "fg_weight": 1.0,             # pixel weight α^y of BCE and EWC (1 = the paper's plain BCE; EWC's α = 40)
    "loss_stride": 1,             # 1: BCE on full-resolution maps (paper); 2: on stride-2 maps (4x cheaper on CPU)
    # heatmap loss: "bce" (Kim et al.; model.heatmap = sigmoid), "ewc" (FARNet's Exponential Weighted Center
    # loss, α = fg_weight, on the sigmoid; model.heatmap = sigmoid) or "softmax_nll" (McCouat & Voiculescu:
    # 2-D softmax + NLL against a narrow Gaussian of nll_sigma network pixels, 0 = their one-hot target;
    # model.heatmap = softmax)
    "heatmap_loss": "bce",
    "nll_sigma": 1.0,
    # sigma (network pixels) of the aux output's targets when the model reads its aux output at its own stride
    # (FARNet's coarse stride-2 map; null = sigma). FARNet: the same sigma in each map's own pixels (= 2 × sigma).
    "aux_sigma": None,
    "init_weights": None,         # safetensors to start from (fine-tuning); same architecture required
    "augment": {},
    # the training targets' order: "published" (as the dataset lists them) or "anatomical" (4-corner groups
    # re-assigned top to bottom, upside-down and mirrored vertebrae mended: data/label_order.py); validation and
    # evaluation always read the published labels
    "label_order": "published",
    "seed": 0,
    "device": "auto",
    "num_threads": None,
    "num_workers": "auto",        # DataLoader workers for augmentation: auto = 0 on CPU, up to 8 per GPU process
    "amp": "none",                # mixed precision of the forward passes: none | bf16 | auto (bf16 on CUDA)
    "pack": None,                 # a training pack (napari-landmarks pack) instead of the raw dataset
    "time_budget_min": None,      # stop cleanly after this many minutes (checkpoint kept, resumable)
    "checkpoint_every_min": 10,   # also checkpoint inside an epoch this often (0: at epoch ends only); --resume
                                  # then continues from the next batch
    "out_dir": "runs/model",
    "phantom": None,              # dataset: phantom → {num_train, num_val, original_shape}
    # what `napari-landmarks build` does after training (build.py): shape_prior, refiner, hold, calibrate; the
    # trainer itself ignores it
    "build": None,
}


def load_config(path) -> dict:
    cfg = copy.deepcopy(DEFAULT_CONFIG)
    with open(path) as f:
        user = yaml.safe_load(f) or {}
    unknown = set(user) - set(cfg)
    if unknown:
        raise ValueError(f"unknown training config keys in {path}: {sorted(unknown)}")
    cfg.update(user)
    return cfg


def merged_config(user: dict) -> dict:
    cfg = copy.deepcopy(DEFAULT_CONFIG)
    cfg.update(user)
    return cfg


def phantom_cached_sets(cfg: dict, size, k: int):
    """Generated training/validation sets for the synthetic phantom model (no files involved).
    ``cfg['phantom']``: {num_train, num_val, original_shape [H, W]}; K must be 4 × vertebrae."""
    from ..codecs.geometry import to_network
    from ..data.phantom import phantom_set

    opts = {"num_train": 200, "num_val": 40, "original_shape": [1024, 512], **(cfg.get("phantom") or {})}
    shape = tuple(opts["original_shape"])

    def make(n, seed):
        ims, cs = phantom_set(n, seed, shape=shape, num_vertebrae=k // 4)
        net = np.stack([np.clip(np.round(preprocess(im, size) * 255), 0, 255) for im in ims]).astype(np.uint8)
        return CachedSet([f"phantom{seed}_{i}" for i in range(n)], net, to_network(cs, shape, size).astype(np.float32),
                         np.tile(shape, (n, 1)), cs, np.full(n, np.nan))

    return make(opts["num_train"], cfg["seed"] + 1), make(opts["num_val"], cfg["seed"] + 1000)


class AugmentedSamples(torch.utils.data.Dataset):
    """Training samples augmented on the fly; an item is ``(index, seed)``, so the augmentation of each sample is
    fixed by the trainer's epoch RNG whatever the number of DataLoader workers (and reproducible on resume)."""

    def __init__(self, data: CachedSet, aug: AugmentConfig, flip_perm):
        self.data, self.aug, self.flip_perm = data, aug, flip_perm

    def __len__(self):
        return len(self.data)

    def __getitem__(self, item):
        i, seed = item
        img, pts = augment(self.data.images[i].astype(np.float32) / 255.0, self.data.coords[i],
                           np.random.default_rng(seed), self.aug, self.flip_perm)
        return torch.from_numpy(img), torch.from_numpy(pts)


class EpochBatches(torch.utils.data.Sampler):
    """The batch sampler: this epoch's list of batches of ``(index, seed)``, set by the trainer each epoch."""

    def __init__(self):
        self.batches: list = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


CHECKPOINT_FORMAT = 2  # 2: the run's identity and the position inside an epoch are in the checkpoint


class ResumeError(ValueError):
    """``--resume`` of a checkpoint that another run wrote (one line; nothing is overwritten)."""


class Trainer:
    def __init__(self, cfg: dict, load_init: bool = True):
        """``load_init=False`` skips ``init_weights`` (resuming: the checkpoint holds newer weights; the
        config still records where the run started). Under ``torchrun`` each process holds one Trainer
        (see :mod:`.distributed`)."""
        from .distributed import current

        self.cfg = cfg = merged_config(cfg)
        self.dist = current()
        self.out = Path(cfg["out_dir"])
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        if cfg["num_threads"]:
            torch.set_num_threads(int(cfg["num_threads"]))
        self.device = choose_device(cfg["device"])
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if cfg["amp"] not in ("none", "bf16", "auto"):
            raise ValueError(f"amp must be 'none', 'bf16' or 'auto', not {cfg['amp']!r}")
        self.amp = cfg["amp"] == "bf16" or (cfg["amp"] == "auto" and self.device.type == "cuda")
        self.schema = load_schema(cfg["schema"])
        self.k = self.schema.num_landmarks
        self.size = tuple(cfg["input_size"])
        torch.manual_seed(cfg["seed"])
        self.aug = AugmentConfig(**cfg["augment"])
        self.flip_perm = self.schema.flip_permutation() if self.schema.allow_flip else None
        if cfg["heatmap_loss"] not in ("bce", "ewc", "softmax_nll"):
            raise ValueError(f"heatmap_loss must be 'bce', 'ewc' or 'softmax_nll', not {cfg['heatmap_loss']!r}")
        self.heatmap = "softmax" if cfg["heatmap_loss"] == "softmax_nll" else "sigmoid"
        if cfg["label_order"] not in ("published", "anatomical"):
            raise ValueError(f"label_order must be 'published' or 'anatomical', not {cfg['label_order']!r}")
        if (cfg["model"] or {}).get("arch") == "ensemble":
            raise ValueError("model arch 'ensemble' is assembled from trained models (napari-landmarks ensemble), "
                             "not trained: train each member with its own config")
        self.model_config = resolve_config({**cfg["model"], "num_landmarks": self.k, "heatmap": self.heatmap,
                                            "hint_sigma": float(cfg["sigma"])})
        check_input_size(self.model_config, self.size)  # one line, before any data is read
        self.clicker = Clicker("worst")  # the simulated user of the click rounds and of validation
        # channels-last is ≈ 1.5× faster for these convolutions on CPU (oneDNN) and neutral on GPU
        self.model = build_model(self.model_config).to(self.device, memory_format=torch.channels_last)
        self.codec = LandmarkCodec(self.size, float(cfg["sigma"]), self.heatmap, stride=self.model.output_stride)
        if cfg["init_weights"] and load_init:
            self._init_from(cfg["init_weights"])
        self.net = self.model  # what the gradient step runs: the model, or its DistributedDataParallel wrapper
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        self.epoch = 0
        self.best = math.inf
        self.best_epoch = -1
        self._set_epoch_rngs()
        self.pairs = torch.zeros(0, 2, dtype=torch.long, device=self.device)
        self.triplets = torch.zeros(0, 3, dtype=torch.long, device=self.device)
        self._loader = None

    def _set_epoch_rngs(self):
        """Random streams derived from (seed, epoch): the order and augmentation of the epoch (the same in every
        process) and the simulated clicks (one stream per process). Resuming at an epoch replays it exactly."""
        seed = int(self.cfg["seed"])
        self.rng = np.random.default_rng([seed, self.epoch])
        self.click_rng = np.random.default_rng([seed, self.epoch, 1 + self.dist.rank])

    def _init_from(self, path):
        from ..weights import load_weights

        state, _ = load_weights(path)
        from ..shape_model import TENSOR_PREFIX

        state = {k: v for k, v in state.items() if not k.startswith(TENSOR_PREFIX)}  # the network's tensors only
        own = self.model.state_dict()
        bad = [k for k in own if k not in state or tuple(state[k].shape) != tuple(own[k].shape)]
        if bad or len(state) != len(own):
            raise ValueError(f"init_weights {path}: does not match the configured architecture (e.g. {bad[:3]})")
        self.model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    # ----------------------------------------------------------------- data
    def load_data(self, train_set: CachedSet | None = None, val_set: CachedSet | None = None):
        from .distributed import barrier

        if train_set is None and self.cfg["pack"]:
            from ..data.pack import load_pack_for

            train_set, val_set = load_pack_for(self.cfg["pack"], self.cfg)
            if self.cfg["val_part"] != "val":  # a part of the pack's val set
                if not self.cfg["split_file"]:
                    raise ValueError(f"val_part '{self.cfg['val_part']}' needs the config's split_file to name it")
                names = validation_part_names(load_split(self.cfg["split_file"]), self.cfg["split_file"],
                                              self.cfg["val_part"], train_set.names)
                absent = sorted(set(names) - set(val_set.names))
                if absent:
                    raise ValueError(f"val_part '{self.cfg['val_part']}' of {self.cfg['split_file']}: {len(absent)} of "
                                     f"its images are not in the pack's validation set, e.g. {absent[:3]}")
                val_set = val_set.subset(names)
        if train_set is None and self.cfg["dataset"] == "phantom":
            train_set, val_set = phantom_cached_sets(self.cfg, self.size, self.k)
        if train_set is None:
            # the preprocessing cache is built once, by the first process; the others read it
            if not self.dist.is_main:
                barrier()
            train_set, val_set = raw_dataset_sets(self.cfg, self.size, self.schema, progress=self.dist.is_main)
            if self.dist.is_main:
                barrier()
        if self.cfg["label_order"] == "anatomical":
            train_set = anatomical_training_set(train_set, self.schema, log if self.dist.is_main else None)
        self.train_set, self.val_set = train_set, val_set
        m = self.cfg["morphology"]
        if m.get("weight", 0) > 0 and (m.get("pairs", 0) or m.get("triplets", 0)):
            norm = train_set.coords / np.array(self.size, dtype=np.float32)
            pairs, trip = losses.select_morphology_sets(norm, int(m.get("pairs", 0)), int(m.get("triplets", 0)))
            self.pairs = torch.tensor(pairs, dtype=torch.long, device=self.device).reshape(-1, 2)
            self.triplets = torch.tensor(trip, dtype=torch.long, device=self.device).reshape(-1, 3)
        self._loader = None

    def num_workers(self) -> int:
        nw = self.cfg["num_workers"]
        if nw == "auto":
            if self.device.type != "cuda":
                return 0  # on a CPU the workers would take the cores the training step needs
            return max(0, min(8, (os.cpu_count() or 1) // self.dist.world_size - 1))
        return int(nw)

    def _epoch_batches(self) -> list:
        """This process's batches of the epoch: a global permutation (identical in every process) cut into
        global batches of ``batch_size × world_size``, of which each process takes its own ``batch_size``."""
        n, bs, world, rank = len(self.train_set), int(self.cfg["batch_size"]), self.dist.world_size, self.dist.rank
        perm = self.rng.permutation(n)
        seeds = self.rng.integers(0, 2**63 - 1, size=n)
        gbs = bs * world
        if n < gbs:  # a tiny set: one step, split as evenly as it goes
            parts = np.array_split(perm, world)
            return [[(int(i), int(seeds[i])) for i in parts[rank]]] if len(parts[rank]) else []
        return [[(int(i), int(seeds[i])) for i in perm[s + rank * bs : s + (rank + 1) * bs]]
                for s in range(0, n - gbs + 1, gbs)]

    def _make_loader(self):
        nw = self.num_workers()
        self._sampler = EpochBatches()
        self._loader = torch.utils.data.DataLoader(
            AugmentedSamples(self.train_set, self.aug, self.flip_perm), batch_sampler=self._sampler,
            num_workers=nw, pin_memory=self.device.type == "cuda", persistent_workers=nw > 0,
            prefetch_factor=4 if nw > 0 else None)

    def _to_device(self, images, coords):
        """(B, H, W) images in [0, 1] and (B, K, 2) coordinates → the model's input on the device."""
        images = images.to(self.device, non_blocking=True)
        coords = coords.to(self.device, non_blocking=True)
        return (images * 2.0 - 1.0).unsqueeze(1).contiguous(memory_format=torch.channels_last), coords

    def _batch(self, idx):
        """One augmented batch from training-set indices, on the device (the DataLoader's path, synchronously)."""
        ds = AugmentedSamples(self.train_set, self.aug, self.flip_perm)
        seeds = self.rng.integers(0, 2**63 - 1, size=len(idx))
        items = [ds[(int(i), int(sd))] for i, sd in zip(idx, seeds)]
        return self._to_device(torch.stack([a for a, _ in items]), torch.stack([b for _, b in items]))

    # ----------------------------------------------------------------- one batch
    def train_step(self, images, coords):
        cfg, k, size = self.cfg, self.k, self.size
        dev = self.device
        b = images.shape[0]
        valid = torch.isfinite(coords).all(-1)
        clicked_np = np.zeros((b, k), bool)
        valid_np = valid.cpu().numpy()
        for j in range(b if cfg["max_initial_clicks"] else 0):  # 0: no simulated clicks (a published network)
            clicked_np[j, sample_initial_clicks(self.click_rng, k, cfg["max_initial_clicks"], valid_np[j])] = True
        clicked = torch.from_numpy(clicked_np).to(dev)
        prev = None
        rounds = int(self.click_rng.integers(0, cfg["max_iterative_rounds"] + 1))
        self.model.train()
        st = int(cfg["loss_stride"])
        if rounds:
            with torch.no_grad():
                for _ in range(rounds):
                    with self._autocast():
                        out = self.model(images, clicks=coords, clicked=clicked, previous=prev)
                    prev = self.codec.decode(out["logits"].float())[0]  # decoded as at inference
                    clicked = clicked | self.clicker.choose_batch(torch.linalg.vector_norm(prev - coords, dim=-1),
                                                                  clicked)
        with self._autocast():
            out = self.net(images, clicks=coords, clicked=clicked, previous=prev)
        ls = (size[0] // st, size[1] // st)
        main = _resized(out["logits"].float(), ls)
        l_main = self._heatmap_loss(main, coords, st)
        l_aux = torch.zeros((), device=dev)
        if out.get("aux") is not None:  # HRNet's auxiliary head, FARNet's coarse output; the CHH U-Net has none
            aux_st = self.model.aux_stride
            if aux_st is None:  # read like the main output, at the loss stride
                l_aux = self._heatmap_loss(_resized(out["aux"].float(), ls), coords, st)
            else:  # at its own stride (FARNet's coarse-to-fine supervision)
                aux_ls = (size[0] // aux_st, size[1] // aux_st)
                l_aux = self._heatmap_loss(_resized(out["aux"].float(), aux_ls), coords, aux_st, cfg["aux_sigma"])
        loss = l_main + cfg["aux_weight"] * l_aux
        ld = la = torch.zeros((), device=dev)
        w = cfg["morphology"].get("weight", 0)
        if w > 0 and (len(self.pairs) or len(self.triplets)):
            pred_n = losses.soft_coords_normalised(main, window=max(3, 15 // st | 1), heatmap=self.heatmap)
            true_n = (coords + 0.5) / torch.tensor(size, dtype=coords.dtype, device=dev)
            ld, la = losses.morphology_loss(pred_n, true_n, self.pairs, self.triplets)
            loss = loss + w * (ld + la)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        vals = torch.stack([loss.detach(), l_main.detach(), l_aux.detach(), ld.detach(), la.detach()]).float().cpu()
        return dict(zip(("loss", "heatmap", "aux", "dist", "angle"), vals.tolist()))

    def _heatmap_loss(self, logits, coords, stride, sigma=None):
        """The configured heatmap loss of (B, K, H/stride, W/stride) logits against network-pixel ``coords``;
        ``sigma`` (network pixels) overrides the targets' sigma of BCE / EWC."""
        cfg = self.cfg
        if self.heatmap == "softmax":
            return losses.heatmap_softmax_nll(logits, self.codec.to_grid(coords, stride),
                                              float(cfg["nll_sigma"]) / stride)
        target = self.codec.targets(coords, stride, sigma=None if sigma is None else float(sigma))
        if cfg["heatmap_loss"] == "ewc":
            return losses.heatmap_ewc(logits, target, float(cfg["fg_weight"]))
        return losses.heatmap_bce(logits, target, float(cfg["fg_weight"]))

    # ----------------------------------------------------------------- validation
    @torch.no_grad()
    def validate(self, data: CachedSet | None = None, clicks=None, batch_size=8):
        """Batched click protocol (worst-first, clicks at the ground truth); MRE in original pixels."""
        data = data or self.val_set
        clicks = list(clicks if clicks is not None else self.cfg["val_clicks"])
        self.model.eval()
        k, dev = self.k, self.device
        errs = {c: [] for c in clicks}
        for s in range(0, len(data), batch_size):
            sl = slice(s, s + batch_size)
            images, gt_net = self._to_device(torch.from_numpy(data.images[sl]).float() / 255.0,
                                             torch.from_numpy(data.coords[sl]))
            b = images.shape[0]
            clicked = torch.zeros(b, k, dtype=torch.bool, device=dev)
            prev = None
            for n in range(max(clicks) + 1):
                with self._autocast():
                    out = self.model(images, clicks=gt_net, clicked=clicked, previous=prev)
                pred = self.codec.decode(out["logits"].float())[0]
                pred = torch.where(clicked[..., None], gt_net, pred)  # clicked landmarks are pinned
                po = np.stack([self.codec.to_original(pred[j].cpu().numpy(), data.orig_shapes[s + j]) for j in range(b)])
                e = np.linalg.norm(po - data.orig_coords[sl], axis=-1)
                if n in errs:
                    errs[n].append(np.nanmean(e, axis=1))
                # the next click: the worst landmark in original pixels (what the evaluation protocol measures)
                clicked = clicked | self.clicker.choose_batch(torch.from_numpy(e).to(dev), clicked)
                prev = pred
        return {c: float(np.mean(np.concatenate(v))) for c, v in errs.items()}

    # ----------------------------------------------------------------- checkpoints
    def identity(self) -> dict:
        """What a checkpoint must share with this run to be resumed by it: the trainer's checkpoint format and code
        version, the run's name, landmark set, input, architecture, data and the recipe that fixes the schedule and
        the random streams (epochs, patience, validation and time budget may change on resume)."""
        from .. import __version__

        c = self.cfg
        return {"checkpoint_format": CHECKPOINT_FORMAT, "code_version": __version__, "name": str(c["name"]),
                "schema": self.schema.name, "num_landmarks": self.k, "input_size": list(self.size),
                "model": json.dumps(self.model_config, sort_keys=True), "dataset": str(c["dataset"]),
                "split_file": None if c["split_file"] is None else str(c["split_file"]),
                "heatmap_loss": c["heatmap_loss"], "batch_size": int(c["batch_size"]), "lr": float(c["lr"]),
                "lr_schedule": c["lr_schedule"], "seed": int(c["seed"]), "world_size": self.dist.world_size,
                **({} if c["val_part"] == "val" else {"val_part": str(c["val_part"])})}

    def state(self, step_in_epoch: int = 0, sums: dict | None = None):
        st = {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "epoch": self.epoch,
              "best": self.best, "best_epoch": self.best_epoch, "torch_rng": torch.get_rng_state(),
              "identity": self.identity()}
        if step_in_epoch:  # inside an epoch: where it stopped, what it had summed, the click stream's state
            st.update(step_in_epoch=int(step_in_epoch), sums={k: float(v) for k, v in (sums or {}).items()},
                      click_rng=self.click_rng.bit_generator.state)
        return st

    def save_checkpoint(self, step_in_epoch: int = 0, sums: dict | None = None):
        tmp = self.out / "last.ckpt.tmp"
        torch.save(self.state(step_in_epoch, sums), tmp)
        os.replace(tmp, self.out / "last.ckpt")

    def resume(self):
        """Continue from ``last.ckpt`` exactly: weights, optimiser, epoch, best, random streams and, for a checkpoint
        written inside an epoch, the position in it (no sample repeated or skipped). A checkpoint of another run
        (config, landmark set, architecture or code version) is refused in one line before anything is written."""
        path = self.out / "last.ckpt"
        if not path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {path}")
        st = torch.load(path, map_location=self.device, weights_only=True)  # our own file; still no pickle
        theirs, ours = st.get("identity"), self.identity()
        if theirs is None:
            raise ResumeError(f"--resume: {path} was written by an older trainer that did not record its run; "
                              "start in a new --out-dir (nothing was overwritten)")
        diff = [k for k in ours if theirs.get(k) != ours[k]]
        if diff:
            k = diff[0]
            what = "architecture" if k == "model" else k.replace("_", " ")
            raise ResumeError(f"--resume: {path} belongs to another run: its {what} is {theirs.get(k)!r}, this "
                              f"config's is {ours[k]!r}" + (f" (and {len(diff) - 1} more differences)" if len(diff) > 1
                                                            else "") + "; start in a new --out-dir (nothing was "
                              "overwritten)")
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["opt"])
        self.epoch, self.best, self.best_epoch = st["epoch"], st["best"], st["best_epoch"]
        torch.set_rng_state(st["torch_rng"])
        self._set_epoch_rngs()
        self._resume_in_epoch = None
        if st.get("step_in_epoch"):
            self._resume_in_epoch = (int(st["step_in_epoch"]), dict(st["sums"]), st["click_rng"], st["torch_rng"])

    def model_card(self, metrics: dict) -> ModelCard:
        """The whole description of this run's weights (see :mod:`..model_card`)."""
        return ModelCard(
            name=str(self.cfg["name"]),
            # built-in landmark sets by name, a user's own set inline (so the weights stay self-describing)
            schema=self.schema.name if self.schema.name in BUILTIN else self.schema.to_dict(),
            config=self.model_config,
            input_size=tuple(self.size),
            sigma=float(self.cfg["sigma"]),
            normalization=dict(DEFAULT_NORMALIZATION),
            heatmap=self.heatmap,
            morphology={"pairs": self.pairs.tolist(), "triplets": self.triplets.tolist(),
                        "weight": self.cfg["morphology"].get("weight", 0)},
            temperatures=None,
            training={"dataset": self.cfg["dataset"], "data_split": self.cfg["data_split"],
                      "split_file": None if self.cfg["split_file"] is None else str(self.cfg["split_file"]),
                      "val_part": str(self.cfg["val_part"]),  # the films that chose best_epoch
                      "epochs_run": self.epoch,
                      "best_epoch": self.best_epoch, "seed": self.cfg["seed"], "device": str(self.device),
                      "world_size": self.dist.world_size, "amp": "bf16" if self.amp else "none",
                      "pretrained": False, "heatmap_loss": self.cfg["heatmap_loss"],
                      "loss_stride": int(self.cfg["loss_stride"]), "fg_weight": float(self.cfg["fg_weight"]),
                      "lr": self.cfg["lr"], "lr_schedule": self.cfg["lr_schedule"], "epochs": self.cfg["epochs"],
                      "init_weights": Path(self.cfg["init_weights"]).name if self.cfg["init_weights"] else None},
            metrics=metrics,
        )

    def export_best(self, metrics: dict):
        """``best.safetensors`` carrying the whole model card (usable directly with ``--weights``), and the
        same card as ``best.yaml`` for reading."""
        from ..weights import save_weights

        card = self.model_card(metrics)
        sd = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        save_weights(sd, self.out / "best.safetensors", metadata=card.to_metadata())
        shape_model = self.fit_shape_model()
        if shape_model is not None:
            from ..shape_model import write_into_weights

            write_into_weights(shape_model, self.out / "best.safetensors", self.out / "best.safetensors")
            card.shape_prior = shape_model.card_field()
        (self.out / "best.yaml").write_text(yaml.safe_dump(card.to_entry(), sort_keys=False))

    def fit_shape_model(self):
        """The shape model of this run's training labels (default prior settings; choose them on validation with
        benchmarks/shape_prior_eval.py), or None where the labels cannot make one (said in the log)."""
        from ..shape_model import ShapeModelError, fit_from_labels

        data = getattr(self, "train_set", None)
        if data is None or not len(data):
            return None
        try:
            sm, left_out = fit_from_labels(zip(data.names, data.orig_coords, data.orig_shapes), self.schema.name,
                                           fitted_on=f"{self.cfg['dataset']} {self.cfg['data_split']} train part of "
                                                     f"{self.cfg['split_file']}")
        except ShapeModelError as exc:
            log.warning("no shape model for this run: %s", exc)
            return None
        if left_out:
            log.info("shape model: %d training label sets left out (%s)", len(left_out), ", ".join(sorted(left_out)[:5]))
        return sm

    # ----------------------------------------------------------------- loop
    def fit(self, resume=False, progress=True):
        from .distributed import broadcast_from_main, mean_over_ranks

        cfg = self.cfg
        main_proc = self.dist.is_main
        progress = progress and main_proc
        if resume:
            self.resume()
        csv_path = self.out / "metrics.csv"
        fields = ["epoch", "loss", "heatmap", "aux", "dist", "angle", "lr", "seconds"] + [f"val_mre@{c}" for c in cfg["val_clicks"]] + ["val_metric", "best"]
        if main_proc and (not csv_path.is_file() or not resume):
            with csv_path.open("w", newline="") as f:
                csv.writer(f).writerow(fields)
        if self._loader is None:
            self._make_loader()
        t_start = t_saved = time.time()
        every_s = 60.0 * float(cfg["checkpoint_every_min"] or 0)
        while self.epoch < cfg["epochs"]:
            if cfg["lr_schedule"] == "cosine":
                lr = cfg["lr"] * 0.5 * (1 + math.cos(math.pi * self.epoch / cfg["epochs"]))
                for g in self.opt.param_groups:
                    g["lr"] = lr
            t0 = time.time()
            self._set_epoch_rngs()
            batches = self._epoch_batches()
            sums, steps = {}, 0
            resumed, self._resume_in_epoch = getattr(self, "_resume_in_epoch", None), None
            if resumed is not None:  # a checkpoint written inside this epoch: go on from its next batch
                steps, sums, click_state, torch_state = resumed
                self.click_rng.bit_generator.state = click_state
            self._sampler.batches = batches[steps:]
            batch_iter = iter(self._loader)
            if resumed is not None:  # after the loader's own draw (its base seed), as where the checkpoint was taken
                torch.set_rng_state(torch_state)
            bar = tqdm(batch_iter, desc=f"epoch {self.epoch + 1}/{cfg['epochs']}", disable=not progress,
                       leave=False, initial=steps, total=len(batches))
            for images, coords in bar:
                m = self.train_step(*self._to_device(images, coords))
                for key, v in m.items():
                    sums[key] = sums.get(key, 0.0) + v
                steps += 1
                bar.set_postfix(loss=f"{sums['loss'] / steps:.4f}")
                # a long CPU epoch is checkpointed inside too (one process: the others' click streams differ)
                if every_s and main_proc and not self.dist.enabled and steps < len(batches) \
                        and time.time() - t_saved >= every_s:
                    self.save_checkpoint(steps, sums)
                    t_saved = time.time()
            self.epoch += 1
            row = mean_over_ranks({key: v / max(steps, 1) for key, v in sums.items()}, self.device)
            row.update(epoch=self.epoch, lr=self.opt.param_groups[0]["lr"])
            val, stop = {}, None
            if main_proc:
                if self.val_set is not None and len(self.val_set) and (self.epoch % cfg["val_every"] == 0 or self.epoch == cfg["epochs"]):
                    val = self.validate()
                    metric = float(np.mean(list(val.values())))
                    row.update({f"val_mre@{c}": v for c, v in val.items()}, val_metric=metric)
                    if metric < self.best:
                        self.best, self.best_epoch = metric, self.epoch
                        self.export_best({f"val_mre@{c}_px": round(v, 3) for c, v in val.items()})
                row.update(seconds=round(time.time() - t0, 1), best=self.best)
                with csv_path.open("a", newline="") as f:
                    csv.writer(f).writerow([row.get(k, "") for k in fields])
                msg = f"epoch {self.epoch}/{cfg['epochs']}: training loss {row.get('loss', 0):.4f}"
                if val:  # the validation MRE per click count, in original pixels, and what model selection uses
                    msg += ("; validation MRE " + ", ".join(f"{v:.2f} px after {c} click{'s' if c != 1 else ''}"
                                                           for c, v in val.items())
                            + f" (mean {row['val_metric']:.2f} px" + (": the best so far, kept)" if self.best_epoch == self.epoch
                                                                  else f"; best {self.best:.2f} px at epoch {self.best_epoch})"))
                msg += f" ({row['seconds']} s)"
                (tqdm.write if progress else log.info)(msg)
                self.save_checkpoint()
                t_saved = time.time()
                if self.epoch - self.best_epoch > cfg["patience"] and self.best_epoch >= 0:
                    stop = f"early stopping: no improvement for {cfg['patience']} epochs"
                elif cfg["time_budget_min"] and (time.time() - t_start) / 60 > cfg["time_budget_min"]:
                    stop = "time budget reached; checkpoint saved (resume with --resume)"
            # every process follows rank 0's book-keeping, so that they all stop at the same epoch
            self.best, self.best_epoch, stop = broadcast_from_main((self.best, self.best_epoch, stop))
            if stop:
                if main_proc:
                    (tqdm.write if progress else log.info)(stop)
                break
        return {"best": self.best, "best_epoch": self.best_epoch, "epochs": self.epoch,
                "world_size": self.dist.world_size, "device": str(self.device),
                "samples_per_epoch_this_process": sum(len(b) for b in self._sampler.batches)}


def _resized(logits, size):
    """Logits brought to ``size`` bilinearly (as they are when they already have it)."""
    return logits if tuple(logits.shape[-2:]) == tuple(size) else upsample_logits(logits, size)


def validation_part_names(split: dict, source, part: str, train_names) -> list:
    """The images of the split's part ``part`` that validates a run (``val``, or a part of it such as ``calib``);
    a part the split lacks, or one that shares images with the training images, is refused in one line."""
    part = str(part)
    if part == "train" or not isinstance(split.get(part), list):
        parts = sorted(k for k, v in split.items() if isinstance(v, list) and k != "train")
        raise ValueError(f"val_part '{part}': the split {source} has no such validation part (it has {parts})")
    shared = set(split[part]) & set(train_names)
    if shared:
        raise ValueError(f"val_part '{part}' of {source} shares {len(shared)} images with its train part "
                         f"(e.g. {sorted(shared)[0]}): it cannot validate")
    return list(split[part])


def anatomical_training_set(train_set: CachedSet, schema, say=None) -> CachedSet:
    """``train_set`` with each image's targets in anatomical order (data/label_order.py); ``say``: a logger told
    how many images changed."""
    from ..data.label_order import reorder_set

    (orig, net), changes = reorder_set(schema, train_set.orig_coords, train_set.coords)
    changed = [f"{name}: {'; '.join(what)}" for name, what in zip(train_set.names, changes) if what]
    if say is not None:
        say.info("label_order anatomical: %d of %d training images re-ordered%s", len(changed), len(train_set),
                 "".join(f"\n  {line}" for line in changed))
    return CachedSet(list(train_set.names), train_set.images, net.astype(train_set.coords.dtype),
                     train_set.orig_shapes, orig, train_set.spacing)


def raw_dataset_sets(cfg: dict, size, schema, progress=True, split_dest=None) -> tuple[CachedSet, CachedSet]:
    """The train and validation sets of a config from the raw dataset folder, through the preprocessing cache.

    Without a ``split_file`` the dataset's shipped split is used, or, for a dataset that has none (a user's own
    folder), a seeded split written to ``split_dest`` (default ``<out_dir>/split.json``); ``cfg['split_file']``
    is then set to that file, so that the run's model card names it."""
    from .distributed import current

    root = cfg["root"] or os.environ.get("NAPARI_LANDMARKS_DATA")
    if not root:
        raise ValueError("no dataset root: set 'root' in the config, --root, NAPARI_LANDMARKS_DATA, or --pack")
    samples = load_dataset(cfg["dataset"], root, cfg["data_split"], schema.landmarks)
    if split_dest is None and cfg.get("out_dir"):
        split_dest = Path(cfg["out_dir"]) / "split.json"
    split, source = resolve_split(cfg["split_file"], cfg["dataset"], [s.name for s in samples], split_dest,
                                  write=current().is_main)
    if not cfg["split_file"] and source and split.get("generated"):
        cfg["split_file"] = source
    part = str(cfg["val_part"])
    tr = apply_split(samples, split, "train")
    va = apply_split(samples, {part: validation_part_names(split, source, part, [s.name for s in tr])}, part)
    key = f"{cfg['dataset']}_{cfg['data_split']}"
    return build_cache(tr, size, key + "_train", progress=progress), build_cache(va, size, f"{key}_{part}", progress=progress)
