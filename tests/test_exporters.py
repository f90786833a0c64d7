"""The built-in exporters json, jsonl and csv, on real files.

Results and their Summary are built by hand here (``summarize`` is a deliberately
naive, independent aggregation), then exported through the registered specs exactly
as the core calls them: ``open``, ``write`` per result in plan order, ``finalize``.
Checklist numbers refer to reference/origin-test-bench.md §8.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import re
import shutil
import tracemalloc
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fleetbench._builtins._export import JsonExporter
from fleetbench._builtins._export._stats import percentile
from fleetbench._builtins.exporters import fleetbench_register_exporters
from fleetbench._plugins import PluginHost
from fleetbench._prepare import prepare_file
from fleetbench._serialize import result_from_dict
from fleetbench.plugin import Exporter, ExporterSpec, RunInfo
from fleetbench.records import (
    Distribution,
    GenerationSettings,
    GroupStats,
    ProviderResponse,
    Status,
    Summary,
    TestResult,
    Usage,
    Verdict,
    WorkItem,
)

from .conftest import FleetDir

STARTED = "2025-03-01T10:00:00+00:00"
FINISHED = "2025-03-01T10:01:30.250000+00:00"
ALL_FILES = {"fleet_results.json", "results.jsonl", "fleet_summary.csv", "repositories.csv",
             "providers.csv", "categories.csv"}

# test-bench's column orders, copied from reference/origin-test-bench.md §6.
TB_SUMMARY = [
    "fleet_id", "timestamp", "total_repositories", "total_tests", "total_succeeded",
    "total_failed", "total_timeout", "total_skipped", "success_rate", "avg_duration_ms",
    "p50_duration_ms", "p95_duration_ms", "p99_duration_ms", "min_duration_ms",
    "max_duration_ms", "total_tokens", "avg_tokens_per_request", "total_cost",
    "avg_cost_per_repository", "avg_tests_per_repository",
]
TB_REPOSITORIES = [
    "repository_id", "repository_name", "provider_name", "total_tests", "succeeded", "failed",
    "timeout", "skipped", "success_rate", "avg_duration_ms", "p50_duration_ms",
    "p95_duration_ms", "p99_duration_ms", "total_tokens", "total_cost",
]
TB_PROVIDERS = [
    "provider_name", "repository_count", "total_tests", "total_succeeded", "total_failed",
    "success_rate", "total_tokens", "total_cost",
]
TB_CATEGORIES = ["category_name", "total_tests", "total_succeeded", "total_failed",
                 "success_rate"]


# ------------------------------------------------------------------------------ builders


def make_result(index: int, repo: str = "repo-1", provider: str = "openai",
                model: str = "gpt-4", scenario: str = "coding", *,
                status: Status = Status.PASSED, total_ms: float = 1000.0,
                category: str | None = "category-a", text: str | None = None,
                cost: float | None = 0.006, usage: Usage | None = None,
                ttft_ms: float | None = None) -> TestResult:
    """One result; a PASSED/FAILED one carries an answer, usage 100/50 and test-bench's
    flat-rate cost (100/1000·.03 + 50/1000·.06 = .006)."""
    test_id = f"t-{index}"
    item = WorkItem(key=f"{repo}/{scenario}/{provider}:{model}/{test_id}", index=index,
                    repo_id=repo, scenario=scenario, provider=provider, model=model,
                    test_id=test_id, epoch=0, prompt=f"prompt {index}",
                    settings=GenerationSettings(temperature=0.0, max_tokens=64), stream=False,
                    category=category, expected="def", metadata={"n": index}, tags=("x",))
    answered = status in (Status.PASSED, Status.FAILED)
    usage = usage if usage is not None else (Usage(100, 50) if answered else None)
    response = None
    if answered:
        response = ProviderResponse(text if text is not None else f"answer {index}", usage,
                                    "stop", model, f"resp-{index}")
    return TestResult(
        item=item, status=status, started_at=STARTED, finished_at=FINISHED, queue_ms=1.5,
        latency_ms=total_ms - 1.5 if answered else None, ttft_ms=ttft_ms,
        total_ms=total_ms, usage=usage, cost_usd=cost if answered else None,
        response=response,
        verdicts=(Verdict("contains", status is Status.PASSED, 1.0, "ok"),) if answered else (),
        error=None if answered else "provider said no", error_kind=None if answered else "api")


def benchmark(repo: str, provider: str, succeeded: int, failed: int, *, first_index: int = 0,
              model: str = "gpt-4", scenario: str = "coding") -> list[TestResult]:
    """test-bench's ``create_benchmark_results``: successes take 1000+100i ms in
    category-a, failures (provider errors) 500 ms in category-b."""
    results = [make_result(first_index + i, repo, provider, model, scenario,
                           total_ms=1000.0 + 100 * i) for i in range(succeeded)]
    results += [make_result(first_index + succeeded + i, repo, provider, model, scenario,
                            status=Status.ERROR, total_ms=500.0, category="category-b")
                for i in range(failed)]
    return results


def interleave(*groups: Sequence[TestResult]) -> list[TestResult]:
    """Round-robin over groups, the way a fair plan interleaves repositories."""
    longest = max((len(g) for g in groups), default=0)
    return reindex(g[i] for i in range(longest) for g in groups if i < len(g))


def reindex(results: Iterable[TestResult]) -> list[TestResult]:
    """Give results consecutive plan indexes (as the planner would)."""
    out = []
    for index, result in enumerate(results):
        item = result.item
        out.append(TestResult(**{**{f: getattr(result, f) for f in result.__dataclass_fields__},
                                 "item": WorkItem(**{**{f: getattr(item, f) for f in
                                                        item.__dataclass_fields__},
                                                     "index": index})}))
    return out


def _dist(values: Sequence[float]) -> Distribution:
    if not values:
        return Distribution()
    v = sorted(values)

    def pct(q: float) -> float:
        pos = (len(v) - 1) * q / 100
        lo = int(pos)
        return v[lo] + (v[min(lo + 1, len(v) - 1)] - v[lo]) * (pos - lo)

    return Distribution(len(v), sum(v) / len(v), v[0], v[-1], pct(50), pct(90), pct(95),
                        pct(99))


def _group(results: Sequence[TestResult]) -> GroupStats:
    counts = Counter(r.status for r in results)
    total = len(results)
    return GroupStats(
        total=total, passed=counts[Status.PASSED], failed=counts[Status.FAILED],
        error=counts[Status.ERROR], timeout=counts[Status.TIMEOUT],
        skipped=counts[Status.SKIPPED], cancelled=counts[Status.CANCELLED],
        success_rate=counts[Status.PASSED] / total if total else 0.0,
        error_rate=(counts[Status.ERROR] + counts[Status.TIMEOUT]) / total if total else 0.0,
        latency_ms=_dist([r.latency_ms for r in results if r.latency_ms is not None]),
        ttft_ms=_dist([r.ttft_ms for r in results if r.ttft_ms is not None]),
        duration_ms=_dist([r.total_ms for r in results]),
        queue_ms=_dist([r.queue_ms for r in results]),
        input_tokens=sum(r.usage.input_tokens for r in results if r.usage),
        output_tokens=sum(r.usage.output_tokens for r in results if r.usage),
        cost_usd=math.fsum(r.cost_usd for r in results if r.cost_usd is not None),
        unpriced_tests=sum(1 for r in results if r.usage and r.cost_usd is None))


def summarize(results: Sequence[TestResult]) -> Summary:
    """A Summary computed the obvious way, independent of the exporters' code."""
    def by(key: Callable[[TestResult], Any]) -> dict[Any, GroupStats]:
        groups: dict[Any, list[TestResult]] = defaultdict(list)
        for r in results:
            if key(r) is not None:
                groups[key(r)].append(r)
        return {k: _group(v) for k, v in groups.items()}

    return Summary(fleet=_group(results), by_provider=by(lambda r: r.item.provider_key),
                   by_repository=by(lambda r: r.item.repo_id),
                   by_category=by(lambda r: r.item.category),
                   by_scenario=by(lambda r: r.item.scenario),
                   by_repository_provider=by(lambda r: (r.item.repo_id, r.item.provider_key)),
                   exact=True)


