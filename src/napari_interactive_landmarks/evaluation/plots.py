"""Plots of :func:`~.protocol.evaluate_dataset` results (matplotlib, Agg, headless).

matplotlib is imported lazily and only through ``matplotlib.figure.Figure`` + the Agg canvas:
``pyplot`` and ``matplotlib.use`` are deliberately avoided so that calling this from inside
napari (Qt backend active) neither switches the global backend nor opens a window.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

__all__ = ["plot_mre_curves"]


def plot_mre_curves(
    results: Mapping[str, dict],
    path,
    title: str | None = None,
    *,
    show_manual: bool = True,
    dpi: int = 150,
) -> Path:
    """MRE versus number of clicks: model run solid, manual revision dashed (same colour).

    ``results`` maps a label (e.g. a model name) to an ``evaluate_dataset`` result; the
    y-axis unit is taken from the results (all should share one).  Missing values (``None``)
    leave gaps.  Writes the figure to ``path`` (format from the suffix) and returns it.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    units = set()
    for i, (label, res) in enumerate(results.items()):
        color = f"C{i % 10}"
        units.add(res.get("unit", "px"))
        model = [float("nan") if v is None else v for v in res["mre_model"]]
        ax.plot(range(len(model)), model, "-o", color=color, markersize=3, label=f"{label} (model)")
        if show_manual and res.get("mre_manual") is not None:
            manual = [float("nan") if v is None else v for v in res["mre_manual"]]
            ax.plot(range(len(manual)), manual, "--", color=color, label=f"{label} (manual)")
    unit = units.pop() if len(units) == 1 else "mixed units"
    ax.set_xlabel("number of clicks")
    ax.set_ylabel(f"MRE ({unit})")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    if results:
        ax.legend(fontsize="small")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
