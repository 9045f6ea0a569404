"""Calibration figures: reliability diagrams and the binned ERE-vs-error curve (McCouat &
Voiculescu 2022, Figs. 4 and 5).

Like :mod:`.plots`, matplotlib is imported lazily and only through ``matplotlib.figure.Figure`` +
the Agg canvas (no ``pyplot``, no ``matplotlib.use``), so it is safe inside a running napari.
Inputs come from :mod:`napari_interactive_landmarks.codecs.uncertainty`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = ["plot_reliability", "plot_ere_vs_error"]


def _new_figure(size):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path, dpi) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def _reliability_panel(ax, bins: Mapping, label: str) -> None:
    edges = np.asarray(bins["edges"], dtype=np.float64)
    acc = np.asarray(bins["accuracy"], dtype=np.float64)
    conf = np.asarray(bins["confidence"], dtype=np.float64)
    counts = np.asarray(bins["counts"])
    left, width = edges[:-1], np.diff(edges)
    filled = counts > 0
    a = np.where(filled, acc, 0.0)
    c = np.where(filled, conf, 0.0)
    ax.bar(left, a, width=width, align="edge", color="tab:blue", edgecolor="black", linewidth=0.6,
           label="accuracy")
    lo, hi = np.minimum(a, c), np.maximum(a, c)
    over = c > a  # over-confident: confidence above accuracy
    ax.bar(left[over], (hi - lo)[over], bottom=lo[over], width=width[over], align="edge",
           color="tab:red", alpha=0.45, edgecolor="tab:red", hatch="//", label="over-confident gap")
    under = (c < a) & filled
    ax.bar(left[under], (hi - lo)[under], bottom=lo[under], width=width[under], align="edge",
           color="limegreen", alpha=0.55, edgecolor="green", hatch="\\\\", label="under-confident gap")
    upper = float(edges[-1])
    ax.plot([0, upper], [0, upper], "k--", linewidth=1, label="perfect calibration")
    for x, w_, n in zip(left, width, counts):
        if n:
            ax.text(x + w_ / 2, 0.01 * upper, str(int(n)), ha="center", va="bottom", fontsize=6, color="white")
    ax.set_xlim(0, upper)
    ax.set_ylim(0, max(upper, float(np.nanmax(np.r_[a, c, 0.0])) * 1.05))
    ax.set_xlabel("confidence (max probability)")
    ax.set_ylabel("accuracy")
    ece = bins.get("ece", float("nan"))
    ax.set_title(f"{label}: ECE = {100 * ece:.2f} %  (n = {int(bins.get('n', counts.sum()))})", fontsize=9)
    # explicit handles: an empty bar group (e.g. no under-confident bin) would otherwise borrow another's style
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [
        Line2D([0], [0], color="k", linestyle="--", linewidth=1, label="perfect calibration"),
        Patch(facecolor="tab:blue", edgecolor="black", linewidth=0.6, label="accuracy"),
        Patch(facecolor="tab:red", alpha=0.45, edgecolor="tab:red", hatch="//", label="over-confident gap"),
        Patch(facecolor="limegreen", alpha=0.55, edgecolor="green", hatch="\\\\", label="under-confident gap"),
    ]
    ax.legend(handles=handles, fontsize="x-small", loc="upper left")


def plot_reliability(bins_before: Mapping, bins_after: Mapping | None, path, title: str | None = None,
                     *, dpi: int = 150) -> Path:
    """Reliability diagrams before and after temperature scaling, side by side (one panel when
    ``bins_after`` is None).  ``bins_*`` are :func:`~.calibration_stats.calibration_bins` dicts.
    Bars: per-bin accuracy; hatched: the gap to the bin's mean confidence (red = over-confident,
    green = under-confident); numbers: bin counts.  Writes ``path`` and returns it."""
    panels = [("before scaling", bins_before)] + ([("after scaling", bins_after)] if bins_after is not None else [])
    fig = _new_figure((4.6 * len(panels), 4.2))
    for i, (label, bins) in enumerate(panels):
        _reliability_panel(fig.add_subplot(1, len(panels), i + 1), bins, label)
    if title:
        fig.suptitle(title)
    return _save(fig, path, dpi)


def plot_ere_vs_error(bin_ere, bin_err, r: float, path, title: str | None = None, *, unit: str = "px",
                      dpi: int = 150) -> Path:
    """The paper's Fig. 5: mean ERE (x) vs mean true radial error (y) per group of landmarks
    (from :func:`~.calibration_stats.binned_correlation`), with the identity line and the
    Pearson correlation ``r`` of the group means.  Writes ``path`` and returns it."""
    x = np.asarray(bin_ere, dtype=np.float64)
    y = np.asarray(bin_err, dtype=np.float64)
    fig = _new_figure((5.0, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(x, y, "o", color="tab:blue", markersize=4, label=f"groups (Pearson r = {r:.3f})")
    fin = np.r_[x[np.isfinite(x)], y[np.isfinite(y)]]
    top = float(fin.max()) * 1.05 if fin.size else 1.0
    ax.plot([0, top], [0, top], "k--", linewidth=1, label="ERE = error")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel(f"mean Expected Radial Error ({unit})")
    ax.set_ylabel(f"mean true radial error ({unit})")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="upper left")
    if title:
        ax.set_title(title)
    return _save(fig, path, dpi)
