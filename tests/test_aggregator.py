"""The incremental aggregator against an independent plain-Python recomputation.

Exact summaries must equal, bit for bit, aggregates recomputed here with lists,
left-to-right sums and a hand-written linear-interpolation percentile; live snapshots
must agree on every count and stay within DDSketch's 1 % of the exact percentiles.
test-bench's acceptance checklist (reference/origin-test-bench.md §8) is expressed over
our records where it concerns aggregation.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import statistics
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

import numpy as np
import pytest
from ddsketch import LogarithmicMapping

from fleetbench._aggregator import (
    RELATIVE_ACCURACY,
    Aggregator,
    _estimates,
    _Sketch,
    _Sketches,
)
from fleetbench.records import (
    Distribution,
    GenerationSettings,
    GroupStats,
    Status,
    Summary,
    TestResult,
    Usage,
    WorkItem,
)

QUANTILES = (0.5, 0.9, 0.95, 0.99)

# ----------------------------------------------------------------------------- builders


def make_result(
    *, repo: str = "repo", scenario: str = "default", provider: str = "openai",
    model: str = "gpt-4", category: str | None = None, status: Status = Status.PASSED,
    latency: float | None = 100.0, ttft: float | None = None, itl: float | None = None,
    total: float | None = None, queue: float = 0.0, retries: int = 0,
    usage: Usage | None = None, cost: float | None = None, index: int = 0,
) -> TestResult:
    stream = ttft is not None
    item = WorkItem(
        key=f"{repo}/{scenario}/{provider}:{model}/t{index}", index=index, repo_id=repo,
        scenario=scenario, provider=provider, model=model, test_id=f"t{index}", epoch=0,
        prompt="p", settings=GenerationSettings(), stream=stream, category=category,
    )
    return TestResult(
        item=item, status=status, started_at="", finished_at="", queue_ms=queue,
        latency_ms=latency, ttft_ms=ttft, itl_ms=itl,
        total_ms=total if total is not None else (latency or 0.0) + queue,
        retries=retries, usage=usage, cost_usd=cost,
    )


def random_results(seed: int, n: int) -> list[TestResult]:
    """Results over a few groups with every optional field missing now and then,
    duplicate and zero values, and statuses of every kind."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        status = rng.choice(list(Status))
        responded = status in (Status.PASSED, Status.FAILED) or rng.random() < 0.1
        latency = round(rng.lognormvariate(5.5, 0.9), rng.choice([0, 1, 3, 9]))
        stream = responded and rng.random() < 0.5
        usage = (Usage(rng.randint(0, 900), rng.randint(0, 400), rng.randint(0, 50))
                 if responded or rng.random() < 0.05 else None)
        out.append(make_result(
            repo=f"repo-{rng.randint(0, 6)}", scenario=rng.choice(["coding", "chat"]),
            provider=rng.choice(["openai", "anthropic", "local"]),
            model=rng.choice(["small", "large"]),
            category=rng.choice(["math", "logic", "writing", None]), status=status,
            latency=latency if responded else None,
            ttft=latency * rng.random() if stream else None,
            itl=rng.choice([0.0, latency / 50]) if stream else None,
            total=latency * (1 + rng.random()) + rng.choice([0.0, 1.5]),
            queue=rng.choice([0.0, 0.0, rng.expovariate(0.2)]),
            retries=rng.choice([0, 0, 0, 1, 3]), usage=usage,
            cost=rng.choice([None, rng.random() / 100]) if usage else None, index=i,
        ))
    return out


# ------------------------------------------------------------ independent reference


