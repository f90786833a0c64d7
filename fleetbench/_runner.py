"""One run of a prepared fleet, from start (or resume) to artifacts.

Sequence: register the run in the store (idempotent by run id) → skip what already has
a result → execute the rest while the bus feeds the store, the live aggregator, run.json
and any other observer → export every artifact from the store in plan order → publish
``RunFinished``. Because artifacts are produced from the store, a resumed run and an
uninterrupted one write the same files.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from fleetbench._aggregator import Aggregator
from fleetbench._artifacts import describe_artifacts, write_atomically
from fleetbench._bus import EventBus, Subscriber
from fleetbench._clock import utc_now
from fleetbench._executor import ExecutionPlan
from fleetbench._lanes import Lanes, build_lanes
from fleetbench._looplag import LoopLagMonitor
from fleetbench._planner import Plan
from fleetbench._plugins import PluginHost
from fleetbench._prepare import Prepared
from fleetbench._pricing import PricingTable
from fleetbench._store import RunRecord, RunStore, StoreWriter
from fleetbench.errors import PluginError
from fleetbench.events import Event, RunFinished, RunStarted, TestFinished
from fleetbench.plugin import Evaluator, Exporter, RunInfo
from fleetbench.records import EvaluatorRef, RunStatus, Summary, TestResult, WorkItem

__all__ = ["RunOutcome", "execute_run"]

_log = structlog.get_logger("fleetbench.run")


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """How a run ended, its exact summary and its artifacts."""

    run_id: str
    status: RunStatus
    created: bool
    summary: Summary
    output_dir: Path
    artifacts: tuple[Path, ...]
    warnings: tuple[str, ...]
    error: str | None


class _Live(Subscriber):
    """Feeds the live aggregator and keeps ``run.json`` current (at most every second)."""

    def __init__(self, aggregator: Aggregator, run_json: _RunJson) -> None:
        self.aggregator = aggregator
        self.run_json = run_json

    async def handle(self, events: Sequence[Event]) -> None:
        self.aggregator.add_many(e.result for e in events if isinstance(e, TestFinished))
        self.run_json.maybe_write(self.aggregator.count)


class _StoreFeed(Subscriber):
    """Writes each delivered batch in one transaction: the bus hands over everything
    pending at once, so batches grow with load and nothing waits when the run is quiet."""

    def __init__(self, writer: StoreWriter) -> None:
        self.writer = writer

    async def handle(self, events: Sequence[Event]) -> None:
        for event in events:
            await self.writer.handle(event)
        await self.writer.flush()


class _RunJson:
    """``run.json``: the run's status and progress, rewritten atomically while it runs."""

    def __init__(self, path: Path, record: RunRecord, planned: int) -> None:
        self.path, self.record, self.planned = path, record, planned
        self.status = RunStatus.RUNNING
        self._written_at = 0.0

    def maybe_write(self, done: int, *, force: bool = False) -> None:
        now = asyncio.get_running_loop().time()
        if force or now - self._written_at >= 1.0:
            self._written_at = now
            self.write(done)

    def write(self, done: int, error: str | None = None,
              artifacts: Sequence[Mapping[str, Any]] = ()) -> None:
        data = {"run_id": self.record.run_id, "fleet_id": self.record.fleet_id,
                "status": self.status.value, "planned": self.planned, "done": done,
                "created_at": self.record.created_at, "error": error,
                "artifacts": list(artifacts)}
        write_atomically(self.path, json.dumps(data, indent=2, sort_keys=True) + "\n")


async def execute_run(
    prepared: Prepared,
    *,
    host: PluginHost,
    store: RunStore,
    labels: Mapping[str, str] | None = None,
    cancel: asyncio.Event | None = None,
    subscribers: Sequence[tuple[str, Subscriber]] = (),
    env: Mapping[str, str] | None = None,
    live: Aggregator | None = None,
) -> RunOutcome:
    """Run (or resume) ``prepared``; return when its artifacts are written.

    A run whose id already completed is not executed again: its outcome is returned
    with ``created`` false.

    :param subscribers: extra lossless bus subscribers (progress views, gRPC streams).
    :param live: an empty aggregator the run keeps current, for live snapshots.

    :raises ManifestError: a provider's API key is missing from the environment.
    """
    fleet, plan = prepared.fleet, prepared.plan
    manifest = fleet.manifest
    output_dir = (fleet.base_dir / manifest.output.base_dir / plan.run_id).resolve()
    pricing = PricingTable.shipped()
    record, created = store.create_run(
        run_id=plan.run_id, fleet_id=plan.fleet_id, manifest_json=manifest.canonical_json(),
        base_dir=str(fleet.base_dir), output_dir=str(output_dir), planned=len(plan),
        labels=dict(labels or {}), pricing_version=pricing.version)
    if record.status is RunStatus.COMPLETED:
        return _completed_outcome(record, store, output_dir, created)
    lanes = build_lanes(manifest, host, pricing, os.environ if env is None else env)
    try:
        execution = _Execution(prepared, host, store, record, created, lanes, output_dir,
                               live or Aggregator())
        return await execution.run(cancel or asyncio.Event(), subscribers)
    finally:
        await lanes.aclose()


