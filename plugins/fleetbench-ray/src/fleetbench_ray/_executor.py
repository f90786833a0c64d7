"""The ``ray`` executor: one run sharded over Ray async actors (driver side).

The driver (the process running ``fleetbench run`` or ``fleetbench serve``) keeps the
bus, the run store, the aggregator, the exporters and the gRPC streams. It splits the
tests among actors (:mod:`fleetbench_ray._split`), starts one actor per shard, and
feeds every batch it takes from an actor (:meth:`ShardWorker.next_batch`, asked again as
soon as a batch is in) into the plan's ``on_result``, so everything downstream sees the
same results as with the local executor, while the run goes on.

Cancel, stop and failure:

- The plan's cancel event (Ctrl-C, ``CancelRun``, a server shutdown) and the first
  error of a run with ``continue_on_failure: false`` ask every actor to stop; tests in
  flight leave no result, exactly as locally. Actors that do not stop within
  ``CANCEL_GRACE_S`` are killed; every actor is killed when the run ends.
- An actor whose process dies (a node lost) is restarted by Ray up to ``MAX_RESTARTS``
  times and given the tests of its shard that have no result yet; past that the run
  fails with :class:`RayExecutorError` and, as any run, resumes when started again.
- If the driver dies, Ray ends its actors (they are owned by the driver's job); the run
  store has every result delivered so far, and starting the run again resumes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import ray
import structlog
from ray.exceptions import RayActorError, RayTaskError

import fleetbench
from fleetbench._executor import ExecutionPlan
from fleetbench._shard import Shard
from fleetbench_ray import RayExecutorError
from fleetbench_ray._cluster import cluster_cpus, connect
from fleetbench_ray._split import split
from fleetbench_ray._worker import ShardBatch, ShardWorker

__all__ = ["ACTOR_NAMESPACE", "CANCEL_GRACE_S", "MAX_RESTARTS", "RayExecutor"]

_log = structlog.get_logger("fleetbench.ray")

_Actor = Any
"""A ``ray.actor.ActorHandle`` of :class:`ShardWorker`; Ray's stubs do not type the
methods of a handle (they come out as ``Never``), so handles are ``Any`` here."""

ACTOR_NAMESPACE = "fleetbench"
"""Ray namespace of the actors, named ``{fleet_id}-{6 hex}-{shard}`` within it."""
MAX_RESTARTS = 2
"""How often one shard's actor may die and be restarted before the run fails."""
CANCEL_GRACE_S = 30.0
"""How long stopping actors may take before they are killed."""