def ref_percentile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method), written in
    numpy's two-sided form so that the result is the same float: a + (b - a)·t below
    t = ½ and b − (b − a)·(1 − t) from ½ on."""
    virtual = (len(ordered) - 1) * q
    low = math.floor(virtual)
    a, b, t = ordered[low], ordered[min(low + 1, len(ordered) - 1)], virtual - low
    return b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t


def left_to_right_sum(values: Iterable[float]) -> float:
    total = 0.0
    for value in values:
        total += value
    return total


def ref_distribution(values: list[float]) -> Distribution:
    if not values:
        return Distribution()
    ordered = sorted(values)
    p50, p90, p95, p99 = (ref_percentile(ordered, q) for q in QUANTILES)
    return Distribution(count=len(values), mean=left_to_right_sum(values) / len(values),
                        min=ordered[0], max=ordered[-1], p50=p50, p90=p90, p95=p95, p99=p99)


def ref_group(results: list[TestResult]) -> GroupStats:
    count = {s: sum(r.status is s for r in results) for s in Status}
    total = len(results)
    timed = [r for r in results if r.latency_ms is not None]
    latency_s = left_to_right_sum(r.latency_ms for r in timed if r.latency_ms is not None)
    latency_s /= 1000.0
    timed_tokens = sum(r.usage.output_tokens for r in timed if r.usage)
    used = [r.usage for r in results if r.usage is not None]
    return GroupStats(
        total=total, passed=count[Status.PASSED], failed=count[Status.FAILED],
        error=count[Status.ERROR], timeout=count[Status.TIMEOUT],
        skipped=count[Status.SKIPPED], cancelled=count[Status.CANCELLED],
        success_rate=count[Status.PASSED] / total if total else 0.0,
        error_rate=(count[Status.ERROR] + count[Status.TIMEOUT]) / total if total else 0.0,
        latency_ms=ref_distribution([r.latency_ms for r in timed if r.latency_ms is not None]),
        ttft_ms=ref_distribution([r.ttft_ms for r in results if r.ttft_ms is not None]),
        itl_ms=ref_distribution([r.itl_ms for r in results if r.itl_ms is not None]),
        duration_ms=ref_distribution([r.total_ms for r in results]),
        queue_ms=ref_distribution([r.queue_ms for r in results]),
        retries=sum(r.retries for r in results),
        input_tokens=sum(u.input_tokens for u in used),
        output_tokens=sum(u.output_tokens for u in used),
        cached_input_tokens=sum(u.cached_input_tokens for u in used),
        cost_usd=left_to_right_sum(r.cost_usd for r in results if r.cost_usd is not None),
        unpriced_tests=sum(r.usage is not None and r.cost_usd is None for r in results),
        output_tokens_per_s=timed_tokens / latency_s if timed and latency_s > 0 else None,
    )


def ref_breakdown(results: list[TestResult],
                  key: Callable[[TestResult], Hashable]) -> dict[Any, GroupStats]:
    groups: dict[Hashable, list[TestResult]] = defaultdict(list)
    for r in results:
        groups[key(r)].append(r)
    return {k: ref_group(v) for k, v in groups.items() if k is not None}


BREAKDOWNS: dict[str, Callable[[TestResult], Hashable]] = {
    "by_provider": lambda r: r.item.provider_key,
    "by_repository": lambda r: r.item.repo_id,
    "by_category": lambda r: r.item.category,  # None: left out, as test-bench did
    "by_scenario": lambda r: r.item.scenario,
    "by_repository_provider": lambda r: (r.item.repo_id, r.item.provider_key),
}


def aggregate(results: Iterable[TestResult]) -> Aggregator:
    agg = Aggregator()
    agg.add_many(results)
    return agg


def assert_same_summary(actual: Summary, results: list[TestResult]) -> None:
    assert actual.fleet == ref_group(results)
    for name, key in BREAKDOWNS.items():
        expected = ref_breakdown(results, key)
        got = getattr(actual, name)
        assert list(got) == sorted(expected), name  # every group, in sorted order
        for group, stats in expected.items():
            assert got[group] == stats, (name, group)


# ----------------------------------------------------------------- exact summaries


def test_reference_percentile_is_numpys_linear_method() -> None:
    rng = random.Random(3)
    for n in (1, 2, 3, 10, 101, 1000):
        values = sorted(rng.lognormvariate(5, 1) for _ in range(n))
        for q in QUANTILES:
            assert ref_percentile(values, q) == np.percentile(values, 100 * q)
        if n > 1:  # and statistics' inclusive method, up to its own float rounding
            cuts = statistics.quantiles(values, n=100, method="inclusive")
            expected = [cuts[49], cuts[89], cuts[94], cuts[98]]
            got = [ref_percentile(values, q) for q in QUANTILES]
            assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("seed", "n"), [(1, 1), (2, 7), (3, 300), (4, 5000)])
def test_finalize_equals_plain_python_recomputation(seed: int, n: int) -> None:
    results = random_results(seed, n)
    summary = aggregate(results).finalize()
    assert summary.exact
    assert summary.percentile_method == "linear"
    assert_same_summary(summary, results)


def test_exact_percentiles_match_numpy_per_group() -> None:
    results = random_results(11, 4000)
    summary = aggregate(results).finalize()
    for provider, stats in summary.by_provider.items():
        values = [r.latency_ms for r in results
                  if r.item.provider_key == provider and r.latency_ms is not None]
        expected = np.percentile(values, [50, 90, 95, 99])
        d = stats.latency_ms
        assert [d.p50, d.p90, d.p95, d.p99] == expected.tolist()


def test_add_and_add_many_in_any_batching_give_the_same_summary() -> None:
    results = random_results(5, 5000)
    one_by_one = Aggregator()
    for r in results:
        one_by_one.add(r)
    mixed = Aggregator()
    mixed.add_many(results[:10])
    mixed.add(results[10])
    mixed.add_many(iter(results[11:4097]))  # an iterator longer than one batch
    mixed.add_many([])
    mixed.add_many(results[4097:])
    assert one_by_one.count == mixed.count == len(results)
    assert one_by_one.finalize() == mixed.finalize() == aggregate(results).finalize()


def test_finalize_can_be_repeated_and_sees_later_results() -> None:
    results = random_results(6, 400)
    agg = aggregate(results[:300])
    first = agg.finalize()
    assert agg.finalize() == first
    agg.add_many(results[300:])
    assert_same_summary(agg.finalize(), results)
    assert_same_summary(first, results[:300])  # the earlier summary did not change


# ------------------------------------------------------------------ semantics, None


def test_none_values_are_left_out_of_their_metric_only() -> None:
    results = [
        make_result(category=None, latency=100.0, ttft=None, usage=None),  # no stream
        make_result(category="math", latency=300.0, ttft=40.0, itl=2.0,
                    usage=Usage(10, 20), cost=None),
        make_result(category=None, status=Status.ERROR, latency=None, total=900.0),
    ]
    s = aggregate(results).finalize()
    assert s.fleet.total == 3
    assert s.fleet.latency_ms.count == 2
    assert (s.fleet.latency_ms.p50, s.fleet.latency_ms.mean) == (200.0, 200.0)
    assert s.fleet.ttft_ms == Distribution(count=1, mean=40.0, min=40.0, max=40.0, p50=40.0,
                                           p90=40.0, p95=40.0, p99=40.0)
    assert s.fleet.duration_ms.count == 3  # every test has a duration, errors included
    assert s.fleet.duration_ms.max == 900.0
    assert list(s.by_category) == ["math"]  # category None is left out of the breakdown
    assert s.by_category["math"].total == 1
    assert s.by_repository["repo"].total == 3  # ... but counts everywhere else
    assert s.fleet.unpriced_tests == 1  # usage without a price; no usage is not unpriced
    assert s.fleet.cost_usd == 0.0


def test_group_without_any_value_of_a_metric_has_an_empty_distribution() -> None:
    s = aggregate([make_result(latency=None, status=Status.TIMEOUT, total=5.0)]).finalize()
    assert s.fleet.latency_ms == Distribution()
    assert s.fleet.latency_ms.p99 is None
    assert s.fleet.ttft_ms == Distribution()
    assert s.fleet.output_tokens_per_s is None
    assert s.fleet.error_rate == 1.0
    assert s.fleet.success_rate == 0.0


def test_rates_tokens_cost_and_throughput() -> None:
    results = [
        make_result(status=Status.PASSED, latency=500.0, usage=Usage(100, 50, 10), cost=0.25),
        make_result(status=Status.FAILED, latency=1500.0, usage=Usage(200, 150), cost=0.5),
        make_result(status=Status.ERROR, latency=None, usage=Usage(7, 3), retries=2),
        make_result(status=Status.TIMEOUT, latency=None, retries=3),
        make_result(status=Status.SKIPPED, latency=None, total=0.0),
        make_result(status=Status.CANCELLED, latency=None, total=0.0),
    ]
    f = aggregate(results).finalize().fleet
    assert (f.total, f.passed, f.failed, f.error, f.timeout, f.skipped, f.cancelled) == (
        6, 1, 1, 1, 1, 1, 1)
    assert f.success_rate == 1 / 6
    assert f.error_rate == 2 / 6
    assert (f.input_tokens, f.output_tokens, f.cached_input_tokens) == (307, 203, 10)
    assert f.total_tokens == 510
    assert f.retries == 5
    assert f.cost_usd == 0.75
    assert f.unpriced_tests == 1
    # Output tokens of the tests with a latency over their latency: 200 / 2 s.
    assert f.output_tokens_per_s == 100.0


def test_p50_of_two_values_is_their_midpoint() -> None:
    # test-bench's percentile took x[ceil(p·(n−1))]: p50 of [a, b] was b. Ours interpolates.
    s = aggregate([make_result(latency=100.0), make_result(latency=200.0)]).finalize()
    assert s.fleet.latency_ms.p50 == 150.0


def test_empty_aggregator_gives_zeros_and_none() -> None:
    agg = Aggregator()
    assert agg.count == 0
    for summary in (agg.finalize(), agg.snapshot()):
        assert summary.fleet == GroupStats()
        assert summary.fleet.latency_ms.p50 is None
        assert summary.fleet.output_tokens_per_s is None
        for name in BREAKDOWNS:
            assert dict(getattr(summary, name)) == {}


# --------------------------------------------------- test-bench's checklist (§8)
#
# test-bench's fixture: s successes (usage 100/50, category "category-a", 1000 + 100·i ms)
# and f failures (500 ms, "category-b") per (repository, provider). A test-bench
# "repository" is a repo × scenario × provider triple; ours are separate breakdowns, so
# its per-provider repository_count is the number of by_repository_provider keys.
# Deliberate difference: its failures were calls that failed, which we record as ERROR
# with no latency, so our latency statistics leave them out (duration_ms keeps them).


def bench_results(repo: str, provider: str, s: int, f: int,
                  price: float | None = None) -> list[TestResult]:
    out = [make_result(repo=repo, provider=provider, category="category-a",
                       latency=1000.0 + 100 * i, usage=Usage(100, 50),
                       cost=price, index=i) for i in range(s)]
    out += [make_result(repo=repo, provider=provider, category="category-b",
                        status=Status.ERROR, latency=None, total=500.0, index=s + i)
            for i in range(f)]
    return out


def fleet_of(*benchmarks: tuple[str, int, int]) -> Summary:
    results: list[TestResult] = []
    for i, (provider, s, f) in enumerate(benchmarks):
        results += bench_results(f"repo-{i}", provider, s, f)
    return aggregate(results).finalize()


def provider_view(summary: Summary, provider: str) -> tuple[int, int, int]:
    """(repository_count, total_tests, total_succeeded) as test-bench reported them."""
    key = f"{provider}:gpt-4"
    stats = summary.by_provider[key]
    triples = sum(1 for _, p in summary.by_repository_provider if p == key)
    return triples, stats.total, stats.passed


def test_checklist_1_accuracy() -> None:
    s = fleet_of(("openai", 10, 0), ("anthropic", 7, 3), ("openai", 5, 5))
    assert len(s.by_repository) == 3
    assert (s.fleet.total, s.fleet.passed, s.fleet.error) == (30, 22, 8)
    assert s.fleet.success_rate == pytest.approx(0.7333, abs=0.01)
    assert provider_view(s, "openai") == (2, 20, 15)
    assert provider_view(s, "anthropic") == (1, 10, 7)


def test_checklist_2_percentiles() -> None:
    s = fleet_of(("openai", 5, 0), ("openai", 5, 0))  # 1000..1400 ms, twice
    latency = s.fleet.latency_ms
    assert latency.p50 is not None
    assert latency.p95 is not None
    assert 1100 < latency.p50 < 1300
    assert latency.p95 >= 1400
    assert (latency.p50, latency.p95) == (1200.0, 1400.0)


def test_checklist_3_success_rate() -> None:
    assert fleet_of(("openai", 9, 1), ("openai", 7, 3)).fleet.success_rate == 0.8


def test_checklist_4_provider_breakdown() -> None:
    s = fleet_of(("openai", 10, 0), ("anthropic", 8, 2), ("openai", 5, 5))
    assert provider_view(s, "openai") == (2, 20, 15)
    assert provider_view(s, "anthropic") == (1, 10, 8)


def test_checklist_8_and_27_empty_fleet() -> None:
    s = Aggregator().finalize()
    assert (s.fleet.total, s.fleet.passed, s.fleet.success_rate, s.fleet.cost_usd) == (
        0, 0, 0.0, 0.0)
    assert (dict(s.by_provider), dict(s.by_repository), dict(s.by_category)) == ({}, {}, {})


def test_checklist_9_cost_with_an_explicit_price() -> None:
    # test-bench applied a flat $0.03/$0.06 per 1K tokens; ours carries each result's
    # priced cost: 100/1000 · 0.03 + 50/1000 · 0.06 = $0.006 per test.
    price = 100 / 1000 * 0.03 + 50 / 1000 * 0.06
    results = (bench_results("repo-0", "openai", 10, 0, price)
               + bench_results("repo-1", "openai", 10, 0, price))
    s = aggregate(results).finalize()
    assert s.fleet.cost_usd == pytest.approx(0.12, abs=0.001)
    avg_cost_per_repository = s.fleet.cost_usd / len(s.by_repository)
    assert avg_cost_per_repository == pytest.approx(s.fleet.cost_usd / 2)
    assert s.by_repository["repo-0"].cost_usd == pytest.approx(0.06)
    assert s.fleet.unpriced_tests == 0


def test_checklist_10_categories() -> None:
    results = [make_result(category="coding", index=i) for i in range(2)]
    results += [make_result(category="reasoning", index=2),
                make_result(category="reasoning", status=Status.FAILED, index=3)]
    s = aggregate(results).finalize()
    assert s.by_category["coding"].success_rate == 1.0
    assert s.by_category["reasoning"].success_rate == 0.5


def test_checklist_23_single_repository_fleet_equals_the_repository() -> None:
    s = fleet_of(("openai", 8, 2))
    repo = s.by_repository["repo-0"]
    assert repo == s.fleet
    assert (repo.total, repo.passed, repo.success_rate, repo.total_tokens, repo.cost_usd) == (
        s.fleet.total, s.fleet.passed, s.fleet.success_rate, s.fleet.total_tokens,
        s.fleet.cost_usd)


def test_checklist_24_scenario_a() -> None:
    s = fleet_of(("openai", 10, 0), ("anthropic", 9, 1), ("cohere", 8, 2))
    assert len(s.by_provider) == 3
    assert (s.fleet.total, s.fleet.passed, s.fleet.success_rate) == (30, 27, 0.9)
    assert all(provider_view(s, p)[0] == 1 for p in ("openai", "anthropic", "cohere"))


def test_checklist_25_scenario_b() -> None:
    s = fleet_of(("openai", 10, 0), ("openai", 15, 5), ("openai", 8, 2), ("openai", 12, 3))
    assert len(s.by_repository) == 4
    assert provider_view(s, "openai") == (4, 55, 45)
    assert s.fleet.total / len(s.by_repository) == 13.75  # avg_tests_per_repository


def test_checklist_26_scenario_c() -> None:
    s = fleet_of(("openai", 10, 0), ("openai", 8, 2), ("openai", 20, 0),
                 ("anthropic", 15, 0), ("anthropic", 10, 5), ("cohere", 12, 3))
    assert provider_view(s, "openai") == (3, 40, 38)
    assert provider_view(s, "anthropic") == (2, 30, 25)
    assert provider_view(s, "cohere") == (1, 15, 12)
    assert (s.fleet.total, s.fleet.passed) == (85, 75)
    assert s.fleet.success_rate == pytest.approx(0.882, abs=0.001)


def test_checklist_27_edge_fleets() -> None:
    all_fail = fleet_of(("openai", 0, 10))
    assert all_fail.fleet.success_rate == 0.0
    assert all_fail.fleet.latency_ms == Distribution()  # no test got a response
    mixed = fleet_of(("openai", 10, 0), ("openai", 0, 10), ("openai", 5, 5))
    assert (mixed.fleet.total, mixed.fleet.passed, mixed.fleet.error) == (30, 15, 15)
    assert mixed.fleet.success_rate == 0.5
    assert mixed.fleet.cost_usd == 0.0  # test-bench: avg_cost 0 too


# ------------------------------------------------------------------- live snapshots


def percentiles(d: Distribution) -> list[float | None]:
    return [d.p50, d.p90, d.p95, d.p99]


def all_groups(summary: Summary) -> Iterable[tuple[Any, GroupStats]]:
    yield "fleet", summary.fleet
    for name in BREAKDOWNS:
        yield from getattr(summary, name).items()


METRICS = ("latency_ms", "ttft_ms", "itl_ms", "duration_ms", "queue_ms")


def assert_within_sketch_accuracy(live: Summary, exact: Summary) -> None:
    """Counts, min and max agree exactly; sums up to float association; percentiles
    within the sketch's relative accuracy (plus float noise)."""
    live_groups = dict(all_groups(live))
    for group, want in all_groups(exact):
        got = live_groups[group]
        simple = [f.name for f in dataclasses.fields(GroupStats)
                  if f.name not in (*METRICS, "cost_usd", "output_tokens_per_s")]
        assert [getattr(got, f) for f in simple] == [getattr(want, f) for f in simple]
        assert got.cost_usd == pytest.approx(want.cost_usd, rel=1e-12, abs=1e-15)
        assert got.output_tokens_per_s == pytest.approx(want.output_tokens_per_s, rel=1e-12)
        for metric in METRICS:
            g, w = getattr(got, metric), getattr(want, metric)
            assert (g.count, g.min, g.max) == (w.count, w.min, w.max), (group, metric)
            assert g.mean == pytest.approx(w.mean, rel=1e-12), (group, metric)
            for estimate, exact_value in zip(percentiles(g), percentiles(w), strict=True):
                if exact_value is None:
                    assert estimate is None
                    continue
                assert estimate is not None
                bound = RELATIVE_ACCURACY * abs(exact_value) * (1 + 1e-9) + 1e-12
                assert abs(estimate - exact_value) <= bound, (group, metric)


