"""The executive report's page: what it shows, gathered from the Summary, the run and
the bounded samples, then rendered by a Jinja2 template with autoescaping on.

Every figure comes from the exact Summary (the same numbers as the JSON and CSV
artifacts); only the slowest and failing tests and the latency histograms come from
:class:`Samples`. Everything user-provided (ids, prompts, answers, evaluator details,
metadata) reaches the page through Jinja's escaping. The page is self-contained: CSS
and JavaScript are inlined from package data, charts are inline SVG, and a Content
Security Policy forbids every network request and any script but the report's own
(matched by its hash), so even a missed escape could not run a script.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

import jinja2
from markupsafe import Markup

import fleetbench
from fleetbench._builtins._export import _shapes as shapes
from fleetbench._builtins._report import _charts as charts
from fleetbench._builtins._report import _format as fmt
from fleetbench._builtins._report._samples import Samples
from fleetbench._rankings import (
    DEFAULT_THRESHOLD,
    best_repository,
    rank,
    repositories_below,
    worst_repository,
)
from fleetbench.plugin import RunInfo
from fleetbench.records import GroupStats, Summary

__all__ = ["render_report"]

TEMPLATE = "executive_report.html.j2"
_ASSETS = ("executive_report.css", "executive_report.js")


@dataclass(frozen=True, slots=True)
class Card:
    """A headline figure: its label, value, a line of context and a tone class."""

    label: str
    value: str
    detail: str
    tone: str = "none"


@dataclass(frozen=True, slots=True)
class HeatRow:
    """A repository's line of the heat-map: one cell per provider (``None`` where the
    repository did not run on it)."""

    repo_id: str
    stats: GroupStats
    cells: tuple[GroupStats | None, ...]


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("fleetbench", "data"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters.update(ms=fmt.ms, pct=fmt.pct, usd=fmt.usd, count=fmt.count, tone=fmt.tone,
                       heat_style=fmt.heat_style, known_cost=fmt.known_cost,
                       cost_per_test=fmt.cost_per_test)
    return env


@cache
def _assets() -> tuple[str, str]:
    """The CSS and JavaScript inlined into every report."""
    data = resources.files("fleetbench") / "data"
    css, js = ((data / name).read_text(encoding="utf-8") for name in _ASSETS)
    return css, js


def render_report(summary: Summary, run: RunInfo, samples: Samples) -> str:
    """The whole HTML page."""
    css, js = _assets()
    script_hash = base64.b64encode(hashlib.sha256(js.encode()).digest()).decode()
    return _environment().get_template(TEMPLATE).render(
        css=Markup(css), script=Markup(js), script_hash=script_hash,
        **_content(summary, run, samples))


def _content(summary: Summary, run: RunInfo, samples: Samples) -> dict[str, Any]:
    providers = sorted(summary.by_provider.items())
    threshold = DEFAULT_THRESHOLD
    fleet = summary.fleet
    return {
        "run": run,
        "fleet": fleet,
        "description": run.manifest.get("description") or "",
        "generated": _utc(shapes.run_timestamp(run)),
        "cards": _cards(summary),
        "version": fleetbench.__version__,
        "providers": providers,
        "charts": [charts.success_chart(providers, threshold),
                   charts.latency_chart(providers, samples.histograms),
                   charts.cost_chart(providers)],
        "highlights": _highlights(summary),
        "heat_providers": [key for key, _ in providers],
        "heat_rows": _heat_rows(summary, [key for key, _ in providers]),
        "best": best_repository(summary),
        "worst": worst_repository(summary),
        "below": repositories_below(summary, threshold),
        "threshold": threshold,
        "categories": sorted(summary.by_category.items()),
        "scenarios": sorted(summary.by_scenario.items()),
        "slowest": samples.slowest(),
        "failing": samples.failing,
        "failing_total": fleet.failed + fleet.error + fleet.timeout,
        "metadata": _metadata(summary, run),
        "plugins": sorted(run.plugins.items()),
        "repository_metadata": sorted((repo, meta) for repo, meta in run.repositories.items()
                                      if meta),
    }


def _cards(summary: Summary) -> list[Card]:
    fleet = summary.fleet
    repositories = len(summary.by_repository)
    per_repo = f"{fleet.total / repositories:.1f} per repository" if repositories else "none"
    per_test = fmt.cost_per_test(fleet)
    cost_detail = (f"{fmt.plural(fleet.unpriced_tests, 'test')} without a price"
                   if per_test is None and fleet.unpriced_tests
                   else f"{fmt.usd(per_test, 6)} per test")
    latency, ttft = fleet.latency_ms, fleet.ttft_ms
    return [
        Card("Total Repositories", fmt.count(repositories),
             f"{fmt.plural(len(summary.by_provider), 'provider')} · "
             f"{fmt.plural(len(summary.by_scenario), 'scenario')}"),
        Card("Total Tests", fmt.count(fleet.total), per_repo),
        Card("Success Rate", fmt.pct(fleet.success_rate),
             f"{fleet.passed:,} passed · {fleet.failed:,} failed · {fleet.error:,} errors"
             f" · {fleet.timeout:,} timeouts", fmt.tone(fleet.success_rate)),
        Card("Latency p50 / p95", fmt.ms_pair(latency.p50, latency.p95),
             f"p99 {fmt.ms(latency.p99)} · {latency.count:,} answered"),
        Card("TTFT p50 / p95", fmt.ms_pair(ttft.p50, ttft.p95),
             f"time to first token · {ttft.count:,} streamed" if ttft.count
             else "no streamed tests"),
        Card("Total Cost", fmt.usd(fmt.known_cost(fleet)), cost_detail),
    ]


def _highlights(summary: Summary) -> list[tuple[str, str, str]]:
    """(what, provider, figure): the most accurate, fastest and cheapest providers.
    Ties go to the provider named first, as in :mod:`fleetbench._rankings`."""
    out = []
    ranked = rank(summary.by_provider)
    if ranked:
        key, stats = ranked[0]
        out.append(("Most accurate", key, f"{fmt.pct(stats.success_rate)} passed"))
    for label, metric in (("Fastest (latency p50)", "latency_ms"),
                          ("Fastest first token (TTFT p50)", "ttft_ms")):
        timed = sorted((p50, key) for key, stats in summary.by_provider.items()
                       if (p50 := getattr(stats, metric).p50) is not None)
        if timed:
            out.append((label, timed[0][1], fmt.ms(timed[0][0])))
    priced = sorted((cost, key) for key, stats in summary.by_provider.items()
                    if (cost := fmt.cost_per_test(stats)) is not None)
    if priced:
        out.append(("Cheapest per test", priced[0][1], fmt.usd(priced[0][0], 6)))
    return out


def _heat_rows(summary: Summary, providers: Sequence[str]) -> list[HeatRow]:
    cells = summary.by_repository_provider
    return [HeatRow(repo, stats, tuple(cells.get((repo, key)) for key in providers))
            for repo, stats in sorted(summary.by_repository.items())]


def _metadata(summary: Summary, run: RunInfo) -> list[tuple[str, str]]:
    manifest = json.dumps(run.manifest, sort_keys=True, separators=(",", ":"))
    method = (f"{summary.percentile_method} interpolation between closest ranks "
              "(exact, numpy's default)" if summary.exact
              else f"{summary.percentile_method} (live estimate)")
    return [
        ("Run id", run.run_id),
        ("Fleet id", run.fleet_id),
        ("Status", run.status),
        ("Created", _utc(run.created_at)),
        ("Started", _utc(run.started_at)),
        ("Finished", _utc(run.finished_at)),
        ("Wall time", fmt.ms(shapes.wall_time_ms(run)) if run.finished_at else fmt.DASH),
        ("Tests with a result / planned", f"{summary.fleet.total:,} / {run.planned:,}"),
        ("Manifest SHA-256", hashlib.sha256(manifest.encode()).hexdigest()),
        ("Pricing table version", run.pricing_version or fmt.DASH),
        ("Percentile method", method),
        ("Answers saved", "yes" if run.save_responses else "no (output.save_responses)"),
        ("fleetbench version", fleetbench.__version__),
    ]


def _utc(stamp: str | None) -> str:
    """An RFC 3339 time as ``YYYY-MM-DD HH:MM:SS UTC``; unparseable text is shown as is."""
    if not stamp:
        return fmt.DASH
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return stamp
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
