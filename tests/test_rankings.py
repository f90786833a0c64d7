"""Best, worst and failing repositories (test-bench checklist items 5 and 6, §8 of
reference/origin-test-bench.md), over Summaries made by the real aggregator."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import pytest

from fleetbench._aggregator import Aggregator
from fleetbench._rankings import (
    best_repository,
    exact_rate,
    rank_repositories,
    repositories_below,
    worst_repository,
)
from fleetbench.records import Summary, TestResult

from .test_exporters import benchmark, interleave


def summary_of(*groups: Sequence[TestResult]) -> Summary:
    aggregator = Aggregator()
    aggregator.add_many(interleave(*groups))
    return aggregator.finalize()


def rates(summary: Summary) -> dict[str, Fraction]:
    return {name: exact_rate(stats) for name, stats in rank_repositories(summary)}


def names(ranked: Sequence[tuple[str, object]]) -> list[str]:
    return [name for name, _ in ranked]


def test_checklist_5_best_and_worst_repository() -> None:
    summary = summary_of(benchmark("repo1", "openai", 10, 0),
                         benchmark("repo2", "openai", 5, 5),
                         benchmark("repo3", "anthropic", 7, 3))
    best, worst = best_repository(summary), worst_repository(summary)
    assert best is not None
    assert worst is not None
    assert (best[0], best[1].success_rate) == ("repo1", 1.0)
    assert (worst[0], worst[1].success_rate) == ("repo2", 0.5)
    assert names(rank_repositories(summary)) == ["repo1", "repo3", "repo2"]


def test_checklist_6_failing_repositories_below_080() -> None:
    summary = summary_of(benchmark("repo1", "openai", 10, 0),
                         benchmark("repo2", "openai", 5, 5),
                         benchmark("repo3", "anthropic", 7, 3))
    below = repositories_below(summary, 0.8)
    assert names(below) == ["repo2", "repo3"]  # worst first
    assert len(below) == 2


def test_a_rate_equal_to_the_threshold_is_not_below_it() -> None:
    summary = summary_of(benchmark("nine", "p", 9, 1), benchmark("seven", "p", 7, 3),
                         benchmark("four-fifths", "p", 4, 1))
    assert names(repositories_below(summary, 0.9)) == ["seven", "four-fifths"]
    assert names(repositories_below(summary, 0.8)) == ["seven"]
    assert names(repositories_below(summary, 0.7)) == []
    assert names(repositories_below(summary, 0.95)) == ["seven", "four-fifths", "nine"]


def test_ties_are_broken_by_repo_id_not_by_collection_order() -> None:
    """test-bench returned the last tie as best and the first as worst, in completion
    order; here the order of results never matters."""
    groups = [benchmark("b", "p", 1, 1), benchmark("c", "p", 2, 2), benchmark("a", "p", 3, 3),
              benchmark("z", "p", 4, 0)]
    for order in (groups, groups[::-1], groups[1:] + groups[:1]):
        summary = summary_of(*order)
        assert names(rank_repositories(summary)) == ["z", "a", "b", "c"]
        assert rates(summary)["a"] == rates(summary)["c"] == Fraction(1, 2)
        assert worst_repository(summary) == ("c", summary.by_repository["c"])
        assert names(repositories_below(summary)) == ["a", "b", "c"]


def test_best_and_worst_differ_when_every_rate_ties() -> None:
    summary = summary_of(benchmark("beta", "p", 2, 0), benchmark("alpha", "p", 3, 0))
    assert best_repository(summary) == ("alpha", summary.by_repository["alpha"])
    assert worst_repository(summary) == ("beta", summary.by_repository["beta"])


def test_rates_are_compared_exactly() -> None:
    # 1/3 and 2/6 tie even if float arithmetic elsewhere had rounded them apart.
    summary = summary_of(benchmark("thirds", "p", 1, 2), benchmark("sixths", "p", 2, 4))
    assert rates(summary) == {"sixths": Fraction(1, 3), "thirds": Fraction(1, 3)}
    assert names(rank_repositories(summary)) == ["sixths", "thirds"]


def test_an_empty_run_has_no_best_worst_or_failing_repository() -> None:
    summary = Aggregator().finalize()
    assert best_repository(summary) is None
    assert worst_repository(summary) is None
    assert repositories_below(summary) == []


@pytest.mark.parametrize("threshold", [-0.1, 1.5, float("nan")])
def test_a_threshold_outside_0_to_1_is_refused(threshold: float) -> None:
    with pytest.raises(ValueError, match="threshold must be between 0 and 1"):
        repositories_below(Aggregator().finalize(), threshold)
