"""A :class:`~fleetbench._compare.Comparison` as a terminal table (rich), Markdown (a
pull-request comment, ``compare.md``) or a self-contained HTML page.

Every id and detail is user text: rich gets it as :class:`~rich.text.Text` (never
markup), Markdown through :func:`fleetbench._markdown.escape`, HTML through jinja2's
autoescaping.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources

import jinja2
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from fleetbench import _markdown as md
from fleetbench._compare import Comparison, Delta, GroupDelta, TestChange

__all__ = ["MARKDOWN_ROWS", "format_ms", "format_rate", "format_usd", "render_html",
           "render_markdown", "render_table"]

MARKDOWN_ROWS = 25
"""Rows per Markdown table: a comparison of any size fits a pull-request comment
(GitHub takes 65,536 characters); the JSON output lists everything."""
_DETAIL_CHARS = 200
_NOTABLE = 0.05
"""A latency or cost change smaller than this fraction is not coloured."""


# ───────────────────────────────────────────────────────────────────────── formatting


def format_rate(value: float) -> str:
    """A rate as a percentage: ``91.3%``."""
    return f"{value * 100:.1f}%"


def format_ms(value: float | None) -> str:
    """Milliseconds: ``1,204 ms``; ``–`` when unknown."""
    return "–" if value is None else f"{value:,.0f} ms"


def format_usd(value: float) -> str:
    """Dollars: ``$0.0123``."""
    return f"${value:.4f}"


@dataclass(frozen=True, slots=True)
class _Column:
    """A metric column: its title, how a value reads and whether higher is better."""

    metric: str
    title: str
    fmt: Callable[[float], str]
    higher_is_better: bool


_COLUMNS = (
    _Column("success_rate", "success rate", format_rate, True),
    _Column("latency_p50", "p50 latency", format_ms, False),
    _Column("latency_p95", "p95 latency", format_ms, False),
    _Column("ttft_p50", "p50 TTFT", format_ms, False),
    _Column("ttft_p95", "p95 TTFT", format_ms, False),
    _Column("cost_usd", "cost", format_usd, False),
)


def _change(column: _Column, delta: Delta) -> str:
    """The change in words: percentage points for rates, percent for the rest."""
    change = delta.change
    if change is None:
        return ""
    if column.metric == "success_rate":
        return f"{change * 100:+.1f} pp" if round(change * 100, 1) else "±0 pp"
    relative = delta.relative
    if relative is None:  # from nothing
        return f"+{column.fmt(change)}" if change else "±0%"
    return f"{relative * 100:+.0f}%" if round(relative * 100) else "±0%"


def _cell(column: _Column, delta: Delta, *, two_lines: bool = False) -> str:
    """``before → after (change)`` (or the change on a second line); ``–`` for a side
    without the metric."""
    before = "–" if delta.before is None else column.fmt(delta.before)
    after = "–" if delta.after is None else column.fmt(delta.after)
    change = _change(column, delta)
    if two_lines:
        return f"{before} → {after}\n{change}"
    return f"{before} → {after}" + (f" ({change})" if change else "")


def _tone(column: _Column, delta: Delta) -> str:
    """``good``, ``bad`` or ``""``: how the change reads for this metric."""
    change = delta.change
    if not change:
        return ""
    if column.metric != "success_rate":
        relative = delta.relative
        if relative is not None and abs(relative) < _NOTABLE:
            return ""
    return "good" if (change > 0) == column.higher_is_better else "bad"


def _tests(group: GroupDelta) -> str:
    return f"{group.tests_before} → {group.tests_after}"


def _headline(comparison: Comparison) -> str:
    regressed = len(comparison.changes.regressed)
    fixed = len(comparison.changes.fixed)
    verdict = "gate failed" if comparison.failed else "gate passed"
    return f"{regressed} regressed, {fixed} fixed: {verdict}"


def _worst_first(groups: Sequence[GroupDelta]) -> list[GroupDelta]:
    """Groups by success-rate change, worst first (unknown changes last)."""
    return sorted(groups, key=lambda g: (g.success_change_pp is None,
                                         g.success_change_pp or 0.0, g.name))


# ───────────────────────────────────────────────────────────────────────────── table


_STYLE = {"good": "green", "bad": "red", "": ""}


def _rich_table(title: str, groups: Iterable[GroupDelta]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("name", overflow="fold")
    table.add_column("tests", justify="right", no_wrap=True)
    for column in _COLUMNS:
        table.add_column(column.title, justify="right", no_wrap=True)
    for group in groups:
        table.add_row(Text(group.name), _tests(group),
                      *(Text(_cell(c, getattr(group, c.metric), two_lines=True),
                             style=_STYLE[_tone(c, getattr(group, c.metric))])
                        for c in _COLUMNS))
    return table


def _rich_changes(title: str, changes: Sequence[TestChange], limit: int) -> Table:
    table = Table(title=f"{title} ({len(changes)})", title_justify="left")
    for name in ("test", "before", "after", "why"):
        table.add_column(name)
    for change in changes[:limit]:
        table.add_row(Text(change.key), change.before.value, change.after.value,
                      Text(change.detail))
    if len(changes) > limit:
        table.add_row(Text(f"… {len(changes) - limit} more (--format json lists all)"),
                      "", "", "")
    return table


def render_table(comparison: Comparison, console: Console, *, limit: int = 50) -> None:
    """Print the comparison to ``console``: groups, then regressed and fixed tests."""
    base, cur = comparison.baseline, comparison.current
    parts: list[Table | Text] = [
        Text(f"baseline {base.run_id} ({base.status}, {base.source})\n"
             f"current  {cur.run_id} ({cur.status}, {cur.source})"),
        _rich_table("Fleet and providers", [comparison.fleet, *comparison.providers]),
        _rich_table("Repositories", comparison.repositories),
        _rich_table("Categories", comparison.categories),
    ]
    for title, changes in (("Regressed tests", comparison.changes.regressed),
                           ("Fixed tests", comparison.changes.fixed)):
        if changes:
            parts.append(_rich_changes(title, changes, limit))
    tests = comparison.changes
    parts.append(Text(f"tests: {tests.matched} matched, {tests.new} new, {tests.removed} "
                      f"removed; {_headline(comparison)}",
                      style="red" if comparison.failed else "green"))
    parts.extend(Text(f"  {reason}", style="red") for reason in comparison.gate_failures)
    console.print(Group(*parts))


# ─────────────────────────────────────────────────────────────────────────── Markdown


def _md_groups(title: str, groups: Sequence[GroupDelta], limit: int) -> list[str]:
    if not groups:
        return []
    rows = [[md.escape(g.name, 80), _tests(g),
             *(_cell(c, getattr(g, c.metric)) for c in _COLUMNS)] for g in groups[:limit]]
    lines = ["", f"### {title}", "",
             md.table(["name", "tests", *(c.title for c in _COLUMNS)], rows, "lr" + "r" * 6)]
    if len(groups) > limit:
        lines.append(f"\n… and {len(groups) - limit} more")
    return lines


def _md_changes(title: str, changes: Sequence[TestChange], limit: int) -> list[str]:
    if not changes:
        return []
    rows = [[md.escape(c.key, 160), f"{c.before.value} → {c.after.value}",
             md.escape(c.detail, _DETAIL_CHARS)] for c in changes[:limit]]
    lines = ["", f"### {title} ({len(changes)})", "",
             md.table(["test", "status", "why"], rows, "lll")]
    if len(changes) > limit:
        lines.append(f"\n… and {len(changes) - limit} more (compare.json lists all)")
    return lines


def render_markdown(comparison: Comparison, *, limit: int = MARKDOWN_ROWS) -> str:
    """The comparison as a compact Markdown document, at most ``limit`` rows a table."""
    base, cur = comparison.baseline, comparison.current
    fleet, tests = comparison.fleet, comparison.changes
    icon = "❌" if comparison.failed else "✅"
    lines = [
        f"## {icon} fleetbench compare: {_headline(comparison)}", "",
        f"Current run {md.escape(cur.run_id)} ({md.escape(cur.status)}) against baseline "
        f"{md.escape(base.run_id)} ({md.escape(base.status)}).", "",
        f"**Tests** {_tests(fleet)} · matched {tests.matched} · new {tests.new} · "
        f"removed {tests.removed} · **regressed {len(tests.regressed)}** · "
        f"fixed {len(tests.fixed)}", "",
        " · ".join(f"**{c.title}** {_cell(c, getattr(fleet, c.metric))}"
                   for c in _COLUMNS),
    ]
    lines.extend(f"\n**Gate failed:** {md.escape(reason)}" for reason in comparison.gate_failures)
    lines += _md_changes("Regressed tests", tests.regressed, limit)
    lines += _md_groups("Providers", comparison.providers, limit)
    lines += _md_groups("Repositories (worst change first)",
                        _worst_first(comparison.repositories), limit)
    lines += _md_groups("Categories", comparison.categories, limit)
    lines += _md_changes("Fixed tests", tests.fixed, limit)
    return "\n".join(lines) + "\n"


# ─────────────────────────────────────────────────────────────────────────────── HTML


_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                          trim_blocks=True, lstrip_blocks=True)


def _template() -> jinja2.Template:
    text = resources.files("fleetbench").joinpath("data/compare.html.j2").read_text("utf-8")
    return _ENV.from_string(text)


def _html_group(group: GroupDelta) -> dict[str, object]:
    return {"name": group.name, "tests": _tests(group),
            "cells": [{"text": _cell(c, getattr(group, c.metric)),
                       "tone": _tone(c, getattr(group, c.metric))} for c in _COLUMNS]}


def render_html(comparison: Comparison) -> str:
    """The comparison as one self-contained HTML page (inline CSS, no scripts)."""
    sections = [("Fleet and providers", [comparison.fleet, *comparison.providers]),
                ("Repositories", comparison.repositories),
                ("Categories", comparison.categories)]
    return _template().render(
        c=comparison, headline=_headline(comparison), columns=[c.title for c in _COLUMNS],
        sections=[(title, [_html_group(g) for g in groups]) for title, groups in sections],
        change_lists=[("Regressed tests", comparison.changes.regressed),
                      ("Fixed tests", comparison.changes.fixed)])
