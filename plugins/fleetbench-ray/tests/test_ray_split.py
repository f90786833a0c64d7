"""Dividing a run among actors: every test once, in plan order, and shares that add up
to exactly the fleet-wide limits (no Ray needed)."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest
from fleetbench_ray._split import share, split

from fleetbench._shard import LaneLimits, Shard
from fleetbench.records import GenerationSettings, Status, TestResult, WorkItem


def _item(index: int, provider: str = "p:a", repo: str = "r", scenario: str = "s") -> WorkItem:
    model = provider.partition(":")[2]
    return WorkItem(key=f"{repo}/{scenario}/{provider}/t{index}", index=index, repo_id=repo,
                    scenario=scenario, provider=provider.partition(":")[0], model=model,
                    test_id=f"t{index}", epoch=1, prompt="hi", settings=GenerationSettings(),
                    stream=False)


def _shard(items: list[WorkItem], *, concurrency: dict[str, int] | None = None,
           scenario_concurrency: int = 100, max_in_flight: int | None = None,
           rpm: float | None = None) -> Shard:
    lanes = {key: LaneLimits((concurrency or {}).get(key, 16), 3, 60.0, None, rpm, None)
             for key in {i.provider_key for i in items}}
    scenarios = {(i.repo_id, i.scenario): (scenario_concurrency, 7) for i in items}
    return Shard("{}", tuple(items), lanes, scenarios, max_in_flight=max_in_flight)


def _totals(shards: list[Shard]) -> tuple[Counter[str], Counter[tuple[str, str]], int]:
    lanes: Counter[str] = Counter()
    scenarios: Counter[tuple[str, str]] = Counter()
    for s in shards:
        lanes.update({k: v.concurrency for k, v in s.lanes.items()})
        scenarios.update({k: v[0] for k, v in s.scenario_limits.items()})
    return lanes, scenarios, sum(s.max_in_flight or 0 for s in shards)


def test_every_test_goes_to_one_actor_in_plan_order() -> None:
    items = [_item(i, provider) for i, provider in enumerate(["p:a", "p:b", "q:c"] * 10)]
    shards = split(_shard(items), 4)
    assert len(shards) == 4
    assert sorted(i.index for s in shards for i in s.items) == list(range(30))
    for s in shards:
        assert [i.index for i in s.items] == sorted(i.index for i in s.items)
        assert all(i.provider_key in s.lanes for i in s.items)


@pytest.mark.parametrize(("limit", "actors", "expected"), [
    (16, 4, [4, 4, 4, 4]), (7, 3, [3, 2, 2]), (2, 5, [1, 1]), (1, 3, [1])])
def test_a_provider_limit_is_divided_exactly(limit: int, actors: int,
                                             expected: list[int]) -> None:
    items = [_item(i) for i in range(40)]
    shards = split(_shard(items, concurrency={"p:a": limit}), actors)
    assert [s.lanes["p:a"].concurrency for s in shards] == expected
    assert _totals(shards)[0]["p:a"] == limit


def test_scenario_and_global_limits_hold_and_rates_are_divided() -> None:
    items = [_item(i, provider, repo, scenario)
             for i in range(12) for provider in ("p:a", "p:b")
             for repo, scenario in (("r1", "s"), ("r2", "s"), ("r2", "t"))]
    shards = split(_shard(items, concurrency={"p:a": 5, "p:b": 3}, scenario_concurrency=2,
                          max_in_flight=7, rpm=600), 4)
    lanes, scenarios, in_flight = _totals(shards)
    assert lanes["p:a"] <= 5
    assert lanes["p:b"] <= 3
    assert set(scenarios.values()) == {2}  # every repository × scenario exactly at its limit
    assert in_flight == 7
    assert all(v[1] == 7 for s in shards for v in s.scenario_limits.values())  # delay kept
    holders = sum("p:a" in s.lanes for s in shards)
    assert all(s.lanes["p:a"].rpm == 600 / holders for s in shards if "p:a" in s.lanes)
    for s in shards:  # every actor can run each of its tests
        assert all(s.lanes[i.provider_key].concurrency >= 1 for i in s.items)
        assert all(s.scenario_limits[(i.repo_id, i.scenario)][0] >= 1 for i in s.items)


def test_fewer_tests_than_actors_means_fewer_actors_and_cache_hits_follow_their_tests(
        ) -> None:
    items = [_item(i) for i in range(3)]
    hit = TestResult(items[2], Status.PASSED, "t0", "t1")
    shards = split(replace(_shard(items), cached={items[2].key: hit}), 8)
    assert [len(s.items) for s in shards] == [1, 1, 1]
    assert [dict(s.cached) for s in shards] == [{}, {}, {items[2].key: hit}]


def test_share_and_bad_actor_counts() -> None:
    assert [share(10, i, 4) for i in range(4)] == [3, 3, 2, 2]
    with pytest.raises(ValueError, match="must be positive"):
        split(_shard([_item(0)]), 0)
