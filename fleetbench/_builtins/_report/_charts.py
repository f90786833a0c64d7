"""The report's charts as inline SVG, laid out here and drawn by the template.

A :class:`Chart` is a list of SVG elements (tag, attributes, text, tooltip) in a fixed
coordinate space (``viewBox``); the template writes them out with Jinja's escaping, so
a provider name is never markup. Colours come from CSS classes, not from here. Three
charts, all in the same provider order (by ``provider:model``):

- success rate per provider (bars, with the 90 % line),
- latency distribution per provider (a histogram per row on a shared log axis, with
  the exact p50/p95/p99 of the Summary marked),
- cost per test against success rate (a scatter plot, log cost axis when costs span
  a decade or more).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from fleetbench._builtins._report import _format as fmt
from fleetbench._builtins._report._samples import BINS_PER_OCTAVE, bin_lower_ms
from fleetbench.records import GroupStats

__all__ = ["Chart", "Shape", "cost_chart", "latency_chart", "success_chart"]

WIDTH = 560
LABEL_W = 172  # left column holding provider names
ROW_H = 34
TOP, BOTTOM = 26, 30
_PERCENTILES = ("p50", "p95", "p99")

Rows = Sequence[tuple[str, GroupStats]]


@dataclass(frozen=True, slots=True)
class Shape:
    """One SVG element: ``<tag attrs>text<title>title</title></tag>``."""

    tag: str
    attrs: Mapping[str, str]
    text: str = ""
    title: str = ""


@dataclass(slots=True)
class Chart:
    """An SVG drawing: its size, what it shows (for screen readers) and its elements.
    ``note`` is a line shown under it (what could not be plotted and why)."""

    width: int
    height: int
    label: str
    shapes: list[Shape] = field(default_factory=list)
    note: str = ""

    def add(self, tag: str, text: str = "", title: str = "", **attrs: float | str) -> None:
        """Append an element; attribute names use ``_`` for ``-`` (``text_anchor``)."""
        self.shapes.append(Shape(tag, {name.rstrip("_").replace("_", "-"): _num(value)
                                       for name, value in attrs.items()}, text, title))

    def line(self, x1: float, y1: float, x2: float, y2: float, cls: str,
             title: str = "") -> None:
        self.add("line", title=title, x1=x1, y1=y1, x2=x2, y2=y2, class_=cls)

    def text(self, x: float, y: float, text: str, cls: str = "label",
             anchor: str = "start", title: str = "") -> None:
        self.add("text", text, title, x=x, y=y, class_=cls, text_anchor=anchor)


def _num(value: float | str) -> str:
    """A coordinate with at most one decimal (keeps the file small)."""
    if isinstance(value, str):
        return value
    return f"{value:.1f}".removesuffix(".0")


def _row_label(chart: Chart, y: float, key: str) -> None:
    label = fmt.short_label(key)
    chart.text(LABEL_W - 10, y, label, anchor="end", title="" if label == key else key)


# ----------------------------------------------------------------------- success rate


def success_chart(rows: Rows, threshold: float) -> Chart:
    """Horizontal bars of each provider's success rate, with a line at ``threshold``."""
    plot_l, plot_r = LABEL_W, WIDTH - 58
    height = TOP + ROW_H * len(rows) + BOTTOM
    chart = Chart(WIDTH, height, "Success rate by provider")

    def x(rate: float) -> float:
        return plot_l + (plot_r - plot_l) * rate

    bottom = height - BOTTOM
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        chart.line(x(tick), TOP - 4, x(tick), bottom, "grid")
        chart.text(x(tick), bottom + 16, fmt.pct(tick, 0), "tick", "middle")
    chart.line(x(threshold), TOP - 8, x(threshold), bottom, "threshold")
    chart.text(x(threshold), TOP - 12, f"{fmt.pct(threshold, 0)} target", "tick", "middle")
    for i, (key, stats) in enumerate(rows):
        mid = TOP + ROW_H * i + ROW_H / 2
        _row_label(chart, mid + 4, key)
        chart.add("rect", title=f"{key}: {stats.passed} of {stats.total} passed",
                  x=plot_l, y=mid - 8, width=max(x(stats.success_rate) - plot_l, 1.5),
                  height=16, rx=2, class_=f"bar {fmt.tone(stats.success_rate)}")
        chart.text(x(stats.success_rate) + 6, mid + 4, fmt.pct(stats.success_rate), "value")
    return chart


# ------------------------------------------------------------------------------ latency


def _log_ticks(lo: float, hi: float, *, sequence: tuple[int, ...] = (1, 2, 5)) -> list[float]:
    """1-2-5 steps (or decades alone, when that gives too many) within [lo, hi]."""
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    ticks = [m * 10.0 ** k for k in decades for m in sequence if lo <= m * 10.0 ** k <= hi]
    if len(ticks) > 8 and sequence != (1,):
        return _log_ticks(lo, hi, sequence=(1,))
    return ticks


