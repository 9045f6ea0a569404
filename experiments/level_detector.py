"""A vertebral-level detector: which vertebra is the chain's end (T1 at the top, L5 at the bottom)?

The spine model's worst zero-click error is a whole chain placed one vertebra too high or too low: the network
reads every vertebra well but counts from the wrong one. This small network looks only at a window around one
end of the predicted chain — the film resampled so that one vertebra (centre to centre) spans ``PX_PER_LEVEL``
pixels, a window ``CROP_LEVELS`` vertebrae tall and wide, centred on the predicted end vertebra — and answers a
softmax map over the window of where the true end vertebra's centre lies: at the bottom the vertebra sitting on
the sacrum, between the iliac crests; at the top the first vertebra with ribs. Its map's mass more than half a
vertebra above or below the window's centre is the probability that the chain is a level off at that end.

Not shipped (issue 34, 2026-12-07: docs/history.md, "A vertebral-level detector"); kept in the lab.

Training: every training film (labels in anatomical order only: ``check_spine``) is resampled once so that one vertebra
spans ``PX_PER_LEVEL`` pixels. Each step draws windows around its top (T1) and bottom (L5) vertebra, the window's
centre displaced from the true centre by up to ``--max-offset`` vertebrae along the spine (and one across), zoomed
by ±15 %, rotated by ±10°, mirrored half the time, with grey-level jitter; the target is a Gaussian (0.4 vertebra)
at the true centre on the output grid, the loss the cross-entropy against the softmax map. Validation (each epoch,
on --val films, fixed windows displaced by −2 … +2 vertebrae): the share of windows whose map's peak lies within
half a vertebra of the true centre, per end. Writes ``OUT/last.ckpt`` (tensors only, every epoch: ``--resume``),
``OUT/best.safetensors`` (fp16, best validation) and ``OUT/metrics.csv``.

    python experiments/level_detector.py --root ../shared/datasets/aasce \
        --split-file src/napari_interactive_landmarks/data/splits/aasce_seed0.json --train train --val calib \
        --out runs/levels --epochs 40 --threads 2 [--resume]
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

PX_PER_LEVEL = 10.0          # one vertebra (centre to centre) in the detector's window, pixels
CROP_LEVELS = (10.0, 7.2)    # the window, in vertebrae: rows, cols
CROP = (100, 72)             # the window, pixels (multiples of STRIDE)
STRIDE = 4                   # output map cell, window pixels
ENDS = ("top", "bottom")     # output channel 0: the top end vertebra (T1), 1: the bottom one (L5)


def _conv(cin, cout, stride=1, dilation=1):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class LevelNet(nn.Module):
    """Window (B, 1, *CROP) in [-1, 1] → logits (B, 2, CROP/STRIDE): one map per end (top, bottom)."""

    def __init__(self, width: int = 24):
        super().__init__()
        w = width
        self.stem = nn.Sequential(_conv(1, w), _conv(w, w, stride=2))                    # 1/2
        self.down4 = nn.Sequential(_conv(w, 2 * w, stride=2), _conv(2 * w, 2 * w))        # 1/4
        self.down8 = nn.Sequential(_conv(2 * w, 4 * w, stride=2), _conv(4 * w, 4 * w, dilation=2),
                                   _conv(4 * w, 4 * w, dilation=4))                       # 1/8, wide context
        self.head = nn.Sequential(_conv(6 * w, 2 * w), nn.Conv2d(2 * w, len(ENDS), 1))
        self.width = width

    def forward(self, x):
        f4 = self.down4(self.stem(x))
        f8 = self.down8(f4)
        up = F.interpolate(f8, size=f4.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(torch.cat([f4, up], 1))


def chain_level_height(centroids: np.ndarray) -> float:
    """One vertebra's length along the chain (median centre-to-centre distance), original pixels."""
    c = np.asarray(centroids, float)
    ok = np.all(np.isfinite(c), axis=1)
    d = np.linalg.norm(np.diff(c[ok], axis=0), axis=1)
    d = d[d > 0]
    if not len(d):
        raise ValueError("chain_level_height: fewer than two distinct vertebra centres")
    return float(np.median(d))


