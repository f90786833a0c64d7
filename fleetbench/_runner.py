"""One run of a prepared fleet, from start (or resume) to artifacts.

Sequence: register the run in the store (idempotent by run id) → skip what already has
a result → execute the rest while the bus feeds the store, the live aggregator, run.json
and any other observer → export every artifact from the store in plan order → publish
``RunFinished``. Because artifacts are produced from the store, a resumed run and an
uninterrupted one write the same files.

The export runs where it costs least. A run with at least ``EXPORT_WORKER_MIN_TESTS``
tests to execute starts an export worker process (:mod:`fleetbench._exportworker`) that
writes the artifacts on another core while the tests execute, told after every store
write that more results are stored; it finishes shortly after the last test. Smaller
runs export in-process after execution, where a process would cost more than it saves.
Both paths run the same :class:`~fleetbench._export.ExportSession`. A worker that fails
is reported as a run warning and the export is redone in-process.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from operator import attrgetter
from pathlib import Path
from typing import Any

import structlog

from fleetbench._aggregator import Aggregator
from fleetbench._artifacts import describe_artifacts, write_atomically
from fleetbench._bus import EventBus, Subscriber
from fleetbench._clock import utc_now
from fleetbench._evalcontext import RunEvaluatorContext
from fleetbench._executor import EvaluatorCache, ExecutionPlan
from fleetbench._export import ExportSession, build_exporters, exporter_names
from fleetbench._exportworker import ExportWorker, ExportWorkerError
from fleetbench._gctuning import gc_tuned_for_runs
from fleetbench._lanes import Lanes, build_lanes
from fleetbench._looplag import LoopLagMonitor
from fleetbench._manifest import FleetManifest, RepositoryConfig
from fleetbench._planner import Plan
from fleetbench._plugins import PluginHost
from fleetbench._prepare import Prepared
from fleetbench._pricing import PricingTable
from fleetbench._store import ArtifactRecord, RunRecord, RunStore, StoreWriter
from fleetbench.events import Event, RunFinished, RunStarted, TestFinished
from fleetbench.plugin import RunInfo
from fleetbench.records import RunStatus, Summary, TestResult, WorkItem

__all__ = ["EXPORT_WORKER_MIN_TESTS", "RunOutcome", "artifacts_json", "execute_run",
           "manifest_text", "run_info"]

_log = structlog.get_logger("fleetbench.run")

BUS_HIGH_WATER = 500
"""Events the run's bus lets wait for delivery (``EventBus``'s ``high_water``): a batch
is delivered (stored, aggregated, streamed) while publishers fill the next, so a
result waits for up to two batches. 500 (batches of at most 250 results) keeps the
time from a result to its stream near 50 ms at 10,000 results/s instead of 170 ms with
2,000, at no throughput measurable on ``bench/bench_run.py`` (the run's process is
busy either way; a store transaction per 250 results is cheap)."""

EXPORT_WORKER_MIN_TESTS = 5_000
"""Runs with at least this many tests to execute export in a worker process while they
execute. Below it, starting the process (≈0.4 s of imports, on another core) costs more
than it saves: on the zero-latency simulated provider the two paths break even near
7,000 tests, and providers with real latency make the worker pay off sooner."""


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
    pending at once, so batches grow with load and nothing waits when the run is quiet.

    :param on_flush: told the last seq of a batch once it is stored (the export worker
        then reads what is new).
    :param kept: when given, every result stored is also appended to it (an in-process
        export then writes them without reading them back).
    """

    def __init__(self, writer: StoreWriter, on_flush: Callable[[int], None] | None = None,
                 kept: list[TestResult] | None = None) -> None:
        self.writer = writer
        self.on_flush = on_flush
        self.kept = kept
        self._notified = writer.flushes

    async def handle(self, events: Sequence[Event]) -> None:
        for event in events:
            await self.writer.handle(event)
        await self.writer.flush()
        if self.kept is not None:
            self.kept.extend(e.result for e in events if isinstance(e, TestFinished))
        if self.on_flush is not None and self.writer.flushes != self._notified:
            self._notified = self.writer.flushes
            self.on_flush(events[-1].seq)