def latency_chart(rows: Rows, histograms: Mapping[str, Counter[int]]) -> Chart:
    """Per provider, the latency histogram on logarithmic bins and the exact p50, p95
    and p99 marked on it; the axis is shared, so rows compare directly."""
    bins = [b for key, _ in rows for b in histograms.get(key, ())]
    height = TOP + ROW_H * len(rows) + BOTTOM
    chart = Chart(WIDTH, height, "Latency distribution by provider")
    if not bins:
        chart.note = "No test got an answer, so there is no latency to show."
        return chart
    lo_bin, hi_bin = min(bins), max(bins) + 1
    pad = max(0, 8 - (hi_bin - lo_bin)) / 2  # at least two octaves wide
    log_lo = (lo_bin - pad) / BINS_PER_OCTAVE
    log_hi = (hi_bin + pad) / BINS_PER_OCTAVE
    plot_l, plot_r = LABEL_W, WIDTH - 16

    def x(latency: float) -> float:
        where = (math.log2(max(latency, 2.0 ** log_lo)) - log_lo) / (log_hi - log_lo)
        return plot_l + (plot_r - plot_l) * min(1.0, where)

    bottom = height - BOTTOM
    for tick in _log_ticks(2.0 ** log_lo, 2.0 ** log_hi):
        chart.line(x(tick), TOP - 4, x(tick), bottom, "grid")
        chart.text(x(tick), bottom + 16, fmt.ms(tick).replace(",", ""), "tick", "middle")
    legend_x = plot_l
    for name in _PERCENTILES:
        chart.line(legend_x, TOP - 16, legend_x, TOP - 6, f"marker {name}")
        chart.text(legend_x + 5, TOP - 7, name, "tick")
        legend_x += 44
    for i, (key, stats) in enumerate(rows):
        base = TOP + ROW_H * (i + 1) - 4
        _row_label(chart, base - 6, key)
        histogram = histograms.get(key)
        if not histogram:
            chart.text(plot_l + 4, base - 6, "no answers", "tick")
            continue
        tallest = max(histogram.values())
        for b, n in sorted(histogram.items()):
            left, right = x(bin_lower_ms(b)), x(bin_lower_ms(b + 1))
            tall = (ROW_H - 8) * n / tallest
            chart.add("rect", title=f"{key}: {n} tests {fmt.ms(bin_lower_ms(b))}–"
                                    f"{fmt.ms(bin_lower_ms(b + 1))}",
                      x=left, y=base - tall, width=max(right - left - 0.6, 0.8), height=tall,
                      class_="hist")
        chart.line(plot_l, base, plot_r, base, "baseline")
        for name in _PERCENTILES:
            value = getattr(stats.latency_ms, name)
            if value is not None:
                chart.line(x(value), base - ROW_H + 6, x(value), base + 2, f"marker {name}",
                           title=f"{key} {name} {fmt.ms(value)}")
    return chart


# ------------------------------------------------------------------------ cost vs rate


def _usd_tick(value: float) -> str:
    if value == 0:
        return "$0"
    digits = max(2, -math.floor(math.log10(value)))
    return f"${value:.{digits}f}"


def _linear_ticks(hi: float) -> list[float]:
    """0 and four or five round steps up to at least ``hi``."""
    raw = hi / 4
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [step * i for i in range(math.ceil(hi / step - 1e-9) + 1)]


def cost_chart(rows: Rows) -> Chart:
    """Each priced provider at (cost per test, success rate); providers with unpriced
    tests are named in the note instead, since part of their cost is unknown."""
    height = 300
    chart = Chart(WIDTH, height, "Cost per test against success rate")
    priced = [(key, stats, cost) for key, stats in rows
              if (cost := fmt.cost_per_test(stats)) is not None]
    unpriced = [key for key, stats in rows if stats.unpriced_tests]
    if unpriced:
        chart.note = "Not plotted (some tests have no price): " + ", ".join(unpriced) + "."
    if not priced:
        chart.note = chart.note or "No provider has tests."
        return chart
    plot_l, plot_r, plot_t, plot_b = 64, WIDTH - 24, 16, height - 44
    costs = [cost for *_, cost in priced]
    logarithmic = min(costs) > 0 and max(costs) / min(costs) >= 10
    if logarithmic:
        lo = 10.0 ** math.floor(math.log10(min(costs)))
        hi = 10.0 ** math.ceil(math.log10(max(costs)))
        x_ticks = _log_ticks(lo, hi)

        def x(cost: float) -> float:
            return plot_l + (plot_r - plot_l) * math.log10(cost / lo) / math.log10(hi / lo)
    else:
        x_ticks = _linear_ticks(max(costs) or 1.0)

        def x(cost: float) -> float:
            return plot_l + (plot_r - plot_l) * cost / x_ticks[-1]

    floor = max(0.0, math.floor((min(s.success_rate for _, s, _ in priced) - 0.05) * 10) / 10)
    floor = min(floor, 0.8)
    step = 0.1 if 1 - floor <= 0.5 else 0.2

    def y(rate: float) -> float:
        return plot_b - (plot_b - plot_t) * (rate - floor) / (1 - floor)

    for i in range(round((1 - floor) / step) + 1):
        rate = floor + i * step
        chart.line(plot_l, y(rate), plot_r, y(rate), "grid")
        chart.text(plot_l - 8, y(rate) + 4, fmt.pct(rate, 0), "tick", "end")
    for tick in x_ticks:
        chart.line(x(tick), plot_t, x(tick), plot_b, "grid")
        chart.text(x(tick), plot_b + 16, _usd_tick(tick), "tick", "middle")
    scale = "log scale" if logarithmic else "linear"
    chart.text((plot_l + plot_r) / 2, height - 6, f"cost per test (USD, {scale})", "axis",
               "middle")
    chart.add("text", "success rate", x=14, y=(plot_t + plot_b) / 2, class_="axis",
              text_anchor="middle", transform=f"rotate(-90 14 {(plot_t + plot_b) / 2:.1f})")
    for key, stats, cost in priced:
        cx, cy = x(cost), y(stats.success_rate)
        chart.add("circle", title=f"{key}: {fmt.pct(stats.success_rate)} at "
                                  f"{fmt.usd(cost, 6)} per test",
                  cx=cx, cy=cy, r=6, class_=f"dot {fmt.tone(stats.success_rate)}")
        right_side = cx < plot_l + (plot_r - plot_l) * 0.7
        chart.text(cx + 10 if right_side else cx - 10, cy + 4, fmt.short_label(key, 30),
                   "value", "start" if right_side else "end")
    return chart
