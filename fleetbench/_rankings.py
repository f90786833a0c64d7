"""Best, worst and failing repositories of a run: small pure functions over a Summary.

test-bench's report named a best and a worst repository and listed those below a
success-rate threshold. fleetbench does the same over *distinct repositories*
(``Summary.by_repository``), not test-bench's repository × scenario × provider
triples, and orders them deterministically:

- Rates are compared exactly, as the fraction ``passed / total`` (never as rounded
  floats), so 1/3 and 2/6 tie and 9/10 is not below a threshold of ``0.9``.
- :func:`rank_repositories` orders by success rate, highest first; equal rates go by
  ``repo_id`` in ascending (code point) order. :func:`best_repository` is the first of
  that order and :func:`worst_repository` the last, so with two or more repositories
  they are never the same one, even when every rate ties.
- :func:`repositories_below` lists the repositories whose rate is strictly below the
  threshold, worst first; equal rates go by ``repo_id`` ascending.

Where we deliberately differ from test-bench: its best repository was the *last* of
the tied ones and its worst the *first*, in the order results were collected (completion
order, so it changed from run to run), and its failing list kept that order too.
Groups without tests are left out (they have no rate).
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction

from fleetbench.records import GroupStats, Summary

__all__ = ["DEFAULT_THRESHOLD", "best_repository", "exact_rate", "rank", "rank_repositories",
           "repositories_below", "worst_repository"]

DEFAULT_THRESHOLD = 0.9
"""test-bench's report listed the "Repositories Below 90% Success Rate"."""

Ranked = tuple[str, GroupStats]
"""A group's name (``repo_id``) and its statistics."""


def exact_rate(stats: GroupStats) -> Fraction:
    """``passed / total`` as an exact fraction (0 for an empty group)."""
    return Fraction(stats.passed, stats.total) if stats.total else Fraction(0)


def rank(groups: Mapping[str, GroupStats]) -> list[Ranked]:
    """Non-empty groups by success rate, highest first; ties by name ascending."""
    return sorted(((name, stats) for name, stats in groups.items() if stats.total),
                  key=lambda pair: (-exact_rate(pair[1]), pair[0]))


def rank_repositories(summary: Summary) -> list[Ranked]:
    """Every repository with results, best first (see the module docstring)."""
    return rank(summary.by_repository)


def best_repository(summary: Summary) -> Ranked | None:
    """The repository with the highest success rate; ``None`` when there is none."""
    ranked = rank_repositories(summary)
    return ranked[0] if ranked else None


def worst_repository(summary: Summary) -> Ranked | None:
    """The repository with the lowest success rate; ``None`` when there is none."""
    ranked = rank_repositories(summary)
    return ranked[-1] if ranked else None


def repositories_below(summary: Summary, threshold: float = DEFAULT_THRESHOLD) -> list[Ranked]:
    """Repositories whose success rate is strictly below ``threshold``, worst first.

    ``threshold`` is read as the decimal it is written as (``0.9`` means 9/10 exactly).

    :raises ValueError: ``threshold`` is not a finite number from 0 to 1.
    """
    if not 0.0 <= threshold <= 1.0:  # also rejects NaN
        raise ValueError(f"threshold must be between 0 and 1, got {threshold!r}")
    limit = Fraction(repr(float(threshold)))
    below = [(name, stats) for name, stats in summary.by_repository.items()
             if stats.total and exact_rate(stats) < limit]
    return sorted(below, key=lambda pair: (exact_rate(pair[1]), pair[0]))
