"""test-bench's artifact shapes, filled from fleetbench's records, plus our additions.

Each builder returns plain JSON-able data whose test-bench fields carry test-bench's
names and types (its ``u64`` fields are written as integers), followed by fleetbench's
additions under names test-bench never used. The JSON and CSV exporters both build
from here, so the two always agree. docs/artifacts.md lists every field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from fleetbench.plugin import RunInfo
from fleetbench.records import Distribution, GroupStats, TestResult

__all__ = ["AGGREGATION_VERSION", "answered", "avg_tokens_per_request", "category_stats",
           "distribution_dict", "finite", "fixed", "fleet_summary", "group_stats", "ms_int",
           "provider_stats", "repository_metadata", "result_summary", "run_timestamp",
           "split_provider_key", "testbench_result", "wall_time_ms"]

AGGREGATE_DECIMALS = 9
"""Decimal places of every aggregate float in JSON (CSV keeps test-bench's formats)."""
AGGREGATION_VERSION = "1.0.0"
"""test-bench's ``FleetMetadata.aggregation_version``; our superset keeps it."""


# ------------------------------------------------------------------------------ numbers


def finite(value: float | None) -> float | None:
    """``value``, or ``None`` when it is missing or not finite (JSON has no NaN)."""
    return value if value is not None and math.isfinite(value) else None


def fixed(value: float | None) -> float | None:
    """An aggregate float in the artifacts' fixed form: rounded to 9 decimal places
    (picoseconds, nano-dollars), so that float noise from summation order — partial
    aggregates merged from several workers — never changes a byte; ``None`` when
    missing or not finite. Per-test values are written exactly instead."""
    value = finite(value)
    return float(round(value, AGGREGATE_DECIMALS)) if value is not None else None


def ms_int(value: float | None) -> int:
    """A millisecond figure as test-bench's ``u64``: rounded, 0 when missing."""
    value = finite(value)
    return round(value) if value is not None else 0


def _or_zero(value: float | None) -> float:
    """An aggregate float in fixed form, 0.0 when missing (test-bench's convention)."""
    value = fixed(value)
    return value if value is not None else 0.0


def answered(stats: GroupStats) -> int:
    """Tests whose call returned an answer (``passed`` + ``failed``): what test-bench
    called "succeeded", since its pass meant "the HTTP call worked"."""
    return stats.passed + stats.failed


def avg_tokens_per_request(stats: GroupStats) -> float:
    """Total tokens over answered tests (test-bench: over succeeded calls)."""
    return stats.total_tokens / answered(stats) if answered(stats) else 0.0


def split_provider_key(key: str) -> tuple[str, str]:
    """``provider:model`` → (provider, model), split at the first ``:``."""
    provider, _, model = key.partition(":")
    return provider, model


def _parse_time(stamp: str | None) -> datetime | None:
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp)
    except ValueError:
        return None


def wall_time_ms(run: RunInfo) -> int:
    """The run's wall time, ``finished_at − started_at``, in whole milliseconds."""
    start, end = _parse_time(run.started_at), _parse_time(run.finished_at)
    if start is None or end is None or (start.tzinfo is None) != (end.tzinfo is None):
        return 0
    return max(0, round((end - start).total_seconds() * 1000.0))


def run_timestamp(run: RunInfo) -> str:
    """The artifact's ``timestamp``: when the run finished (else started, else was
    created). Never the export's clock, so re-exports are byte-identical."""
    return run.finished_at or run.started_at or run.created_at


# --------------------------------------------------------------------------- aggregates


def distribution_dict(dist: Distribution) -> dict[str, Any]:
    """A :class:`Distribution` as ``{count, mean, min, max, p50, p90, p95, p99}``."""
    return {"count": dist.count, "mean": fixed(dist.mean), "min": fixed(dist.min),
            "max": fixed(dist.max), "p50": fixed(dist.p50), "p90": fixed(dist.p90),
            "p95": fixed(dist.p95), "p99": fixed(dist.p99)}


