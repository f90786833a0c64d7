"""The Ray actor that executes one shard and hands its results back in batches.

One async actor per shard: its event loop runs the core's local execution loop
(:func:`fleetbench._shard.run_shard`) over the shard's tests with the shard's share of
the limits, building providers and evaluators from the plugins installed on its node
and reading API keys from its own environment. Finished results wait in an outbox until
the driver takes them with :meth:`ShardWorker.next_batch`, which it calls again as soon
as it has taken the previous batch, so results flow continuously while the shard runs.
(Polling rather than a streaming generator: Ray Client, ``ray://``, has no streaming
generators.) Backpressure is end to end: an outbox holds at most ``BATCH_MAX`` results,
and the execution loop waits before it starts more tests until the driver catches up.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

import ray

import fleetbench
from fleetbench._logging import configure_logging
from fleetbench._shard import Shard, run_shard
from fleetbench.records import TestResult
from fleetbench_ray import RayExecutorError

__all__ = ["BATCH_MAX", "ShardBatch", "ShardWorker"]

BATCH_MAX = 1_000
"""Results per batch at most; also how many may wait in an actor's outbox."""
BATCH_LINGER_S = 0.02
"""How long a batch waits for more results once it has one: fewer, larger messages at
high throughput, at the cost of this much delivery latency."""


@dataclass(frozen=True, slots=True)
class ShardBatch:
    """Results of one actor, in completion order. The last batch of a shard has ``done``
    set and carries why the shard stopped early (``continue_on_failure: false``)."""

    results: tuple[TestResult, ...]
    done: bool = False
    stopped_by: str | None = None


class _Outbox:
    """Results waiting for the driver; :meth:`put` waits while it holds ``BATCH_MAX``."""

    def __init__(self) -> None:
        self.results: list[TestResult] = []
        self.arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    async def put(self, result: TestResult) -> None:
        await self._room.wait()
        self.results.append(result)
        self.arrived.set()
        if len(self.results) >= BATCH_MAX:
            self._room.clear()

    def take(self) -> tuple[TestResult, ...]:
        taken, self.results = tuple(self.results), []
        self.arrived.clear()
        self._room.set()
        return taken


class ShardWorker:
    """An async actor (made remote by the driver): :meth:`start` a shard, take its
    results with :meth:`next_batch`, :meth:`cancel` it. A restarted actor (after its
    process died) starts empty."""

    def __init__(self) -> None:
        configure_logging(json_lines=True)  # into Ray's worker log files
        self._cancel = asyncio.Event()
        self._outbox = _Outbox()
        self._task: asyncio.Task[str | None] | None = None

    async def start(self, shard: Shard) -> None:
        """Start executing ``shard`` in the background.

        :raises RuntimeError: a shard is still running here.
        """
        if self._task is not None and not self._task.done():
            raise RuntimeError("this actor is already running a shard")
        self._cancel = asyncio.Event()
        self._outbox = _Outbox()
        self._task = asyncio.create_task(run_shard(shard, self._outbox.put,
                                                   cancel=self._cancel))

    async def next_batch(self) -> ShardBatch:
        """The results finished since the last call, once there is at least one (waiting
        up to ``BATCH_LINGER_S`` more for others); the last batch is ``done``. An error
        of the shard is raised after every result before it was taken."""
        task, outbox = self._task, self._outbox
        if task is None:
            raise RuntimeError("no shard was started on this actor")
        if not outbox.results and not task.done():
            arrived = asyncio.create_task(outbox.arrived.wait())
            await asyncio.wait({arrived, task}, return_when=asyncio.FIRST_COMPLETED)
            arrived.cancel()
        if 0 < len(outbox.results) < BATCH_MAX and not task.done():
            await asyncio.sleep(BATCH_LINGER_S)
        if outbox.results:
            return ShardBatch(outbox.take())
        return ShardBatch((), done=True, stopped_by=_outcome(task))

    async def cancel(self) -> None:
        """Stop the running shard: tests in flight leave no result (as locally)."""
        self._cancel.set()

    async def version(self) -> str:
        """The fleetbench this actor runs (the driver checks it is its own)."""
        return fleetbench.__version__

    async def pid(self) -> int:
        """This actor's process id (tests kill it to simulate a lost node)."""
        return os.getpid()


def _outcome(task: asyncio.Task[str | None]) -> str | None:
    """The shard's outcome; its error as a :class:`RayExecutorError` naming this node
    (fleetbench's own errors do not all survive pickling with their details)."""
    try:
        return task.result()
    except Exception as exc:
        node = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
        raise RayExecutorError(f"on node {node}: {type(exc).__name__}: {exc}") from None
