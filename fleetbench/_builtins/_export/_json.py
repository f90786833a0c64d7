"""The ``json`` exporter: ``fleet_results.json``, a superset of test-bench's
``FleetBenchmarkResults``.

test-bench nests every test under its "repository result" (one per repository ×
scenario × provider), while results arrive in plan order, which interleaves
repositories. Each result is therefore rendered at once and spooled to a hidden file
per triple inside the output folder; :meth:`JsonExporter.finalize` streams the
spools into the document and deletes them. The document is canonical: keys sorted at
every level, triples in order of first appearance, results in plan order, per-test
floats exact and aggregate floats rounded to a fixed 9 decimals (see ``_shapes``), and
timestamps taken from the run, never from the clock, so two exports of one stored run
are byte-identical.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import orjson

import fleetbench
from fleetbench._builtins._export import _shapes as shapes
from fleetbench._builtins._export._files import Spool, atomic_write, prepare_output_dir
from fleetbench._builtins._export._stats import PERCENTILE_METHOD, Triple, TripleTable
from fleetbench.plugin import RunInfo
from fleetbench.records import Summary, TestResult

__all__ = ["JSON_FILE", "JsonExporter"]

JSON_FILE = "fleet_results.json"
DEFAULT_SPOOL_CHARS = 4 * 1024 * 1024
"""Rendered results held in memory before they are appended to the spool files."""

_dumps = json.JSONEncoder(sort_keys=True, allow_nan=False).encode
"""Canonical JSON text (one shared encoder: ``json.dumps`` with options builds a new
encoder per call, a cost paid once per result here)."""
_Member = Callable[[TextIO], None]


def _dumps_result(rendered: Mapping[str, Any]) -> str:
    """One test's JSON, compact with sorted keys (orjson: this runs once per result)."""
    return orjson.dumps(rendered, option=orjson.OPT_SORT_KEYS).decode()


@dataclass(slots=True)
class _Open:
    """The state of an export between ``open`` and ``finalize``."""

    run: RunInfo
    table: TripleTable
    spool: Spool


class JsonExporter:
    """Writes ``fleet_results.json``; memory holds only the per-triple metric columns
    and a bounded spool buffer."""

    def __init__(self, *, spool_chars: int = DEFAULT_SPOOL_CHARS) -> None:
        self._spool_chars = spool_chars
        self._state: _Open | None = None

    def open(self, run: RunInfo) -> None:
        """Prepare the output folder (removing leftovers of a crashed export)."""
        if self._state is not None:  # reopened without finalize: drop the old spool
            self._state.spool.remove()
        prepare_output_dir(run.output_dir, (JSON_FILE,))
        spool = Spool(run.output_dir / JSON_FILE, self._spool_chars)
        self._state = _Open(run, TripleTable(), spool)

    def write(self, result: TestResult) -> None:
        """Render one result in test-bench's shape and spool it under its triple."""
        state = self._require_open()
        rendered = shapes.testbench_result(result, save_responses=state.run.save_responses)
        state.spool.append(state.table.add(result), _dumps_result(rendered))

    def finalize(self, summary: Summary, run: RunInfo) -> Sequence[Path]:
        """Write the document atomically, then delete the spool. ``run`` is the final
        run: its status, timestamps and warnings go into the document."""
        state = self._require_open()
        state.run = run  # open() saw the run as it started; only now is its end known
        path = run.output_dir / JSON_FILE
        try:
            with atomic_write(path) as out:
                _write_object(out, _document(state, summary),
                              {"repository_results": functools.partial(_write_triples, state)},
                              newline="\n")
        finally:
            state.spool.remove()
            self._state = None
        return [path]

    def abort(self) -> None:
        """Drop the spool without writing the document (the export was abandoned)."""
        if self._state is not None:
            self._state.spool.remove()
            self._state = None

    @property
    def held_chars(self) -> int:
        """Rendered characters buffered in memory (bounded by the spool budget)."""
        return self._state.spool.held_chars if self._state else 0

    @property
    def held_values(self) -> int:
        """Floats kept for exact per-triple statistics."""
        return self._state.table.held_values if self._state else 0

    def _require_open(self) -> _Open:
        if self._state is None:
            raise RuntimeError("JsonExporter: open() must be called before write/finalize")
        return self._state


# ------------------------------------------------------------------------ the document


