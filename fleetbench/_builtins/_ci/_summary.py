"""The ``markdown`` exporter: ``summary.md``, a compact summary of the run for a
pull-request comment (or a CI job summary such as ``$GITHUB_STEP_SUMMARY``).

Sections: a headline (status icon, fleet, tests, success rate), the fleet's numbers,
a table per provider, the failing repositories (worst first), the first failing tests
with why they failed, the regressions against the baseline when the run's formats
include ``compare`` (found as that exporter finds it), and the run's warnings. Every
list is capped (:data:`TOP` rows, providers at :data:`PROVIDER_ROWS`) and every user
text cut and escaped, so the file stays far below GitHub's 65,536-character limit
for a comment whatever the run. Only the run's start time appears, so exporting a
stored run twice gives the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import fleetbench
from fleetbench import _markdown as md
from fleetbench._builtins._ci._compare import COMPARE_MD, BaselineLink
from fleetbench._builtins._export._files import atomic_write, prepare_output_dir
from fleetbench._compare import FAILING, describe_failure
from fleetbench._compare_render import format_ms, format_rate, format_usd
from fleetbench._rankings import repositories_below
from fleetbench.plugin import RunInfo
from fleetbench.records import GroupStats, Summary, TestResult

__all__ = ["PROVIDER_ROWS", "SUMMARY_FILE", "TOP", "MarkdownExporter"]

SUMMARY_FILE = "summary.md"
TOP = 10
"""Rows of the failing-repository, failure and regression lists."""
PROVIDER_ROWS = 25
_DETAIL_CHARS = 200
_KEY_CHARS = 160
_WARNING_CHARS = 300
_WARNINGS = 5


@dataclass(slots=True)
class _Failure:
    key: str
    status: str
    detail: str


@dataclass(slots=True)
class _Open:
    run: RunInfo
    link: BaselineLink | None
    failures: list[_Failure] = field(default_factory=list)
    failing: int = 0


class MarkdownExporter:
    """Writes ``summary.md``; memory holds the first :data:`TOP` failures (and, with
    ``compare`` on, the baseline's status per test key)."""

    def __init__(self) -> None:
        self._state: _Open | None = None

    def open(self, run: RunInfo) -> None:
        """Prepare the output folder; read the baseline if ``compare`` is on."""
        prepare_output_dir(run.output_dir, (SUMMARY_FILE,))
        output = run.manifest.get("output")
        formats = output.get("formats", ()) if isinstance(output, dict) else ()
        self._state = _Open(run, BaselineLink(run) if "compare" in formats else None)

    def write(self, result: TestResult) -> None:
        """Remember the result if it is one of the first failures."""
        state = self._require_open()
        if result.status in FAILING:
            state.failing += 1
            if len(state.failures) < TOP:
                state.failures.append(_Failure(result.key, result.status.value,
                                               describe_failure(result)))
        if state.link is not None:
            state.link.add(result)

    def finalize(self, summary: Summary, run: RunInfo) -> Sequence[Path]:
        """Write ``summary.md`` atomically."""
        state = self._require_open()
        self._state = None
        path = run.output_dir / SUMMARY_FILE
        with atomic_write(path) as out:
            out.write(render_summary(state, summary, run))
        return [path]

    def abort(self) -> None:
        """Forget what was gathered (nothing is on disk before ``finalize``)."""
        self._state = None

    def _require_open(self) -> _Open:
        if self._state is None:
            raise RuntimeError("MarkdownExporter: open() must be called before write/finalize")
        return self._state


# ──────────────────────────────────────────────────────────────────────────── rendering


def _rate(stats: GroupStats) -> str:
    return format_rate(stats.success_rate)


def _cost(stats: GroupStats) -> str:
    return format_usd(stats.cost_usd) + ("\\*" if stats.unpriced_tests else "")


def _more(shown: int, total: int, where: str) -> list[str]:
    return [f"\n… and {total - shown} more ({where})"] if total > shown else []


def _headline(run: RunInfo, fleet: GroupStats) -> list[str]:
    clean = run.status == "completed" and not fleet.failed + fleet.error + fleet.timeout
    icon = "✅" if clean else ("⚠️" if run.status == "completed" else "❌")
    return [
        f"## {icon} fleetbench: {md.escape(run.fleet_id)}: {_rate(fleet)} of "
        f"{fleet.total:,} tests passed", "",
        f"Run {md.escape(run.run_id)} **{md.escape(run.status)}** · started "
        f"{md.escape(run.started_at or run.created_at)}", "",
        md.table(["passed", "failed", "errors", "timeouts", "skipped", "p50 latency",
                  "p95 latency", "p50 TTFT", "tokens", "cost"],
                 [[f"{fleet.passed:,}", f"{fleet.failed:,}", f"{fleet.error:,}",
                   f"{fleet.timeout:,}", f"{fleet.skipped + fleet.cancelled:,}",
                   format_ms(fleet.latency_ms.p50), format_ms(fleet.latency_ms.p95),
                   format_ms(fleet.ttft_ms.p50), f"{fleet.total_tokens:,}", _cost(fleet)]],
                 "r" * 10),
    ]


def _providers(summary: Summary) -> list[str]:
    rows = sorted(summary.by_provider.items())
    shown = rows[:PROVIDER_ROWS]
    return ["", "### Providers", "",
            md.table(["provider", "tests", "success rate", "failed", "errors",
                      "p50 latency", "p95 latency", "p50 TTFT", "cost"],
                     [[md.escape(name, 80), f"{s.total:,}", _rate(s), f"{s.failed:,}",
                       f"{s.error + s.timeout:,}", format_ms(s.latency_ms.p50),
                       format_ms(s.latency_ms.p95), format_ms(s.ttft_ms.p50), _cost(s)]
                      for name, s in shown], "lrrrrrrrr"),
            *_more(len(shown), len(rows), "providers.csv lists all")]


def _failing_repositories(summary: Summary) -> list[str]:
    failing = [(name, s) for name, s in repositories_below(summary, 1.0)
               if s.failed + s.error + s.timeout]
    if not failing:
        return []
    shown = failing[:TOP]
    return ["", f"### Failing repositories ({len(failing)} of {len(summary.by_repository)})",
            "", md.table(["repository", "tests", "success rate", "failed", "errors"],
                         [[md.escape(name, 80), f"{s.total:,}", _rate(s), f"{s.failed:,}",
                           f"{s.error + s.timeout:,}"] for name, s in shown], "lrrrr"),
            *_more(len(shown), len(failing), "repositories.csv lists all")]


def _tests(title: str, rows: Iterable[tuple[str, str, str]], total: int,
           where: str) -> list[str]:
    cells = [[md.escape(key, _KEY_CHARS), status, md.escape(detail, _DETAIL_CHARS)]
             for key, status, detail in rows]
    return ["", f"### {title}", "", md.table(["test", "status", "why"], cells, "lll"),
            *_more(len(cells), total, where)]


def _regressions(link: BaselineLink, summary: Summary, run: RunInfo) -> list[str]:
    comparison = link.comparison(summary, run)
    if comparison is None:
        return ["", "### Regressions", "", f"No baseline: {md.escape(link.how)}."]
    regressed = comparison.changes.regressed
    title = (f"Regressions against {md.escape(comparison.baseline.run_id)}: "
             f"{len(regressed)} regressed, {len(comparison.changes.fixed)} fixed")
    if not regressed:
        return ["", f"### {title}"]
    return _tests(title, ((c.key, f"{c.before.value} → {c.after.value}", c.detail)
                          for c in regressed[:TOP]), len(regressed), f"{COMPARE_MD} lists them")


def render_summary(state: _Open, summary: Summary, run: RunInfo) -> str:
    """The whole ``summary.md``."""
    lines = _headline(run, summary.fleet)
    lines += _providers(summary)
    lines += _failing_repositories(summary)
    if state.failing:
        lines += _tests(f"Failures ({state.failing:,})",
                        ((f.key, f.status, f.detail) for f in state.failures), state.failing,
                        "junit.xml lists every test")
    if state.link is not None:
        lines += _regressions(state.link, summary, run)
    if run.warnings:
        lines += ["", "### Warnings", ""]
        lines += [f"- {md.escape(w, _WARNING_CHARS)}" for w in run.warnings[:_WARNINGS]]
        lines += _more(min(len(run.warnings), _WARNINGS), len(run.warnings), "run.json")
    if summary.fleet.unpriced_tests:
        lines += ["", f"\\* {summary.fleet.unpriced_tests:,} tests have no price; their cost "
                      "is not counted."]
    lines += ["", f"<sub>fleetbench {fleetbench.__version__}</sub>"]
    return "\n".join(lines) + "\n"