class _RunJson:
    """``run.json``: the run's status and progress, rewritten atomically while it runs."""

    def __init__(self, path: Path, record: RunRecord, planned: int) -> None:
        self.path, self.record, self.planned = path, record, planned
        self.status = RunStatus.RUNNING
        self._written_at = 0.0

    def maybe_write(self, done: int, *, force: bool = False) -> None:
        if self.status is not RunStatus.RUNNING:
            return  # ended: the final write (artifacts, warnings) must stay the last one
        now = asyncio.get_running_loop().time()
        if force or now - self._written_at >= 1.0:
            self._written_at = now
            self.write(done)

    def write(self, done: int, error: str | None = None,
              artifacts: Sequence[Mapping[str, Any]] = (), warnings: Sequence[str] = ()) -> None:
        """``warnings`` are the run's final ones (the store keeps them too)."""
        data = {"run_id": self.record.run_id, "fleet_id": self.record.fleet_id,
                "status": self.status.value, "planned": self.planned, "done": done,
                "created_at": self.record.created_at, "error": error,
                "artifacts": list(artifacts), "warnings": list(warnings)}
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
    export_worker_min_tests: int = EXPORT_WORKER_MIN_TESTS,
    interrupted: Callable[[], bool] | None = None,
    executor: str | None = None,
    run_key: str | None = None,
) -> RunOutcome:
    """Run (or resume) ``prepared``; return when its artifacts are written.

    A run whose id already completed is not executed again: its outcome is returned
    with ``created`` false.

    :param subscribers: extra lossless bus subscribers (progress views, gRPC streams).
    :param live: an empty aggregator the run keeps current, for live snapshots.
    :param export_worker_min_tests: export in a worker process when at least this many
        tests are to be executed (0: always), else in-process after execution.
    :param interrupted: asked when ``cancel`` stopped the run: true means the process is
        shutting down, so the run ends INTERRUPTED (resumed on the next start) rather
        than CANCELLED.
    :param executor: the executor plugin to use instead of the manifest's
        ``global_settings.executor`` (``fleetbench run --executor``). Where a run executes
        is not part of its identity: a run started by one executor resumes on another.
    :param run_key: the run key ``prepared`` was planned with, recorded with the run so
        that it can be planned again (with the same id) to resume it.

    :raises ManifestError: a provider's API key is missing from the environment.
    """
    fleet, plan = prepared.fleet, prepared.plan
    manifest = fleet.manifest
    output_dir = (fleet.base_dir / manifest.output.base_dir / plan.run_id).resolve()
    pricing = PricingTable.shipped()
    record, created = store.create_run(
        run_id=plan.run_id, fleet_id=plan.fleet_id, manifest_json=manifest.canonical_json(),
        base_dir=str(fleet.base_dir), output_dir=str(output_dir), planned=len(plan),
        labels=dict(labels or {}), pricing_version=pricing.version, run_key=run_key)
    if record.status is RunStatus.COMPLETED:
        return _completed_outcome(record, store, output_dir, created)
    lanes = build_lanes(manifest, host, pricing, os.environ if env is None else env)
    try:
        execution = _Execution(prepared, host, store, record, created, lanes, output_dir,
                               live or Aggregator(), export_worker_min_tests,
                               interrupted or (lambda: False), executor)
        with gc_tuned_for_runs():  # fewer, cheaper collections while requests are in flight
            return await execution.run(cancel or asyncio.Event(), subscribers)
    finally:
        await lanes.aclose()


