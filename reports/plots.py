"""PNG plots for the comparison report, returned as bytes. matplotlib's object API with the
Agg canvas: no pyplot global state, no display needed, and no version stamp in the files,
so the same studies give the same bytes.

Colours are the Okabe-Ito palette (safe for the common colour-vision deficiencies), one per
system in every plot; precisions differ by marker and line style. A point or bar whose runs
were not all VALID is drawn hollow (hatched bars), and the legend says so.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, NullLocator

_PNG_METADATA = {"Software": None}  # matplotlib otherwise stamps its version into each file
# Okabe & Ito (2008), yellow last: it is faint on white.
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442")
_STYLES = {"fp32": ("o", "-"), "fp16": ("s", "--"), "bf16": ("^", "-."), "int8": ("D", ":")}
INVALID_KEY = "hollow: INVALID (not every run valid)"


def system_colors(names: list[str]) -> dict[str, str]:
    """One colour per system, in the order given, the same in every plot."""
    return {name: OKABE_ITO[i % len(OKABE_ITO)] for i, name in enumerate(names)}


@dataclass(frozen=True)
class Series:
    label: str
    system: str  # picks the colour
    precision: str  # picks marker and line style
    x: tuple[float, ...]
    y: tuple[float, ...]
    yerr: tuple[float, ...]
    valid: tuple[bool, ...]  # every run of the point VALID


@dataclass(frozen=True)
class Bar:
    label: str
    system: str
    value: float
    err_low: float  # the error bar's extent below and above the value
    err_high: float
    valid: bool


def _style(precision: str) -> tuple[str, str]:
    return _STYLES.get(precision, ("v", "-"))


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata=_PNG_METADATA)
    return buffer.getvalue()


def line_plot(title: str, xlabel: str, ylabel: str, series: list[Series], colors: dict[str, str],
              batch_axis: bool = False, hlines: dict[str, float] | None = None) -> bytes:
    return _png(line_figure(title, xlabel, ylabel, series, colors, batch_axis, hlines))


def line_figure(title: str, xlabel: str, ylabel: str, series: list[Series], colors: dict[str, str],
                batch_axis: bool = False, hlines: dict[str, float] | None = None) -> Figure:
    """Means with error bars (one standard deviation over runs), one line per series. The y
    axis turns logarithmic when values span more than 20x (a CPU beside GPUs), so both stay
    readable. A batch axis is log2 with a tick at each measured batch size, labelled 1, 2, ..."""
    fig = Figure(figsize=(10, 5.5))
    ax = fig.subplots()
    for s in series:
        marker, line = _style(s.precision)
        color = colors[s.system]
        ax.errorbar(s.x, s.y, yerr=s.yerr, color=color, linestyle=line, marker="none", capsize=3)
        for hollow in (False, True):
            xs = [x for x, ok in zip(s.x, s.valid) if ok != hollow]
            ys = [y for y, ok in zip(s.y, s.valid) if ok != hollow]
            if xs:
                ax.plot(xs, ys, linestyle="none", marker=marker, markersize=7, color=color,
                        markerfacecolor="white" if hollow else color, markeredgewidth=1.5)
    for label, y in (hlines or {}).items():
        ax.axhline(y, linestyle="--", color="grey", linewidth=1)
        ax.annotate(f"SLO {label}", (0.01, y), xycoords=("axes fraction", "data"), va="bottom", fontsize=9,
                    color="dimgrey")
    if batch_axis:
        batches = sorted({x for s in series for x in s.x})
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(batches))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks(batches, [f"{b:g}" for b in batches])
    values = [y for s in series for y in s.y if y > 0]
    if values and max(values) > 20 * min(values):
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    handles = [Line2D([], [], color=colors[s.system], linestyle=_style(s.precision)[1], marker=_style(s.precision)[0])
               for s in series]
    labels = [s.label for s in series]
    if any(not ok for s in series for ok in s.valid):
        handles.append(Line2D([], [], linestyle="none", marker="o", color="grey", markerfacecolor="white"))
        labels.append(INVALID_KEY)
    if handles:
        ax.legend(handles, labels, fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def bar_plot(title: str, xlabel: str, bars: list[Bar], colors: dict[str, str]) -> bytes:
    return _png(bar_figure(title, xlabel, bars, colors))


def bar_figure(title: str, xlabel: str, bars: list[Bar], colors: dict[str, str]) -> Figure:
    """Horizontal bars, top to bottom in the order given, coloured by system; a bar whose
    runs were not all VALID is hatched and hollow."""
    fig = Figure(figsize=(10, max(2.5, 0.45 * len(bars) + 1.5)))
    ax = fig.subplots()
    positions = list(range(len(bars)))[::-1]
    for y, b in zip(positions, bars):
        color = colors[b.system]
        ax.barh(y, b.value, xerr=[[b.err_low], [b.err_high]], capsize=3, edgecolor=color,
                color="white" if not b.valid else color, hatch=None if b.valid else "//", linewidth=1.5)
    ax.set_yticks(positions, [b.label for b in bars], fontsize=9)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.grid(True, axis="x", alpha=0.3)
    handles = [Patch(color=colors[name], label=name) for name in dict.fromkeys(b.system for b in bars)]
    if any(not b.valid for b in bars):
        handles.append(Patch(facecolor="white", edgecolor="grey", hatch="//", label="hatched: INVALID"))
    ax.legend(handles=handles, fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig
