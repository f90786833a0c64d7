"""Two runs side by side: per-group deltas and per-test changes (``fleetbench compare``).

Pure: it works on the summaries and results it is handed. Reading runs from the store
or an artifact folder is :mod:`fleetbench._runsource`'s job; rendering them as a
table, Markdown or HTML is :mod:`fleetbench._compare_render`'s.

- **Group deltas.** For the fleet and each provider, repository and category: both
  sides' test count, success rate, p50/p95 latency, p50/p95 TTFT and cost, and the
  difference (success rate in percentage points).
- **Test changes.** Tests are matched by test key. A test *regressed* when it passed
  in the baseline and failed, errored or timed out in the current run; it was *fixed*
  in the reverse case. Tests in only one of the runs are counted as new or removed.
- **The gate.** A comparison fails when more tests regressed than
  :attr:`Gate.max_regressions` allows, or when the fleet's success rate dropped by
  more than :attr:`Gate.max_drop_pp` percentage points.

Memory: the baseline keeps one status per test key (the join needs it); the current
run is streamed, keeping only its regressed and fixed tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from fleetbench._aggregator import Aggregator
from fleetbench.records import GroupStats, Status, Summary, TestResult

__all__ = ["FAILING", "Baseline", "ChangeTracker", "Comparison", "Delta", "Gate",
           "GroupDelta", "RunRef", "TestChange", "TestChanges", "compare", "comparison_json",
           "describe_failure", "measure"]

FAILING = frozenset({Status.FAILED, Status.ERROR, Status.TIMEOUT})
"""Statuses of a test that ran and did not pass."""


@dataclass(frozen=True, slots=True)
class RunRef:
    """Which run a side of a comparison is, and where it was read from."""

    run_id: str
    fleet_id: str
    status: str
    source: str
    """``store`` or the artifact folder the results were read from."""


@dataclass(frozen=True, slots=True)
class Delta:
    """One metric on both sides; ``None`` where a side has no value."""

    before: float | None
    after: float | None

    @property
    def change(self) -> float | None:
        """``after - before``, when both are known."""
        if self.before is None or self.after is None:
            return None
        return self.after - self.before

    @property
    def relative(self) -> float | None:
        """The change as a fraction of ``before`` (``None`` when ``before`` is 0)."""
        change = self.change
        return None if change is None or not self.before else change / self.before


@dataclass(frozen=True, slots=True)
class GroupDelta:
    """A group (the fleet, a provider, a repository or a category) on both sides.

    A group missing on one side has 0 tests and no metrics there.
    """

    name: str
    tests_before: int
    tests_after: int
    success_rate: Delta
    latency_p50: Delta
    latency_p95: Delta
    ttft_p50: Delta
    ttft_p95: Delta
    cost_usd: Delta

    @property
    def success_change_pp(self) -> float | None:
        """The success rate's change in percentage points."""
        change = self.success_rate.change
        return None if change is None else change * 100.0


_METRICS: dict[str, Callable[[GroupStats], float | None]] = {
    "success_rate": lambda s: s.success_rate,
    "latency_p50": lambda s: s.latency_ms.p50,
    "latency_p95": lambda s: s.latency_ms.p95,
    "ttft_p50": lambda s: s.ttft_ms.p50,
    "ttft_p95": lambda s: s.ttft_ms.p95,
    "cost_usd": lambda s: s.cost_usd,
}
METRICS = tuple(_METRICS)
"""The :class:`GroupDelta` metrics, in display order."""


def _group_delta(name: str, before: GroupStats | None, after: GroupStats | None) -> GroupDelta:
    def deltas() -> Iterator[tuple[str, Delta]]:
        for metric, read in _METRICS.items():
            yield metric, Delta(read(before) if before and before.total else None,
                                read(after) if after and after.total else None)

    return GroupDelta(name, before.total if before else 0, after.total if after else 0,
                      **dict(deltas()))


def _group_deltas(before: Mapping[str, GroupStats],
                  after: Mapping[str, GroupStats]) -> tuple[GroupDelta, ...]:
    return tuple(_group_delta(name, before.get(name), after.get(name))
                 for name in sorted({*before, *after}))


# ──────────────────────────────────────────────────────────────────── per-test changes


def describe_failure(result: TestResult) -> str:
    """Why a test did not pass, in one line: its failed evaluators' details, the
    provider error, the timeout; ``""`` for a passed test."""
    status = result.status
    if status is Status.PASSED:
        return ""
    if status is Status.FAILED:
        failed = [f"{v.evaluator}: {v.detail or ('could not judge' if v.error else 'failed')}"
                  for v in result.verdicts if not v.passed]
        return "; ".join(failed) or "failed"
    if status is Status.ERROR:
        kind = result.error_kind or "error"
        return f"{kind}: {result.error}" if result.error else kind
    if status is Status.TIMEOUT:
        return result.error or "timed out"
    return f"{status.value}: {result.error}" if result.error else status.value


@dataclass(frozen=True, slots=True)
class TestChange:
    """A test whose outcome changed between the runs (matched by ``key``)."""

    __test__ = False  # not a pytest test class

    key: str
    repo_id: str
    scenario: str
    provider: str
    """``provider:model``."""
    category: str | None
    before: Status
    after: Status
    detail: str
    """Why the test does not pass in the current run (empty for a fixed test)."""


@dataclass(frozen=True, slots=True)
class TestChanges:
    """Every regressed and fixed test (in the current run's plan order) and counts of
    the tests matched by key, new in the current run and removed from it."""

    __test__ = False

    regressed: tuple[TestChange, ...] = ()
    fixed: tuple[TestChange, ...] = ()
    matched: int = 0
    new: int = 0
    removed: int = 0


class ChangeTracker:
    """Classifies the current run's results against the baseline's statuses, one
    result at a time, so the current run is never held in memory."""

    def __init__(self, baseline: Mapping[str, Status]) -> None:
        self._baseline = baseline
        self._regressed: list[TestChange] = []
        self._fixed: list[TestChange] = []
        self._matched = self._new = 0

    def add(self, result: TestResult) -> None:
        """Account for one result of the current run."""
        before = self._baseline.get(result.key)
        if before is None:
            self._new += 1
            return
        self._matched += 1
        after = result.status
        if before is Status.PASSED and after in FAILING:
            self._regressed.append(_change(result, before, describe_failure(result)))
        elif before in FAILING and after is Status.PASSED:
            self._fixed.append(_change(result, before, ""))

    def observe(self, results: Iterable[TestResult]) -> Iterator[TestResult]:
        """``results``, each accounted for as it passes through."""
        for result in results:
            self.add(result)
            yield result

    def finish(self) -> TestChanges:
        """The changes seen so far."""
        return TestChanges(tuple(self._regressed), tuple(self._fixed), self._matched,
                           self._new, len(self._baseline) - self._matched)


def _change(result: TestResult, before: Status, detail: str) -> TestChange:
    item = result.item
    return TestChange(item.key, item.repo_id, item.scenario, item.provider_key,
                      item.category, before, result.status, detail)


@dataclass(frozen=True, slots=True)
class Baseline:
    """What a comparison keeps of the baseline run: its exact summary and each test's
    status by key."""

    ref: RunRef
    summary: Summary
    statuses: Mapping[str, Status]

    @classmethod
    def collect(cls, ref: RunRef, results: Iterable[TestResult]) -> Baseline:
        """Read the baseline's results once."""
        statuses: dict[str, Status] = {}

        def remember(rows: Iterable[TestResult]) -> Iterator[TestResult]:
            for result in rows:
                statuses[result.key] = result.status
                yield result

        return cls(ref, measure(remember(results)), statuses)


def measure(results: Iterable[TestResult]) -> Summary:
    """The exact summary of ``results``."""
    aggregator = Aggregator()
    aggregator.add_many(results)
    return aggregator.finalize()


# ──────────────────────────────────────────────────────────────────────────── the gate