def _completed_outcome(record: RunRecord, store: RunStore, output_dir: Path,
                       created: bool) -> RunOutcome:
    aggregator = Aggregator()
    aggregator.add_many(result for _, result in store.iter_results(record.run_id))
    artifacts = tuple(output_dir / a.name for a in record.artifacts)
    missing = [path.name for path in artifacts if not path.is_file()]
    warnings = (f"this run completed earlier; {len(missing)} of its artifacts are missing "
                f"from {output_dir}: {', '.join(missing)}; `fleetbench report "
                f"{record.run_id}` regenerates them",) if missing else ()
    return RunOutcome(record.run_id, record.status, created, aggregator.finalize(),
                      output_dir, artifacts, warnings, record.error)


class _Execution:
    """The moving parts of one execution of a run."""

    def __init__(self, prepared: Prepared, host: PluginHost, store: RunStore,
                 record: RunRecord, created: bool, lanes: Lanes, output_dir: Path,
                 live: Aggregator, export_worker_min_tests: int,
                 interrupted: Callable[[], bool], executor: str | None = None) -> None:
        self.prepared, self.host, self.store = prepared, host, store
        self.record, self.created, self.lanes = record, created, lanes
        self.output_dir = output_dir
        self.plan: Plan = prepared.plan
        self.aggregator = live
        self.export_worker_min_tests = export_worker_min_tests
        self._interrupted = interrupted
        self.executor = executor
        self._timed_here = True
        self._kept: list[TestResult] | None = None
        """This execution's stored results, kept when they are all the run has and few
        enough to export in-process: the export then need not read them back."""
        self.warnings: list[str] = [str(w) for w in prepared.fleet.warnings]
        self.warnings.extend(lanes.warnings)
        self._judging = RunEvaluatorContext.for_run(lanes.by_key)
        self._evaluator = EvaluatorCache(host, self._judging)

    async def run(self, cancel: asyncio.Event,
                  extra: Sequence[tuple[str, Subscriber]]) -> RunOutcome:
        self._write_manifest()
        done_keys = self.store.finished_keys(self.plan.run_id)
        self.aggregator.add_many(r for _, r in self.store.iter_results(self.plan.run_id))
        if self.aggregator.count:  # resumed: cost caps count what judging spent before
            self._judging.spent_usd = self.aggregator.snapshot().fleet.evaluation_cost_usd
        todo = [item for item in self.plan.items if item.key not in done_keys]
        opening = self._run_info(RunStatus.RUNNING, self.record, None, self.warnings)
        worker = None
        if len(todo) >= self.export_worker_min_tests:
            worker = await self._start_worker(opening)
        elif not done_keys:
            self._kept = []
        try:
            return await self._run(todo, len(done_keys), opening, worker, cancel, extra)
        finally:
            if worker is not None:
                await worker.aclose()

    async def _run(self, todo: Sequence[WorkItem], done: int, opening: RunInfo,
                   worker: ExportWorker | None, cancel: asyncio.Event,
                   extra: Sequence[tuple[str, Subscriber]]) -> RunOutcome:
        run_id = self.plan.run_id
        run_json = _RunJson(self.output_dir / "run.json", self.record, len(self.plan))
        writer = StoreWriter(self.store)
        bus = self.bus = self._open_bus(writer, run_json, worker, extra)
        bus.publish(lambda seq: RunStarted(run_id, seq, self.plan.fleet_id, len(self.plan),
                                           done, utc_now()))
        run_json.write(self.aggregator.count)
        status, error = await self._execute_watched(todo, cancel)
        await bus.drain()
        await writer.flush()
        run_json.status = status
        summary, artifacts = await self._export(opening, status, error, worker)
        self._record_artifacts(artifacts, run_json, error)
        bus.publish(lambda seq: RunFinished(run_id, seq, status, utc_now(), summary, error))
        await bus.aclose()
        await writer.aclose()
        if bus.failures:
            self.warnings.append(f"observer failures: {dict(bus.failures)}")
        _log.info("run finished", run_id=run_id, status=status.value, tests=len(self.plan),
                  executed=len(todo), error=error)
        return RunOutcome(run_id, status, self.created, summary, self.output_dir,
                          tuple(artifacts), tuple(self.warnings), error)

    def _open_bus(self, writer: StoreWriter, run_json: _RunJson, worker: ExportWorker | None,
                  extra: Sequence[tuple[str, Subscriber]]) -> EventBus:
        """The run's bus: the store first (it tells the export worker what it stored),
        then the live aggregator and run.json, then plugin and caller subscribers."""
        bus = EventBus(self.plan.run_id, first_seq=self.store.last_seq(self.plan.run_id) + 1,
                       high_water=BUS_HIGH_WATER)
        bus.subscribe("store", _StoreFeed(writer, worker.notify if worker else None,
                                          self._kept))
        bus.subscribe("aggregator", _Live(self.aggregator, run_json))
        for name, subscriber in [*self._plugin_subscribers(), *extra]:
            bus.subscribe(name, subscriber)
        return bus

    def _record_artifacts(self, artifacts: Sequence[Path], run_json: _RunJson,
                          error: str | None) -> None:
        """List the artifacts (size, sha256) in the store and in the last run.json; the
        warnings the exporters got too (in the store without the error, stored apart)."""
        described = describe_artifacts(artifacts)
        self.store.set_artifacts(self.plan.run_id, described)
        self.store.set_warnings(self.plan.run_id, self.warnings)
        run_json.write(self.aggregator.count, error, artifacts_json(described),
                       self._final_warnings(error))

    def _write_manifest(self) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        write_atomically(self.output_dir / "manifest.json",
                         manifest_text(self.prepared.fleet.manifest))

    async def _execute_watched(self, todo: Sequence[WorkItem], cancel: asyncio.Event
                               ) -> tuple[RunStatus, str | None]:
        """Execute while the loop-lag monitor watches for a client bottleneck."""
        lag = LoopLagMonitor()
        lag.start()
        try:
            outcome = await self._execute(todo, cancel)
        finally:
            await lag.stop()
        # An executor that measures elsewhere (Ray actors) says so with a false
        # ``timed_in_this_process``: this loop's lag cannot distort its timings.
        if self._timed_here and (lag_warning := lag.warning()) is not None:
            self.warnings.append(lag_warning)
        return outcome

    async def _execute(self, todo: Sequence[WorkItem], cancel: asyncio.Event
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
            manifest=manifest,
        )
        executor = self.host.executors[self.executor or settings.executor].factory(plan)
        self._timed_here = bool(getattr(executor, "timed_in_this_process", True))
        stopped_by = await executor.run()
        if stopped_by is not None:
            return RunStatus.FAILED, f"stopped at the first error (continue_on_failure: " \
                                     f"false): {stopped_by}"
        if cancel.is_set():
            if self._interrupted():
                return RunStatus.INTERRUPTED, "interrupted by a shutdown; starting the run " \
                                              "again resumes it"
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

    def _plugin_subscribers(self) -> Iterable[tuple[str, Subscriber]]:
        for info in self.host.subscribers.infos():
            yield info.name, self.host.subscribers[info.name].factory()

    async def _start_worker(self, opening: RunInfo) -> ExportWorker | None:
        """An export worker for this run, or ``None`` (with a warning) if none starts."""
        try:
            return await ExportWorker.start(self.store.path.parent, self.plan.run_id,
                                            opening, self._exporter_names())
        except ExportWorkerError as exc:
            self.warnings.append(f"the export worker did not start, so the artifacts are "
                                 f"exported after execution: {exc}")
            return None

    async def _export(self, opening: RunInfo, status: RunStatus, error: str | None,
                      worker: ExportWorker | None) -> tuple[Summary, list[Path]]:
        """Write the artifacts: have the worker finish them, or export in-process (also
        when the worker failed). Returns the summary and every artifact's path."""
        final = self._final_run_info(status, error)
        manifest = self.output_dir / "manifest.json"
        if worker is not None:
            try:
                paths = await worker.finish(final)
            except ExportWorkerError as exc:
                warning = f"the export worker failed, so the artifacts were exported " \
                          f"in-process: {exc}"
                _log.warning("export worker failed", run_id=self.plan.run_id, error=str(exc))
                self.warnings.append(warning)
                final = replace(final, warnings=(*final.warnings, warning))
            else:
                # The worker's summary is exact over the same results; so is the live one.
                return self.aggregator.finalize(), [manifest, *paths]
        summary, paths = await asyncio.to_thread(self._export_in_process, opening, final)
        # run.json is the run's status, rewritten until the end, not an artifact.
        return summary, [manifest, *paths]

    def _export_in_process(self, opening: RunInfo, final: RunInfo) -> tuple[Summary, list[Path]]:
        exporters = build_exporters(self.host, self._exporter_names())
        session = ExportSession(self.store, self.plan.run_id, exporters, opening)
        kept = self._kept
        if kept is None or self.bus.failures["store"]:  # read what the store has
            return session.complete(final)
        kept.sort(key=attrgetter("item.index"))
        return session.complete(final, kept)

    def _final_run_info(self, status: RunStatus, error: str | None) -> RunInfo:
        """The run as it ended; the store has every result and its start by now."""
        record = self.store.get_run(self.plan.run_id) or self.record
        return self._run_info(status, record, record.finished_at or utc_now(),
                              self._final_warnings(error))

    def _final_warnings(self, error: str | None) -> list[str]:
        """Every warning of the run, its error last."""
        return [*self.warnings, *([error] if error else [])]

    def _run_info(self, status: RunStatus, record: RunRecord, finished_at: str | None,
                  warnings: Sequence[str]) -> RunInfo:
        return run_info(record, self.prepared.fleet.manifest, self.host, status=status,
                        output_dir=self.output_dir, finished_at=finished_at,
                        warnings=warnings)

    def _exporter_names(self) -> list[str]:
        output = self.prepared.fleet.manifest.output
        return exporter_names(output.formats, output.generate_reports, self.host.exporters)


