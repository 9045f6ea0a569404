"""Which form of the film's doubt in the stated error (issue 34): none, the shipped additive term, or a factor?

The raw doubt-map ERE and the true error of every landmark on the click protocol (worst-first clicks, 0–10) of
aasce-spine's `calib` and `eval` halves (fp32, the card's calibration off: `collect_ere_and_errors`, what `calibrate`
fits on), cached in --cache. Each form is fitted on `calib` and measured on `eval`:

- ``none``: ``min(s · ERE^b, max(cap, ERE))`` (``fit_ere_calibration`` with the film term switched off);
- ``term``: the shipped ``min(s · ERE^b + A · (F / F_ref)^g, max(cap, ERE))``;
- ``factor``: ``min(s · ERE^b · (F / F_ref)^g, max(cap, ERE))``, g (0–2) by the same likelihood, the scales of ``none``
  times one number (matching the pooled mean, caps included).

Prints per click count (0, 1, 3, 5, 10): the pooled AUROC for an error > 20 px, the mean AUROC within a film, the
largest stated error of a T1/L5 corner within 20 px of its truth, and the points the viewer would draw in doubt
(stating > 20 px or twice the film's median) with the share of them really > 20 px off.

    python experiments/benchmarks/ere_film_term.py
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SPLIT = REPO / "src/napari_interactive_landmarks/data/splits/aasce_seed0.json"
ENDS = [0, 1, 2, 3, 64, 65, 66, 67]


def _auroc(score, positive) -> float:
    from scipy.stats import mannwhitneyu

    positive = np.asarray(positive, bool)
    if positive.all() or not positive.any():
        return float("nan")
    return float(mannwhitneyu(score[positive], score[~positive]).statistic / (positive.sum() * (~positive).sum()))


def collect(root, part, cache: Path):
    if cache.exists():
        d = np.load(cache)
        return d["raw"], d["err"]
    import torch

    from napari_interactive_landmarks.data.datasets import load_aasce
    from napari_interactive_landmarks.evaluation.protocol import collect_ere_and_errors
    from napari_interactive_landmarks.inference import Predictor

    torch.set_num_threads(1)
    pred = Predictor.from_name("aasce-spine", device="cpu")
    pred.set_precision("fp32")
    pred.ere_calibration = None
    by_name = {s.name: s for s in load_aasce(root, "training")}
    names = json.loads(SPLIT.read_text())[part]
    raw, err = collect_ere_and_errors(pred, [by_name[n] for n in names], max_clicks=10, progress=False)
    np.savez(cache, raw=raw, err=err)
    return raw, err


def fit_factor(base, raw, err):
    """Per click count (g, F_ref, multiplier) of the factor form, by the exponential likelihood, caps included."""
    from napari_interactive_landmarks.ere_calibration import (_exponential_nll, _matching_scale)

    out = []
    for j in range(raw.shape[1]):
        r, e = raw[:, j], err[:, j]
        m = np.isfinite(r) & np.isfinite(e) & (r > 0)
        x = np.where(m, r, np.nan) ** base.exponents[j]
        ref = float(np.nanmedian(np.nanmean(x, axis=1)))
        rel = (np.nanmean(x, axis=1) / ref)[:, None] * np.ones_like(x)
        lim = np.maximum(base.caps[j], r)[m]
        best = None
        for g in np.round(np.arange(0.0, 2.0001, 0.1), 2):
            sx = (base.scales[j] * x * rel ** g)[m]
            mult = _matching_scale(sx, e[m], lim)
            nll = _exponential_nll(np.minimum(mult * sx, lim), e[m])
            if best is None or nll < best[0]:
                best = (nll, g, ref, mult)
        out.append(best[1:])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=str(REPO.parent / "shared/datasets/aasce"))
    ap.add_argument("--cache", default="/tmp/ere-film-term-{part}.npz")
    args = ap.parse_args()
    import napari_interactive_landmarks.ere_calibration as E

    raw_c, err_c = collect(args.root, "calib", Path(args.cache.format(part="calib")))
    raw_e, err_e = collect(args.root, "eval", Path(args.cache.format(part="eval")))
    term = E.fit_ere_calibration(raw_c, err_c)
    keep, E.FILM_MIN_GAIN = E.FILM_MIN_GAIN, np.inf
    none = E.fit_ere_calibration(raw_c, err_c)
    E.FILM_MIN_GAIN = keep
    factor = fit_factor(none, raw_c, err_c)

    def stated(form, r, j):
        if form == "none":
            return none.apply(r, j)[0]
        if form == "term":
            return term.apply(r, j)[0]
        g, ref, mult = factor[min(j, len(factor) - 1)]
        x = r ** none.exponents[j]
        f = (np.nanmean(x[np.isfinite(x) & (x > 0)]) / ref) ** g
        return np.minimum(mult * none.scales[j] * x * f, np.maximum(none.caps[j], r))

    print(f"fitted on calib ({len(raw_c)} films), measured on eval ({len(raw_e)} films)")
    for j in (0, 1, 3, 5, 10):
        print(f"{j} clicks:")
        for form in ("none", "term", "factor"):
            st = np.array([stated(form, r, j) for r in raw_e[:, j]])
            e = err_e[:, j]
            m = np.isfinite(st) & np.isfinite(e)
            within = [_auroc(st[i][m[i]], e[i][m[i]] > 20) for i in range(len(st))]
            good_end = np.zeros_like(m)
            good_end[:, ENDS] = True
            good_end &= m & (e < 20)
            med = np.nanmedian(np.where(m, st, np.nan), axis=1, keepdims=True)
            doubt = m & ((st > 20) | (st > 2 * med))
            print(f"  {form:>6}: AUROC {_auroc(st[m], e[m] > 20):.3f}, within a film {np.nanmean(within):.3f}; "
                  f"T1/L5 corners within 20 px state up to {st[good_end].max():.0f} px; in doubt "
                  f"{100 * doubt.sum() / m.sum():.0f} % of points, {100 * (e[doubt] > 20).mean():.0f} % of them > 20 px off")


if __name__ == "__main__":
    main()
