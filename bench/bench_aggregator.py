"""Benchmark the aggregator: ingest, snapshot and finalize of N synthetic results.

Usage: ``python bench/bench_aggregator.py [--n 1000000] [--batch 1000]``

Target (issue 3, 7a): 1,000,000 results ingested and finalized — exact percentiles, all
breakdowns — in at most 2 s on one core. The script pins itself to one core, builds all
results before any timing, then reports each phase and, as a reference measured in the
same run, a naive pure-Python computation of only the fleet-wide latency percentiles
(append to a list, ``sorted``, linear interpolation).
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fleetbench._aggregator import Aggregator
from fleetbench.records import (
    GenerationSettings,
    Status,
    TestResult,
    Usage,
    WorkItem,
)

PROVIDERS = [  # (provider, model, median latency ms, error rate, priced)
    ("openai", "gpt-4o-mini", 420.0, 0.02, True),
    ("anthropic", "claude-3-5-haiku", 510.0, 0.03, True),
    ("google", "gemini-1.5-flash", 380.0, 0.05, True),
    ("simulated", "fast", 40.0, 0.01, True),
    ("local", "gemma-3-270m", 900.0, 0.04, False),  # no price: cost None
]
SCENARIOS = ["coding", "reasoning", "chat"]
CATEGORIES = ["coding", "math", "logic", "writing", "extraction", None]
QUANTILES = (0.5, 0.9, 0.95, 0.99)

T = TypeVar("T")


def build_results(n: int, seed: int = 7) -> list[TestResult]:
    """N results over 5 providers × 50 repositories × 3 scenarios × 6 categories, with
    lognormal latencies, ~3 % errors/timeouts and half of the tests streamed."""
    rng = np.random.default_rng(seed)
    settings = GenerationSettings(max_tokens=256)
    prov = rng.integers(0, len(PROVIDERS), n).tolist()
    repo = rng.integers(0, 50, n).tolist()
    scen = rng.integers(0, len(SCENARIOS), n).tolist()
    cat = rng.integers(0, len(CATEGORIES), n).tolist()
    stream = (rng.random(n) < 0.5).tolist()
    roll = rng.random(n).tolist()
    noise = rng.lognormal(0.0, 0.6, n).tolist()
    queue = rng.exponential(3.0, n).tolist()
    out_tokens = rng.integers(5, 400, n).tolist()
    retried = (rng.random(n) < 0.05).tolist()
    repos = [f"repo-{i:02d}" for i in range(50)]
    results = []
    for i in range(n):
        provider, model, median, error_rate, priced = PROVIDERS[prov[i]]
        item = WorkItem(
            key=f"{repos[repo[i]]}/{SCENARIOS[scen[i]]}/{provider}:{model}/t-{i}",
            index=i, repo_id=repos[repo[i]], scenario=SCENARIOS[scen[i]],
            provider=provider, model=model, test_id=f"t-{i}", epoch=0, prompt="p",
            settings=settings, stream=stream[i], category=CATEGORIES[cat[i]],
        )
        results.append(_result(item, median * noise[i], roll[i], error_rate, priced,
                               queue[i], out_tokens[i], int(retried[i])))
    return results


def _result(item: WorkItem, latency: float, roll: float, error_rate: float, priced: bool,
            queue: float, out_tokens: int, retries: int) -> TestResult:
    if roll < error_rate:
        status = Status.TIMEOUT if roll < error_rate / 4 else Status.ERROR
        return TestResult(item=item, status=status, started_at="", finished_at="",
                          queue_ms=queue, total_ms=latency * (1 + retries), retries=retries,
                          error="boom", error_kind="server")
    status = Status.PASSED if roll < 0.8 else Status.FAILED
    usage = Usage(input_tokens=120, output_tokens=out_tokens, cached_input_tokens=20)
    return TestResult(
        item=item, status=status, started_at="", finished_at="", queue_ms=queue,
        latency_ms=latency, ttft_ms=latency * 0.2 if item.stream else None,
        itl_ms=latency * 0.8 / out_tokens if item.stream and out_tokens > 1 else None,
        total_ms=latency * (1 + retries) + queue, retries=retries, usage=usage,
        cost_usd=(120 * 1e-6 + out_tokens * 4e-6) if priced else None,
    )


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    gc.collect()
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def ingest(results: Sequence[TestResult], batch: int) -> Aggregator:
    aggregator = Aggregator()
    for start in range(0, len(results), batch):
        aggregator.add_many(results[start:start + batch])
    return aggregator


def naive_fleet_latency(results: Sequence[TestResult]) -> list[float]:
    """The reference: a pure-Python list, ``sorted`` and linear interpolation."""
    values: list[float] = []
    for result in results:
        if result.latency_ms is not None:
            values.append(result.latency_ms)
    ordered = sorted(values)
    out = []
    for q in QUANTILES:
        virtual = (len(ordered) - 1) * q
        low = math.floor(virtual)
        high = min(low + 1, len(ordered) - 1)
        out.append(ordered[low] + (ordered[high] - ordered[low]) * (virtual - low))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="results (default 1M)")
    parser.add_argument("--batch", type=int, default=1000,
                        help="results per add_many call, as the bus delivers (default 1000)")
    args = parser.parse_args(argv)
    os.sched_setaffinity(0, {0})

    build_s, results = timed(lambda: build_results(args.n))
    print(f"built {args.n:,} results in {build_s:.1f} s (not timed below); "
          f"pinned to CPU {sorted(os.sched_getaffinity(0))}")

    one_call_s, _ = timed(lambda: ingest(results, len(results)))
    ingest_s, agg = timed(lambda: ingest(results, args.batch))
    final_s, final = timed(agg.finalize)
    again_s, _ = timed(agg.finalize)
    snap_all_s, snap = timed(agg.snapshot)
    extra = results[: args.batch]
    agg.add_many(extra)
    snap_inc_s, _ = timed(agg.snapshot)
    naive_s, naive = timed(lambda: naive_fleet_latency(results))

    total = ingest_s + final_s
    groups = sum(len(m) for m in (final.by_provider, final.by_repository, final.by_category,
                                  final.by_scenario, final.by_repository_provider)) + 1
    print(f"groups: {groups} (fleet, {len(final.by_provider)} providers, "
          f"{len(final.by_repository)} repositories, {len(final.by_category)} categories, "
          f"{len(final.by_scenario)} scenarios, {len(final.by_repository_provider)} "
          f"repository×provider)")
    print(f"ingest (add_many, batches of {args.batch:,}): {ingest_s * 1e3:8.1f} ms  "
          f"({args.n / ingest_s / 1e6:.2f} M results/s)")
    print(f"ingest (one add_many call of all N):   {one_call_s * 1e3:8.1f} ms")
    print(f"finalize (exact, all breakdowns):      {final_s * 1e3:8.1f} ms  "
          f"(again: {again_s * 1e3:.1f} ms)")
    print(f"ingest + finalize:                     {total * 1e3:8.1f} ms  "
          f"target <= 2000 ms: {'MET' if total <= 2.0 else 'MISSED'}")
    print(f"snapshot folding all {args.n:,} rows:    {snap_all_s * 1e3:8.1f} ms")
    print(f"snapshot after {len(extra):,} more results:     {snap_inc_s * 1e3:8.1f} ms")
    print(f"naive pure-Python fleet latency p50-p99 only: {naive_s * 1e3:8.1f} ms; "
          f"aggregator (everything) / naive (one metric, one group) = {total / naive_s:.2f}")
    exact = final.fleet.latency_ms
    print(f"check fleet latency p50/p90/p95/p99 exact  = "
          f"{exact.p50:.3f} / {exact.p90:.3f} / {exact.p95:.3f} / {exact.p99:.3f}")
    print(f"      naive                                = "
          f"{' / '.join(f'{v:.3f}' for v in naive)}")
    live = snap.fleet.latency_ms
    assert live.p50 is not None
    assert exact.p50 is not None
    print(f"      snapshot (DDSketch)                  = "
          f"{live.p50:.3f} / {live.p90:.3f} / {live.p95:.3f} / {live.p99:.3f}")
    buffer = agg._columns._buffer  # white box: what the aggregator keeps per result
    held = sum(a.nbytes for a in (buffer.cell, buffer.status, buffer.metrics, buffer.ints,
                                  buffer.has_usage, buffer.cost))
    print(f"aggregator columns: {held / 2**20:.0f} MiB for {agg.count:,} results "
          f"(capacity {len(buffer):,} rows, {held / len(buffer):.0f} bytes per row)")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the whole process (results included): {rss:.0f} MiB")


if __name__ == "__main__":
    main()
