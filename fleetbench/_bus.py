"""The event bus of one run: stamps sequence numbers and fans events out to observers.

Two kinds of observer:

* **lossless subscribers** (store writer, aggregator, run.json writer, plugin
  subscribers) receive every event, in seq order, in batches. They are called one after
  the other by a single dispatcher task; when they fall behind, the publisher is slowed
  down (:meth:`EventBus.throttle`) rather than events being dropped. Publishers fill the
  next batch while the current one is delivered (a subscriber awaiting I/O, such as the
  store writer's thread, does not stall the run). Batches are gathered: while events
  keep coming, a delivery starts :data:`BATCH_WINDOW_S` after the last one started or
  once :data:`BATCH_TARGET` events are pending, whichever comes first (the first event
  after a quiet spell and :meth:`EventBus.drain` do not wait). Every delivery has a fixed
  cost, a store transaction above all, and a run answering ~1,000 requests/s would
  otherwise deliver every few results; a fast run still delivers every few ms. A
  subscriber that raises is logged and counted and keeps receiving later batches; it
  never stops the run.
* **live feeds** (gRPC streams, progress displays) get a bounded queue. A feed that
  cannot keep up is marked ``lagged`` and receives nothing more; its reader catches up
  from the run store, which holds every event's result by seq.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar, runtime_checkable

import structlog

from fleetbench.events import Event

__all__ = ["BATCH_TARGET", "BATCH_WINDOW_S", "EventBus", "LiveFeed", "Subscriber"]

_log = structlog.get_logger("fleetbench.bus")
_E = TypeVar("_E", bound=Event)

BATCH_WINDOW_S = 0.05
"""The longest a delivery waits for more events after the previous one started, so
also the most a lossless subscriber (the store first) lags behind the run for it."""

BATCH_TARGET = 100
"""Pending events that start a delivery without waiting out :data:`BATCH_WINDOW_S`."""


@runtime_checkable
class Subscriber(Protocol):
    """A lossless observer. ``handle`` gets consecutive events in seq order."""

    async def handle(self, events: Sequence[Event]) -> None: ...


class LiveFeed:
    """A bounded, lossy view of the bus for one live reader."""

    def __init__(self, maxsize: int) -> None:
        self._queue: asyncio.Queue[Sequence[Event]] = asyncio.Queue(maxsize)
        self.lagged = False
        self.closed = False
        self._closed_event = asyncio.Event()

    def offer(self, events: Sequence[Event]) -> None:
        if self.lagged or self.closed:
            return
        try:
            self._queue.put_nowait(events)
        except asyncio.QueueFull:
            self.lagged = True  # the reader must catch up from the store
            self._closed_event.set()

    def close(self) -> None:
        self.closed = True
        self._closed_event.set()

    async def get(self) -> Sequence[Event] | None:
        """The next batch; ``None`` once the bus closed (or the feed lagged) and the
        queue is empty."""
        while True:
            if not self._queue.empty():
                return self._queue.get_nowait()
            if self.closed or self.lagged:
                return None
            getter = asyncio.ensure_future(self._queue.get())
            closer = asyncio.ensure_future(self._closed_event.wait())
            done, _ = await asyncio.wait({getter, closer}, return_when=asyncio.FIRST_COMPLETED)
            closer.cancel()
            if getter in done:
                return getter.result()
            getter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await getter


class EventBus:
    """Seq-stamping fan-out for the events of one run.

    :param first_seq: the seq of the first event published (a resumed run continues
        after the last seq in the store).
    :param high_water: the most events a publisher that awaits :meth:`throttle` lets
        wait for delivery: half in the batch being delivered, half pending for the next
        one, so publishers refill one half while the subscribers work on the other.
    :param window_s: how long after the previous delivery started the next one waits for
        more events while fewer than ``target`` are pending (0: deliver what is pending
        as soon as the previous delivery ended).
    :param target: pending events that start a delivery at once (at most half of
        ``high_water``).
    """

    def __init__(self, run_id: str, *, first_seq: int = 1, high_water: int = 2000,
                 window_s: float = BATCH_WINDOW_S, target: int = BATCH_TARGET) -> None:
        self.run_id = run_id
        self._next_seq = first_seq
        self._batch_limit = max(1, high_water // 2)
        self._target = max(1, min(target, self._batch_limit))
        self._window_s = window_s
        self._delivered_at = -math.inf  # loop time when the last delivery started
        self._hurry = asyncio.Event()  # set by ``target`` events or a drain: deliver now
        self._draining = 0  # drain() calls waiting
        self._taken = asyncio.Event()  # set whenever the dispatcher takes a batch
        self._pending: list[Event] = []
        self._subscribers: list[tuple[str, Subscriber]] = []
        self._feeds: list[LiveFeed] = []
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._dispatcher: asyncio.Task[None] | None = None
        self.failures: Counter[str] = Counter()

    @property
    def last_seq(self) -> int:
        """The seq of the last event published (0 before any)."""
        return self._next_seq - 1

    def subscribe(self, name: str, subscriber: Subscriber) -> None:
        """Add a lossless subscriber (before the first event, to see every event)."""
        self._subscribers.append((name, subscriber))

    def live(self, maxsize: int = 1000) -> LiveFeed:
        """A new bounded feed of batches of events published from now on."""
        feed = LiveFeed(maxsize)
        if self._closing:
            feed.close()
        else:
            self._feeds.append(feed)
        return feed

    def unsubscribe_live(self, feed: LiveFeed) -> None:
        with contextlib.suppress(ValueError):
            self._feeds.remove(feed)
        feed.close()

    def publish(self, make: Callable[[int], _E]) -> _E:
        """Stamp the next seq: ``make(seq)`` builds the event. Returns it."""
        if self._closing:
            raise RuntimeError("the bus is closed")
        event = make(self._next_seq)
        self._next_seq += 1
        self._pending.append(event)
        self._idle.clear()
        self._wakeup.set()
        if len(self._pending) >= self._target:
            self._hurry.set()
        if self._dispatcher is None:
            self._dispatcher = asyncio.get_running_loop().create_task(
                self._dispatch(), name=f"bus-{self.run_id}"
            )
        return event

    async def throttle(self) -> None:
        """Wait while a full batch is pending (backpressure for the publisher): until
        the dispatcher takes it, which it does once the batch before is delivered."""
        while len(self._pending) >= self._batch_limit:
            self._taken.clear()
            await self._taken.wait()

    async def drain(self) -> None:
        """Wait until every published event was delivered to every subscriber."""
        if self._dispatcher is not None and not self._idle.is_set():
            self._draining += 1
            self._hurry.set()
            try:
                await self._idle.wait()
            finally:
                self._draining -= 1

    async def aclose(self) -> None:
        """Deliver what is pending, end the live feeds and stop the dispatcher."""
        await self.drain()
        self._closing = True
        for feed in self._feeds:
            feed.close()
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                await self._gather(self._delivered_at + self._window_s - loop.time())
                batch, self._pending = self._pending, []
                self._taken.set()
                self._delivered_at = loop.time()
                await self._deliver(batch)
            self._idle.set()

    async def _gather(self, wait: float) -> None:
        """Let events join the pending batch for ``wait`` seconds, unless ``target`` are
        pending already or a drain waits for them."""
        if wait <= 0 or self._draining or len(self._pending) >= self._target:
            return
        self._hurry.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._hurry.wait()

    async def _deliver(self, batch: Sequence[Event]) -> None:
        for name, subscriber in self._subscribers:
            try:
                await subscriber.handle(batch)
            except Exception:  # an observer never kills the run
                self.failures[name] += 1
                _log.exception("subscriber failed", subscriber=name, run_id=self.run_id,
                               first_seq=batch[0].seq, events=len(batch))
        for feed in list(self._feeds):
            feed.offer(batch)