def run_info(record: RunRecord, manifest: FleetManifest, host: PluginHost, *,
             status: RunStatus, output_dir: Path, finished_at: str | None,
             warnings: Sequence[str]) -> RunInfo:
    """What exporters are told about a run: built the same way by a run and by
    ``fleetbench report``, so regenerated artifacts equal the originals."""
    return RunInfo(
        run_id=record.run_id, fleet_id=record.fleet_id, status=status.value,
        output_dir=output_dir,
        manifest=json.loads(manifest.canonical_json()),
        created_at=record.created_at, started_at=record.started_at,
        finished_at=finished_at, planned=record.planned,
        save_responses=manifest.output.save_responses,
        pricing_version=record.pricing_version,
        repositories={r.repo_id: _repo_metadata(r) for r in manifest.repositories},
        plugins={i.name: i.version for i in host.infos()},
        warnings=tuple(warnings),
    )


def manifest_text(manifest: FleetManifest) -> str:
    """``manifest.json``: the resolved manifest, indented with sorted keys."""
    return json.dumps(json.loads(manifest.canonical_json()), indent=2, sort_keys=True) + "\n"


def artifacts_json(artifacts: Sequence[ArtifactRecord]) -> list[dict[str, Any]]:
    """Artifact records as ``run.json`` lists them."""
    return [{"name": a.name, "size_bytes": a.size_bytes, "sha256": a.sha256,
             "media_type": a.media_type} for a in artifacts]


def _repo_metadata(repo: RepositoryConfig) -> dict[str, str]:
    """A repository's manifest metadata, plus where it was cloned from (if it was)."""
    origin = {"git_url": repo.git_url, "ref": repo.ref}
    return {**repo.metadata, **{k: v for k, v in origin.items() if v}}