def _additions(stats: GroupStats) -> dict[str, Any]:
    """fleetbench's fields on every aggregate: richer counts, rates, timing
    distributions, token split and cost coverage."""
    return {
        "status_counts": {"passed": stats.passed, "failed": stats.failed,
                          "error": stats.error, "timeout": stats.timeout,
                          "skipped": stats.skipped, "cancelled": stats.cancelled},
        "error_rate": _or_zero(stats.error_rate),
        "latency_ms": distribution_dict(stats.latency_ms),
        "ttft_ms": distribution_dict(stats.ttft_ms),
        "itl_ms": distribution_dict(stats.itl_ms),
        "duration_ms": distribution_dict(stats.duration_ms),
        "queue_ms": distribution_dict(stats.queue_ms),
        "retries": stats.retries,
        "input_tokens": stats.input_tokens,
        "output_tokens": stats.output_tokens,
        "cached_input_tokens": stats.cached_input_tokens,
        "unpriced_tests": stats.unpriced_tests,
        "output_tokens_per_s": fixed(stats.output_tokens_per_s),
        "evaluation_cost_usd": _or_zero(stats.evaluation_cost_usd),
    }


def result_summary(stats: GroupStats) -> dict[str, Any]:
    """test-bench's ``ResultSummary`` (one triple) plus the additions.

    Legacy counts fold our statuses: ``failed`` = failed + error, ``skipped`` =
    skipped + cancelled.
    """
    duration = stats.duration_ms
    return {
        "total": stats.total,
        "succeeded": stats.passed,
        "failed": stats.failed + stats.error,
        "timeout": stats.timeout,
        "skipped": stats.skipped + stats.cancelled,
        "success_rate": _or_zero(stats.success_rate),
        "avg_duration_ms": _or_zero(duration.mean),
        "p50_duration_ms": _or_zero(duration.p50),
        "p95_duration_ms": _or_zero(duration.p95),
        "p99_duration_ms": _or_zero(duration.p99),
        "min_duration_ms": ms_int(duration.min),
        "max_duration_ms": ms_int(duration.max),
        "total_tokens": stats.total_tokens,
        "avg_tokens_per_request": _or_zero(avg_tokens_per_request(stats)),
        "total_cost": _or_zero(stats.cost_usd),
        **_additions(stats),
    }


def fleet_summary(stats: GroupStats, *, repositories: int, benchmarks: int,
                  wall_ms: int) -> dict[str, Any]:
    """test-bench's 19-field ``FleetSummary`` plus ``total_benchmarks`` and the additions.

    ``total_repositories`` counts distinct repositories (test-bench counted triples,
    which is now ``total_benchmarks``); the per-repository averages divide by it.
    ``total_duration_ms`` is the run's wall time.
    """
    return {
        "total_repositories": repositories,
        "total_benchmarks": benchmarks,
        **_breakdown(stats),
        "min_duration_ms": ms_int(stats.duration_ms.min),
        "max_duration_ms": ms_int(stats.duration_ms.max),
        "avg_cost_per_repository": _or_zero(stats.cost_usd / repositories
                                            if repositories else 0.0),
        "avg_tests_per_repository": _or_zero(stats.total / repositories
                                             if repositories else 0.0),
        "total_duration_ms": wall_ms,
    }


def _breakdown(stats: GroupStats) -> dict[str, Any]:
    """The fields shared by every named group in a breakdown."""
    duration = stats.duration_ms
    return {
        "total_tests": stats.total,
        "total_succeeded": stats.passed,
        "total_failed": stats.failed + stats.error,
        "total_timeout": stats.timeout,
        "total_skipped": stats.skipped + stats.cancelled,
        "success_rate": _or_zero(stats.success_rate),
        "avg_duration_ms": _or_zero(duration.mean),
        "p50_duration_ms": _or_zero(duration.p50),
        "p95_duration_ms": _or_zero(duration.p95),
        "p99_duration_ms": _or_zero(duration.p99),
        "total_tokens": stats.total_tokens,
        "avg_tokens_per_request": _or_zero(avg_tokens_per_request(stats)),
        "total_cost": _or_zero(stats.cost_usd),
        **_additions(stats),
    }


