"""What the HTML report keeps while results stream by: bounded, whatever the run's size.

The Summary already holds every aggregate; the report adds only

- the slowest tests (top N by latency) and the first failing tests (plan order), each
  as a :class:`TestSample` whose texts are clipped to a few hundred characters, and
- a latency histogram per provider on fixed logarithmic bins (a few dozen counters per
  provider), for the latency-distribution chart.

So memory depends on N and on the number of providers, never on the number of tests.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from dataclasses import dataclass

from fleetbench.records import Status, TestResult

__all__ = ["BINS_PER_OCTAVE", "Clipped", "Samples", "TestSample", "VerdictSample",
           "bin_lower_ms", "clip"]

PROMPT_CHARS = 600
ANSWER_CHARS = 600
SHORT_CHARS = 300
"""Characters kept of prompts, answers and of shorter texts (expected, errors, details)."""
BINS_PER_OCTAVE = 4
_MIN_MS = 0.001  # latencies below a microsecond share the lowest bin
_FAILING_STATUSES = frozenset({Status.FAILED, Status.ERROR, Status.TIMEOUT})


@dataclass(frozen=True, slots=True)
class Clipped:
    """The start of a text and how many characters were cut from its end."""

    text: str
    omitted: int = 0


def clip(text: str, limit: int) -> Clipped:
    """``text`` cut to ``limit`` characters."""
    return Clipped(text[:limit], max(0, len(text) - limit))


def _clip_optional(text: str | None, limit: int) -> Clipped | None:
    return None if text is None else clip(text, limit)


@dataclass(frozen=True, slots=True)
class VerdictSample:
    """One evaluator's verdict, its detail clipped."""

    evaluator: str
    passed: bool
    score: float
    detail: Clipped
    error: bool


@dataclass(frozen=True, slots=True)
class TestSample:
    """A clipped copy of one result: what the report shows of a single test.

    ``answer`` is ``None`` when the call gave no answer or answers are not saved
    (``answer_saved`` tells which).
    """

    __test__ = False  # not a pytest test class

    index: int
    key: str
    repo_id: str
    scenario: str
    provider_key: str
    test_id: str
    epoch: int
    category: str | None
    status: str
    latency_ms: float | None
    ttft_ms: float | None
    total_ms: float
    retries: int
    tokens: int | None
    cost_usd: float | None
    prompt: Clipped
    expected: Clipped | None
    answer: Clipped | None
    answer_saved: bool
    error: Clipped | None
    error_kind: str | None
    verdicts: tuple[VerdictSample, ...]

    @classmethod
    def of(cls, result: TestResult, *, save_responses: bool) -> TestSample:
        item, response = result.item, result.response
        return cls(
            index=item.index, key=item.key, repo_id=item.repo_id, scenario=item.scenario,
            provider_key=item.provider_key, test_id=item.test_id, epoch=item.epoch,
            category=item.category, status=result.status.value,
            latency_ms=result.latency_ms, ttft_ms=result.ttft_ms, total_ms=result.total_ms,
            retries=result.retries,
            tokens=result.usage.total_tokens if result.usage else None,
            cost_usd=result.cost_usd,
            prompt=clip(item.prompt, PROMPT_CHARS),
            expected=_clip_optional(item.expected, SHORT_CHARS),
            answer=clip(response.text, ANSWER_CHARS) if response and save_responses else None,
            answer_saved=save_responses,
            error=_clip_optional(result.error, SHORT_CHARS), error_kind=result.error_kind,
            verdicts=tuple(VerdictSample(v.evaluator, v.passed, v.score,
                                         clip(v.detail, SHORT_CHARS), v.error)
                           for v in result.verdicts),
        )


def latency_bin(latency_ms: float) -> int:
    """The logarithmic bin of a latency: ``BINS_PER_OCTAVE`` bins per doubling."""
    return math.floor(math.log2(max(latency_ms, _MIN_MS)) * BINS_PER_OCTAVE)


def bin_lower_ms(index: int) -> float:
    """The lower edge of bin ``index`` in milliseconds (its upper edge is the next one's)."""
    return float(2.0 ** (index / BINS_PER_OCTAVE))


class Samples:
    """The slowest ``slowest`` answered tests, the first ``failing`` failed, errored or
    timed-out tests in plan order, and per-provider latency histograms."""

    def __init__(self, *, slowest: int = 10, failing: int = 20,
                 save_responses: bool = True) -> None:
        self.save_responses = save_responses
        self.histograms: dict[str, Counter[int]] = {}
        self.failing: list[TestSample] = []
        self._failing_cap = failing
        self._slowest_cap = slowest
        self._heap: list[tuple[float, int, TestSample]] = []  # (latency, -index, sample)

    def add(self, result: TestResult) -> None:
        """Account for one result (called once per test, in plan order)."""
        latency = result.latency_ms
        if latency is not None and math.isfinite(latency):
            key = result.item.provider_key
            histogram = self.histograms.get(key)
            if histogram is None:
                histogram = self.histograms[key] = Counter()
            histogram[latency_bin(latency)] += 1
            rank = (latency, -result.item.index)  # equal latencies: the earlier test stays
            if len(self._heap) < self._slowest_cap:
                heapq.heappush(self._heap, (*rank, self._sample(result)))
            elif self._heap and rank > self._heap[0][:2]:
                heapq.heapreplace(self._heap, (*rank, self._sample(result)))
        if result.status in _FAILING_STATUSES and len(self.failing) < self._failing_cap:
            self.failing.append(self._sample(result))

    def slowest(self) -> list[TestSample]:
        """The slowest tests, slowest first (equal latencies in plan order)."""
        return [sample for *_, sample in sorted(self._heap, reverse=True)]

    def _sample(self, result: TestResult) -> TestSample:
        return TestSample.of(result, save_responses=self.save_responses)
