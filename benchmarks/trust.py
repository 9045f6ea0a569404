"""Trust on every film (issue 34): what the tool says about one film, measured over a split.

The click protocol runs on every film (the session's path, as `evaluate`), worst-first (the oracle) and, with
--guided, in the order the tool suggests (the stated ERE's largest first). From the worst-first traces, per click
count 0..--clicks, over the landmarks not clicked yet:

- the stated ERE against the true error: AUROC for an error above --threshold, the mean stated / mean actual,
  per-landmark ratio actual / stated (median and range over landmarks), binned (stated deciles), the share of films
  with a landmark stating more than 300 px (or 30 mm) and the largest stated value;
- the conformal regions: coverage (all, and the worst landmark), median area;
- harm (the others' mean error rose), damage (a landmark within 10 px / 1 mm ends beyond 20 px / 2 mm), collapse
  (another landmark moved onto the click), MRE.
And NoC to --noc-target for the oracle and the guided order (guided / oracle).

    python benchmarks/trust.py --model aasce-spine --dataset aasce --root ../shared/datasets/aasce --split eval \
        --clicks 10 --guided --json docs/results/trust/aasce-spine-eval.json --plots docs/images/trust --threads 2

Prints the tables; --json keeps every figure (and the per-landmark ones), --plots draws the per-landmark
calibration (stated vs actual at 0 and 3 clicks).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def _args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--weights", default=None)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--root", default=None)
    ap.add_argument("--split", required=True)
    ap.add_argument("--split-file", default=None)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--clicks", type=int, default=10)
    ap.add_argument("--guided", action="store_true",
                    help="also run the viewer's suggested order ('check next': the largest expected gain first)")
    ap.add_argument("--guided-order", default="suggested", choices=["suggested", "ere"],
                    help="the guided order: the viewer's suggestion (default) or the largest stated ERE (the previous "
                         "viewer's)")
    ap.add_argument("--threshold", type=float, default=None, help="error for the AUROC (default 20 px / 2 mm)")
    ap.add_argument("--noc-target", type=float, default=None, help="MRE target of NoC (default 20 px / 2 mm)")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--plots", default=None)
    ap.add_argument("--no-shape-prior", action="store_true")
    ap.add_argument("--envelope", type=float, default=None, help="override the doubt maps' envelope weight (0: off)")
    ap.add_argument("--no-ere-calibration", action="store_true", help="state the doubt maps' raw ERE")
    ap.add_argument("--exclusion", type=float, default=None,
                    help="override the zone around a click no other landmark is decoded in (fraction; 0: off)")
    ap.add_argument("--after-click-members", dest="after_click_members", type=int, nargs="+", default=None,
                    help="an ensemble's members that run after a click (default: all; issue 39 item 2)")
    ap.add_argument("--hold", type=float, default=None,
                    help="override the card's network-alone hold (map cells) after a click")
    ap.add_argument("--prior-hold", dest="prior_hold", type=float, default=None,
                    help="override the shape prior's hold (map cells): unclicked points that moved less stay put")
    ap.add_argument("--no-familiarity", action="store_true",
                    help="no familiarity check: every film's regions at the stated level")
    ap.add_argument("--shift-scale", type=float, default=None,
                    help="a synthetic shift: every film resized by this factor (its points and pixel spacing with it)")
    ap.add_argument("--shift-gamma", type=float, default=None,
                    help="a synthetic shift: grey levels raised to this power (on [0, 1])")
    ap.add_argument("--gain-propagation", type=float, default=None,
                    help="override how much of the others' expected error a correction is credited with removing")
    return ap.parse_args()


def _load(args):
    import torch

    from napari_interactive_landmarks.cli import _dataset_samples
    from napari_interactive_landmarks.inference import Predictor

    torch.set_num_threads(args.threads)
    p = Predictor.from_file(args.weights, device="cpu") if args.weights else Predictor.from_name(args.model or
                                                                                                 "aasce-spine")
    p.set_precision(args.precision)
    if args.no_shape_prior:
        p.use_shape_prior = False
    if args.envelope is not None:
        p.envelope_weight = args.envelope
    if args.no_ere_calibration:
        p.ere_calibration = None
    if args.exclusion is not None:
        p.EXCLUSION = args.exclusion
    if args.gain_propagation is not None:
        p.GAIN_PROPAGATION = args.gain_propagation
    if args.no_familiarity:
        p.familiarity = None
    if args.after_click_members is not None:
        p.after_click_members = args.after_click_members
    if args.hold is not None:
        p.hold = args.hold
    if args.prior_hold is not None and p.shape_model is not None:
        p.set_shape_model(p.shape_model.with_settings(hold=args.prior_hold))
    samples = _dataset_samples(args, p)
    if args.shift_scale or args.shift_gamma:
        samples = [ShiftedSample(s, args.shift_scale or 1.0, args.shift_gamma or 1.0) for s in samples]
    return p, samples


class ShiftedSample:
    """A sample whose film is resized by ``scale`` and whose grey levels are raised to ``gamma`` (a film of
    another scanner, as far as a transform can make one); its points and spacing follow the resize."""

    def __init__(self, sample, scale: float, gamma: float):
        self.sample, self.scale, self.gamma = sample, float(scale), float(gamma)
        self.name = f"{sample.name} (×{scale:g}, γ {gamma:g})"
        self.coords = np.asarray(sample.coords, np.float64) * self.scale
        self.image_shape = tuple(int(round(v * self.scale)) for v in sample.image_shape)
        self.spacing = None if sample.spacing is None else float(sample.spacing) / self.scale

    def load_image(self):
        from skimage.transform import resize

        img = np.asarray(self.sample.load_image(), np.float64)
        if img.ndim == 3:
            img = img[..., :3].mean(-1)
        lo, hi = float(img.min()), float(img.max())
        unit = (img - lo) / max(hi - lo, 1e-9)
        unit = resize(unit, self.image_shape, order=1, anti_aliasing=self.scale < 1, preserve_range=True)
        return (np.clip(unit, 0, 1) ** self.gamma * 255).astype(np.uint8)


def _traces(pred, samples, clicks, order):
    from napari_interactive_landmarks.evaluation.protocol import run_click_protocol

    out, t0 = [], time.time()
    for i, s in enumerate(samples):
        tr = run_click_protocol(pred, s, max_clicks=clicks, order=order)
        scale = 1.0 if s.spacing is None else float(np.mean(np.broadcast_to(np.asarray(s.spacing, float), 2)))
        out.append((tr, scale, s.image_shape))
        print(f"{order}: {i + 1}/{len(samples)} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    return out


def _unclicked(tr):
    m = np.ones(tr.errors.shape, bool)
    for step in range(m.shape[0]):
        m[step, tr.clicked[:step]] = False
    return m & np.isfinite(tr.errors)


def summarise(pred, traces, threshold, big):
    from napari_interactive_landmarks.evaluation.calibration_stats import auroc
    from napari_interactive_landmarks.evaluation.metrics import collapsed_onto_click, damaged_by_click, others_delta
    from napari_interactive_landmarks.regions import contains, region_area

    s_steps = traces[0][0].errors.shape[0]
    k = traces[0][0].errors.shape[1]
    err = np.stack([tr.errors * sc for tr, sc, _ in traces])  # (N, S, K) in the unit
    ere = np.stack([tr.ere * sc for tr, sc, _ in traces])
    unc = np.stack([_unclicked(tr) for tr, _, _ in traces])
    ere = np.where(unc, ere, np.nan)
    err_u = np.where(unc, err, np.nan)
    per_click = []
    regions = pred.regions
    for st in range(s_steps):
        e, x = err_u[:, st], ere[:, st]
        ok = np.isfinite(e) & np.isfinite(x)
        lm_ratio = np.array([np.nansum(e[:, j]) / np.nansum(np.where(np.isfinite(e[:, j]), x[:, j], np.nan))
                             if np.isfinite(e[:, j]).sum() >= 5 else np.nan for j in range(k)])
        deciles = np.nanpercentile(x[ok], np.linspace(0, 100, 11))
        b = np.clip(np.searchsorted(deciles, x[ok], side="right") - 1, 0, 9)
        binned = [[float(x[ok][b == i].mean()), float(e[ok][b == i].mean())] for i in range(10) if (b == i).any()]
        row = {"clicks": st, "auroc": auroc(x[ok], e[ok] > threshold), "mean_stated": float(x[ok].mean()),
               "mean_actual": float(e[ok].mean()), "landmark_ratio_median": float(np.nanmedian(lm_ratio)),
               "landmark_ratio_min": float(np.nanmin(lm_ratio)), "landmark_ratio_max": float(np.nanmax(lm_ratio)),
               "landmark_ratio": [None if not np.isfinite(v) else round(float(v), 4) for v in lm_ratio],
               "binned_stated_actual": binned,
               "films_with_stated_above_big": float(100 * np.mean((np.nan_to_num(x) > big).any(1))),
               "max_stated": float(np.nanmax(x)), "mre": float(np.nanmean(err[:, st]))}
        if regions is not None:
            inside, area = [], []
            for tr, sc, _ in traces:
                c = tr.coords[st]
                rad = tr.radius[st] if tr.radius is not None else regions.for_clicks(st)
                inside.append(np.where(unc[len(inside), st], contains(tr.gt, c, tr.spread[st], rad), np.nan))
                area.append(np.where(unc[len(area), st], region_area(tr.spread[st], rad) * sc * sc, np.nan))
            inside, area = np.array(inside, float), np.array(area, float)
            per_lm = np.nanmean(inside, axis=0)
            row.update(coverage=float(100 * np.nanmean(inside)), coverage_worst_landmark=float(100 * np.nanmin(per_lm)),
                       coverage_worst_landmark_index=int(np.nanargmin(per_lm)),
                       coverage_per_landmark=[None if not np.isfinite(v) else round(100 * float(v), 2) for v in per_lm],
                       median_area=float(np.nanmedian(area)))
        flags = [tr.extra.get("film_check") for tr, _, _ in traces]
        if any(f is not None for f in flags):
            row["films_unfamiliar"] = float(100 * np.mean([bool(f and f["unfamiliar"]) for f in flags]))
        per_click.append(row)
    # interaction: harm, damage, collapse per click
    good, bad = (1.0, 2.0) if threshold < 10 else (10.0, 20.0)
    harm = np.array([others_delta(tr.errors * sc, tr.clicked) for tr, sc, _ in traces])
    dmg = np.array([damaged_by_click(tr.errors * sc, tr.clicked, good, bad) for tr, sc, _ in traces])
    col = np.array([collapsed_onto_click(tr.coords, tr.gt, tr.clicked) for tr, _, _ in traces])
    made = np.array([[j < len(tr.clicked) for j in range(s_steps - 1)] for tr, _, _ in traces])
    for j in range(1, s_steps):
        m = made[:, j - 1]
        per_click[j].update(harm=float(100 * np.mean(np.nan_to_num(harm[m, j - 1]) > 0)),
                            damage=float(100 * dmg[m, j - 1].mean()), collapse=float(100 * col[m, j - 1].mean()))
    return per_click


def noc(traces, target):
    from napari_interactive_landmarks.evaluation.metrics import noc as noc_metric

    curves = np.stack([np.nanmean(tr.errors * sc, axis=1) for tr, sc, _ in traces])
    return noc_metric(curves, target)


def _plots(out_dir: Path, rows, unit, label):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    for ax, st in zip(axes, (0, 3)):
        if st >= len(rows):
            continue
        r = rows[st]
        b = np.array(r["binned_stated_actual"])
        ax.plot(b[:, 0], b[:, 1], "o-", label="deciles of the stated ERE (all landmarks)")
        top = max(b.max(), 1.0) * 1.1
        ax.plot([0, top], [0, top], "k--", lw=0.8, label="stated = actual")
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_xlabel(f"stated expected error ({unit})")
        ax.set_ylabel(f"mean actual error ({unit})")
        ratios = [v for v in r["landmark_ratio"] if v is not None]
        ax.set_title(f"{label}: {st} clicks, AUROC {r['auroc']:.3f}\nper landmark actual/stated: median "
                     f"{np.median(ratios):.2f}, range {min(ratios):.2f}–{max(ratios):.2f}", fontsize=9)
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    path = out_dir / f"{label}-calibration.png"
    fig.savefig(path, dpi=110)
    print(f"wrote {path}", file=sys.stderr)


def main():
    args = _args()
    pred, samples = _load(args)
    mm = all(s.spacing is not None for s in samples)
    unit = "mm" if mm else "px"
    threshold = args.threshold if args.threshold is not None else (2.0 if mm else 20.0)
    target = args.noc_target if args.noc_target is not None else threshold
    worst = _traces(pred, samples, args.clicks, "worst")
    rows = summarise(pred, worst, threshold, 30.0 if mm else 300.0)
    res = {"model": pred.name, "split": args.split, "num_images": len(worst), "unit": unit,
           "threshold": threshold, "precision": pred.precision, "envelope_weight": pred.envelope_weight,
           "ere_calibration": pred.ere_calibration is not None, "shape_prior": pred.shape_prior_active,
           "per_click": rows, "noc_oracle": noc(worst, target), "noc_target": target}
    if args.guided:
        guided = _traces(pred, samples, args.clicks, args.guided_order)
        res["noc_guided"] = noc(guided, target)
        res["mre_guided"] = [float(np.nanmean([np.nanmean(tr.errors[s] * sc) for tr, sc, _ in guided]))
                             for s in range(args.clicks + 1)]
    print(f"{pred.name} on {args.split} ({len(worst)} films), unit {unit}, AUROC for error > {threshold:g} {unit}")
    print(f"{'clicks':>6} {'MRE':>7} {'AUROC':>6} {'stated/actual':>14} {'lm actual/stated':>20} {'>big %':>7} "
          f"{'max':>7} {'cover %':>8} {'worst lm':>9} {'area':>9} {'harm':>6} {'damage':>7} {'collapse':>8}")
    for r in rows:
        cov = f"{r.get('coverage', float('nan')):8.1f} {r.get('coverage_worst_landmark', float('nan')):9.1f}"
        print(f"{r['clicks']:>6} {r['mre']:7.2f} {r['auroc']:6.3f} {r['mean_stated']:6.1f}/{r['mean_actual']:<7.1f} "
              f"{r['landmark_ratio_median']:6.2f} ({r['landmark_ratio_min']:.2f}–{r['landmark_ratio_max']:.2f})"
              f" {r['films_with_stated_above_big']:7.1f} {r['max_stated']:7.0f} {cov} {r.get('median_area', float('nan')):9.0f}"
              f" {r.get('harm', float('nan')):6.1f} {r.get('damage', float('nan')):7.1f} {r.get('collapse', float('nan')):8.1f}")
    if "films_unfamiliar" in rows[0]:
        print(f"films flagged as unlike the calibration films: {rows[0]['films_unfamiliar']:.1f} %")
    print(f"NoC@{target:g} {unit}: oracle (worst first) {res['noc_oracle']:.2f}"
          + (f", guided ({args.guided_order}) {res['noc_guided']:.2f} "
             f"({100 * (res['noc_guided'] / res['noc_oracle'] - 1):+.0f} %)" if args.guided else ""))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1))
    if args.plots:
        _plots(Path(args.plots), rows, unit, f"{pred.name}-{args.split}" + ("" if pred.ere_calibration else "-raw"))


if __name__ == "__main__":
    main()