def _document(state: _Open, summary: Summary) -> dict[str, Any]:
    """Every top-level member except ``repository_results`` (which is streamed)."""
    run = state.run
    repositories = len(summary.by_repository)
    return {
        "category_breakdown": {name: shapes.category_stats(name, stats)
                               for name, stats in summary.by_category.items()},
        "fleet_id": run.fleet_id,
        "fleet_summary": shapes.fleet_summary(summary.fleet, repositories=repositories,
                                              benchmarks=len(state.table),
                                              wall_ms=shapes.wall_time_ms(run)),
        "metadata": _metadata(run, summary),
        "percentile_method": summary.percentile_method,
        "pricing_version": run.pricing_version,
        "provider_breakdown": _providers(state.table, summary),
        "repository_breakdown": {repo: shapes.group_stats(stats)
                                 for repo, stats in summary.by_repository.items()},
        "repository_provider_breakdown": [
            {"repository_id": repo, "provider_name": key, **shapes.group_stats(stats)}
            for (repo, key), stats in sorted(summary.by_repository_provider.items())
        ],
        "run_id": run.run_id,
        "scenario_breakdown": {name: shapes.group_stats(stats)
                               for name, stats in summary.by_scenario.items()},
        "status": run.status,
        "timestamp": shapes.run_timestamp(run),
        "total_repositories": repositories,
    }


def _providers(table: TripleTable, summary: Summary) -> dict[str, Any]:
    """``provider_breakdown``: repositories counted from the repository × provider
    breakdown, benchmarks (triples) from the table."""
    repositories = Counter(key for _, key in summary.by_repository_provider)
    benchmarks = Counter(triple.provider_key for _, triple, _ in table)
    return {key: shapes.provider_stats(key, stats, repositories=repositories[key],
                                       benchmarks=benchmarks[key])
            for key, stats in summary.by_provider.items()}


def _metadata(run: RunInfo, summary: Summary) -> dict[str, Any]:
    """test-bench's ``FleetMetadata`` plus the run's identity and provenance."""
    return {
        "total_tests": summary.fleet.total,
        "total_duration_ms": shapes.wall_time_ms(run),
        "execution_timestamp": run.started_at or run.created_at,
        "aggregation_version": shapes.AGGREGATION_VERSION,
        "custom": _custom(run.manifest),
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "planned_tests": run.planned,
        "save_responses": run.save_responses,
        "percentiles_exact": summary.exact,
        "triple_percentile_method": PERCENTILE_METHOD,
        "plugins": dict(run.plugins),
        "warnings": list(run.warnings),
        "fleetbench_version": fleetbench.__version__,
    }


def _custom(manifest: Mapping[str, Any]) -> Any:
    """The manifest's ``global_settings.custom`` (test-bench always wrote ``{}``)."""
    settings = manifest.get("global_settings")
    custom = settings.get("custom") if isinstance(settings, Mapping) else None
    return dict(custom) if isinstance(custom, Mapping) else {}


# --------------------------------------------------------------------- streamed writing


def _write_object(out: TextIO, fixed: Mapping[str, Any], streamed: Mapping[str, _Member],
                  *, newline: str = "") -> None:
    """Write a JSON object with its members sorted by key; ``streamed`` members write
    their own value, so a huge member never has to be in memory."""
    out.write("{" + newline)
    separator = "," + (newline or " ")
    for number, key in enumerate(sorted({*fixed, *streamed})):
        out.write((separator if number else "") + _dumps(key) + ": ")
        if key in streamed:
            streamed[key](out)
        else:
            out.write(_dumps(fixed[key]))
    out.write(newline + "}")


def _write_spooled_array(spool: Spool, bucket: int, out: TextIO) -> None:
    """Write the rendered JSON values spooled under ``bucket`` as an array, one value
    per line (``[]`` when there is none)."""
    out.write("[")
    spool.write_joined(bucket, out, ",\n", before="\n", after="\n")
    out.write("]")


def _write_triples(state: _Open, out: TextIO) -> None:
    """``repository_results``: one entry per triple, in order of first appearance, its
    results streamed from the spool rather than held as one string."""
    out.write("[")
    for number, triple, stats in state.table:
        out.write(",\n" if number else "\n")
        fixed = _triple_members(state.run, triple)
        fixed["summary"] = shapes.result_summary(stats.stats())
        results = functools.partial(_write_spooled_array, state.spool, number)
        _write_object(out, fixed, {"results": results})
    out.write("\n]" if len(state.table) else "]")


def _triple_members(run: RunInfo, triple: Triple) -> dict[str, Any]:
    """A repository result's identity: test-bench's names, with the real repository id
    (test-bench wrote ``repo-{index}``) and its manifest metadata (test-bench: ``{}``)."""
    return {
        "repository_id": triple.repo_id,
        "repository_name": triple.repo_id,
        "repository_metadata": dict(shapes.repository_metadata(run, triple.repo_id)),
        "provider_name": triple.provider_key,
        "provider": triple.provider,
        "model": triple.model,
        "scenario": triple.scenario,
    }
