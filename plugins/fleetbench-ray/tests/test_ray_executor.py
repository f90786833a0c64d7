"""The ``ray`` executor on a local 2-CPU Ray cluster, against the local executor and a
fake vendor that measures what reaches it."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import ray
from fleetbench_ray import RayExecutorError
from ray_support import (
    KEY,
    NODE_KEY_ENV,
    eventually,
    fake_vendor_entry,
    live_actors,
    rows,
    run,
    write_fleet,
)

from fleetbench._plugins import PluginHost
from fleetbench.events import TestFinished
from fleetbench.records import GroupStats, RunStatus, Summary
from fleetbench.testing import FakeVendorServer

pytestmark = pytest.mark.usefixtures("ray_cluster")

TIMINGS = {"queue_ms", "latency_ms", "ttft_ms", "itl_ms", "total_ms", "started_at",
           "finished_at"}


def _counts(stats: GroupStats) -> dict[str, Any]:
    """A group's aggregates that do not depend on timing."""
    return {f.name: getattr(stats, f.name) for f in dataclasses.fields(stats)
            if f.name not in {"latency_ms", "ttft_ms", "itl_ms", "duration_ms", "queue_ms",
                              "output_tokens_per_s"}}


def _aggregates(summary: Summary) -> dict[str, Any]:
    groups = {"fleet": {"": summary.fleet}, "provider": summary.by_provider,
              "repository": summary.by_repository, "category": summary.by_category,
              "scenario": summary.by_scenario,
              "repository×provider": summary.by_repository_provider}
    return {kind: {str(k): _counts(v) for k, v in group.items()}
            for kind, group in groups.items()}


async def test_local_and_ray_executors_give_the_same_results(host: PluginHost,
                                                             tmp_path: Path) -> None:
    faults = {"error_rate": 0.1, "rate_limit_rate": 0.1, "retry_after_s": 0,
              "timeout_rate": 0.05, "timeout_hang_s": 5, "accuracy": 0.7}
    providers = [
        {"id": "simulated:a", "concurrency": 3, "timeout_s": 0.2, "max_retries": 1,
         "params": {"seed": 1, "latency_ms": 2, **faults},
         "pricing": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
        {"id": "simulated:b", "concurrency": 5, "stream": True,
         "params": {"seed": 2, "ttft_ms": 2, "itl_ms": 0.1, "accuracy": 0.5}},
    ]
    outcomes = {}
    for executor in ("local", "ray"):
        path = write_fleet(tmp_path / executor, providers, tests=12,
                           repositories=("api", "web"), scenarios=("chat", "qa"),
                           scenario={"concurrency": 3, "repeat": 2})
        outcomes[executor] = await run(path, host, tmp_path / executor, executor=executor)
    local, ray_run = outcomes["local"], outcomes["ray"]
    assert local.run_id == ray_run.run_id  # where a run executes is not part of its id
    assert ray_run.status is local.status is RunStatus.COMPLETED
    assert ray_run.summary.fleet.total == 2 * 2 * 2 * 12 * 2

    def strip(result_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k not in TIMINGS} for r in result_rows]

    assert strip(rows(ray_run)) == strip(rows(local))
    assert _aggregates(ray_run.summary) == _aggregates(local.summary)
    statuses = {r["status"] for r in rows(ray_run)}
    assert {"passed", "failed", "error", "timeout"} <= statuses
    assert any(r["retries"] for r in rows(ray_run))


@pytest.fixture
async def vendor() -> AsyncIterator[FakeVendorServer]:
    """A fake OpenAI-compatible vendor on 127.0.0.1 answering after 100 ms."""
    async with FakeVendorServer("openai", latency_ms=100, api_key=KEY) as server:
        yield server


class _OnResults:
    """A bus subscriber calling ``react(finished so far)`` after every batch."""

    def __init__(self, react: Any) -> None:
        self.finished = 0
        self.react = react

    async def handle(self, events: Sequence[Any]) -> None:
        self.finished += sum(isinstance(e, TestFinished) for e in events)
        if self.finished:
            await self.react(self.finished)


async def test_results_reach_the_driver_while_the_run_is_in_progress(
        host: PluginHost, vendor: FakeVendorServer, tmp_path: Path) -> None:
    path = write_fleet(tmp_path, [fake_vendor_entry(vendor.base_url, concurrency=2)], tests=16,
                       global_settings={"ray_actors": 2})
    sent_at_first_result: list[int] = []

    async def note(finished: int) -> None:
        if not sent_at_first_result:
            sent_at_first_result.append(vendor.requests)

    outcome = await run(path, host, tmp_path, subscribers=[("probe", _OnResults(note))])
    assert outcome.status is RunStatus.COMPLETED
    assert outcome.summary.fleet.passed == 16
    # 2 requests at a time, 100 ms each: the first results were in the driver's bus
    # while most requests had not even been sent.
    assert sent_at_first_result[0] < 16