def resample_for_levels(image01: np.ndarray, level_px: float) -> tuple[torch.Tensor, float]:
    """The film (2-D, [0, 1]) scaled so that one vertebra spans PX_PER_LEVEL pixels (anti-aliased):
    (tensor (1, 1, h, w), scale = new pixels per original pixel)."""
    scale = PX_PER_LEVEL / float(level_px)
    t = torch.from_numpy(np.ascontiguousarray(image01, dtype=np.float32))[None, None]
    h, w = t.shape[-2:]
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    out = F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
    return out, scale


def window(film: torch.Tensor, centre_rc, *, zoom: float = 1.0, angle: float = 0.0,
           flip: bool = False, size=CROP) -> torch.Tensor:
    """A (1, 1, *size) window of ``film`` (1, 1, h, w) centred on ``centre_rc`` (its pixels), optionally zoomed
    (> 1: the anatomy larger), rotated (radians) and mirrored; outside the film is 0 (black)."""
    _, _, h, w = film.shape
    rows, cols = size
    ys = (torch.arange(rows, dtype=torch.float32) - (rows - 1) / 2) / zoom
    xs = (torch.arange(cols, dtype=torch.float32) - (cols - 1) / 2) / zoom
    if flip:
        xs = -xs
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    c, s = float(np.cos(angle)), float(np.sin(angle))
    r = c * yy - s * xx + float(centre_rc[0])
    q = s * yy + c * xx + float(centre_rc[1])
    grid = torch.stack([(q + 0.5) / w * 2 - 1, (r + 0.5) / h * 2 - 1], -1)[None]
    return F.grid_sample(film, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class LevelDetector:
    """Inference: where the chain's end vertebrae truly are, from a predicted chain (K corners → V vertebrae)."""

    def __init__(self, net: LevelNet, corners_per_vertebra: int = 4):
        self.net = net.eval()
        self.k = corners_per_vertebra

    @torch.no_grad()
    def maps(self, image01: np.ndarray, coords: np.ndarray) -> dict:
        """For each end: the softmax map over the window (numpy (h, w)), and the window's geometry."""
        cent = np.asarray(coords, float).reshape(-1, self.k, 2).mean(1)
        level = chain_level_height(cent)
        film, scale = resample_for_levels(image01, level)
        out = {}
        wins = []
        for end, v in zip(ENDS, (0, len(cent) - 1)):
            wins.append(window(film, cent[v] * scale))
        logits = self.net(torch.cat(wins) * 2 - 1)
        for i, end in enumerate(ENDS):
            p = torch.softmax(logits[i, i].flatten(), 0).reshape(logits.shape[-2:]).numpy()
            out[end] = {"map": p, "scale": scale, "level_px": level,
                        "centre": cent[0 if end == "top" else -1]}
        return out

    def level_offsets(self, image01: np.ndarray, coords: np.ndarray) -> dict:
        """Per end: probabilities that the true end vertebra lies one level above / at / below the predicted one
        (the map's mass by the window row's offset from the centre, in vertebrae, split at ±0.5), and the map's
        expected offset in vertebrae (positive: the true end vertebra is lower on the film)."""
        res = {}
        for end, m in self.maps(image01, coords).items():
            p = m["map"]
            rows = (np.arange(p.shape[0]) + 0.5) * STRIDE - CROP[0] / 2
            off = rows / PX_PER_LEVEL
            by_row = p.sum(1)
            res[end] = {"above": float(by_row[off < -0.5].sum()), "same": float(by_row[np.abs(off) <= 0.5].sum()),
                        "below": float(by_row[off > 0.5].sum()), "offset": float((by_row * off).sum())}
        return res





SIGMA_CELLS = 0.4 * PX_PER_LEVEL / STRIDE


def prepare(samples, corners_per_vertebra: int = 4):
    """Per film: (resampled film tensor, centre of the top and bottom vertebra in its pixels, chain direction at
    each end (unit row, col)). Films whose labels are out of order, or missing at an end, are left out."""
    from napari_interactive_landmarks.io.images import normalise_intensity
    from napari_interactive_landmarks.measurements.cobb import check_spine

    films = []
    for s in samples:
        c = np.asarray(s.coords, float)
        if not np.all(np.isfinite(c)) or check_spine(c) is not None:
            continue
        cent = c.reshape(-1, corners_per_vertebra, 2).mean(1)
        img = normalise_intensity(np.asarray(s.load_image(), dtype=np.float32))
        film, scale = resample_for_levels(img, chain_level_height(cent))
        dirs = []
        for a, b in ((0, 1), (-2, -1)):
            d = cent[b] - cent[a]
            dirs.append(d / max(np.linalg.norm(d), 1e-6))
        films.append((film, cent[[0, -1]] * scale, np.array(dirs), s.name))
    return films


def _target(anchor_in_window, shape):
    """Gaussian target on the output grid for an anchor at window pixel (row, col) (window's own indices)."""
    gh, gw = shape
    ry = (anchor_in_window[0] - (STRIDE - 1) / 2) / STRIDE
    rx = (anchor_in_window[1] - (STRIDE - 1) / 2) / STRIDE
    yy, xx = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    t = np.exp(-((yy - ry) ** 2 + (xx - rx) ** 2) / (2 * SIGMA_CELLS ** 2))
    return t / t.sum()


def draw(film, anchor, direction, rng, *, max_offset, augment=True, offset=None, intensity=True):
    """One window around ``anchor`` (film pixels) displaced along ``direction``; returns (window, anchor there)."""
    if offset is None:
        along = rng.uniform(-max_offset, max_offset)
        across = rng.uniform(-1.0, 1.0)
    else:
        along, across = offset, 0.0
    normal = np.array([-direction[1], direction[0]])
    centre = anchor + (along * direction + across * normal) * PX_PER_LEVEL
    zoom = float(np.exp(rng.uniform(np.log(0.85), np.log(1.18)))) if augment else 1.0
    angle = float(rng.uniform(-1, 1) * math.radians(10)) if augment else 0.0
    flip = bool(rng.random() < 0.5) if augment else False
    win = window(film, centre, zoom=zoom, angle=angle, flip=flip)[0, 0]
    v = anchor - centre  # film pixels → window offsets: inverse rotation, times the zoom, mirrored
    c, s = math.cos(angle), math.sin(angle)
    y = (c * v[0] + s * v[1]) * zoom
    x = (-s * v[0] + c * v[1]) * zoom
    if flip:
        x = -x
    pos = (y + (CROP[0] - 1) / 2, x + (CROP[1] - 1) / 2)
    if augment and intensity:
        g = float(np.exp(rng.uniform(np.log(0.7), np.log(1.4))))
        win = win.clamp(0, 1) ** g
        win = win * float(rng.uniform(0.8, 1.2)) + float(rng.uniform(-0.1, 0.1))
        win = win + torch.randn_like(win) * float(rng.uniform(0, 0.03))
    return win, pos


def batches(films, rng, *, per_film, batch, max_offset):
    grid = (CROP[0] // STRIDE, CROP[1] // STRIDE)
    items = [(i, e) for i in range(len(films)) for e in range(len(ENDS)) for _ in range(per_film)]
    order = rng.permutation(len(items))
    for k in range(0, len(order), batch):
        xs, ts, es = [], [], []
        for j in order[k:k + batch]:
            i, e = items[j]
            film, anchors, dirs, _ = films[i]
            w, pos = draw(film, anchors[e], dirs[e], rng, max_offset=max_offset)
            xs.append(w)
            ts.append(_target(pos, grid))
            es.append(e)
        yield (torch.stack(xs)[:, None] * 2 - 1, torch.from_numpy(np.stack(ts)).float(), torch.tensor(es))


def loss_of(net, x, t, e):
    logits = net(x)
    logit = logits[torch.arange(len(e)), e].flatten(1)
    return -(t.flatten(1) * F.log_softmax(logit, 1)).sum(1).mean()


@torch.no_grad()
def validate(net, films, offsets=(-2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2)):
    """Share of fixed windows whose map's peak lies within half a vertebra (along the spine) of the true centre."""
    net.eval()
    rng = np.random.default_rng(0)
    hits = {end: [] for end in ENDS}
    loss = []
    for film, anchors, dirs, _ in films:
        xs, poss, es = [], [], []
        for e in range(len(ENDS)):
            for o in offsets:
                w, pos = draw(film, anchors[e], dirs[e], rng, max_offset=0, augment=False, offset=o)
                xs.append(w)
                poss.append(pos)
                es.append(e)
        x = torch.stack(xs)[:, None] * 2 - 1
        grid = (CROP[0] // STRIDE, CROP[1] // STRIDE)
        t = torch.from_numpy(np.stack([_target(p, grid) for p in poss])).float()
        e = torch.tensor(es)
        loss.append(float(loss_of(net, x, t, e)))
        logits = net(x)
        for n in range(len(es)):
            m = logits[n, es[n]]
            r = int(torch.argmax(m.flatten())) // m.shape[1]
            peak_row = r * STRIDE + (STRIDE - 1) / 2
            hits[ENDS[es[n]]].append(abs(peak_row - poss[n][0]) <= 0.5 * PX_PER_LEVEL)
    net.train()
    return float(np.mean(loss)), {end: float(np.mean(h)) for end, h in hits.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--split-file", required=True)
    ap.add_argument("--train", default="train")
    ap.add_argument("--val", default="calib")
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--per-film", type=int, default=4, help="windows per film and end per epoch")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--width", type=int, default=24)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--max-offset", type=float, default=2.5, help="largest displacement of a window, vertebrae")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)

    from safetensors.torch import save_file

    from napari_interactive_landmarks.data.datasets import load_aasce

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    split = json.loads(Path(args.split_file).read_text())
    by_name = {s.name: s for s in load_aasce(args.root, "training")}
    t0 = time.time()
    train = prepare([by_name[n] for n in split[args.train]])
    val = prepare([by_name[n] for n in split[args.val]])
    print(f"{len(train)} training films, {len(val)} validation films (labels in order), prepared in "
          f"{time.time() - t0:.0f} s", flush=True)

    net = LevelNet(width=args.width)
    steps_per_epoch = math.ceil(len(train) * len(ENDS) * args.per_film / args.batch)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch,
                                                pct_start=0.1)
    start, best = 0, -1.0
    ckpt = out / "last.ckpt"
    if args.resume and ckpt.exists():
        state = torch.load(ckpt, weights_only=True)
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start, best = int(state["epoch"]) + 1, float(state["best"])
        print(f"resumed after epoch {start - 1} (best {best:.3f})", flush=True)
    metrics = out / "metrics.csv"
    if start == 0:
        metrics.write_text("epoch,train_loss,val_loss,val_top_within_half,val_bottom_within_half,seconds\n")
    for epoch in range(start, args.epochs):
        t0 = time.time()
        rng = np.random.default_rng(args.seed * 1000 + epoch)
        losses = []
        for x, t, e in batches(train, rng, per_film=args.per_film, batch=args.batch, max_offset=args.max_offset):
            loss = loss_of(net, x, t, e)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        vloss, hits = validate(net, val)
        score = float(np.mean(list(hits.values())))
        secs = time.time() - t0
        with metrics.open("a") as f:
            csv.writer(f).writerow([epoch, f"{np.mean(losses):.4f}", f"{vloss:.4f}", f"{hits['top']:.4f}",
                                    f"{hits['bottom']:.4f}", f"{secs:.0f}"])
        if score > best:
            best = score
            save_file({k: v.detach().half().contiguous() for k, v in net.state_dict().items()
                       if v.is_floating_point()} | {k: v for k, v in net.state_dict().items()
                                                   if not v.is_floating_point()},
                      str(out / "best.safetensors"), metadata={"epoch": str(epoch), "width": str(args.width),
                                                                "val_within_half": f"{score:.4f}"})
        torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "epoch": epoch, "best": best}, ckpt)
        print(f"epoch {epoch}: train {np.mean(losses):.4f}, val {vloss:.4f}, within half a vertebra: top "
              f"{hits['top']:.3f}, bottom {hits['bottom']:.3f} ({secs:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
