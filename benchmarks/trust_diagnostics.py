"""The diagnostics behind docs/results.md's "Trust on every film" (issue 34), on aasce-spine's validation films.

- ``ends``: how much of each chain end's calibrated network map lies at the film's other end (the top 8 of the
  map's rows for the L5 corners, the bottom 8 for the T1 corners), per film of --split; and the ERE the chain ends'
  corners within 20 px of their truth state, before issue 34 (the network's map, uncalibrated) and now;
- ``collapse``: after the first worst-first click of every film of --split, does another corner move onto the click
  (metrics.collapsed_onto_click), with the exclusion zone off (``EXCLUSION = 0``, the previous decoding) and on;
- ``damage``: every damage event of the worst-first protocol (--clicks clicks): a landmark within 10 px of its truth
  before a click that ends more than 20 px from it — how many vertebrae it lies from the click, and whether the
  network alone (the same update without the shape prior) would also have sent it there;
- ``gate``: every move of 10 px or more that a worst-first click makes to an unclicked landmark, as *damage* (from
  ≤ 10 px to > 20 px off), *help* (from > 20 px to ≤ 10 px) or other, with what could tell them apart at the time:
  how many vertebrae from the click, how far, and how much more the point's doubt map (after the click) favours the
  new place than the old one (log-probability, nats); then what reverting the moves a gate would flag does to the
  error — whether damage can be refused without refusing the moves that fix a shifted block;
- ``tta``: a level cue by test-time augmentation — the 0-click answer on the film flipped left-right (corners
  relabelled) and with 10 % / 20 % cut from its top or bottom, mapped back: does how far a corner moves between the
  variants tell the corners more than 20 px off (AUROC, alone and added to the stated error)?
- ``films``: the films, not the corners: does a film's mean stated error (0 clicks) tell the films with a run of 3
  or more vertebrae a level off (benchmarks/vertebra_shift.py; films whose labels are out of order left out)? And
  how well would the corners' stated errors rank the corners more than 20 px off if the shifted films were known
  (the stated error plus a large constant on those films: an upper bound for any film-level cue)?
- ``firstclick``: the first correction, every candidate tried: on each film, each landmark in turn clicked at its
  truth (one update from the 0-click answer); the film's error after the point each rule would have suggested — the
  oracle (worst first), the best possible, "check next" (the expected gain), the largest stated error;
- ``second``: a level cue from a second, independently trained network (--second, a weights file): the 0-click
  answers of both (each with its own card's prior); how far apart they put each corner, and whether they put a
  vertebra at a different level (centroids more than half a vertebra apart) — does that tell the corners more than
  20 px off, alone and added to the stated error?

    python benchmarks/trust_diagnostics.py ends --split eval
    python benchmarks/trust_diagnostics.py collapse --split val
    python benchmarks/trust_diagnostics.py damage --split eval --clicks 5
    python benchmarks/trust_diagnostics.py gate --split calib --clicks 5
    python benchmarks/trust_diagnostics.py tta --split calib
    python benchmarks/trust_diagnostics.py films --split eval
    python benchmarks/trust_diagnostics.py firstclick --split eval
    python benchmarks/trust_diagnostics.py second --split calib --second weights-candidates/aasce-spine-shift-s7.safetensors
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SPLIT = REPO / "src/napari_interactive_landmarks/data/splits/aasce_seed0.json"


def _films(root, part):
    from napari_interactive_landmarks.data.datasets import load_aasce

    by_name = {s.name: s for s in load_aasce(root, "training")}
    split = json.loads(SPLIT.read_text())
    names = split["calib"] + split["eval"] if part == "val" else split[part]
    return [by_name[n] for n in names]


def ends(pred, films):
    top, bottom, stated = [], [], []
    cal = pred.ere_calibration
    for s in films:
        prepared = pred.prepare(s.load_image())
        pred.envelope_weight, pred.ere_calibration = 0.0, None  # the network's calibrated maps, as before issue 34
        before = pred.predict(prepared)
        pred.envelope_weight, pred.ere_calibration = cal.envelope_weight, cal
        now = pred.predict(prepared)
        rows = before.prob.sum(-1)  # (K, h)
        top.append(rows[64:68, :8].sum(-1))
        bottom.append(rows[0:4, -8:].sum(-1))
        chain_ends = [0, 1, 2, 3, 64, 65, 66, 67]
        err = np.hypot(*(now.coords - s.coords).T)
        stated += [(before.ere[j], now.ere[j]) for j in chain_ends if err[j] < 20]
    top, bottom, stated = np.array(top), np.array(bottom), np.array(stated)
    print(f"L5 corners' mass in the top 8 map rows: median {np.median(top):.3f}, per film max "
          f"{np.percentile(top.max(1), [50, 90, 100]).round(3).tolist()} (50/90/100th percentile over films)")
    print(f"T1 corners' mass in the bottom 8 map rows: median {np.median(bottom):.3f}, per film max "
          f"{np.percentile(bottom.max(1), [50, 90, 100]).round(3).tolist()}")
    print(f"{len(stated)} T1/L5 corners within 20 px of their truth state before / now: median "
          f"{np.median(stated[:, 0]):.0f} / {np.median(stated[:, 1]):.0f} px, largest {stated[:, 0].max():.0f} / "
          f"{stated[:, 1].max():.0f} px")


def collapse(pred, films):
    from napari_interactive_landmarks.evaluation.metrics import collapsed_onto_click

    counts = {0.0: 0, pred.EXCLUSION: 0}
    for s in films:
        prepared, gt = pred.prepare(s.load_image()), s.coords
        auto = pred.predict(prepared)
        k = int(np.nanargmax(np.hypot(*(auto.coords - gt).T)))
        for zone in counts:
            pred.EXCLUSION = zone
            after = pred.predict(prepared, clicks={k: tuple(gt[k])}, previous=auto.coords)
            counts[zone] += bool(collapsed_onto_click(np.stack([auto.coords, after.coords]), gt, [k])[0])
    for zone, n in counts.items():
        print(f"exclusion zone {zone:g}: a corner moved onto the first click on {n} of {len(films)} films")


def _worst_first(pred, s, clicks):
    """The session of film ``s`` after each of ``clicks`` worst-first corrections at the ground truth: yields
    ``(click number, session, clicked index, clicked so far, points before, errors before, errors after)``."""
    from napari_interactive_landmarks.inference.session import LandmarkSession

    gt = s.coords
    session = LandmarkSession(pred, s.load_image())
    session.detect()
    done = []
    for c in range(clicks):
        before = session.coords.copy()
        e0 = np.hypot(*(before - gt).T)
        k = int(np.argmax(np.where(np.isin(np.arange(len(e0)), done), -1.0, np.nan_to_num(e0, nan=-1.0))))
        done.append(k)
        session.correct(k, tuple(gt[k]))
        yield c, session, k, list(done), before, e0, np.hypot(*(session.coords - gt).T)


def damage(pred, films, clicks):
    events = []
    for s in films:
        gt = s.coords
        for _, _, k, done, before, e0, e1 in _worst_first(pred, s, clicks):
            hit = [j for j in range(len(gt)) if j not in done and e0[j] <= 10 and e1[j] > 20]
            if hit:
                alone = pred.predict(s.load_image(), clicks={i: tuple(gt[i]) for i in done}, previous=before,
                                     shape_prior=False)
                ea = np.hypot(*(alone.coords - gt).T)
                events += [(abs(j // 4 - k // 4), bool(ea[j] > 20)) for j in hit]
    if not events:
        print("no damage events")
        return
    dist = np.array([d for d, _ in events])
    print(f"{len(events)} damage events on {len(films)} films ({clicks} clicks each): {int((dist >= 3).sum())} of them "
          f"3 or more vertebrae from the click; the network alone would also have damaged "
          f"{100 * np.mean([a for _, a in events]):.0f} %")


def _auroc(score, positive) -> float:
    from napari_interactive_landmarks.evaluation.calibration_stats import auroc

    return float(auroc(np.asarray(score, float), np.asarray(positive, bool)))


def gate(pred, films, clicks):
    moves, clicks_made = [], 0
    for s in films:
        gt = s.coords
        for c, session, k, done, before, e0, e1 in _worst_first(pred, s, clicks):
            clicks_made += 1
            out = session.last_prediction
            prob, (big_h, big_w) = out.prob, out.original_shape
            h, w = prob.shape[-2:]

            def log_p(j, at):
                r = int(np.clip(at[0] / big_h * h, 0, h - 1))
                q = int(np.clip(at[1] / big_w * w, 0, w - 1))
                return float(np.log(prob[j, r, q] + 1e-12))

            for j in range(len(gt)):
                step = float(np.hypot(*(session.coords[j] - before[j])))
                if j in done or not np.isfinite(e0[j]) or step < 10:
                    continue
                kind = "damage" if e0[j] <= 10 and e1[j] > 20 else "help" if e0[j] > 20 and e1[j] <= 10 else "other"
                moves.append(dict(film=s.name, click=c, kind=kind, vertebrae=abs(j // 4 - k // 4), step=step,
                                  favour=log_p(j, session.coords[j]) - log_p(j, before[j]), e0=float(e0[j]),
                                  e1=float(e1[j])))
    kinds = np.array([m["kind"] for m in moves])
    dh = np.isin(kinds, ["damage", "help"])
    is_damage = kinds[dh] == "damage"
    print(f"{len(films)} films, {clicks_made} clicks: {len(moves)} moves of 10 px or more — {int((kinds == 'damage').sum())} "
          f"damage, {int((kinds == 'help').sum())} help, {int((kinds == 'other').sum())} other")
    for key, label in (("vertebrae", "vertebrae from the click"), ("step", "length of the move (px)"),
                       ("favour", "doubt map's log-probability, new place minus old (nats)")):
        v = np.array([m[key] for m in moves])[dh]
        print(f"  {label}: median {np.median(v[is_damage]):.2f} (damage) vs {np.median(v[~is_damage]):.2f} (help); "
              f"AUROC for damage {_auroc(v, is_damage):.3f}")
    damaged = {(m["film"], m["click"]) for m in moves if m["kind"] == "damage"}
    print("a gate reverting the moves at least V vertebrae from the click that the map favours by less than T nats:")
    print("   V    T  reverted  damage  help  error change if reverted (px, summed)  clicks with damage")
    for v_min in (0, 3, 5):
        for t in (0.5, 1.0, 2.0):
            flag = [m["vertebrae"] >= v_min and m["favour"] < t for m in moves]
            rev = [m for m, f in zip(moves, flag) if f]
            left = {(m["film"], m["click"]) for m, f in zip(moves, flag) if m["kind"] == "damage" and not f}
            print(f"  {v_min:>2} {t:>4.1f} {len(rev):>9} {sum(m['kind'] == 'damage' for m in rev):>7} "
                  f"{sum(m['kind'] == 'help' for m in rev):>5} {sum(m['e0'] - m['e1'] for m in rev):>+38.0f}  "
                  f"{100 * len(damaged) / clicks_made:.1f} % → {100 * len(left) / clicks_made:.1f} %")


def tta(pred, films):
    swap = np.array([1, 0, 3, 2])  # each vertebra's corners: top-left, top-right, bottom-left, bottom-right
    cuts = {"top 10 %": (0.10, 1.0), "bottom 10 %": (0.0, 0.90), "top 20 %": (0.20, 1.0), "bottom 20 %": (0.0, 0.80)}
    err, stated, moved, mre = [], [], {k: [] for k in ["flipped", *cuts]}, {k: [] for k in ["flipped", *cuts]}
    for s in films:
        img, gt = np.asarray(s.load_image()), s.coords
        h, w = img.shape[:2]
        base = pred.predict(img)
        variants = {}
        flipped = pred.predict(np.ascontiguousarray(img[:, ::-1])).coords.copy()
        flipped[:, 1] = w - 1 - flipped[:, 1]
        variants["flipped"] = flipped.reshape(-1, 4, 2)[:, swap].reshape(-1, 2)
        for name, (a, b) in cuts.items():
            top = int(a * h)
            variants[name] = pred.predict(np.ascontiguousarray(img[top:int(b * h)])).coords + [top, 0]
        err += np.hypot(*(base.coords - gt).T).tolist()
        stated += base.ere.tolist()
        for name, c in variants.items():
            moved[name] += np.hypot(*(c - base.coords).T).tolist()
            mre[name].append(np.nanmean(np.hypot(*(c - gt).T)))
    err, stated = np.array(err), np.array(stated)
    bad = err > 20
    print(f"{len(films)} films, {100 * bad.mean():.1f} % of corners > 20 px off before any click (MRE "
          f"{np.nanmean(err):.2f} px); AUROC of the stated error {_auroc(stated, bad):.3f}")
    for name in moved:
        m = np.array(moved[name])
        print(f"  {name:>12}: MRE of the variant {np.mean(mre[name]):.2f} px; AUROC of the move {_auroc(m, bad):.3f}; "
              f"stated error + move {_auroc(stated + m, bad):.3f}, + move / 2 {_auroc(stated + m / 2, bad):.3f}")


def films_vs_corners(pred, films):
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    from vertebra_shift import longest_run, shifted_vertebrae

    from napari_interactive_landmarks.measurements.cobb import check_spine

    shifted, mean_stated, err, stated, film_of = [], [], [], [], []
    for s in films:
        if check_spine(s.coords) is not None:
            continue
        p = pred.predict(np.asarray(s.load_image()))
        shifted.append(longest_run(shifted_vertebrae(p.coords, s.coords) != 0) >= 3)
        mean_stated.append(float(np.nanmean(p.ere)))
        err += np.hypot(*(p.coords - s.coords).T).tolist()
        stated += p.ere.tolist()
        film_of += [len(shifted) - 1] * len(p.ere)
    shifted, mean_stated = np.array(shifted), np.array(mean_stated)
    err, stated, film_of = np.array(err), np.array(stated), np.array(film_of)
    bad = err > 20
    print(f"{len(shifted)} films (labels in order), {int(shifted.sum())} with a run of >= 3 vertebrae a level off; "
          f"their mean stated error: median {np.median(mean_stated[shifted]):.1f} px against "
          f"{np.median(mean_stated[~shifted]):.1f} px; AUROC of the film's mean stated error for such a film "
          f"{_auroc(mean_stated, shifted):.3f}")
    print(f"  corners > 20 px off: {100 * bad.mean():.1f} %; AUROC of the stated error {_auroc(stated, bad):.3f}; "
          f"with the shifted films known (stated + 1000 px there): {_auroc(stated + 1000 * shifted[film_of], bad):.3f}")


def first_click(pred, films):
    rules = {"worst first (oracle)": [], "best possible": [], "check next (expected gain)": [],
             "largest stated error": []}
    for s in films:
        img, gt = np.asarray(s.load_image()), s.coords
        prepared = pred.prepare(img)
        p0 = pred.predict(prepared)
        err0 = np.hypot(*(p0.coords - gt).T)
        after = np.full(len(gt), np.nan)
        for k in np.flatnonzero(np.all(np.isfinite(gt), axis=1)):
            p1 = pred.predict(prepared, clicks={int(k): tuple(gt[k])}, previous=p0.coords)
            after[k] = np.nanmean(np.hypot(*(p1.coords - gt).T))
        ok = np.isfinite(after)
        for name, score in (("worst first (oracle)", err0), ("best possible", -after),
                            ("check next (expected gain)", p0.gain), ("largest stated error", p0.ere)):
            rules[name].append(after[int(np.nanargmax(np.where(ok, score, np.nan)))])
    print(f"{len(films)} films; the film's mean error after the first correction at the point each rule suggests:")
    for name, v in rules.items():
        v = np.array(v)
        print(f"  {name:>27}: {v.mean():6.1f} px; films at 20 px or less {100 * np.mean(v <= 20):.1f} %")


def second(pred, films, other):
    err, stated, apart, level = [], [], [], []
    for s in films:
        img, gt = np.asarray(s.load_image()), s.coords
        a, b = pred.predict(img), other.predict(img)
        e = np.hypot(*(a.coords - gt).T)
        d = np.hypot(*(a.coords - b.coords).T)
        ca, cb = a.coords.reshape(-1, 4, 2).mean(1), b.coords.reshape(-1, 4, 2).mean(1)
        height = np.median(np.linalg.norm(np.diff(ca, axis=0), axis=1))
        lv = np.repeat(np.linalg.norm(ca - cb, axis=1) / height, 4)
        err += e.tolist()
        stated += a.ere.tolist()
        apart += d.tolist()
        level += lv.tolist()
    err, stated, apart, level = map(np.array, (err, stated, apart, level))
    bad = err > 20
    print(f"{len(films)} films, {100 * bad.mean():.1f} % of corners > 20 px off before any click (MRE "
          f"{np.nanmean(err):.2f} px); AUROC of the stated error {_auroc(stated, bad):.3f}")
    print(f"  distance between the two networks' corners: AUROC {_auroc(apart, bad):.3f}")
    print(f"  distance between their vertebrae, in vertebra heights: AUROC {_auroc(level, bad):.3f}; "
          f"a level apart (> 0.5): {100 * (level > 0.5).mean():.1f} % of corners, of which "
          f"{100 * bad[level > 0.5].mean():.1f} % > 20 px off (else {100 * bad[level <= 0.5].mean():.1f} %)")
    for w in (0.25, 0.5, 1.0, 2.0):
        print(f"  stated + {w} x corner distance: AUROC {_auroc(stated + w * apart, bad):.3f}; "
              f"max(stated, {w} x distance) {_auroc(np.maximum(stated, w * apart), bad):.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["ends", "collapse", "damage", "gate", "tta", "films", "firstclick", "second"])
    ap.add_argument("--second", help="weights file of a second network (second)")
    ap.add_argument("--root", default=str(REPO.parent / "shared/datasets/aasce"))
    ap.add_argument("--split", default="eval", choices=["calib", "eval", "val"])
    ap.add_argument("--clicks", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    from napari_interactive_landmarks.inference import Predictor

    torch.set_num_threads(args.threads)
    pred = Predictor.from_name("aasce-spine", device="cpu")
    pred.set_precision("fp32")
    films = _films(args.root, args.split)
    if args.what == "ends":
        ends(pred, films)
    elif args.what == "collapse":
        collapse(pred, films)
    elif args.what == "gate":
        gate(pred, films, args.clicks)
    elif args.what == "tta":
        tta(pred, films)
    elif args.what == "films":
        films_vs_corners(pred, films)
    elif args.what == "firstclick":
        first_click(pred, films)
    elif args.what == "second":
        other = Predictor.from_file(args.second, device="cpu")
        other.set_precision("fp32")
        second(pred, films, other)
    else:
        damage(pred, films, args.clicks)


if __name__ == "__main__":
    main()
