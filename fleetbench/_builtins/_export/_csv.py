"""The ``csv`` exporter: ``fleet_summary.csv``, ``repositories.csv``, ``providers.csv``
and ``categories.csv``.

Each file starts with test-bench's columns in test-bench's order and number formats
(``{:.4}`` rates, ``{:.2}`` milliseconds and averages, ``{:.6}`` dollars, integers
for its ``u64`` fields), then appends fleetbench's columns, so a reader that takes
columns by position or by name keeps working. Rows are built from the same shapes as
``fleet_results.json``. Only the per-triple metric columns are kept while results
stream by; the four files are written atomically by ``finalize``. Quoting is the csv
module's, so any id (commas, quotes, newlines) reads back unchanged.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fleetbench._builtins._export import _shapes as shapes
from fleetbench._builtins._export._files import atomic_write, prepare_output_dir
from fleetbench._builtins._export._stats import TripleTable
from fleetbench.plugin import RunInfo
from fleetbench.records import Summary, TestResult

__all__ = ["CATEGORY_COLUMNS", "CSV_FILES", "PROVIDER_COLUMNS", "REPOSITORY_COLUMNS",
           "SUMMARY_COLUMNS", "CsvExporter"]

SUMMARY_FILE = "fleet_summary.csv"
REPOSITORIES_FILE = "repositories.csv"
PROVIDERS_FILE = "providers.csv"
CATEGORIES_FILE = "categories.csv"
CSV_FILES = (SUMMARY_FILE, REPOSITORIES_FILE, PROVIDERS_FILE, CATEGORIES_FILE)

Column = tuple[str, str]
"""(header, format): ``s`` text, ``d`` integer, ``.2``/``.4``/``.6`` fixed decimals."""

_STATUS = tuple((f"status_{s}", "d") for s in
                ("passed", "failed", "error", "timeout", "skipped", "cancelled"))
_METRICS = tuple((f"{metric}_{stat}_ms", ".2") for metric in ("latency", "ttft", "itl")
                 for stat in ("mean", "p50", "p95", "p99"))
_COMMON_EXTRAS: tuple[Column, ...] = (
    *_STATUS, ("error_rate", ".4"), ("p90_duration_ms", ".2"), *_METRICS,
    ("input_tokens", "d"), ("output_tokens", "d"), ("cached_input_tokens", "d"),
    ("retries", "d"), ("unpriced_tests", "d"), ("output_tokens_per_s", ".2"),
    ("evaluation_cost_usd", ".6"),
)
_DURATIONS: tuple[Column, ...] = (("avg_duration_ms", ".2"), ("p50_duration_ms", ".2"),
                                  ("p95_duration_ms", ".2"), ("p99_duration_ms", ".2"))

SUMMARY_COLUMNS: tuple[Column, ...] = (
    ("fleet_id", "s"), ("timestamp", "s"), ("total_repositories", "d"), ("total_tests", "d"),
    ("total_succeeded", "d"), ("total_failed", "d"), ("total_timeout", "d"),
    ("total_skipped", "d"), ("success_rate", ".4"), *_DURATIONS,
    ("min_duration_ms", "d"), ("max_duration_ms", "d"), ("total_tokens", "d"),
    ("avg_tokens_per_request", ".2"), ("total_cost", ".6"), ("avg_cost_per_repository", ".6"),
    ("avg_tests_per_repository", ".2"),
    # fleetbench additions
    ("run_id", "s"), ("status", "s"), ("total_benchmarks", "d"), ("total_duration_ms", "d"),
    ("planned_tests", "d"), ("percentile_method", "s"), ("pricing_version", "s"),
    *_COMMON_EXTRAS,
)
REPOSITORY_COLUMNS: tuple[Column, ...] = (
    ("repository_id", "s"), ("repository_name", "s"), ("provider_name", "s"),
    ("total_tests", "d"), ("succeeded", "d"), ("failed", "d"), ("timeout", "d"),
    ("skipped", "d"), ("success_rate", ".4"), *_DURATIONS, ("total_tokens", "d"),
    ("total_cost", ".6"),
    # fleetbench additions
    ("run_id", "s"), ("scenario", "s"), ("provider", "s"), ("model", "s"),
    ("min_duration_ms", "d"), ("max_duration_ms", "d"), ("avg_tokens_per_request", ".2"),
    *_COMMON_EXTRAS,
)
PROVIDER_COLUMNS: tuple[Column, ...] = (
    ("provider_name", "s"), ("repository_count", "d"), ("total_tests", "d"),
    ("total_succeeded", "d"), ("total_failed", "d"), ("success_rate", ".4"),
    ("total_tokens", "d"), ("total_cost", ".6"),
    # fleetbench additions
    ("run_id", "s"), ("provider", "s"), ("model", "s"), ("benchmark_count", "d"),
    ("total_timeout", "d"), ("total_skipped", "d"), *_DURATIONS,
    ("avg_tokens_per_request", ".2"), *_COMMON_EXTRAS,
)
CATEGORY_COLUMNS: tuple[Column, ...] = (
    ("category_name", "s"), ("total_tests", "d"), ("total_succeeded", "d"),
    ("total_failed", "d"), ("success_rate", ".4"),
    # fleetbench additions
    ("run_id", "s"), ("total_timeout", "d"), ("total_skipped", "d"), *_DURATIONS,
    ("total_tokens", "d"), ("avg_tokens_per_request", ".2"), ("total_cost", ".6"),
    *_COMMON_EXTRAS,
)


class CsvExporter:
    """Writes the four CSV files; memory holds only the per-triple metric columns."""

    def __init__(self) -> None:
        self._run: RunInfo | None = None
        self._table = TripleTable()

    def open(self, run: RunInfo) -> None:
        """Prepare the output folder (removing leftovers of a crashed export)."""
        prepare_output_dir(run.output_dir, CSV_FILES)
        self._run = run
        self._table = TripleTable()

    def write(self, result: TestResult) -> None:
        """Account for one result in its triple's statistics."""
        self._require_open()
        self._table.add(result)

    def finalize(self, summary: Summary, run: RunInfo) -> Sequence[Path]:
        """Write the four files, each atomically. ``run`` is the final run: its status
        and timestamps go into ``fleet_summary.csv``."""
        self._require_open()
        self._run = None
        tables = {
            SUMMARY_FILE: (SUMMARY_COLUMNS, [_summary_row(run, summary, len(self._table))]),
            REPOSITORIES_FILE: (REPOSITORY_COLUMNS, _repository_rows(run, self._table)),
            PROVIDERS_FILE: (PROVIDER_COLUMNS, _provider_rows(run, summary, self._table)),
            CATEGORIES_FILE: (CATEGORY_COLUMNS, _category_rows(run, summary)),
        }
        self._table = TripleTable()
        return [_write_csv(run.output_dir / name, columns, rows)
                for name, (columns, rows) in tables.items()]

    def abort(self) -> None:
        """Forget the statistics (nothing is on disk before ``finalize``)."""
        self._run = None
        self._table = TripleTable()

    @property
    def held_values(self) -> int:
        """Floats kept for exact per-triple statistics."""
        return self._table.held_values

    def _require_open(self) -> RunInfo:
        if self._run is None:
            raise RuntimeError("CsvExporter: open() must be called before write/finalize")
        return self._run


