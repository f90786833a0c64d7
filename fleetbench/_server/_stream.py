"""One ``StreamResults`` call: replay a run's stored results, then follow it live.

Guarantees (the ``.proto``'s): results arrive in ``seq`` order, each exactly once,
continuing after ``after_seq``; every message has the status and ``last_seq``; the
first and the last message carry a snapshot; the stream ends once the run has ended and
every result was sent.

How, without losing or repeating a result: the stream subscribes a follower to the
run's channel *before* it reads the store. Every result the channel handled before the
subscription is then in the store (the store writer comes first on the bus), and every
later one reaches the follower; a cursor (the last seq sent) drops what both sources
hold. A follower that lags is replaced the same way: subscribe a new one, read the
store after the cursor, continue. When the run ends, its channel closes the follower
after the final status is stored; a last read of the store completes the stream.

Results travel as wire bytes from an :class:`Encoder` (``_convert``'s): stored ones are
read and converted in a worker thread straight from their JSON, live ones converted
once per batch for every stream of the run. Stored ones go through the server's
:class:`ReplayCache`, so streams catching up on the same run (fifty clients attaching
at once) read and convert each stored result once between them, not once each.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import AsyncIterator, Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol

from fleetbench._server._channel import Follower, LiveBatch, RunChannel, Snapshot
from fleetbench._server._errors import BadRequestError
from fleetbench._server._runs import RunManager
from fleetbench._store import RunRecord, RunStore
from fleetbench.records import RunStatus

DEFAULT_MAX_BATCH = 500
MAX_BATCH = 5_000

Row = tuple[int, bytes]
"""A result's seq and the result encoded for the wire."""


class Encoder(Protocol):
    """Converts results for the wire (``_convert.ResultEncoder``); encoders with equal
    ``cache_key`` give equal bytes (they may share cached conversions)."""

    @property
    def cache_key(self) -> Hashable: ...

    def stored(self, rows: list[tuple[int, bytes]]) -> list[Row]:
        """Stored ``(seq, result JSON)`` rows; called in a worker thread."""
        ...

    def live(self, batch: LiveBatch) -> list[Row]:
        """A live batch's results (converted once, whoever asks)."""
        ...


_WindowKey = tuple[str, Hashable, int]


def _seq(row: Row) -> int:
    return row[0]


class ReplayCache:
    """Stored results by windows of seqs, converted once and shared by every stream that
    replays them.

    Window ``k`` holds the results with ``k * window < seq <= (k + 1) * window``. Only
    complete windows are kept: read once the run's stored ``last_seq`` has passed the
    window's end (the store writer stores results in seq order, and a resumed run
    continues after ``last_seq``, so nothing can arrive in them any more). Streams that
    ask for a window being read wait for that read instead of starting their own, and
    the window after the one asked for is read ahead (in a worker thread, while the
    stream sends). The least recently used windows go beyond ``max_bytes`` of encoded
    results.
    """

    def __init__(self, store: RunStore, *, window: int = 1000,
                 max_bytes: int = 64 * 1024 * 1024) -> None:
        self._store = store
        self._window = window
        self._max_bytes = max_bytes
        self._windows: OrderedDict[_WindowKey, tuple[list[Row], int]] = OrderedDict()
        self._loading: dict[_WindowKey, asyncio.Task[list[Row] | None]] = {}
        self.bytes = 0
        """Encoded bytes held."""

    async def rows(self, run_id: str, encoder: Encoder, after_seq: int,
                   limit: int) -> list[Row]:
        """Up to ``limit`` stored results with ``seq > after_seq``, in seq order; fewer
        when the stored ones ran out."""
        out: list[Row] = []
        cursor = after_seq
        while len(out) < limit:
            index = cursor // self._window  # the window that holds seq cursor + 1
            window = await self._complete_window(run_id, encoder, index)
            if window is None:  # the run's head: read what is there, uncached
                out.extend(await asyncio.to_thread(self._read, run_id, encoder, cursor,
                                                   limit - len(out)))
                return out
            start = bisect_right(window, cursor, key=_seq) if window else 0
            out.extend(window[start:start + limit - len(out)])
            cursor = (index + 1) * self._window
        return out

    async def _complete_window(self, run_id: str, encoder: Encoder,
                               index: int) -> list[Row] | None:
        key = (run_id, encoder.cache_key, index)
        cached = self._windows.get(key)
        if cached is not None:
            self._windows.move_to_end(key)
            rows: list[Row] | None = cached[0]
        else:  # a stream that goes away leaves the read to the others
            rows = await asyncio.shield(self._loader(key, encoder))
        if rows is not None and (run_id, encoder.cache_key, index + 1) not in self._windows:
            self._loader((run_id, encoder.cache_key, index + 1), encoder)  # read ahead
        return rows

    def _loader(self, key: _WindowKey, encoder: Encoder) -> asyncio.Task[list[Row] | None]:
        """The read of a window: the one under way, or a new one."""
        task = self._loading.get(key)
        if task is None:
            run_id, _, index = key
            task = asyncio.create_task(asyncio.to_thread(self._load, run_id, encoder, index))
            self._loading[key] = task
            task.add_done_callback(lambda done: self._loaded(key, done))
        return task

    def _load(self, run_id: str, encoder: Encoder, index: int) -> list[Row] | None:
        start, end = index * self._window, (index + 1) * self._window
        if self._store.last_seq(run_id) < end:
            return None
        rows = self._store.result_json_rows(run_id, after_seq=start, limit=self._window)
        return encoder.stored([row for row in rows if row[0] <= end])

    def _read(self, run_id: str, encoder: Encoder, after_seq: int, limit: int) -> list[Row]:
        return encoder.stored(self._store.result_json_rows(run_id, after_seq=after_seq,
                                                           limit=limit))

    def _loaded(self, key: _WindowKey, task: asyncio.Task[list[Row] | None]) -> None:
        del self._loading[key]
        if task.cancelled() or task.exception() is not None:
            return  # the waiting streams get the error
        rows = task.result()
        if rows is None:
            return
        size = sum(len(data) for _, data in rows)
        self._windows[key] = (rows, size)
        self.bytes += size
        while self.bytes > self._max_bytes:
            _, (_, dropped) = self._windows.popitem(last=False)
            self.bytes -= dropped


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
        try:
            async for message in self._follow(channel, follower):
                yield message
        finally:
            channel.unfollow(follower)

    async def _follow(self, channel: RunChannel,
                      follower: Follower) -> AsyncIterator[StreamMessage]:
        self._observe(channel)
        async for message in self._replay(final=False):
            yield message
        while True:
            await follower.wait(self._until_snapshot())
            batches = follower.take()
            self._observe(channel)
            if follower.lagged:  # catch up from the store behind a fresh follower
                channel.unfollow(follower)
                follower = channel.follow()
                async for message in self._replay(final=False):
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

    async def _replay(self, *, final: bool) -> AsyncIterator[StreamMessage]:
        """Stored results after the cursor, in batches, the first message of the stream
        with a snapshot; with ``final``, the last batch goes out as the stream's end."""
        while True:
            rows = await self._stored(self._cursor)
            short = len(rows) < self._batch
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
            more = await self._stored(rest[-1][0] if rest else self._cursor)
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

    async def _stored(self, after_seq: int) -> list[Row]:
        return await self._replays.rows(self._run_id, self._encoder, after_seq, self._batch)

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