async def test_a_fleet_concurrency_limit_holds_across_actors(
        host: PluginHost, vendor: FakeVendorServer, tmp_path: Path) -> None:
    path = write_fleet(tmp_path, [fake_vendor_entry(vendor.base_url, concurrency=3)], tests=60,
                       global_settings={"ray_actors": 2})
    outcome = await run(path, host, tmp_path)
    assert outcome.summary.fleet.passed == 60
    # Shares 2 + 1 (30 tests each: 1.5 s and 3 s of requests): reaching 3 at once takes
    # both actors, and more than 3 would break the limit.
    assert vendor.max_in_flight == 3


async def test_a_cancelled_run_stops_every_actor_and_resumes_to_one_result_per_test(
        host: PluginHost, vendor: FakeVendorServer, tmp_path: Path) -> None:
    path = write_fleet(tmp_path, [fake_vendor_entry(vendor.base_url, concurrency=4)], tests=40,
                       global_settings={"ray_actors": 2})
    cancel = asyncio.Event()

    async def stop(finished: int) -> None:
        if finished >= 4:
            cancel.set()

    first = await run(path, host, tmp_path, cancel=cancel,
                      subscribers=[("stopper", _OnResults(stop))])
    assert first.status is RunStatus.CANCELLED
    assert 4 <= first.summary.fleet.total < 40
    await eventually(lambda: not live_actors(), "the run's actors are gone")
    await eventually(lambda: vendor.in_flight == 0, "no request in flight at the vendor")
    sent = vendor.requests
    second = await run(path, host, tmp_path)
    assert second.status is RunStatus.COMPLETED
    assert not second.created
    keys = [r["key"] for r in rows(second)]
    assert len(keys) == len(set(keys)) == 40
    # The resumed run sent only the tests without a result (and those cut off in flight).
    assert vendor.requests - sent == 40 - first.summary.fleet.total


async def test_an_actor_whose_process_dies_is_restarted_with_the_rest_of_its_shard(
        host: PluginHost, vendor: FakeVendorServer, tmp_path: Path) -> None:
    path = write_fleet(tmp_path, [fake_vendor_entry(vendor.base_url, concurrency=4)], tests=40,
                       global_settings={"ray_actors": 2}, fleet_id="ray-kill")
    killed: list[int] = []

    async def kill_one(finished: int) -> None:
        if not killed:
            name = live_actors("ray-kill-")[0]
            actor = ray.get_actor(name, namespace="fleetbench")
            killed.append(await actor.pid.remote())
            os.kill(killed[0], signal.SIGKILL)

    outcome = await run(path, host, tmp_path, subscribers=[("killer", _OnResults(kill_one))])
    assert killed
    assert outcome.status is RunStatus.COMPLETED
    keys = [r["key"] for r in rows(outcome)]
    assert len(keys) == len(set(keys)) == 40


async def test_the_first_error_stops_every_actor_when_continue_on_failure_is_false(
        host: PluginHost, tmp_path: Path) -> None:
    provider = {"id": "simulated:flaky", "concurrency": 4, "max_retries": 0,
                "params": {"seed": 3, "latency_ms": 20, "error_rate": 0.3}}
    path = write_fleet(tmp_path, [provider], tests=40,
                       global_settings={"ray_actors": 2, "continue_on_failure": False})
    outcome = await run(path, host, tmp_path)
    assert outcome.status is RunStatus.FAILED
    assert outcome.error is not None
    assert "continue_on_failure: false" in outcome.error
    assert outcome.summary.fleet.total < 40
    await eventually(lambda: not live_actors(), "the run's actors are gone")


async def test_actors_read_api_keys_from_their_own_environment(
        host: PluginHost, vendor: FakeVendorServer, tmp_path: Path) -> None:
    path = write_fleet(tmp_path, [fake_vendor_entry(vendor.base_url,
                                                    api_key_env="FLEETBENCH_DRIVER_ONLY_KEY")])
    with pytest.raises(RayExecutorError) as caught:
        await run(path, host, tmp_path, env={"FLEETBENCH_DRIVER_ONLY_KEY": KEY})
    assert "FLEETBENCH_DRIVER_ONLY_KEY is not set" in str(caught.value)
    assert KEY not in str(caught.value)
    assert vendor.requests == 0
    assert NODE_KEY_ENV not in str(caught.value)