@dataclass(frozen=True, slots=True)
class Gate:
    """When a comparison fails (``fleetbench compare`` exits 1).

    :param max_regressions: more regressed tests than this fail it (0: any regression).
    :param max_drop_pp: a fleet success-rate drop of more percentage points than this
        fails it; ``None``: the success rate alone never fails it.
    """

    max_regressions: int = 0
    max_drop_pp: float | None = None

    def failures(self, fleet: GroupDelta, changes: TestChanges) -> tuple[str, ...]:
        """Why the comparison fails; empty when it passes."""
        reasons = []
        if len(changes.regressed) > self.max_regressions:
            reasons.append(f"{len(changes.regressed)} test(s) regressed (passed → failed); "
                           f"at most {self.max_regressions} allowed")
        drop = -(fleet.success_change_pp or 0.0)
        if self.max_drop_pp is not None and drop > self.max_drop_pp:
            reasons.append(f"the fleet success rate dropped by {drop:.2f} pp; at most "
                           f"{self.max_drop_pp:g} pp allowed")
        return tuple(reasons)


@dataclass(frozen=True, slots=True)
class Comparison:
    """The whole comparison of a current run with its baseline."""

    baseline: RunRef
    current: RunRef
    fleet: GroupDelta
    providers: tuple[GroupDelta, ...]
    repositories: tuple[GroupDelta, ...]
    categories: tuple[GroupDelta, ...]
    changes: TestChanges
    gate: Gate = field(default_factory=Gate)
    gate_failures: tuple[str, ...] = ()

    @property
    def failed(self) -> bool:
        """Whether the gate failed."""
        return bool(self.gate_failures)


def compare(baseline: Baseline, current: RunRef, current_summary: Summary,
            changes: TestChanges, gate: Gate | None = None) -> Comparison:
    """Compare ``current`` (its summary and its changes against ``baseline``)."""
    gate = gate or Gate()
    before = baseline.summary
    fleet = _group_delta("fleet", before.fleet, current_summary.fleet)
    return Comparison(
        baseline=baseline.ref, current=current, fleet=fleet,
        providers=_group_deltas(before.by_provider, current_summary.by_provider),
        repositories=_group_deltas(before.by_repository, current_summary.by_repository),
        categories=_group_deltas(before.by_category, current_summary.by_category),
        changes=changes, gate=gate, gate_failures=gate.failures(fleet, changes),
    )


# ──────────────────────────────────────────────────────────────────────────────── JSON


def _ref_json(ref: RunRef) -> dict[str, Any]:
    return {"run_id": ref.run_id, "fleet_id": ref.fleet_id, "status": ref.status,
            "source": ref.source}


def _group_json(group: GroupDelta) -> dict[str, Any]:
    data: dict[str, Any] = {"name": group.name, "tests_before": group.tests_before,
                            "tests_after": group.tests_after}
    for metric in METRICS:
        delta: Delta = getattr(group, metric)
        data[metric] = {"before": delta.before, "after": delta.after, "change": delta.change}
    data["success_rate"]["change_pp"] = group.success_change_pp
    return data


def _change_json(change: TestChange) -> dict[str, Any]:
    return {"key": change.key, "repository": change.repo_id, "scenario": change.scenario,
            "provider": change.provider, "category": change.category,
            "before": change.before.value, "after": change.after.value,
            "detail": change.detail}


def comparison_json(comparison: Comparison) -> dict[str, Any]:
    """The comparison as JSON data (``--format json`` and ``compare.json``)."""
    changes = comparison.changes
    return {
        "baseline": _ref_json(comparison.baseline),
        "current": _ref_json(comparison.current),
        "fleet": _group_json(comparison.fleet),
        "providers": [_group_json(g) for g in comparison.providers],
        "repositories": [_group_json(g) for g in comparison.repositories],
        "categories": [_group_json(g) for g in comparison.categories],
        "tests": {"matched": changes.matched, "new": changes.new, "removed": changes.removed,
                  "regressed": len(changes.regressed), "fixed": len(changes.fixed)},
        "regressed": [_change_json(c) for c in changes.regressed],
        "fixed": [_change_json(c) for c in changes.fixed],
        "gate": {"max_regressions": comparison.gate.max_regressions,
                 "max_drop_pp": comparison.gate.max_drop_pp,
                 "failed": comparison.failed, "reasons": list(comparison.gate_failures)},
    }
