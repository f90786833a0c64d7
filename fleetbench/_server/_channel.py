"""A run's live side for the server: fan-out of its bus events to any number of streams,
and snapshots that line up exactly with the run's ``seq``.

:class:`RunChannel` is one lossless bus subscriber of the run (``execute_run`` calls
it after the store writer and the live aggregator, in seq order). Its ``handle`` only
wraps the batch's results in one :class:`LiveBatch`, shared by every stream's bounded
:class:`Follower`, and returns, so streams never slow the run (and with no stream, it
does nothing). The first stream that sends a batch converts it for the wire and the
others reuse that. A follower that would overflow is marked *lagged* and dropped; its
stream catches up from the run store, which already holds every result the channel has
seen, because the store writer handles (and flushes) each batch before the channel.

A live snapshot must describe exactly the results up to its ``as_of_seq``. The live
aggregator is fed before the channel, so between the two (while a plugin subscriber
works on a batch) it may be one batch ahead; :meth:`RunChannel.snapshot` waits for the
channel to catch up, so counts and ``as_of_seq`` always agree.

The channel also tells a :class:`Recorder` (the server's replay cache) of each window
of seqs the run completes, so that the window's results are encoded for the wire once,
as the run produces them, and kept for replays.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fleetbench._aggregator import Aggregator
from fleetbench._clock import utc_now
from fleetbench.events import Event, RunStarted, TestFinished
from fleetbench.records import RunStatus, Summary, TestResult


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Progress and summaries of a run, covering exactly the results up to ``as_of_seq``."""

    planned: int
    summary: Summary
    as_of_seq: int
    taken_at: str


class LiveBatch:
    """The results of one batch of the run's events, ``(seq, result)`` in seq order
    (possibly none: a status change), shared by every follower; ``encoded`` is where the
    server keeps their wire form once a stream has converted them."""

    __slots__ = ("encoded", "rows")

    def __init__(self, rows: list[tuple[int, TestResult]]) -> None:
        self.rows = rows
        self.encoded: dict[Any, Any] = {}


class Recorder(Protocol):
    """Keeps the complete windows of a run as they are produced (``_replay.ReplayCache``)."""

    @property
    def window(self) -> int:
        """Seqs per window."""
        ...

    def window_complete(self, channel: RunChannel, index: int) -> None:
        """``channel`` handled the events of window ``index`` and beyond (they are
        stored). Must return at once."""
        ...


class Follower:
    """One stream's bounded queue of a run's live batches.

    ``wait`` and ``take`` are split so that a waiting stream can be cancelled at any
    time without losing a batch: nothing leaves the queue until ``take``.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._batches: list[LiveBatch] = []
        self._queued = 0  # results in ``_batches``
        self._signal = asyncio.Event()
        self.lagged = False
        self.closed = False

    def offer(self, batch: LiveBatch) -> None:
        """Queue ``batch``, or mark this follower lagged if its results do not fit."""
        if self.lagged or self.closed:
            return
        if self._queued + len(batch.rows) > self._limit:
            self.lagged = True
            self._batches, self._queued = [], 0  # the stream re-reads them from the store
        else:
            self._batches.append(batch)
            self._queued += len(batch.rows)
        self._signal.set()

    def close(self) -> None:
        """No more events will come (the run ended)."""
        self.closed = True
        self._signal.set()

    async def wait(self, at_most_s: float | None) -> None:
        """Until there is something to take, the follower lagged or closed, or
        ``at_most_s`` seconds passed (``None``: no limit)."""
        if at_most_s is None:
            await self._signal.wait()
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(at_most_s):
                await self._signal.wait()

    def take(self) -> list[LiveBatch]:
        """Every queued batch, oldest first; empties the queue."""
        batches, self._batches, self._queued = self._batches, [], 0
        if not (self.lagged or self.closed):
            self._signal.clear()
        return batches


class RunChannel:
    """The live fan-out of one execution of a run (see the module docstring).

    ``aggregator`` is the live aggregator to hand to ``execute_run`` as ``live``.

    :param follower_limit: events one follower may hold before it counts as lagged.
    :param save_responses: the run's ``output.save_responses`` (how results are encoded).
    :param recorder: told of every complete window.
    """

    def __init__(self, run_id: str, planned: int, *, follower_limit: int,
                 save_responses: bool = True, recorder: Recorder | None = None) -> None:
        self.run_id = run_id
        self.planned = planned
        self.save_responses = save_responses
        self._recorder = recorder
        self._window: int | None = None  # the next window to complete, once known
        self.aggregator = Aggregator()
        self.started = False
        """Whether the run's ``RunStarted`` went by (it is executing, not pending)."""
        self.head_seq = 0
        """The seq of the last event the channel handled."""
        self.closed = False
        self.final: Snapshot | None = None
        self._counted_at_head = 0
        self._followers: list[Follower] = []
        self._follower_limit = follower_limit
        self._tick = asyncio.Event()

    @property
    def status(self) -> RunStatus:
        """PENDING until the run starts executing, RUNNING after (the final status is in
        the store once the channel is closed)."""
        return RunStatus.RUNNING if self.started else RunStatus.PENDING

    @property
    def followers(self) -> int:
        return len(self._followers)

    async def handle(self, events: Sequence[Event]) -> None:
        """Bus subscriber: note the head, fan the batch out, wake snapshot waiters."""
        self.head_seq = events[-1].seq
        self._counted_at_head = self.aggregator.count
        if not self.started and any(isinstance(e, RunStarted) for e in events):
            self.started = True
        if self._followers:
            batch = LiveBatch([(e.seq, e.result) for e in events
                               if isinstance(e, TestFinished)])
            for follower in self._followers:
                follower.offer(batch)
            self._followers = [f for f in self._followers if not f.lagged]
        if self._recorder is not None:
            self._completed(self._recorder, events[0].seq)
        self._wake()

    def _completed(self, recorder: Recorder, first_seq: int) -> None:
        """Tell the recorder of every window the events up to ``head_seq`` completed."""
        size = recorder.window
        if self._window is None:  # the window of this execution's first event
            self._window = (first_seq - 1) // size
        while self.head_seq >= (self._window + 1) * size:
            recorder.window_complete(self, self._window)
            self._window += 1

    def follow(self) -> Follower:
        """A new follower of the events handled from now on (closed if the run ended)."""
        follower = Follower(self._follower_limit)
        if self.closed:
            follower.close()
        else:
            self._followers.append(follower)
        return follower

    def unfollow(self, follower: Follower) -> None:
        with contextlib.suppress(ValueError):
            self._followers.remove(follower)

    def close(self, final: Snapshot | None) -> None:
        """The execution ended and its final status is stored: end every follower."""
        self.closed = True
        self.final = final
        for follower in self._followers:
            follower.close()
        self._followers = []
        self._wake()

    async def snapshot(self) -> Snapshot | None:
        """A live snapshot aligned with ``head_seq``; after the end, the final one
        (``None`` if the execution ended without one)."""
        while not self.closed and self.aggregator.count != self._counted_at_head:
            tick = self._tick
            await tick.wait()
        if self.closed:
            return self.final
        return Snapshot(self.planned, self.aggregator.snapshot(), self.head_seq, utc_now())

    def _wake(self) -> None:
        self._tick.set()
        self._tick = asyncio.Event()