def run_info(out: Path, *, planned: int = 0, save_responses: bool = True,
             repositories: dict[str, dict[str, str]] | None = None) -> RunInfo:
    return RunInfo(
        run_id="test-fleet-0123456789ab", fleet_id="test-fleet", status="completed",
        output_dir=out, manifest={"fleet_id": "test-fleet",
                                  "global_settings": {"custom": {"team": "qa"}}},
        created_at="2025-03-01T09:59:59+00:00", started_at=STARTED, finished_at=FINISHED,
        planned=planned, save_responses=save_responses, pricing_version="2025-03",
        repositories=repositories or {}, plugins={"builtin.simulated": "0.1.0"})


def specs() -> dict[str, ExporterSpec]:
    return {spec.name: spec for spec in fleetbench_register_exporters()}


def opening(run: RunInfo) -> RunInfo:
    """``run`` as the core knows it when the run starts, for ``open``."""
    return replace(run, status="running", finished_at=None, warnings=())


def export(out: Path, results: Iterable[TestResult], summary: Summary | None = None,
           **run_kwargs: Any) -> dict[str, list[Path]]:
    """Run every registered exporter over ``results`` like the core does."""
    results = list(results)
    run = run_info(out, planned=len(results), **run_kwargs)
    summary = summary or summarize(results)
    written = {}
    for name, spec in specs().items():
        exporter = spec.factory()
        exporter.open(opening(run))
        for result in results:
            exporter.write(result)
        written[name] = list(exporter.finalize(summary, run))
    return written


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def line_count(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


# ------------------------------------------------------------------- names and headers


def test_the_three_exporters_are_registered_with_their_files() -> None:
    registered = specs()
    assert {n: s.files for n, s in registered.items()} == {
        "json": ("fleet_results.json",),
        "jsonl": ("results.jsonl",),
        "csv": ("fleet_summary.csv", "repositories.csv", "providers.csv", "categories.csv"),
    }
    assert all(isinstance(s.factory(), Exporter) for s in registered.values())


def test_artifacts_have_their_exact_names_and_nothing_else_is_left(tmp_path: Path) -> None:
    out = tmp_path / "out" / "run"
    written = export(out, benchmark("repo-1", "openai", 3, 1))
    assert {p.name for paths in written.values() for p in paths} == ALL_FILES
    assert all(p.parent == out for paths in written.values() for p in paths)
    assert set(os.listdir(out)) == ALL_FILES  # no temporary or spool files remain


def test_csv_headers_begin_with_testbench_columns_in_order(tmp_path: Path) -> None:
    export(tmp_path, benchmark("repo-1", "openai", 2, 1))
    for name, expected in [("fleet_summary.csv", TB_SUMMARY),
                           ("repositories.csv", TB_REPOSITORIES),
                           ("providers.csv", TB_PROVIDERS), ("categories.csv", TB_CATEGORIES)]:
        header = (tmp_path / name).read_text(encoding="utf-8").splitlines()[0].split(",")
        assert header[:len(expected)] == expected, name
        assert len(header) > len(expected), name  # fleetbench's columns come after
        assert "run_id" in header[len(expected):], name


# ----------------------------------------------------------------- test-bench checklist


def test_checklist_11_to_14_csv_line_counts_and_contents(tmp_path: Path) -> None:
    results = reindex(benchmark("repo-1", "openai", 10, 0)
                      + benchmark("repo-2", "anthropic", 7, 3, model="claude-3"))
    export(tmp_path, results)
    assert line_count(tmp_path / "fleet_summary.csv") == 2
    assert line_count(tmp_path / "repositories.csv") == 3
    assert line_count(tmp_path / "providers.csv") == 3
    summary_text = (tmp_path / "fleet_summary.csv").read_text(encoding="utf-8")
    assert "fleet_id" in summary_text
    assert "test-fleet" in summary_text
    providers = read_csv(tmp_path / "providers.csv")
    assert [p["provider_name"] for p in providers] == ["anthropic:claude-3", "openai:gpt-4"]
    assert [(p["provider"], p["model"]) for p in providers] == [("anthropic", "claude-3"),
                                                               ("openai", "gpt-4")]
    categories = read_csv(tmp_path / "categories.csv")
    assert [(c["category_name"], c["total_tests"], c["total_succeeded"], c["total_failed"])
            for c in categories] == [("category-a", "17", "17", "0"),
                                     ("category-b", "3", "0", "3")]


def test_checklist_1_accuracy_in_json_and_csv(tmp_path: Path) -> None:
    results = reindex(benchmark("repo-1", "openai", 10, 0)
                      + benchmark("repo-2", "anthropic", 7, 3, model="claude-3")
                      + benchmark("repo-3", "openai", 5, 5))
    export(tmp_path, results)
    doc = load_json(tmp_path / "fleet_results.json")
    fleet = doc["fleet_summary"]
    assert (doc["total_repositories"], fleet["total_tests"], fleet["total_succeeded"],
            fleet["total_failed"]) == (3, 30, 22, 8)
    assert fleet["success_rate"] == pytest.approx(22 / 30)
    providers = doc["provider_breakdown"]
    assert set(providers) == {"openai:gpt-4", "anthropic:claude-3"}
    assert [(providers[k]["repository_count"], providers[k]["total_tests"],
             providers[k]["total_succeeded"]) for k in ("openai:gpt-4", "anthropic:claude-3")
            ] == [(2, 20, 15), (1, 10, 7)]
    row = read_csv(tmp_path / "fleet_summary.csv")[0]
    assert (row["total_repositories"], row["total_tests"], row["success_rate"]) == \
        ("3", "30", "0.7333")


def test_checklist_9_cost_and_number_formats(tmp_path: Path) -> None:
    results = reindex(benchmark("repo-1", "openai", 10, 0) + benchmark("repo-2", "openai", 10, 0))
    export(tmp_path, results)
    fleet = load_json(tmp_path / "fleet_results.json")["fleet_summary"]
    assert fleet["total_cost"] == pytest.approx(0.12)
    assert fleet["avg_cost_per_repository"] == pytest.approx(0.06)
    row = read_csv(tmp_path / "fleet_summary.csv")[0]
    assert (row["total_cost"], row["avg_cost_per_repository"], row["success_rate"],
            row["avg_tests_per_repository"]) == ("0.120000", "0.060000", "1.0000", "10.00")
    assert (row["min_duration_ms"], row["max_duration_ms"]) == ("1000", "1900")  # u64 ints


def test_checklist_28_31_one_repositories_row_per_triple(tmp_path: Path) -> None:
    providers = ["openai", "anthropic", "cohere", "huggingface"]
    results = reindex(r for i in range(50)
                      for r in benchmark(f"repo-{i}", providers[i % 4], 10 - i % 3, i % 3))
    export(tmp_path, results)
    assert line_count(tmp_path / "repositories.csv") == 51
    assert line_count(tmp_path / "providers.csv") == 5
    doc = load_json(tmp_path / "fleet_results.json")
    assert (doc["total_repositories"], doc["fleet_summary"]["total_tests"]) == (50, 500)
    assert len(doc["repository_results"]) == 50
    assert [r["repository_id"] for r in doc["repository_results"]] == \
        [f"repo-{i}" for i in range(50)]


def test_triples_are_counted_apart_from_distinct_repositories(tmp_path: Path) -> None:
    # One repository with two scenarios and two providers, interleaved as a plan would be.
    results = reindex(r for i in range(3)
                      for r in (make_result(0, "api", "openai", "gpt-4", "coding"),
                                make_result(0, "api", "simulated", "fast", "coding"),
                                make_result(0, "api", "openai", "gpt-4", "reasoning")))
    export(tmp_path, results)
    doc = load_json(tmp_path / "fleet_results.json")
    assert doc["total_repositories"] == doc["fleet_summary"]["total_repositories"] == 1
    assert doc["fleet_summary"]["total_benchmarks"] == 3
    assert doc["fleet_summary"]["avg_tests_per_repository"] == 9.0
    entries = [(e["scenario"], e["provider_name"], len(e["results"]))
               for e in doc["repository_results"]]
    assert entries == [("coding", "openai:gpt-4", 3), ("coding", "simulated:fast", 3),
                       ("reasoning", "openai:gpt-4", 3)]
    assert [r["key"] for r in doc["repository_results"][0]["results"]] == \
        [results[i].key for i in (0, 3, 6)]  # plan order inside a triple
    rows = read_csv(tmp_path / "repositories.csv")
    assert [(r["repository_id"], r["scenario"], r["provider"], r["model"]) for r in rows] == \
        [("api", "coding", "openai", "gpt-4"), ("api", "coding", "simulated", "fast"),
         ("api", "reasoning", "openai", "gpt-4")]
    assert doc["provider_breakdown"]["openai:gpt-4"]["repository_count"] == 1
    assert doc["provider_breakdown"]["openai:gpt-4"]["benchmark_count"] == 2


# ------------------------------------------------------------------------- statistics


def test_triple_statistics_are_exact_linear_percentiles(tmp_path: Path) -> None:
    export(tmp_path, benchmark("repo-1", "openai", 5, 0))  # 1000, 1100, …, 1400 ms
    doc = load_json(tmp_path / "fleet_results.json")
    summary = doc["repository_results"][0]["summary"]
    assert (summary["avg_duration_ms"], summary["p50_duration_ms"], summary["p95_duration_ms"],
            summary["p99_duration_ms"]) == (1200.0, 1200.0, 1380.0, 1396.0)
    assert (summary["min_duration_ms"], summary["max_duration_ms"]) == (1000, 1400)
    assert summary["duration_ms"]["p90"] == 1360.0
    assert summary["avg_tokens_per_request"] == 150.0
    assert doc["percentile_method"] == "linear"
    # test-bench left the provider average at 0.0; ours is the provider's mean duration.
    assert doc["provider_breakdown"]["openai:gpt-4"]["avg_duration_ms"] == 1200.0
    row = read_csv(tmp_path / "repositories.csv")[0]
    assert (row["p95_duration_ms"], row["latency_p50_ms"]) == ("1380.00", "1198.50")


def test_checklist_23_one_triple_fleet_equals_its_repository_result(tmp_path: Path) -> None:
    results = [make_result(i, status=s, total_ms=100.0 + 37 * i, ttft_ms=5.0 + i)
               for i, s in enumerate([Status.PASSED] * 7 + [Status.FAILED, Status.ERROR])]
    export(tmp_path, results)
    doc = load_json(tmp_path / "fleet_results.json")
    fleet, triple = doc["fleet_summary"], doc["repository_results"][0]["summary"]
    assert (triple["total"], triple["succeeded"], triple["failed"]) == \
        (fleet["total_tests"], fleet["total_succeeded"], fleet["total_failed"]) == (9, 7, 2)
    for name in ("success_rate", "total_tokens", "total_cost", "avg_duration_ms",
                 "p50_duration_ms", "p99_duration_ms", "min_duration_ms", "max_duration_ms",
                 "avg_tokens_per_request", "latency_ms", "ttft_ms", "duration_ms",
                 "unpriced_tests"):
        assert triple[name] == fleet[name], name
    assert triple["avg_tokens_per_request"] == 150.0  # 8 answered tests × 150 tokens / 8


def test_percentile_matches_the_numpy_default() -> None:
    numpy = pytest.importorskip("numpy")
    rng = random.Random(7)
    for n in (1, 2, 3, 10, 101, 1000):
        values = sorted(rng.uniform(0, 5000) for _ in range(n))
        for q in (0, 1, 50, 90, 95, 99, 99.9, 100):
            assert percentile(values, q) == float(numpy.percentile(values, q)), (n, q)


def test_statuses_map_to_testbench_and_keep_their_detail(tmp_path: Path) -> None:
    statuses = list(Status)
    results = [make_result(i, status=s) for i, s in enumerate(statuses)]
    export(tmp_path, results)
    entry = load_json(tmp_path / "fleet_results.json")["repository_results"][0]
    assert [(r["status"], r["status_detail"]) for r in entry["results"]] == [
        ("success", "passed"), ("failure", "failed"), ("failure", "error"),
        ("timeout", "timeout"), ("skipped", "skipped"), ("skipped", "cancelled")]
    summary = entry["summary"]
    assert (summary["total"], summary["succeeded"], summary["failed"], summary["timeout"],
            summary["skipped"]) == (6, 1, 2, 1, 2)
    assert summary["status_counts"] == dict.fromkeys(
        ["passed", "failed", "error", "timeout", "skipped", "cancelled"], 1)
    row = read_csv(tmp_path / "repositories.csv")[0]
    assert (row["succeeded"], row["failed"], row["skipped"], row["status_error"],
            row["status_cancelled"]) == ("1", "2", "2", "1", "1")


def test_unpriced_tests_are_counted_not_priced(tmp_path: Path) -> None:
    results = [make_result(0), make_result(1, cost=None)]
    export(tmp_path, results)
    row = read_csv(tmp_path / "repositories.csv")[0]
    assert (row["unpriced_tests"], row["total_cost"]) == ("1", "0.006000")


# ---------------------------------------------------------------------- JSON contract


def _assert_keys_sorted_everywhere(text: str) -> None:
    def check(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        assert keys == sorted(keys)
        return dict(pairs)

    json.loads(text, object_pairs_hook=check)


def test_json_is_a_superset_of_fleet_benchmark_results(tmp_path: Path) -> None:
    results = reindex(benchmark("repo-1", "openai", 3, 1)
                      + benchmark("repo-2", "anthropic", 2, 0, model="claude-3"))
    export(tmp_path, results)
    text = (tmp_path / "fleet_results.json").read_text(encoding="utf-8")
    _assert_keys_sorted_everywhere(text)
    doc = json.loads(text)
    assert {"category_breakdown", "fleet_id", "fleet_summary", "metadata",
            "provider_breakdown", "repository_results", "timestamp",
            "total_repositories"} <= set(doc)
    assert {"run_id", "status", "scenario_breakdown", "repository_breakdown",
            "repository_provider_breakdown", "percentile_method", "pricing_version"} <= set(doc)
    assert set(TB_SUMMARY[2:]) | {"p50_duration_ms", "total_duration_ms"} <= \
        set(doc["fleet_summary"])  # the 19 FleetSummary fields
    assert len(set(TB_SUMMARY[2:]) | {"total_duration_ms"}) == 19
    assert {"provider_name", "repository_count", "total_tests", "total_succeeded",
            "total_failed", "success_rate", "total_tokens", "total_cost",
            "avg_duration_ms"} <= set(doc["provider_breakdown"]["openai:gpt-4"])
    assert {"category_name", "total_tests", "total_succeeded", "total_failed", "success_rate",
            "avg_duration_ms"} <= set(doc["category_breakdown"]["category-a"])
    assert {"total_tests", "total_duration_ms", "execution_timestamp", "aggregation_version",
            "custom"} <= set(doc["metadata"])
    entry = doc["repository_results"][0]
    assert {"repository_id", "repository_name", "provider_name", "results",
            "repository_metadata", "summary", "scenario", "provider", "model"} <= set(entry)
    assert {"total", "succeeded", "failed", "timeout", "skipped", "success_rate",
            "avg_duration_ms", "p50_duration_ms", "p95_duration_ms", "p99_duration_ms",
            "min_duration_ms", "max_duration_ms", "total_tokens", "avg_tokens_per_request",
            "total_cost"} <= set(entry["summary"])
    first = entry["results"][0]
    assert {"test_id", "category", "status", "response", "error", "duration_ms",
            "timestamp", "key", "status_detail", "latency_ms", "cost_usd",
            "verdicts"} <= set(first)
    assert {"id", "model", "content", "usage", "finish_reason"} <= set(first["response"])
    assert first["response"]["usage"] == {"prompt_tokens": 100, "completion_tokens": 50,
                                          "total_tokens": 150}


def test_checklist_19_21_json_round_trip_keeps_identity_and_totals(tmp_path: Path) -> None:
    results = reindex(benchmark("api-gateway", "openai", 10, 0)
                      + benchmark("user-service", "anthropic", 7, 3, model="claude-3"))
    meta = {"api-gateway": {"team": "edge"}}
    export(tmp_path, results, repositories=meta)
    doc = load_json(tmp_path / "fleet_results.json")
    assert (doc["fleet_id"], doc["total_repositories"], doc["fleet_summary"]["total_tests"],
            doc["fleet_summary"]["success_rate"]) == ("test-fleet", 2, 20, 17 / 20)
    assert (doc["run_id"], doc["timestamp"], doc["status"]) == \
        ("test-fleet-0123456789ab", FINISHED, "completed")
    assert doc["fleet_summary"]["total_duration_ms"] == 90250  # from the run's timestamps
    assert doc["metadata"]["custom"] == {"team": "qa"}
    assert doc["metadata"]["aggregation_version"] == "1.0.0"
    entries = doc["repository_results"]
    assert [(e["repository_id"], e["repository_name"], e["provider_name"],
             e["repository_metadata"]) for e in entries] == [
        ("api-gateway", "api-gateway", "openai:gpt-4", {"team": "edge"}),
        ("user-service", "user-service", "anthropic:claude-3", {})]
    flat = [r for e in entries for r in e["results"]]
    assert [r["key"] for r in flat] == [r.key for r in results]
    assert [r["duration_ms"] for r in flat] == [round(r.total_ms) for r in results]
    assert flat[0]["response"]["content"] == "answer 0"
    assert (flat[-1]["response"], flat[-1]["error"]) == (None, "provider said no")


def test_exports_of_one_run_are_byte_identical(tmp_path: Path) -> None:
    results = interleave(*(benchmark(f"repo-{i}", "openai", 20, 5) for i in range(4)))
    summary = summarize(results)
    export(tmp_path / "a", results, summary)
    export(tmp_path / "b", results, summary)
    # Spooling to disk (a tiny budget) must not change a byte either.
    run = run_info(tmp_path / "c", planned=len(results))
    exporter = JsonExporter(spool_chars=1)
    exporter.open(opening(run))
    for result in results:
        exporter.write(result)
    exporter.finalize(summary, run)
    for name in ALL_FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "c" / "fleet_results.json").read_bytes() == \
        (tmp_path / "a" / "fleet_results.json").read_bytes()


def test_save_responses_false_drops_every_answer(tmp_path: Path) -> None:
    results = [make_result(i, text=f"SECRET-ANSWER-{i}") for i in range(5)]
    export(tmp_path / "kept", results)
    export(tmp_path / "dropped", results, save_responses=False)
    assert "SECRET-ANSWER-3" in (tmp_path / "kept" / "results.jsonl").read_text()
    for name in ALL_FILES:
        assert "SECRET-ANSWER" not in (tmp_path / "dropped" / name).read_text(), name
    doc = load_json(tmp_path / "dropped" / "fleet_results.json")
    responses = [r["response"] for r in doc["repository_results"][0]["results"]]
    assert all(r["content"] is None and r["usage"]["total_tokens"] == 150 for r in responses)
    lines = (tmp_path / "dropped" / "results.jsonl").read_text().splitlines()
    assert all(json.loads(line)["response"] is None for line in lines)


# ----------------------------------------------------------------------------- JSONL


def test_results_jsonl_is_plan_order_and_round_trips(tmp_path: Path) -> None:
    results = reindex(r for i in range(3) for r in (
        make_result(i, "repo-a", ttft_ms=12.5), make_result(i, "repo-b", status=Status.FAILED),
        make_result(i, "repo-a", scenario="other", status=Status.TIMEOUT)))
    export(tmp_path, results)
    lines = (tmp_path / "results.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(results)
    # compact JSON with sorted keys, so each line is canonical
    assert all(line == json.dumps(json.loads(line), sort_keys=True, separators=(",", ":"),
                                  ensure_ascii=False) for line in lines)
    assert [result_from_dict(json.loads(line)) for line in lines] == results


# ------------------------------------------------------------------------------ safety


def test_hostile_repository_id_stays_inside_and_round_trips(tmp_path: Path) -> None:
    hostile = '../../escape,"quoted"\nnext'
    out = tmp_path / "base" / "run"
    export(out, [make_result(0, hostile), make_result(1, "/etc/passwd")])
    everything = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()}
    assert everything == {Path("base/run") / name for name in ALL_FILES}
    rows = read_csv(out / "repositories.csv")
    assert [r["repository_id"] for r in rows] == [hostile, "/etc/passwd"]
    assert [r["repository_name"] for r in rows] == [hostile, "/etc/passwd"]
    doc = load_json(out / "fleet_results.json")
    assert doc["repository_results"][0]["repository_id"] == hostile


def test_empty_run_still_writes_every_file(tmp_path: Path) -> None:
    written = export(tmp_path, [])
    assert {p.name for paths in written.values() for p in paths} == ALL_FILES
    row = read_csv(tmp_path / "fleet_summary.csv")
    assert len(row) == 1
    assert (row[0]["total_repositories"], row[0]["total_tests"], row[0]["success_rate"],
            row[0]["avg_cost_per_repository"]) == ("0", "0", "0.0000", "0.000000")
    for name in ("repositories.csv", "providers.csv", "categories.csv"):
        assert line_count(tmp_path / name) == 1, name  # the header alone
    doc = load_json(tmp_path / "fleet_results.json")
    assert (doc["total_repositories"], doc["repository_results"], doc["provider_breakdown"],
            doc["fleet_summary"]["success_rate"]) == (0, [], {}, 0.0)
    assert (tmp_path / "results.jsonl").read_bytes() == b""


def test_a_failed_export_keeps_the_previous_file_and_leaves_no_debris(tmp_path: Path) -> None:
    results = interleave(*(benchmark(f"repo-{i}", "openai", 5, 0) for i in range(3)))
    export(tmp_path, results)
    before = (tmp_path / "fleet_results.json").read_bytes()
    exporter = JsonExporter(spool_chars=1)  # every result goes to the spool on disk
    exporter.open(opening(run_info(tmp_path)))
    for result in results[:7]:
        exporter.write(result)
    spools = list(tmp_path.glob(".fleet_results.json.*.spool"))
    assert len(spools) == 1
    assert any(spools[0].iterdir())
    shutil.rmtree(spools[0])  # the disk loses the spool mid-export
    with pytest.raises(FileNotFoundError):
        exporter.finalize(summarize(results[:7]), run_info(tmp_path))
    assert (tmp_path / "fleet_results.json").read_bytes() == before
    assert set(os.listdir(tmp_path)) == ALL_FILES


def test_leftovers_of_a_crashed_export_are_removed(tmp_path: Path) -> None:
    (tmp_path / ".results.jsonl.deadbeef.tmp").write_text("half a li")
    (tmp_path / ".repositories.csv.cafe.tmp").write_text("repository_id,")
    spool = tmp_path / ".fleet_results.json.0badf00d.spool"
    spool.mkdir()
    (spool / "0.txt").write_text("{}\n")
    (tmp_path / ".keep").write_text("not ours")
    export(tmp_path, [make_result(0)])
    assert set(os.listdir(tmp_path)) == ALL_FILES | {".keep"}


def test_finalize_writes_the_final_run_not_the_one_open_saw(tmp_path: Path) -> None:
    # open() gets the run as it starts; status, end time and warnings come with finalize.
    final = replace(run_info(tmp_path, planned=2), status="cancelled",
                    warnings=("client lag", "cancelled"))
    written = {}
    for name, spec in specs().items():
        exporter = spec.factory()
        exporter.open(opening(final))
        exporter.write(make_result(0))
        written[name] = exporter.finalize(summarize([make_result(0)]), final)
    doc = load_json(tmp_path / "fleet_results.json")
    assert (doc["status"], doc["timestamp"]) == ("cancelled", FINISHED)
    assert (doc["metadata"]["finished_at"], doc["metadata"]["warnings"]) == \
        (FINISHED, ["client lag", "cancelled"])
    assert doc["fleet_summary"]["total_duration_ms"] == 90250
    (row,) = read_csv(tmp_path / "fleet_summary.csv")
    assert (row["status"], row["timestamp"], row["total_duration_ms"]) == \
        ("cancelled", FINISHED, "90250")
    assert {p.name for paths in written.values() for p in paths} == ALL_FILES


def test_abort_removes_what_open_and_write_left(tmp_path: Path) -> None:
    results = interleave(*(benchmark(f"repo-{i}", "openai", 3, 1) for i in range(3)))
    for spec in specs().values():
        exporter: Any = JsonExporter(spool_chars=1) if spec.name == "json" else spec.factory()
        exporter.open(opening(run_info(tmp_path)))
        for result in results:
            exporter.write(result)
        exporter.abort()
        exporter.abort()  # harmless when repeated
        assert os.listdir(tmp_path) == [], spec.name
        with pytest.raises(RuntimeError, match="open"):
            exporter.write(results[0])


def test_write_before_open_is_an_error() -> None:
    for spec in specs().values():
        with pytest.raises(RuntimeError, match="open"):
            spec.factory().write(make_result(0))


# ------------------------------------------------------------------------------ memory


def _many(count: int) -> Iterator[TestResult]:
    """``count`` results over 12 triples, made one at a time and never kept here."""
    for i in range(count):
        yield make_result(i, f"repo-{i % 4}", ("openai", "anthropic", "cohere")[i % 3],
                          total_ms=900.0 + i % 500, ttft_ms=50.0 + i % 7,
                          text="word " * 40)


@pytest.mark.parametrize(("name", "per_result_floats"), [("json", 4), ("jsonl", 0),
                                                         ("csv", 4)])
def test_memory_stays_flat_over_20000_results(tmp_path: Path, name: str,
                                              per_result_floats: int) -> None:
    count = 20_000
    budget = 256 * 1024
    exporter: Any = JsonExporter(spool_chars=budget) if name == "json" else \
        specs()[name].factory()
    exporter.open(opening(run_info(tmp_path, planned=count)))
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        for result in _many(count):
            exporter.write(result)
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    # Keeping the results (or their rendered text, ~1.5 kB each) would take > 30 MB.
    # Allowed: one 8-byte float per metric per result, the spool budget, fixed overhead.
    allowance = count * per_result_floats * 8 * 1.2 + (budget * 1.3 if name == "json" else 0)
    assert peak < allowance + 512 * 1024, (name, peak)
    if name == "json":
        assert exporter.held_chars <= budget
    if name != "jsonl":
        assert exporter.held_values == count * per_result_floats  # total, queue, latency, ttft
    paths = exporter.finalize(summarize(list(_many(100))), run_info(tmp_path, planned=count))
    assert all(p.exists() for p in paths)
    if name == "jsonl":
        assert line_count(tmp_path / "results.jsonl") == count
    if name == "json":
        doc = load_json(tmp_path / "fleet_results.json")
        assert sum(len(e["results"]) for e in doc["repository_results"]) == count


def test_csv_round_trip_of_quoted_fields_uses_the_csv_module(tmp_path: Path) -> None:
    # A category and a model with separators survive as single fields.
    export(tmp_path, [make_result(0, category='a,b "c"', model='m,"1"')])
    categories = list(csv.reader(io.StringIO((tmp_path / "categories.csv").read_text())))
    assert categories[1][0] == 'a,b "c"'
    providers = read_csv(tmp_path / "providers.csv")
    assert (providers[0]["provider_name"], providers[0]["model"]) == \
        ('openai:m,"1"', 'm,"1"')
    assert math.isclose(float(providers[0]["success_rate"]), 1.0)


def test_a_real_plan_exports_one_entry_per_planned_triple(tmp_path: Path, fleet_dir: FleetDir,
                                                          host: PluginHost) -> None:
    plan = prepare_file(fleet_dir.write(), host=host, cache_dir=tmp_path / "cache").plan
    statuses = list(Status)
    results = [TestResult(item, statuses[i % len(statuses)], STARTED, FINISHED,
                          total_ms=10.0 + i, usage=Usage(3, 4), cost_usd=None,
                          response=ProviderResponse("ok", Usage(3, 4), "stop"))
               for i, item in enumerate(plan.items)]
    out = tmp_path / "run"
    export(out, results)
    doc = load_json(out / "fleet_results.json")
    assert {(e["repository_id"], e["scenario"], e["provider_name"]): len(e["results"])
            for e in doc["repository_results"]} == plan.counts()
    assert [(e["repository_id"], e["scenario"], e["provider_name"])
            for e in doc["repository_results"]] == list(plan.counts())
    lines = (out / "results.jsonl").read_text(encoding="utf-8").splitlines()
    assert [result_from_dict(json.loads(line)) for line in lines] == results
    assert line_count(out / "repositories.csv") == 1 + len(plan.counts())


def _documented(name: str, docs: str) -> bool:
    """``name`` appears as a whole word inside some backticked span of the docs."""
    return re.search(rf"`[^`\n]*(?<![\w.-]){re.escape(name)}(?![\w-])[^`\n]*`", docs) is not None


def test_docs_name_every_json_field_and_csv_column(tmp_path: Path) -> None:
    export(tmp_path, [make_result(0), make_result(1, status=Status.ERROR)])
    docs = (Path(__file__).resolve().parent.parent / "docs" / "artifacts.md").read_text(
        encoding="utf-8")
    keys: set[str] = set()

    def collect(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys.update(k for k, _ in pairs)
        return dict(pairs)

    json.loads((tmp_path / "fleet_results.json").read_text(encoding="utf-8"),
               object_pairs_hook=collect)
    for line in (tmp_path / "results.jsonl").read_text(encoding="utf-8").splitlines():
        json.loads(line, object_pairs_hook=collect)
    for name in ALL_FILES - {"fleet_results.json", "results.jsonl"}:
        keys.update((tmp_path / name).read_text(encoding="utf-8").splitlines()[0].split(","))
    # Group names and free-form maps hold data, not field names.
    keys -= {"category-a", "category-b", "openai:gpt-4", "repo-1", "coding",
             "builtin.simulated", "team", "n"}
    assert len(keys) > 100
    assert sorted(k for k in keys if not _documented(k, docs)) == []
    assert not _documented("no_such_field", docs)
    assert not _documented("total", "`total_tests`")