def _completed_outcome(record: RunRecord, store: RunStore, output_dir: Path,
                       created: bool) -> RunOutcome:
    aggregator = Aggregator()
    aggregator.add_many(result for _, result in store.iter_results(record.run_id))
    artifacts = tuple(output_dir / a.name for a in record.artifacts)
    return RunOutcome(record.run_id, record.status, created, aggregator.finalize(),
                      output_dir, artifacts, (), record.error)


class _Execution:
    """The moving parts of one execution of a run."""

    def __init__(self, prepared: Prepared, host: PluginHost, store: RunStore,
                 record: RunRecord, created: bool, lanes: Lanes, output_dir: Path,
                 live: Aggregator) -> None:
        self.prepared, self.host, self.store = prepared, host, store
        self.record, self.created, self.lanes = record, created, lanes
        self.output_dir = output_dir
        self.plan: Plan = prepared.plan
        self.aggregator = live
        self.warnings: list[str] = [str(w) for w in prepared.fleet.warnings]
        self.warnings.extend(lanes.warnings)
        self._evaluators: dict[tuple[str, str], Evaluator] = {}

    async def run(self, cancel: asyncio.Event,
                  extra: Sequence[tuple[str, Subscriber]]) -> RunOutcome:
        run_id = self.plan.run_id
        self.output_dir.mkdir(parents=True, exist_ok=True)
        write_atomically(self.output_dir / "manifest.json",
                         json.dumps(json.loads(self.prepared.fleet.manifest.canonical_json()),
                                    indent=2, sort_keys=True) + "\n")
        done_keys = self.store.finished_keys(run_id)
        self.aggregator.add_many(r for _, r in self.store.iter_results(run_id))
        todo = [item for item in self.plan.items if item.key not in done_keys]
        run_json = _RunJson(self.output_dir / "run.json", self.record, len(self.plan))
        writer = StoreWriter(self.store)
        bus = EventBus(run_id, first_seq=self.store.last_seq(run_id) + 1)
        bus.subscribe("store", _StoreFeed(writer))
        bus.subscribe("aggregator", _Live(self.aggregator, run_json))
        for name, subscriber in [*self._plugin_subscribers(), *extra]:
            bus.subscribe(name, subscriber)
        self.bus = bus
        bus.publish(lambda seq: RunStarted(run_id, seq, self.plan.fleet_id, len(self.plan),
                                           len(done_keys), utc_now()))
        run_json.write(self.aggregator.count)
        lag = LoopLagMonitor()
        lag.start()
        try:
            status, error = await self._execute(todo, cancel)
        finally:
            await lag.stop()
        if (lag_warning := lag.warning()) is not None:
            self.warnings.append(lag_warning)
        await bus.drain()
        await writer.flush()
        run_json.status = status
        summary, artifacts = await asyncio.to_thread(self._export, status, error)
        described = describe_artifacts(artifacts)
        self.store.set_artifacts(run_id, described)
        run_json.write(self.aggregator.count, error,
                       [{"name": a.name, "size_bytes": a.size_bytes, "sha256": a.sha256,
                         "media_type": a.media_type} for a in described])
        bus.publish(lambda seq: RunFinished(run_id, seq, status, utc_now(), summary, error))
        await bus.aclose()
        await writer.aclose()
        if bus.failures:
            self.warnings.append(f"observer failures: {dict(bus.failures)}")
        _log.info("run finished", run_id=run_id, status=status.value, tests=len(self.plan),
                  executed=len(todo), error=error)
        return RunOutcome(run_id, status, self.created, summary, self.output_dir,
                          tuple(artifacts), tuple(self.warnings), error)

    async def _execute(self, todo: Sequence[Any], cancel: asyncio.Event
                       ) -> tuple[RunStatus, str | None]:
        manifest = self.prepared.fleet.manifest
        settings = manifest.global_settings
        bus = self.bus

        use_cache = settings.cache

        async def on_result(result: TestResult) -> None:
            bus.publish(lambda seq: TestFinished(self.plan.run_id, seq, result))
            if use_cache and not result.cached:
                self.store.cache_put(self._cache_key(result.item), result)
            await bus.throttle()

        plan = ExecutionPlan(
            items=todo,
            lanes=self.lanes.by_key,
            scenario_limits={(s.repo.repo_id, s.scenario):
                             (s.profile.concurrency, s.profile.request_delay_ms)
                             for s in self.prepared.fleet.scenarios},
            evaluator=self._evaluator,
            on_result=on_result,
            test_timeout_s=settings.test_timeout_seconds,
            max_in_flight=settings.max_in_flight,
            continue_on_failure=settings.continue_on_failure,
            cached=(lambda item: self.store.cache_get(self._cache_key(item))) if use_cache
            else None,
            cancel=cancel,
        )
        executor = self.host.executors[settings.executor].factory(plan)
        stopped_by = await executor.run()
        if stopped_by is not None:
            return RunStatus.FAILED, f"stopped at the first error (continue_on_failure: " \
                                     f"false): {stopped_by}"
        if cancel.is_set():
            return RunStatus.CANCELLED, "cancelled"
        return RunStatus.COMPLETED, None

    def _cache_key(self, item: WorkItem) -> str:
        """Identical requests share a key: same provider endpoint, model, prompt, settings,
        streaming and epoch (so repeats stay independent samples)."""
        lane = self.lanes.by_key[item.provider_key]
        request = {"provider": item.provider, "model": item.model,
                   "base_url": lane.provider.config.base_url, "prompt": item.prompt,
                   "settings": item.settings.as_dict(), "stream": item.stream,
                   "epoch": item.epoch}
        return hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()
                              ).hexdigest()

    def _evaluator(self, ref: EvaluatorRef) -> Evaluator:
        key = (ref.name, json.dumps(dict(ref.options), sort_keys=True, default=str))
        evaluator = self._evaluators.get(key)
        if evaluator is None:
            spec = self.host.evaluators.get(ref.name)
            if spec is None:
                raise PluginError(f"evaluator {ref.name!r} is not installed")
            evaluator = self._evaluators[key] = spec.factory(ref.options)
        return evaluator

    def _plugin_subscribers(self) -> Iterable[tuple[str, Subscriber]]:
        for info in self.host.subscribers.infos():
            yield info.name, self.host.subscribers[info.name].factory()

    def _export(self, status: RunStatus, error: str | None) -> tuple[Summary, list[Path]]:
        manifest = self.prepared.fleet.manifest
        exporters = self._exporters()
        record = self.store.get_run(self.plan.run_id) or self.record
        info = RunInfo(
            run_id=self.plan.run_id, fleet_id=self.plan.fleet_id, status=status.value,
            output_dir=self.output_dir,
            manifest=json.loads(manifest.canonical_json()),
            created_at=record.created_at, started_at=record.started_at,
            finished_at=record.finished_at or utc_now(), planned=len(self.plan),
            save_responses=manifest.output.save_responses,
            pricing_version=record.pricing_version,
            repositories={r.repo_id: _repo_metadata(r) for r in manifest.repositories},
            plugins={i.name: i.version for i in self.host.infos()},
            warnings=tuple(self.warnings) + ((error,) if error else ()),
        )
        final = Aggregator()
        for exporter in exporters:
            exporter.open(info)
        for result in self.store.iter_results_in_plan_order(self.plan.run_id):
            final.add(result)
            for exporter in exporters:
                exporter.write(result)
        summary = final.finalize()
        paths = [Path(p) for exporter in exporters for p in exporter.finalize(summary)]
        # run.json is the run's status, rewritten until the end, not an artifact.
        return summary, [self.output_dir / "manifest.json", *paths]

    def _exporters(self) -> list[Exporter]:
        output = self.prepared.fleet.manifest.output
        names = list(output.formats)
        if output.generate_reports and "html" in self.host.exporters and "html" not in names:
            names.append("html")
        return [self.host.exporters[name].factory() for name in names]


def _repo_metadata(repo: Any) -> dict[str, str]:
    origin = {"git_url": repo.git_url, "ref": repo.ref}
    return {**repo.metadata, **{k: v for k, v in origin.items() if v}}
