"""The run manager: every run the server starts, resumes, cancels or interrupts.

The run store stays the source of truth; the manager only adds what is live in this
process: one :class:`_Execution` per executing run (its cancel event, its channel, its
task running ``execute_run``). Rules:

- **Idempotent start.** A run id that is executing or stored is returned as it is
  (``created`` false); a stored FAILED, CANCELLED or INTERRUPTED run is resumed, which
  executes only the tests without a result (a PENDING or RUNNING one that does not
  execute here belongs to another process sharing the state folder and is left alone).
  The check and the registration of a new execution happen with no ``await`` in
  between, so two concurrent identical starts make one run.
- **Limits.** A new execution beyond ``max_concurrent_runs`` executing runs, or beyond
  ``max_planned_tests`` planned tests across them, is refused.
- **Interrupt, not cancel, on shutdown.** The engine ends a run whose cancel event is
  set as CANCELLED; when the server is the reason, the manager then records it as
  INTERRUPTED so that the next start resumes it. A run cut off harder than that stays
  RUNNING in the store, which ``recover`` treats as interrupted too.
- **Recovery.** At start-up, stale RUNNING/PENDING runs become INTERRUPTED and every
  INTERRUPTED run is planned again from its stored manifest and run key and resumed.

A run's channel hands its complete windows of results to the ``recorder`` (the server's
replay cache), which keeps them encoded for replays.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from fleetbench._bus import Subscriber
from fleetbench._plugins import PluginHost
from fleetbench._prepare import Prepared
from fleetbench._runner import execute_run
from fleetbench._server._channel import Recorder, RunChannel, Snapshot
from fleetbench._server._config import Limits
from fleetbench._server._errors import OverLimitError, RunNotFoundError, ShuttingDownError
from fleetbench._server._intake import Intake, ManifestInput, Validation, warnings_of
from fleetbench._server._summaries import StoredSummaries
from fleetbench._store import RunRecord, RunStore, UnknownRunError
from fleetbench.errors import FleetbenchError, InputError
from fleetbench.records import RunStatus, Summary

__all__ = ["INTERRUPTED_MESSAGE", "RunManager", "RunView"]

_log = structlog.get_logger("fleetbench.server")

INTERRUPTED_MESSAGE = "interrupted by a server shutdown; it resumes when the server starts"
_RESUMABLE = frozenset({RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.INTERRUPTED})


@dataclass(frozen=True, slots=True)
class RunView:
    """A run as the API shows it: the stored record, the status as seen from this
    process, a summary (``None``: only the stored counts are known) and warnings
    (those known so far while it executes here, else the stored ones)."""

    record: RunRecord
    status: RunStatus
    summary: Summary | None
    warnings: tuple[str, ...]


@dataclass(eq=False, slots=True)
class _Execution:
    """One execution of a run in this process."""

    run_id: str
    planned: int
    channel: RunChannel
    warnings: tuple[str, ...]
    run_key: str
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    interrupting: bool = False
    cancel_reason: str = ""
    error: BaseException | None = None


class RunManager:
    """Starts and follows runs over one run store (see the module docstring).

    :param run_subscribers: more lossless bus subscribers of every run (the server's
        metrics), after the run's gRPC streams.
    :param executor: the executor of every run instead of its manifest's.
    :param recorder: told of every complete window of every run's results.
    """

    def __init__(self, store: RunStore, host: PluginHost, intake: Intake, limits: Limits, *,
                 stream_buffer: int, run_subscribers: Sequence[tuple[str, Subscriber]] = (),
                 executor: str | None = None, recorder: Recorder | None = None) -> None:
        self.store = store
        self._executor = executor
        self._stream_buffer = stream_buffer
        self._run_subscribers = tuple(run_subscribers)
        self.host = host
        self.intake = intake
        self.limits = limits
        self._recorder = recorder
        self._executions: dict[str, _Execution] = {}
        self._summaries = StoredSummaries(store)
        self._closing = False
        self._ready = asyncio.Event()  # set once recover() ran: no start races it

    # ── queries ──

    def channel(self, run_id: str) -> RunChannel | None:
        """The live channel of ``run_id`` if it executes in this process."""
        execution = self._executions.get(run_id)
        return None if execution is None else execution.channel

    async def live_channel(self, run_id: str) -> RunChannel | None:
        """Like :meth:`channel`, once recovery has relaunched the interrupted runs."""
        await self._ready.wait()
        return self.channel(run_id)

    async def record(self, run_id: str) -> RunRecord:
        """The stored run. :raises RunNotFoundError: no run has this id."""
        record = await asyncio.to_thread(self.store.get_run, run_id)
        if record is None:
            raise RunNotFoundError(f"no run {run_id!r}")
        return record

    async def view(self, run_id: str, *, summary: bool = True) -> RunView:
        """The run with its live (executing) or exact (stored) summary.

        :param summary: compute the summary; without it only stored counts are known.
        """
        return await self._view(await self.record(run_id), summary=summary)

    async def list_runs(self, *, fleet_id: str | None, statuses: Iterable[RunStatus],
                        page_size: int, page_token: str | None
                        ) -> tuple[list[RunView], str | None]:
        """One page of runs, newest first, with stored counts (no summaries)."""
        records, token = await asyncio.to_thread(
            self.store.list_runs, fleet_id=fleet_id, statuses=list(statuses),
            limit=page_size, after=page_token)
        return [await self._view(r, summary=False) for r in records], token

    async def snapshot(self, record: RunRecord) -> Snapshot:
        """The run's live snapshot while it executes here, else its exact one."""
        channel = self.channel(record.run_id)
        if channel is not None:
            live = await channel.snapshot()
            if live is not None:
                return live
            record = await self.record(record.run_id)
        return await self._summaries.snapshot(record)

    async def _view(self, record: RunRecord, *, summary: bool) -> RunView:
        execution = self._executions.get(record.run_id)
        status = record.status
        if execution is not None and not execution.channel.started \
                and status is not RunStatus.RUNNING:
            status = RunStatus.PENDING  # accepted (or resuming), not yet executing
        stats = (await self.snapshot(record)).summary if summary else None
        warnings = execution.warnings if execution else record.warnings or ()
        return RunView(record, status, stats, warnings)

    # ── validation and start ──

    async def validate(self, given: ManifestInput) -> Validation:
        return await asyncio.to_thread(self.intake.validate, given)

    async def start(self, given: ManifestInput,
                    labels: Mapping[str, str]) -> tuple[RunView, bool]:
        """Start (or resume, or just return) the run of a manifest; see the module rules.

        :raises InputError: the manifest (or the environment it needs) is invalid.
        :raises OutsideDataRootsError, OverLimitError, ShuttingDownError: as named.
        """
        self._refuse_if_closing()
        await self._ready.wait()
        prepared = await asyncio.to_thread(self.intake.prepare, given)
        run_id = prepared.plan.run_id
        self._refuse_if_closing()
        if run_id in self._executions:
            return await self._registered_view(self._executions[run_id]), False
        record = self.store.get_run(run_id)  # no await until the execution is registered
        if record is not None and record.status not in _RESUMABLE:
            # COMPLETED; or PENDING/RUNNING in another process sharing the state folder
            # (recovery turned this process's own leftovers into INTERRUPTED).
            return await self._view(record, summary=True), False
        self._check_limits(len(prepared.plan))
        execution = self._launch(prepared, labels, given.run_key)
        return await self._registered_view(execution), record is None

    def _refuse_if_closing(self) -> None:
        if self._closing:
            raise ShuttingDownError("the server is shutting down")

    def _check_limits(self, planned: int) -> None:
        limits = self.limits
        if len(self._executions) >= limits.max_concurrent_runs:
            raise OverLimitError(f"{len(self._executions)} runs are executing, the "
                                 f"server's limit is {limits.max_concurrent_runs}")
        busy = sum(e.planned for e in self._executions.values())
        if busy + planned > limits.max_planned_tests:
            raise OverLimitError(
                f"the run plans {planned} tests and {busy} are planned by executing runs; "
                f"the server's limit is {limits.max_planned_tests} planned tests")

    def _launch(self, prepared: Prepared, labels: Mapping[str, str],
                run_key: str) -> _Execution:
        plan = prepared.plan
        channel = RunChannel(plan.run_id, len(plan), follower_limit=self._stream_buffer,
                             save_responses=prepared.fleet.manifest.output.save_responses,
                             recorder=self._recorder)
        execution = _Execution(plan.run_id, len(plan), channel, warnings_of(prepared),
                               run_key)
        self._executions[plan.run_id] = execution
        execution.task = asyncio.create_task(self._drive(execution, prepared, labels),
                                             name=f"run-{plan.run_id}")
        return execution

    async def _registered_view(self, execution: _Execution) -> RunView:
        """The run once ``execute_run`` has stored it (it does so before its first
        ``await``), or the input error that stopped it before it started."""
        task = execution.task
        assert task is not None
        while True:  # the engine offers no event for this; it takes one turn of the loop
            stored = self.store.get_run(execution.run_id)
            if stored is not None or task.done():
                break
            await asyncio.sleep(0)
        error = execution.error
        if error is not None and (isinstance(error, InputError) or stored is None):
            raise error
        return await self.view(execution.run_id, summary=False)

    # ── execution ──

    async def _drive(self, execution: _Execution, prepared: Prepared,
                     labels: Mapping[str, str]) -> None:
        """Run ``execute_run`` and settle the stored status however it ends."""
        run_id = execution.run_id
        log = _log.bind(run_id=run_id)
        final: Snapshot | None = None
        ended = False
        try:
            outcome = await execute_run(
                prepared, host=self.host, store=self.store, labels=labels,
                cancel=execution.cancel,
                subscribers=[("grpc-streams", execution.channel), *self._run_subscribers],
                live=execution.channel.aggregator,
                interrupted=lambda: execution.interrupting, executor=self._executor,
                run_key=execution.run_key)
            ended = True
            execution.warnings = outcome.warnings
            record = await asyncio.to_thread(self._settle, execution, outcome.status)
            self._summaries.remember(record, outcome.summary)
            final = Snapshot(record.planned, outcome.summary, record.last_seq,
                             record.finished_at or "")
            log.info("run ended", status=record.status.value, done=record.done,
                     planned=record.planned)
        except asyncio.CancelledError:  # cut off by a shutdown that ran out of time
            if not ended:
                self._mark(run_id, RunStatus.INTERRUPTED, INTERRUPTED_MESSAGE)
            raise
        except InputError as exc:
            execution.error = exc
            self._mark(run_id, RunStatus.FAILED, str(exc))
            log.warning("run refused by the engine", error=str(exc))
        except Exception as exc:
            execution.error = exc
            self._mark(run_id, RunStatus.FAILED, _short_error(exc))
            log.exception("run failed")
        finally:
            execution.channel.close(final)
            if self._executions.get(run_id) is execution:
                del self._executions[run_id]

    def _settle(self, execution: _Execution, status: RunStatus) -> RunRecord:
        """The final record after the engine ended the run (a server shutdown already
        ended it INTERRUPTED); a caller's cancel reason replaces the engine's message."""
        run_id = execution.run_id
        if status is RunStatus.CANCELLED and execution.cancel_reason:
            return self.store.set_status(run_id, RunStatus.CANCELLED,
                                         error=execution.cancel_reason)
        record = self.store.get_run(run_id)
        assert record is not None
        return record

    def _mark(self, run_id: str, status: RunStatus, error: str) -> None:
        """Record how an execution ended abnormally (nothing if it never got stored)."""
        try:
            self.store.set_status(run_id, status, error=error)
        except UnknownRunError:
            pass
        except Exception:  # the store itself failed: the next start's recovery sees RUNNING
            _log.exception("could not record the run's status", run_id=run_id,
                           status=status.value)

    # ── cancel ──

    async def cancel(self, run_id: str, reason: str) -> RunView:
        """Cancel an executing run and wait until it has ended (completed results are
        kept, partial artifacts written); a run that is not executing is returned as
        it is."""
        await self._ready.wait()
        execution = self._executions.get(run_id)
        if execution is None:
            return await self.view(run_id)
        execution.cancel_reason = reason
        execution.cancel.set()
        assert execution.task is not None
        await asyncio.wait({execution.task})  # never raises, whatever ended the task
        return await self.view(run_id)

    # ── recovery and shutdown ──

    async def recover(self) -> list[str]:
        """Resume every interrupted run (see the module docstring); return their ids."""
        try:
            await asyncio.to_thread(self.store.mark_running_as_interrupted)
            resumed = []
            token: str | None = None
            while True:
                records, token = await asyncio.to_thread(
                    self.store.list_runs, statuses=[RunStatus.INTERRUPTED], limit=100,
                    after=token)
                for record in records:
                    if await self._resume(record):
                        resumed.append(record.run_id)
                if token is None:
                    return resumed
        finally:
            self._ready.set()

    async def _resume(self, record: RunRecord) -> bool:
        run_id = record.run_id
        log = _log.bind(run_id=run_id)
        if run_id in self._executions:
            return False
        run_key = record.run_key
        try:
            prepared = await asyncio.to_thread(
                self.intake.prepare_stored, record.manifest_json,
                Path(record.base_dir), run_key or "")
        except (FleetbenchError, OSError) as exc:
            log.warning("interrupted run not resumed", error=str(exc))
            return False
        if prepared.plan.run_id != run_id:
            if run_key is not None:  # its datasets changed since it started
                self._mark(run_id, RunStatus.FAILED, "cannot resume: the manifest's datasets "
                           "changed since the run started (the run id no longer matches)")
            log.warning("interrupted run not resumed: its inputs changed or its run key "
                        "is not recorded", planned_run_id=prepared.plan.run_id)
            return False
        self._launch(prepared, record.labels, run_key or "")
        log.info("resuming interrupted run", done=record.done, planned=record.planned)
        return True

    async def shutdown(self, timeout_s: float) -> None:
        """Refuse new starts, interrupt every execution and wait (at most ``timeout_s``,
        then cut them off) until each has recorded INTERRUPTED and closed its streams."""
        self._closing = True
        executions = list(self._executions.values())
        for execution in executions:
            execution.interrupting = True
            execution.cancel.set()
        tasks = [e.task for e in executions if e.task is not None]
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=timeout_s)
        for task in late:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _short_error(exc: BaseException) -> str:
    text = f"internal error: {type(exc).__name__}: {exc}"
    return text if len(text) <= 300 else text[:297] + "..."