# --------------------------------------------------------------------------------- rows


def _flatten(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A shapes entry with its nested additions spread into flat column names."""
    row = dict(entry)
    for status, count in entry["status_counts"].items():
        row[f"status_{status}"] = count
    for metric in ("latency", "ttft", "itl"):
        for stat in ("mean", "p50", "p95", "p99"):
            row[f"{metric}_{stat}_ms"] = entry[f"{metric}_ms"][stat]
    row["p90_duration_ms"] = entry["duration_ms"]["p90"]
    return row


def _summary_row(run: RunInfo, summary: Summary, benchmarks: int) -> dict[str, Any]:
    fleet = shapes.fleet_summary(summary.fleet, repositories=len(summary.by_repository),
                                 benchmarks=benchmarks, wall_ms=shapes.wall_time_ms(run))
    return {**_flatten(fleet), "fleet_id": run.fleet_id,
            "timestamp": shapes.run_timestamp(run), "run_id": run.run_id,
            "status": run.status, "planned_tests": run.planned,
            "percentile_method": summary.percentile_method,
            "pricing_version": run.pricing_version}


def _repository_rows(run: RunInfo, table: TripleTable) -> list[dict[str, Any]]:
    """One row per repository × scenario × provider, in order of first appearance."""
    rows = []
    for _, triple, stats in table:
        entry = shapes.result_summary(stats.stats())
        rows.append({**_flatten(entry), "total_tests": entry["total"],
                     "repository_id": triple.repo_id, "repository_name": triple.repo_id,
                     "provider_name": triple.provider_key, "run_id": run.run_id,
                     "scenario": triple.scenario, "provider": triple.provider,
                     "model": triple.model})
    return rows


def _provider_rows(run: RunInfo, summary: Summary, table: TripleTable) -> list[dict[str, Any]]:
    repositories = Counter(key for _, key in summary.by_repository_provider)
    benchmarks = Counter(triple.provider_key for _, triple, _ in table)
    return [{**_flatten(shapes.provider_stats(key, summary.by_provider[key],
                                              repositories=repositories[key],
                                              benchmarks=benchmarks[key])),
             "run_id": run.run_id}
            for key in sorted(summary.by_provider)]


def _category_rows(run: RunInfo, summary: Summary) -> list[dict[str, Any]]:
    return [{**_flatten(shapes.category_stats(name, summary.by_category[name])),
             "run_id": run.run_id}
            for name in sorted(summary.by_category)]


# ------------------------------------------------------------------------------ writing


def _cell(value: Any, fmt: str) -> str:
    """One formatted cell; a missing or non-finite number is an empty cell."""
    if value is None:
        return ""
    if fmt == "s":
        return str(value)
    if not math.isfinite(value):
        return ""
    return str(round(value)) if fmt == "d" else f"{value:{fmt}f}"


def _write_csv(path: Path, columns: Sequence[Column], rows: Iterable[Mapping[str, Any]]) -> Path:
    with atomic_write(path) as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header for header, _ in columns)
        for row in rows:
            writer.writerow(_cell(row[header], fmt) for header, fmt in columns)
    return path