def provider_stats(key: str, stats: GroupStats, *, repositories: int,
                   benchmarks: int) -> dict[str, Any]:
    """test-bench's ``ProviderFleetStats`` (keyed ``provider:model``) plus additions.

    ``repository_count`` counts distinct repositories; ``benchmark_count`` triples.
    """
    provider, model = split_provider_key(key)
    return {"provider_name": key, "provider": provider, "model": model,
            "repository_count": repositories, "benchmark_count": benchmarks,
            **_breakdown(stats)}


def category_stats(name: str, stats: GroupStats) -> dict[str, Any]:
    """test-bench's ``CategoryFleetStats`` plus additions."""
    return {"category_name": name, **_breakdown(stats)}


def group_stats(stats: GroupStats) -> dict[str, Any]:
    """An entry of a breakdown test-bench did not have (scenario, repository …)."""
    return _breakdown(stats)


# ------------------------------------------------------------------------------ results


def _response(result: TestResult, save_responses: bool) -> dict[str, Any] | None:
    """test-bench's ``CompletionResponse``: null when the call gave no answer."""
    response, usage = result.response, result.usage
    if response is None:
        return None
    finished = _parse_time(result.finished_at)
    return {
        "id": response.response_id,
        "model": response.model if response.model is not None else result.item.model,
        "content": response.text if save_responses else None,
        "usage": None if usage is None else {
            "prompt_tokens": usage.input_tokens,
            "completion_tokens": usage.output_tokens,
            "total_tokens": usage.total_tokens,
        },
        "finish_reason": response.finish_reason,
        "created_at": int(finished.timestamp()) if finished and finished.tzinfo else None,
    }


def testbench_result(result: TestResult, *, save_responses: bool) -> dict[str, Any]:
    """test-bench's ``TestResult`` (legacy status, whole-ms duration) plus ours."""
    item, usage = result.item, result.usage
    return {
        "test_id": item.test_id,
        "category": item.category,
        "status": result.status.legacy,
        "response": _response(result, save_responses),
        "error": result.error,
        "duration_ms": ms_int(result.total_ms),
        "timestamp": result.finished_at,
        "key": item.key,
        "index": item.index,
        "epoch": item.epoch,
        "tags": list(item.tags),
        "status_detail": result.status.value,
        "started_at": result.started_at,
        "finished_at": result.finished_at,
        "queue_ms": finite(result.queue_ms),
        "latency_ms": finite(result.latency_ms),
        "ttft_ms": finite(result.ttft_ms),
        "itl_ms": finite(result.itl_ms),
        "total_ms": finite(result.total_ms),
        "retries": result.retries,
        "input_tokens": usage.input_tokens if usage else None,
        "output_tokens": usage.output_tokens if usage else None,
        "cached_input_tokens": usage.cached_input_tokens if usage else None,
        "tokens_estimated": usage.estimated if usage else None,
        "cost_usd": finite(result.cost_usd),
        "verdicts": [{"evaluator": v.evaluator, "passed": v.passed, "score": finite(v.score),
                      "detail": v.detail, "error": v.error, "cost_usd": finite(v.cost_usd),
                      "input_tokens": v.input_tokens, "output_tokens": v.output_tokens}
                     for v in result.verdicts],
        "error_kind": result.error_kind,
        "cached": result.cached,
    }


def repository_metadata(run: RunInfo, repo_id: str) -> Mapping[str, str]:
    """The repository's manifest ``metadata`` (test-bench always wrote ``{}``)."""
    return run.repositories.get(repo_id, {})