@pytest.mark.parametrize(("seed", "n"), [(21, 1), (22, 2), (23, 50), (24, 3000)])
def test_snapshot_is_within_one_percent_of_exact(seed: int, n: int) -> None:
    agg = aggregate(random_results(seed, n))
    live = agg.snapshot()
    assert not live.exact
    assert live.percentile_method == "ddsketch"
    assert_within_sketch_accuracy(live, agg.finalize())


def test_snapshot_interpolates_sparse_values_like_the_exact_percentile() -> None:
    # Far-apart values: the estimate of the lower rank alone would be 33 % off.
    live = aggregate([make_result(latency=100.0), make_result(latency=200.0)]).snapshot()
    assert live.fleet.latency_ms.p50 == pytest.approx(150.0, rel=RELATIVE_ACCURACY)


def test_snapshot_after_more_adds_folds_only_the_new_rows() -> None:
    agg = Aggregator()
    agg.add_many(make_result(latency=1.0, index=i) for i in range(10))
    assert agg.snapshot().fleet.latency_ms.p50 == pytest.approx(1.0, rel=0.01)
    agg.add_many(make_result(latency=100.0, index=10 + i) for i in range(10))
    second = agg.snapshot()
    # Folding the first ten again would make 1.0 the median.
    assert second.fleet.latency_ms.p50 == pytest.approx(50.5, rel=0.01)
    assert second.fleet.latency_ms.count == 20
    assert agg.snapshot() == second  # nothing new: same values
    latency_sketch = agg._sketches.get(0, 0, 0).sketch  # white box: nothing folded twice
    assert latency_sketch.count == 20


