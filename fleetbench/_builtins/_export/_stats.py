"""Exact statistics of each repository × scenario × provider triple.

test-bench reported one "repository result" per triple, and the run's
:class:`~fleetbench.records.Summary` has no breakdown that fine (its finest is
repository × provider), so exporters compute these themselves while results stream
by. Per result they keep one float per metric in compact ``array('d')`` columns (the
"exact-percentile arrays"; no Python object per result) and running totals.

Percentiles use linear interpolation between closest ranks, computed the way numpy's
default ``method="linear"`` does, so the figures match ``numpy.percentile`` exactly.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from fleetbench.records import Distribution, GroupStats, Status, TestResult

__all__ = ["PERCENTILE_METHOD", "Triple", "TripleStats", "TripleTable", "distribution",
           "percentile"]

PERCENTILE_METHOD = "linear"
"""How percentiles are computed: numpy's default, linear interpolation between ranks."""


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100) of non-empty, ascending ``sorted_values``.

    Follows numpy's ``linear`` method step by step (virtual index ``(n-1)·q/100``, then
    a lerp that counts down from the upper neighbour past the midpoint) so that results
    agree to the last bit.
    """
    n = len(sorted_values)
    if n == 0:
        raise ValueError("percentile of no values")
    index = (n - 1) * (q / 100.0)
    below = math.floor(index)
    gamma = index - below
    low = sorted_values[below]
    high = sorted_values[min(below + 1, n - 1)]
    step = high - low
    return low + step * gamma if gamma < 0.5 else high - step * (1.0 - gamma)


def distribution(values: Sequence[float]) -> Distribution:
    """count, mean, min, max and p50/p90/p95/p99 of ``values`` (empty → count 0)."""
    if not values:
        return Distribution()
    ordered = sorted(values)
    return Distribution(
        count=len(ordered),
        mean=math.fsum(ordered) / len(ordered),
        min=ordered[0],
        max=ordered[-1],
        p50=percentile(ordered, 50),
        p90=percentile(ordered, 90),
        p95=percentile(ordered, 95),
        p99=percentile(ordered, 99),
    )


class Triple(NamedTuple):
    """What test-bench called a "repository result": one repository, scenario and
    ``provider:model``."""

    repo_id: str
    scenario: str
    provider: str
    model: str

    @property
    def provider_key(self) -> str:
        """``provider:model``, the name providers are reported under."""
        return f"{self.provider}:{self.model}"


class TripleStats:
    """Running totals and metric columns of one triple; :meth:`stats` finishes them."""

    __slots__ = ("_cached", "_cost", "_counts", "_duration", "_evaluation_cost", "_input",
                 "_itl", "_latency", "_latency_s_with_output", "_output",
                 "_output_with_latency", "_queue", "_retries", "_ttft", "_unpriced")

    def __init__(self) -> None:
        self._counts = dict.fromkeys(Status, 0)
        self._duration = array("d")
        self._queue = array("d")
        self._latency = array("d")
        self._ttft = array("d")
        self._itl = array("d")
        self._retries = 0
        self._input = self._output = self._cached = 0
        self._cost = 0.0
        self._evaluation_cost = 0.0
        self._unpriced = 0
        self._output_with_latency = 0
        self._latency_s_with_output = 0.0

    def add(self, result: TestResult) -> None:
        """Account for one result (plan order keeps float sums reproducible)."""
        self._counts[result.status] += 1
        self._duration.append(result.total_ms)
        self._queue.append(result.queue_ms)
        self._retries += result.retries
        self._add_usage(result)
        self._add_timings(result)

    def _add_usage(self, result: TestResult) -> None:
        usage = result.usage
        if usage is not None:
            self._input += usage.input_tokens
            self._output += usage.output_tokens
            self._cached += usage.cached_input_tokens
            if result.cost_usd is None:
                self._unpriced += 1
        if result.cost_usd is not None:
            self._cost += result.cost_usd
        self._evaluation_cost += result.evaluation_cost_usd

    def _add_timings(self, result: TestResult) -> None:
        """Latency, TTFT and ITL count for the tests that have them, as in the run
        summary; tokens per second use the output tokens of tests with a latency."""
        if result.latency_ms is not None:
            self._latency.append(result.latency_ms)
            self._latency_s_with_output += result.latency_ms / 1000.0
            self._output_with_latency += result.usage.output_tokens if result.usage else 0
        if result.ttft_ms is not None:
            self._ttft.append(result.ttft_ms)
        if result.itl_ms is not None:
            self._itl.append(result.itl_ms)

    def stats(self) -> GroupStats:
        """The triple's aggregates in the same record the run summary uses."""
        counts = self._counts
        total = sum(counts.values())
        tokens_per_s = None
        if self._latency_s_with_output > 0:
            tokens_per_s = self._output_with_latency / self._latency_s_with_output
        return GroupStats(
            total=total,
            passed=counts[Status.PASSED],
            failed=counts[Status.FAILED],
            error=counts[Status.ERROR],
            timeout=counts[Status.TIMEOUT],
            skipped=counts[Status.SKIPPED],
            cancelled=counts[Status.CANCELLED],
            success_rate=counts[Status.PASSED] / total if total else 0.0,
            error_rate=(counts[Status.ERROR] + counts[Status.TIMEOUT]) / total if total else 0.0,
            latency_ms=distribution(self._latency),
            ttft_ms=distribution(self._ttft),
            itl_ms=distribution(self._itl),
            duration_ms=distribution(self._duration),
            queue_ms=distribution(self._queue),
            retries=self._retries,
            input_tokens=self._input,
            output_tokens=self._output,
            cached_input_tokens=self._cached,
            cost_usd=self._cost,
            unpriced_tests=self._unpriced,
            output_tokens_per_s=tokens_per_s,
            evaluation_cost_usd=self._evaluation_cost,
        )

    @property
    def held_values(self) -> int:
        """How many floats the metric columns hold (for memory accounting)."""
        return sum(len(column) for column in
                   (self._duration, self._queue, self._latency, self._ttft, self._itl))


class TripleTable:
    """Every triple seen so far, numbered in order of first appearance (plan order)."""

    def __init__(self) -> None:
        self._triples: dict[Triple, tuple[int, TripleStats]] = {}

    def add(self, result: TestResult) -> int:
        """Account for ``result`` and return its triple's number."""
        item = result.item
        triple = Triple(item.repo_id, item.scenario, item.provider, item.model)
        entry = self._triples.get(triple)
        if entry is None:
            entry = self._triples[triple] = (len(self._triples), TripleStats())
        entry[1].add(result)
        return entry[0]

    def __len__(self) -> int:
        return len(self._triples)

    def __iter__(self) -> Iterator[tuple[int, Triple, TripleStats]]:
        """(number, triple, stats) in order of first appearance."""
        for triple, (number, stats) in self._triples.items():
            yield number, triple, stats

    @property
    def held_values(self) -> int:
        """Floats held across all triples: what memory grows with, 8 bytes each."""
        return sum(stats.held_values for _, _, stats in self)