class RayExecutor:
    """Runs an :class:`~fleetbench._executor.ExecutionPlan` on Ray actors; see the module
    docstring. The cluster and the number of actors come from the plan's manifest
    (``global_settings.ray_address``, ``ray_actors``)."""

    timed_in_this_process = False
    """Timings are measured in the actors: the driver's event-loop lag never distorts
    them (the run engine then does not warn about it)."""

    def __init__(self, plan: ExecutionPlan) -> None:
        self.plan = plan
        self.stopped_by: str | None = None
        self._stopping = asyncio.Event()

    async def run(self) -> str | None:
        """Run every test of the plan on the cluster; return why the run stopped early
        (``continue_on_failure: false``), else ``None``.

        :raises RayExecutorError: the cluster cannot be reached, runs another fleetbench,
            or an actor died more than ``MAX_RESTARTS`` times.
        """
        plan = self.plan
        if not plan.items or plan.cancel.is_set():
            return None
        whole = Shard.of_plan(plan)
        assert plan.manifest is not None  # of_plan checked it
        settings = plan.manifest.global_settings
        await asyncio.to_thread(connect, settings.ray_address)
        cpus = await asyncio.to_thread(cluster_cpus)
        shards = split(whole, settings.ray_actors or cpus)
        name = f"{plan.manifest.fleet_id}-{secrets.token_hex(3)}"
        actors = await asyncio.to_thread(_start_actors, name, len(shards),
                                         min(1.0, cpus / len(shards)))
        _log.info("ray run started", actors=len(actors), name=name,
                  tests=[len(s.items) for s in shards])
        try:
            await _check_nodes(actors)
            return await self._drive_all(actors, shards)
        finally:
            for actor in actors:
                with contextlib.suppress(Exception):  # the cluster may be gone
                    ray.kill(actor, no_restart=True)

    async def _drive_all(self, actors: Sequence[_Actor], shards: Sequence[Shard]
                         ) -> str | None:
        drivers = [asyncio.create_task(self._drive(n, actor, shard))
                   for n, (actor, shard) in enumerate(zip(actors, shards, strict=True))]
        stopper = asyncio.create_task(self._stop_when_asked(actors, drivers))
        try:
            for finished in asyncio.as_completed(drivers):
                stopped_by = await finished
                if stopped_by is not None and self.stopped_by is None:
                    self.stopped_by = stopped_by
                    self._stopping.set()
        finally:
            for task in [stopper, *drivers]:
                task.cancel()
            await asyncio.gather(stopper, *drivers, return_exceptions=True)
        return self.stopped_by

    async def _drive(self, index: int, actor: _Actor, shard: Shard) -> str | None:
        """Feed one actor's results to the plan; start the rest of its shard again when
        its process died and Ray restarted it."""
        delivered: set[str] = set()
        remaining = shard
        for restart in range(MAX_RESTARTS + 1):
            try:
                await actor.start.remote(remaining)
                while True:
                    batch: ShardBatch = await actor.next_batch.remote()
                    for result in batch.results:
                        delivered.add(result.item.key)
                        await self.plan.on_result(result)
                    if batch.done:
                        return batch.stopped_by
            except RayActorError as exc:
                if self._stopping.is_set():
                    return None
                _log.warning("ray actor died; restarting its shard", actor=index,
                             restart=restart + 1, error=str(exc))
                last_error: Exception = exc
            except RayTaskError as exc:
                cause = exc.cause if isinstance(exc.cause, RayExecutorError) else exc
                raise RayExecutorError(f"actor {index} failed {cause}") from None
            remaining = replace(shard, items=tuple(
                item for item in shard.items if item.key not in delivered))
            if not remaining.items:
                return None
        raise RayExecutorError(f"actor {index} died {MAX_RESTARTS + 1} times; the run "
                               f"resumes when started again: {last_error}")

    async def _stop_when_asked(self, actors: Sequence[_Actor],
                               drivers: Sequence[asyncio.Task[Any]]) -> None:
        """On cancel (or the first error that stops the run) ask every actor to stop;
        cut off the ones that do not stop within the grace period."""
        cancelled = asyncio.create_task(self.plan.cancel.wait())
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({cancelled, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            cancelled.cancel()
            stopping.cancel()
        self._stopping.set()
        await asyncio.gather(*(actor.cancel.remote() for actor in actors),
                             return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CANCEL_GRACE_S):
                await asyncio.gather(*drivers, return_exceptions=True)
                return
        _log.warning("ray actors did not stop in time; killing them",
                     grace_s=CANCEL_GRACE_S)
        for task in drivers:
            task.cancel()


def _start_actors(name: str, count: int, cpus: float) -> list[_Actor]:
    """``count`` actors named ``{name}-{n}``, spread over the nodes. Blocking (each
    creation is a call to the GCS): run it off the event loop."""
    worker = ray.remote(ShardWorker)
    return [worker.options(name=f"{name}-{n}", namespace=ACTOR_NAMESPACE, num_cpus=cpus,
                           max_restarts=MAX_RESTARTS, max_task_retries=0,
                           scheduling_strategy="SPREAD").remote()
            for n in range(count)]


async def _check_nodes(actors: Sequence[_Actor]) -> None:
    """Every actor runs the driver's fleetbench (results and shards are pickled
    records, so both sides must agree on them)."""
    versions: list[str] = await asyncio.gather(*(actor.version.remote() for actor in actors))
    wrong = {v for v in versions if v != fleetbench.__version__}
    if wrong:
        raise RayExecutorError(f"the Ray nodes run fleetbench {', '.join(sorted(wrong))}, "
                               f"the driver {fleetbench.__version__}: install the same "
                               "fleetbench and plugins on every node")