def test_interleaved_snapshots_equal_one_snapshot_of_everything() -> None:
    results = random_results(31, 6000)
    agg = Aggregator()
    cuts = [0, 1, 17, 2048, 2049, 4000, 6000]
    for start, stop in itertools.pairwise(cuts):
        agg.add_many(results[start:stop])
        live = agg.snapshot()
        assert live.fleet.total == stop
        assert_within_sketch_accuracy(live, aggregate(results[:stop]).finalize())
    once = aggregate(results).snapshot()
    # Sketch buckets add up exactly, so incremental folding gives identical estimates.
    for (g1, a), (g2, b) in zip(all_groups(live), all_groups(once), strict=True):
        assert g1 == g2
        for metric in METRICS:
            assert percentiles(getattr(a, metric)) == percentiles(getattr(b, metric))


def test_snapshots_are_immutable() -> None:
    results = random_results(41, 200)
    agg = aggregate(results[:100])
    live = agg.snapshot()
    before = dataclasses.replace(live, by_provider=dict(live.by_provider),
                                 by_repository=dict(live.by_repository))
    with pytest.raises(dataclasses.FrozenInstanceError):
        live.fleet = GroupStats()  # type: ignore[misc]
    with pytest.raises(TypeError):
        live.by_provider["x"] = GroupStats()  # type: ignore[index]
    agg.add_many(results[100:])
    agg.snapshot()
    agg.finalize()
    assert live.fleet == before.fleet
    assert dict(live.by_provider) == before.by_provider
    assert dict(live.by_repository) == before.by_repository
    assert live.fleet.total == 100


