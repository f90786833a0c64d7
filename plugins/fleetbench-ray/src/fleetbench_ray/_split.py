"""Splits a run into per-actor shards so that every fleet-wide limit still holds.

Limits are divided, not coordinated: each actor enforces its share locally, so no
request waits on a network round trip to a central limiter. The rules:

- Tests go round-robin, in plan order, to the actors allowed to run them. The tests
  of one provider × repository × scenario may use at most ``min(actors, provider
  concurrency, scenario concurrency, max_in_flight)`` actors, so that every actor
  holding such a test gets at least one slot of each limit.
- A limit ``L`` held by ``k`` actors is divided as evenly as integers allow: each gets
  ``L // k`` and the first ``L % k`` get one more, so the shares add up to exactly ``L``.
  That is the provider's ``concurrency``, the repository × scenario ``concurrency`` and
  ``global_settings.max_in_flight``. A limit smaller than the actor count therefore
  means fewer actors for its tests (a provider with ``concurrency: 2`` runs on 2 actors).
- ``rpm`` and ``tpm`` are rates: each of the ``k`` actors running a provider gets
  ``rpm / k`` (a token bucket of that size, full at the start), so the fleet-wide
  burst and rate equal the local executor's.
- A share an actor does not use is not lent to another: when one actor's tests finish
  first, the run goes on with the others' shares only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

from fleetbench._shard import LaneLimits, Shard
from fleetbench.records import WorkItem

__all__ = ["split"]


def split(whole: Shard, actors: int) -> list[Shard]:
    """Divide ``whole`` among at most ``actors`` actors (fewer when limits or the number
    of tests allow fewer); every shard has at least one test.

    :raises ValueError: ``actors`` is not positive.
    """
    if actors < 1:
        raise ValueError(f"the number of actors must be positive, not {actors}")
    cap = min(actors, whole.max_in_flight) if whole.max_in_flight else actors
    buckets: list[list[WorkItem]] = [[] for _ in range(cap)]
    dealt: Counter[tuple[str, str, str]] = Counter()
    for item in whole.items:
        group = (item.provider_key, item.repo_id, item.scenario)
        width = min(cap, whole.lanes[item.provider_key].concurrency,
                    whole.scenario_limits[(item.repo_id, item.scenario)][0])
        buckets[dealt[group] % width].append(item)
        dealt[group] += 1
    # Each group fills a prefix of the buckets, so the actors holding any one limit are
    # a prefix too: actor i is the i-th of the holders of each limit it holds.
    used = [bucket for bucket in buckets if bucket]
    lane_holders = Counter(key for bucket in used for key in _lanes_of(bucket))
    scenario_holders = Counter(s for bucket in used for s in _scenarios_of(bucket))
    return [
        replace(
            whole,
            items=tuple(bucket),
            lanes={key: _divide_lane(whole.lanes[key], index, lane_holders[key])
                   for key in _lanes_of(bucket)},
            scenario_limits={
                s: (share(whole.scenario_limits[s][0], index, scenario_holders[s]),
                    whole.scenario_limits[s][1])
                for s in _scenarios_of(bucket)},
            max_in_flight=share(whole.max_in_flight, index, len(used))
            if whole.max_in_flight else None,
            cached={i.key: whole.cached[i.key] for i in bucket if i.key in whole.cached},
        )
        for index, bucket in enumerate(used)
    ]


def share(total: int, index: int, holders: int) -> int:
    """Holder ``index``'s part of ``total`` divided among ``holders``: ``total //
    holders``, plus one for the first ``total % holders`` holders."""
    return total // holders + (1 if index < total % holders else 0)


def _divide_lane(lane: LaneLimits, index: int, holders: int) -> LaneLimits:
    return replace(lane, concurrency=share(lane.concurrency, index, holders),
                   rpm=lane.rpm / holders if lane.rpm else None,
                   tpm=lane.tpm / holders if lane.tpm else None)


def _lanes_of(items: Sequence[WorkItem]) -> list[str]:
    return sorted({item.provider_key for item in items})


def _scenarios_of(items: Sequence[WorkItem]) -> list[tuple[str, str]]:
    return sorted({(item.repo_id, item.scenario) for item in items})
