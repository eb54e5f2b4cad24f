"""Plots: batch ticks at the measured sizes, one colour-blind-safe colour per system, INVALID
points hollow (hatched bars), legends that say so, and the same bytes for the same data."""

from __future__ import annotations

from matplotlib.colors import to_hex

from reports.plots import (INVALID_KEY, OKABE_ITO, Bar, Series, bar_figure, bar_plot, line_figure, line_plot,
                           system_colors)

BATCHES = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0)
COLORS = system_colors(["H100x1", "H200x1"])


def _series(system: str, valid: tuple[bool, ...], precision: str = "fp16") -> Series:
    return Series(f"{system} {precision}", system, precision, BATCHES, tuple(100.0 * b for b in BATCHES),
                  (1.0,) * len(BATCHES), valid)


def test_batch_axis_ticks_at_every_measured_size_labelled_plainly():
    fig = line_figure("t", "batch size", "samples/s", [_series("H100x1", (True,) * 10)], COLORS, batch_axis=True)
    ax = fig.axes[0]
    assert list(ax.get_xticks()) == list(BATCHES)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4", "8", "16", "32", "64", "128", "256", "512"]
    assert ax.get_xaxis().get_minor_locator().tick_values(1, 512) == []


def test_invalid_points_are_hollow_and_the_legend_says_so():
    valid = (False, False, True, True, True, True, True, True, True, True)
    fig = line_figure("t", "x", "y", [_series("H100x1", valid)], COLORS, batch_axis=True)
    markers = [line for line in fig.axes[0].lines if line.get_marker() == "s"]  # fp16: squares
    hollow = [m for m in markers if to_hex(m.get_markerfacecolor()) == "#ffffff"]
    filled = [m for m in markers if to_hex(m.get_markerfacecolor()) == COLORS["H100x1"].lower()]
    assert [list(m.get_xdata()) for m in hollow] == [[1.0, 2.0]] and [len(m.get_xdata()) for m in filled] == [8]
    assert INVALID_KEY in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_each_system_keeps_its_colour_in_every_plot():
    assert COLORS == {"H100x1": OKABE_ITO[0], "H200x1": OKABE_ITO[1]}
    lines = line_figure("t", "x", "y", [_series("H100x1", (True,) * 10), _series("H200x1", (True,) * 10, "fp32")],
                        COLORS)
    bars = bar_figure("t", "x", [Bar("a", "H200x1", 5.0, 0.1, 0.1, True), Bar("b", "H100x1", 4.0, 0.1, 0.1, False)],
                      COLORS)
    line_colors = {to_hex(line.get_color()) for line in lines.axes[0].lines}
    assert line_colors == {COLORS["H100x1"].lower(), COLORS["H200x1"].lower()}
    patches = bars.axes[0].patches
    assert to_hex(patches[0].get_facecolor()) == COLORS["H200x1"].lower()
    # The INVALID bar: hollow and hatched, its edge in the system's colour.
    assert to_hex(patches[1].get_facecolor()) == "#ffffff" and patches[1].get_hatch() == "//"
    assert to_hex(patches[1].get_edgecolor()) == COLORS["H100x1"].lower()


def test_same_data_same_bytes():
    series = [_series("H100x1", (True,) * 10)]
    assert line_plot("t", "x", "y", series, COLORS) == line_plot("t", "x", "y", series, COLORS)
    bars = [Bar("a", "H100x1", 5.0, 0.1, 0.1, True)]
    png = bar_plot("t", "x", bars, COLORS)
    assert png == bar_plot("t", "x", bars, COLORS) and png[:8] == b"\x89PNG\r\n\x1a\n" and b"matplotlib" not in png