# ----------------------------------------------------------- sketch internals (white box)


def test_fast_sketch_reads_match_the_library_query() -> None:
    rng = random.Random(51)
    mapping = LogarithmicMapping(RELATIVE_ACCURACY)
    sketches = []
    for size in (1, 2, 5, 40, 333):
        sketch = _Sketch(mapping)
        for _ in range(size):
            sketch.sketch.add(rng.choice([0.0, -rng.lognormvariate(2, 2),
                                          rng.lognormvariate(3, 2)]))
        sketches.append(sketch)
    width = 333
    ranks = np.array([[min(k, round(s.sketch.count) - 1) for k in range(width)]
                      for s in sketches], np.int64)
    got = _estimates(sketches, ranks, mapping)
    for row, sketch in enumerate(sketches):
        n = round(sketch.sketch.count)
        for k in range(n):
            # The library's value at rank k: ask for rank k + ½ (it rounds down).
            q = 1.0 if k == n - 1 else (k + 0.5) / (n - 1)
            assert got[row, k] == sketch.sketch.get_quantile_value(q), (n, k)


def test_batch_bucket_keys_match_the_library_mapping() -> None:
    sketches = _Sketches()
    mapping = sketches.mapping
    rng = np.random.default_rng(61)
    values = np.concatenate([rng.lognormal(5, 3, 5000), -rng.lognormal(0, 2, 100),
                             np.zeros(10), [1e-300, 1e300, 1.0, 2.0]])
    codes, counts = sketches._cell_buckets(np.zeros(len(values), np.int32), values)
    assert counts.sum() == len(values)
    by_key: dict[float, int] = defaultdict(int)
    for v in values.tolist():
        rep = 0.0 if v == 0 else math.copysign(mapping.value(mapping.key(abs(v))), v)
        by_key[rep] += 1
    batch = {sketches._value(c): n for c, n in zip(codes.tolist(), counts.tolist(),
                                                    strict=True)}
    assert batch == dict(by_key)
    for key in range(-2000, 2000, 7):  # representatives map back to their own key
        assert mapping.key(mapping.value(key)) == key


def test_snapshot_of_only_zero_and_missing_values() -> None:
    results = [make_result(status=Status.SKIPPED, latency=None, total=0.0, index=i)
               for i in range(3)]
    agg = aggregate(results)
    live = agg.snapshot()
    assert live.fleet.skipped == 3
    assert live.fleet.latency_ms == Distribution()
    assert percentiles(live.fleet.duration_ms) == [0.0, 0.0, 0.0, 0.0]
    assert live.fleet.queue_ms.count == 3
    assert_within_sketch_accuracy(live, agg.finalize())
