"""Part of a run as plain data that another process can execute: the seam for executors
that distribute a run over several processes or machines (the ``ray`` plugin).

The core's :class:`~fleetbench._executor.ExecutionPlan` holds live objects (providers on
an HTTP client, evaluators, callbacks into the bus and the result cache) that cannot
leave the process. A distributed executor turns it into :class:`Shard` s instead:
:meth:`Shard.of_plan` captures the whole plan as picklable data that holds no secret,
and the executor hands each worker a copy with its share of the tests and of the limits
(``dataclasses.replace``). A worker calls :func:`run_shard`, which rebuilds the providers
and evaluators from the manifest and the plugins installed where it runs (each provider
reads its API key from *that* process's environment) and runs the very same
:class:`~fleetbench._executor.LocalExecutor` loop, so limits, pacing, retries, timeouts
and measurement are exactly the local executor's.

Dividing a limit among workers is the executor's job: the shares it puts in
:attr:`Shard.lanes`, :attr:`Shard.scenario_limits` and :attr:`Shard.max_in_flight` must
add up to no more than the plan's values for the fleet-wide limits to hold. Evaluators
that call a model (LLM judges) call through the worker's own lanes, so what they spend,
and any cost cap they keep, is counted per worker.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace

from fleetbench._evalcontext import RunEvaluatorContext
from fleetbench._executor import EvaluatorCache, ExecutionPlan, LocalExecutor, ProviderLane
from fleetbench._lanes import build_lanes
from fleetbench._limits import TokenBucket
from fleetbench._manifest import FleetManifest
from fleetbench._plugins import PluginHost, load_plugins
from fleetbench._pricing import Price, PricingTable
from fleetbench.records import TestResult, WorkItem

__all__ = ["LaneLimits", "Shard", "run_shard"]


@dataclass(frozen=True, slots=True)
class LaneLimits:
    """One provider lane's settings without its provider: what a worker applies to the
    lane it builds. ``rpm``/``tpm`` are per minute; ``None`` means unlimited."""

    concurrency: int
    max_retries: int
    timeout_s: float
    price: Price | None
    rpm: float | None = None
    tpm: float | None = None

    @classmethod
    def of(cls, lane: ProviderLane) -> LaneLimits:
        """The settings of a lane built by the core (its token buckets' rates)."""
        return cls(lane.concurrency, lane.max_retries, lane.timeout_s, lane.price,
                   lane.rpm.capacity if lane.rpm else None,
                   lane.tpm.capacity if lane.tpm else None)

    def apply(self, lane: ProviderLane) -> ProviderLane:
        """``lane`` (its provider) with these settings and fresh token buckets."""
        return replace(lane, concurrency=self.concurrency, max_retries=self.max_retries,
                       timeout_s=self.timeout_s, price=self.price,
                       rpm=TokenBucket(self.rpm) if self.rpm else None,
                       tpm=TokenBucket(self.tpm) if self.tpm else None)


@dataclass(frozen=True, slots=True)
class Shard:
    """Tests to execute and the limits to execute them under, as picklable data.

    :param manifest_json: the resolved manifest (``FleetManifest.canonical_json()``):
        the provider entries and global settings the worker rebuilds its lanes from.
    :param items: the tests, in plan order.
    :param lanes: ``provider:model`` → settings, for every provider of ``items``.
    :param scenario_limits: ``(repo_id, scenario)`` → (concurrency, request delay ms),
        for every repository × scenario of ``items``.
    :param cached: test key → an earlier result of an identical request (looked up by the
        driver, which owns the result cache); judged again by the worker's evaluators.
    :raises ValueError: an item's provider or repository × scenario has no limits.
    """

    manifest_json: str
    items: tuple[WorkItem, ...]
    lanes: Mapping[str, LaneLimits]
    scenario_limits: Mapping[tuple[str, str], tuple[int, int]]
    max_in_flight: int | None = None
    test_timeout_s: float | None = None
    continue_on_failure: bool = True
    cached: Mapping[str, TestResult] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for item in self.items:
            if item.provider_key not in self.lanes:
                raise ValueError(f"{item.key}: the shard has no lane {item.provider_key!r}")
            if (item.repo_id, item.scenario) not in self.scenario_limits:
                raise ValueError(f"{item.key}: the shard has no limits for "
                                 f"{item.repo_id}/{item.scenario}")

    @classmethod
    def of_plan(cls, plan: ExecutionPlan) -> Shard:
        """The whole of ``plan`` as one shard; cache hits are looked up now.

        :raises ValueError: the plan carries no manifest to rebuild its lanes from.
        """
        if plan.manifest is None:
            raise ValueError("the execution plan has no manifest: its lanes cannot be "
                             "rebuilt in another process")
        items = tuple(plan.items)
        keys = {item.provider_key for item in items}
        cached: dict[str, TestResult] = {}
        if plan.cached is not None:
            for item in items:
                hit = plan.cached(item)
                if hit is not None:
                    cached[item.key] = hit
        return cls(
            manifest_json=plan.manifest.canonical_json(),
            items=items,
            lanes={key: LaneLimits.of(lane) for key, lane in plan.lanes.items() if key in keys},
            scenario_limits=dict(plan.scenario_limits),
            max_in_flight=plan.max_in_flight,
            test_timeout_s=plan.test_timeout_s,
            continue_on_failure=plan.continue_on_failure,
            cached=cached,
        )


async def run_shard(
    shard: Shard,
    on_result: Callable[[TestResult], Awaitable[None]],
    *,
    cancel: asyncio.Event | None = None,
    host: PluginHost | None = None,
    env: Mapping[str, str] | None = None,
) -> str | None:
    """Execute ``shard`` on the running event loop with the local executor's loop.

    :param on_result: awaited once per finished test, in completion order.
    :param cancel: set it to stop; tests in flight then leave no result.
    :param host: the plugins to build providers and evaluators with (default: load the
        installed ones).
    :param env: where API keys are read (default ``os.environ`` of this process).
    :returns: as :meth:`LocalExecutor.run`: why the shard stopped at its first error
        (``continue_on_failure: false``), else ``None``.
    :raises ManifestError: an API key is missing from ``env``.
    """
    host = host or load_plugins()
    manifest = FleetManifest.model_validate_json(shard.manifest_json)
    lanes = build_lanes(manifest, host, PricingTable.shipped(),
                        os.environ if env is None else env)
    try:
        # The shard's lanes under its shares; LLM judges may call any provider entry.
        mine = {**lanes.by_key, **{key: limits.apply(lanes.by_key[key])
                                   for key, limits in shard.lanes.items()}}
        plan = ExecutionPlan(
            items=shard.items,
            lanes={key: mine[key] for key in shard.lanes},
            scenario_limits=shard.scenario_limits,
            evaluator=EvaluatorCache(host, RunEvaluatorContext.for_run(mine)),
            on_result=on_result,
            test_timeout_s=shard.test_timeout_s,
            max_in_flight=shard.max_in_flight,
            continue_on_failure=shard.continue_on_failure,
            cached=(lambda item: shard.cached.get(item.key)) if shard.cached else None,
            cancel=cancel or asyncio.Event(),
            manifest=manifest,
        )
        return await LocalExecutor(plan).run()
    finally:
        await lanes.aclose()
