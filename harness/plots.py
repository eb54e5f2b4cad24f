"""PNG plots for the comparison report. matplotlib's object API with the Agg canvas: no
pyplot global state, no display needed, and no timestamp in the files, so the same
studies give the same bytes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_PNG_METADATA = {"Software": None}  # matplotlib otherwise stamps its version into each file


@dataclass(frozen=True)
class Series:
    label: str
    x: tuple[float, ...]
    y: tuple[float, ...]
    yerr: tuple[float, ...]


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=100, metadata=_PNG_METADATA)


def line_plot(path: Path, title: str, xlabel: str, ylabel: str, series: list[Series], log2_x: bool = False,
              hlines: dict[str, float] | None = None) -> None:
    """Means with error bars (one standard deviation over runs), one line per series. The y
    axis turns logarithmic when values span more than 20x (a CPU beside GPUs), so both stay
    readable."""
    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    for s in series:
        ax.errorbar(s.x, s.y, yerr=s.yerr, marker="o", capsize=3, label=s.label)
    for label, y in (hlines or {}).items():
        ax.axhline(y, linestyle="--", color="grey", linewidth=1)
        ax.annotate(label, (0.01, y), xycoords=("axes fraction", "data"), va="bottom", fontsize=8, color="grey")
    if log2_x:
        ax.set_xscale("log", base=2)
    values = [y for s in series for y in s.y if y > 0]
    if values and max(values) > 20 * min(values):
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def bar_plot(path: Path, title: str, ylabel: str, labels: list[str], values: list[float], errors: list[float]) -> None:
    fig = Figure(figsize=(max(6.0, 0.9 * len(labels) + 2), 5))
    ax = fig.subplots()
    ax.bar(range(len(labels)), values, yerr=errors, capsize=3)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
