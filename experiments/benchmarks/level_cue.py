"""Does the vertebral-level detector see a spine chain placed a level off, before any click (issue 34)?

For every film of --split (aasce_seed0; films whose labels are out of order are left out), the spine model's
fully automatic answer (fp32, the shipped prior) and, at each end of its chain, the level detector's probabilities
that the true end vertebra lies a level above / at / below the predicted one. The truth: the true end vertebra's
centre relative to the predicted one, along the chain, in vertebrae. Prints, per end, how often the chain is a level
off, the detector's AUROC for it and its agreement with the direction; then per corner, the AUROC for an error
> 20 px of the stated error alone and with the level cue (the stated error widened by the chance that the corner's
vertebra is a level off, interpolated along the chain between the two ends). The model's answers are cached in
--cache (delete it after changing the model).

    python experiments/benchmarks/level_cue.py --detector runs/levels/best.safetensors --split calib
"""
from __future__ import annotations

import argparse
import json
import pickle
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
SPLIT = REPO / "src/napari_interactive_landmarks/data/splits/aasce_seed0.json"


def auroc(score, positive) -> float:
    from scipy.stats import mannwhitneyu

    score, positive = np.asarray(score, float), np.asarray(positive, bool)
    if positive.all() or not positive.any():
        return float("nan")
    return float(mannwhitneyu(score[positive], score[~positive]).statistic / (positive.sum() * (~positive).sum()))


def answers(root, part, cache: Path, threads: int):
    from napari_interactive_landmarks.data.datasets import load_aasce
    from napari_interactive_landmarks.inference import Predictor
    from napari_interactive_landmarks.measurements.cobb import check_spine

    if cache.exists():
        return pickle.loads(cache.read_bytes())
    torch.set_num_threads(threads)
    pred = Predictor.from_name("aasce-spine", device="cpu")
    pred.set_precision("fp32")
    by_name = {s.name: s for s in load_aasce(root, "training")}
    out = []
    for n in json.loads(SPLIT.read_text())[part]:
        s = by_name[n]
        if check_spine(s.coords) is not None:
            continue
        p = pred.predict(np.asarray(s.load_image()))
        out.append({"name": n, "coords": p.coords, "ere": p.ere, "gt": s.coords})
    cache.write_bytes(pickle.dumps(out))
    return out


def true_offsets(coords, gt):
    """Per end (top, bottom): the true end vertebra's centre minus the predicted one's, along the chain, in
    vertebrae (positive: lower on the film)."""
    pc, gc = coords.reshape(-1, 4, 2).mean(1), gt.reshape(-1, 4, 2).mean(1)
    level = np.median(np.linalg.norm(np.diff(pc, axis=0), axis=1))
    res = []
    for v, (a, b) in ((0, (0, 1)), (-1, (-2, -1))):
        d = pc[b] - pc[a]
        d = d / np.linalg.norm(d)
        res.append(float((gc[v] - pc[v]) @ d / level))
    return np.array(res), level


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--detector", required=True, help="the level detector's safetensors file")
    ap.add_argument("--root", default=str(REPO.parent / "shared/datasets/aasce"))
    ap.add_argument("--split", default="calib", choices=["calib", "eval", "val"])
    ap.add_argument("--cache", default="/tmp/level-cue-{split}.pkl")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    from safetensors.torch import load_file

    from napari_interactive_landmarks.io.images import normalise_intensity
    from napari_interactive_landmarks.data.datasets import load_aasce
    sys.path.insert(0, str(REPO / "experiments"))
    from level_detector import LevelDetector, LevelNet

    state = load_file(args.detector)
    width = int(state["stem.0.0.weight"].shape[0])
    net = LevelNet(width=width)
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    det = LevelDetector(net)
    films = answers(args.root, args.split, Path(args.cache.format(split=args.split)), args.threads)
    by_name = {s.name: s for s in load_aasce(args.root, "training")}
    rows = []
    for f in films:
        img = normalise_intensity(np.asarray(by_name[f["name"]].load_image(), dtype=np.float32))
        lv = det.level_offsets(img, f["coords"])
        off, level = true_offsets(f["coords"], f["gt"])
        rows.append({"name": f["name"], "true": off, "level": level, "det": lv,
                     "err": np.hypot(*(f["coords"] - f["gt"]).T), "ere": f["ere"]})
    summary = {"films": len(rows), "split": args.split, "ends": {}}
    print(f"{len(rows)} films of {args.split} (labels in order)")
    for i, end in enumerate(("top", "bottom")):
        t = np.array([r["true"][i] for r in rows])
        off = np.abs(t) > 0.5
        p_off = np.array([1 - r["det"][end]["same"] for r in rows])
        est = np.array([r["det"][end]["offset"] for r in rows])
        direction = np.sign(est[off]) == np.sign(t[off])
        print(f"  {end}: a level off on {off.sum()} films ({100 * off.mean():.0f} %; up {int((t < -0.5).sum())}, "
              f"down {int((t > 0.5).sum())}); detector P(off) AUROC {auroc(p_off, off):.3f}; at P(off) > 0.5: "
              f"{int((p_off > 0.5).sum())} flagged, {int(((p_off > 0.5) & off).sum())} right; direction right on "
              f"{int(direction.sum())}/{off.sum()}; corr(estimated, true offset) {np.corrcoef(est, t)[0, 1]:.2f}")
        above = t < -0.5  # the labelled end vertebra a level above the model's
        print(f"    of the {int(above.sum())} films whose labelled {end} vertebra lies a level above the model's, the "
              f"detector put it at or below the model's on {int((est[above] > -0.5).sum())}")
        summary["ends"][end] = {"off": int(off.sum()), "auroc": auroc(p_off, off),
                                "flagged": int((p_off > 0.5).sum()), "flagged_right": int(((p_off > 0.5) & off).sum())}
    err = np.concatenate([r["err"] for r in rows])
    ere = np.concatenate([r["ere"] for r in rows])
    pv = []
    for r in rows:
        a, b = 1 - r["det"]["top"]["same"], 1 - r["det"]["bottom"]["same"]
        w = np.linspace(0, 1, len(r["err"]) // 4)
        pv.append(np.repeat(np.maximum((1 - w) * a + w * b, 0), 4) * r["level"])
    pv = np.concatenate(pv)
    bad = err > 20
    print(f"  corners > 20 px off: {100 * bad.mean():.1f} %; AUROC stated error {auroc(ere, bad):.3f}; "
          f"level cue alone {auroc(pv, bad):.3f}")
    for k in (0.25, 0.5, 1.0):
        comb = np.sqrt(ere ** 2 + k * pv * np.array([r["level"] for r in rows for _ in r["err"]]))
        print(f"    sqrt(ERE^2 + {k} x P(off) x level^2): AUROC {auroc(comb, bad):.3f}; ERE + {k} x P(off) x level "
              f"{auroc(ere + k * pv, bad):.3f}")
    summary["corner_auroc_stated"] = auroc(ere, bad)
    summary["corner_auroc_level_cue"] = auroc(pv, bad)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
