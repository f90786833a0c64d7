"""One ``StreamResults`` call: replay a run's stored results, then follow it live.

Guarantees (the ``.proto``'s): results arrive in ``seq`` order, each exactly once,
continuing after ``after_seq``; every message has the status and ``last_seq``; the
first and the last message carry a snapshot; the stream ends once the run has ended and
every result was sent.

How, without losing or repeating a result: the stream subscribes a follower to the
run's channel *before* it reads the store. Every result the channel handled before the
subscription (up to the channel's ``head_seq`` then) is in the store (the store writer
comes first on the bus), and every later one reaches the follower; so the stream reads
the store up to that seq, then takes the follower's, and a cursor (the last seq sent)
drops what both sources hold. A follower that lags is replaced the same way: subscribe
a new one, read the store after the cursor up to the head, continue. When the run
ends, its channel closes the follower after the final status is stored; a last read of
the store completes the stream.

Results travel as wire bytes from an :class:`Encoder` (``_convert``'s): live ones
converted once per batch for every stream of the run, stored ones read through the
server's :class:`ReplayCache` (``_replay``), which keeps them encoded.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from fleetbench._server._channel import Follower, LiveBatch, RunChannel, Snapshot
from fleetbench._server._errors import BadRequestError
from fleetbench._server._replay import Encoder, ReplayCache, Row
from fleetbench._server._runs import RunManager
from fleetbench._store import RunRecord
from fleetbench.records import RunStatus

__all__ = ["DEFAULT_MAX_BATCH", "MAX_BATCH", "ResultStream", "StreamMessage", "StreamRequest"]

DEFAULT_MAX_BATCH = 500
MAX_BATCH = 5_000


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """What the caller asked for (see ``StreamResultsRequest``)."""

    run_id: str
    after_seq: int = 0
    replay_only: bool = False
    max_batch: int = 0
    snapshot_interval_ms: int = 0


@dataclass(frozen=True, slots=True)
class StreamMessage:
    """One message of the stream, before conversion to protobuf."""

    results: Sequence[Row]
    snapshot: Snapshot | None
    status: RunStatus
    last_seq: int
    head_seq: int


class ResultStream:
    """The messages of one stream of ``record``'s run; see the module docstring."""

    def __init__(self, manager: RunManager, request: StreamRequest, record: RunRecord,
                 encoder: Encoder, replays: ReplayCache) -> None:
        if min(request.after_seq, request.max_batch, request.snapshot_interval_ms) < 0:
            raise BadRequestError("after_seq, max_batch and snapshot_interval_ms must not "
                                  "be negative")
        self.record = record
        self._manager = manager
        self._encoder = encoder
        self._replays = replays
        self._channel: RunChannel | None = None
        self._run_id = record.run_id
        self._replay_only = request.replay_only
        self._batch = min(request.max_batch or DEFAULT_MAX_BATCH, MAX_BATCH)
        self._interval_s = request.snapshot_interval_ms / 1000
        self._cursor = request.after_seq  # the seq of the last result sent
        self._status = record.status
        self._head = record.last_seq
        self._sent_status: RunStatus | None = None
        self._snapshot_at = time.monotonic()
        self._snapshot_seq = -1

    @property
    def lag(self) -> int:
        """Results (seqs) the run has recorded beyond the last one this stream sent."""
        channel = self._channel
        head = self._head if channel is None else max(self._head, channel.head_seq)
        return max(0, head - self._cursor)

    async def messages(self) -> AsyncIterator[StreamMessage]:
        channel = None if self._replay_only else await self._manager.live_channel(self._run_id)
        if channel is None:  # not executing here, or replay only: stored results, then end
            async for message in self._replay(final=True):
                yield message
            return
        self._channel = channel
        follower = channel.follow()
        # What the follower will not get is in the store: what the channel handled, and,
        # for a resumed run whose channel has handled nothing yet, what earlier sessions
        # stored (the record was read before subscribing, so nothing falls in between).
        subscribed_at = max(channel.head_seq, self.record.last_seq)
        try:
            async for message in self._follow(channel, follower, subscribed_at):
                yield message
        finally:
            channel.unfollow(follower)

    async def _follow(self, channel: RunChannel, follower: Follower,
                      subscribed_at: int) -> AsyncIterator[StreamMessage]:
        """``follower`` gets every event after seq ``subscribed_at``."""
        self._observe(channel)
        async for message in self._replay(final=False, until=subscribed_at):
            yield message
        while True:
            await follower.wait(self._until_snapshot())
            batches = follower.take()
            self._observe(channel)
            if follower.lagged:  # catch up from the store behind a fresh follower
                channel.unfollow(follower)
                follower = channel.follow()
                async for message in self._replay(final=False, until=channel.head_seq):
                    yield message
                continue
            rows = self._fresh(batches)
            if follower.closed:
                async for message in self._end(rows):
                    yield message
                return
            async for message in self._live(rows, channel):
                yield message

    def _fresh(self, batches: Sequence[LiveBatch]) -> list[Row]:
        """The encoded results of ``batches`` after the cursor (a batch may overlap what
        the replay from the store already sent)."""
        rows: list[Row] = []
        for batch in batches:
            if not batch.rows:
                continue
            encoded = self._encoder.live(batch)
            if encoded[0][0] <= self._cursor:
                encoded = [row for row in encoded if row[0] > self._cursor]
            rows.extend(encoded)
        return rows

    def _observe(self, channel: RunChannel) -> None:
        if not channel.closed:
            self._status = channel.status
            self._head = max(self._head, channel.head_seq)

    async def _replay(self, *, final: bool,
                      until: int | None = None) -> AsyncIterator[StreamMessage]:
        """Stored results after the cursor (up to seq ``until``, if given: a follower
        has those after it), in batches, the first message of the stream with a
        snapshot; with ``final``, the last batch goes out as the stream's end."""
        while True:
            # seqs are unique, so no more than ``until - cursor`` results lie up to it
            want = self._batch if until is None else min(self._batch, until - self._cursor)
            rows = await self._stored(self._cursor, want) if want > 0 else []
            short = len(rows) < max(want, 1)
            if final and short:
                async for message in self._end(rows):
                    yield message
                return
            if rows or self._sent_status is None:
                first = self._sent_status is None
                yield self._message(rows, await self._snapshot() if first else None)
            if short:
                return

    async def _live(self, rows: Sequence[Row],
                    channel: RunChannel) -> AsyncIterator[StreamMessage]:
        """Live results in batches, a snapshot on the last one when it is due; a message
        without results for a status change, or for a due snapshot with news."""
        due = self._snapshot_due()
        changed = self._status is not self._sent_status
        if not rows and not changed:
            if not due:
                return
            if channel.head_seq == self._snapshot_seq:  # nothing new: wait another interval
                self._snapshot_at = time.monotonic()
                return
        chunks = [rows[i:i + self._batch] for i in range(0, len(rows), self._batch)] or [[]]
        for index, chunk in enumerate(chunks):
            last = index == len(chunks) - 1
            yield self._message(chunk, await self._snapshot() if due and last else None)

    async def _end(self, rows: Sequence[Row]) -> AsyncIterator[StreamMessage]:
        """Every remaining result, then the last message: final status and snapshot."""
        rest = list(rows)
        while True:
            more = await self._stored(rest[-1][0] if rest else self._cursor, self._batch)
            rest.extend(more)
            if len(more) < self._batch:
                break
        record = await self._manager.record(self._run_id)
        self.record, self._status = record, record.status
        self._head = max(self._head, record.last_seq)
        cut = max(0, len(rest) - self._batch)
        for start in range(0, cut, self._batch):
            yield self._message(rest[start:min(start + self._batch, cut)], None)
        yield self._message(rest[cut:], await self._manager.snapshot(record))

    async def _stored(self, after_seq: int, limit: int) -> list[Row]:
        return await self._replays.rows(self._run_id, self._encoder, after_seq, limit)

    def _message(self, rows: Sequence[Row], snapshot: Snapshot | None) -> StreamMessage:
        if rows:
            self._cursor = rows[-1][0]
        channel = self._channel
        self._head = max(self._head, self._cursor,
                         0 if channel is None or channel.closed else channel.head_seq)
        self._sent_status = self._status
        return StreamMessage(rows, snapshot, self._status, self._cursor, self._head)

    def _until_snapshot(self) -> float | None:
        if not self._interval_s:
            return None
        return max(0.0, self._snapshot_at + self._interval_s - time.monotonic())

    def _snapshot_due(self) -> bool:
        return bool(self._interval_s) and time.monotonic() >= self._snapshot_at + self._interval_s

    async def _snapshot(self) -> Snapshot:
        snapshot = await self._manager.snapshot(self.record)
        self._snapshot_at = time.monotonic()
        self._snapshot_seq = snapshot.as_of_seq
        return snapshot
