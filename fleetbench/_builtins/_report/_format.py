"""How the HTML report writes numbers, colours rates and reads costs (the template's
filters).

Every function takes ``None`` (a figure that does not apply, such as TTFT without
streaming) and returns a dash for it, so the template never branches on missing data.
"""

from __future__ import annotations

import itertools
import math

from fleetbench.records import GroupStats

__all__ = ["DASH", "cost_per_test", "count", "heat_style", "known_cost", "ms", "ms_pair", "pct",
           "plural", "short_label", "tone", "usd"]

DASH = "—"
GOOD, WARN = 0.95, 0.80
"""test-bench's report classes: success from 95 %, warning from 80 %, else error."""

_HEAT_ANCHORS = ((0.0, 4.0), (0.5, 18.0), (0.8, 42.0), (0.95, 110.0), (1.0, 140.0))
"""(success rate, hue): red below half, amber at 80 %, green from 95 %."""


def ms(value: float | None) -> str:
    """Milliseconds: ``3.21 ms``, ``281 ms``, ``4,210 ms``, ``12.3 s``."""
    if value is None or not math.isfinite(value):
        return DASH
    if value < 10:
        return f"{value:.2f} ms"
    if value < 10_000:
        return f"{value:,.0f} ms"
    return f"{value / 1000:,.1f} s"


def ms_pair(first: float | None, second: float | None) -> str:
    """Two figures sharing a unit when they can: ``294 / 534 ms``."""
    left, right = ms(first), ms(second)
    if left == right == DASH:
        return DASH
    unit = " ms"
    if left.endswith(unit) and right.endswith(unit) and "." not in left + right:
        return f"{left.removesuffix(unit)} / {right}"
    return f"{left} / {right}"


def pct(value: float | None, digits: int = 1) -> str:
    """A rate in [0, 1] as a percentage: ``91.3%``."""
    if value is None or not math.isfinite(value):
        return DASH
    return f"{value * 100:.{digits}f}%"


def usd(value: float | None, digits: int = 4) -> str:
    """Dollars with ``digits`` decimals (test-bench's report used four)."""
    if value is None or not math.isfinite(value):
        return DASH
    return f"${value:,.{digits}f}"


def count(value: float | None) -> str:
    """A count with thousands separators."""
    if value is None or not math.isfinite(value):
        return DASH
    return f"{value:,.0f}"


def known_cost(stats: GroupStats) -> float | None:
    """The group's cost, or ``None`` when none of its tests had a price (so that an
    unpriced run does not look free). A partly priced cost is the priced tests' sum."""
    return None if stats.unpriced_tests and not stats.cost_usd else stats.cost_usd


def cost_per_test(stats: GroupStats) -> float | None:
    """Cost over tests, only when every test with tokens had a price."""
    return stats.cost_usd / stats.total if stats.total and not stats.unpriced_tests else None


def tone(rate: float | None) -> str:
    """``good`` (≥ 95 %), ``warn`` (≥ 80 %) or ``bad``; ``none`` without a rate."""
    if rate is None or not math.isfinite(rate):
        return "none"
    return "good" if rate >= GOOD else "warn" if rate >= WARN else "bad"


def heat_style(rate: float | None) -> str:
    """The background of a heat-map cell: a hue from red through amber to green."""
    if rate is None or not math.isfinite(rate):
        return ""
    rate = min(1.0, max(0.0, rate))
    hue = _HEAT_ANCHORS[-1][1]
    for (lo, lo_hue), (hi, hi_hue) in itertools.pairwise(_HEAT_ANCHORS):
        if rate <= hi:
            hue = lo_hue + (hi_hue - lo_hue) * (rate - lo) / (hi - lo)
            break
    return f"background-color:hsl({hue:.0f} 70% 86%)"


def plural(n: int, noun: str) -> str:
    """``1 scenario``, ``2 scenarios``, ``1,024 tests``."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def short_label(text: str, limit: int = 24) -> str:
    """``text`` in at most ``limit`` characters for a chart label: long ones keep their
    start and end (``simulated:an-ex…2025-01-01``), which tell providers apart."""
    if len(text) <= limit:
        return text
    head = (limit - 1) // 2
    return f"{text[:head]}…{text[len(text) - (limit - 1 - head):]}"
