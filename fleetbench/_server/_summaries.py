"""Exact summaries of runs that are not executing, computed from the run store.

A run that is not executing has no live aggregator, so its summary (``GetRun``, the
last message of a stream) is recomputed from its stored results. That reads and
aggregates every result, so it runs in a worker thread, concurrent requests for the
same run share one computation, and results are cached per ``(run_id, done,
last_seq)``: a run that changes (resumes, gets results) gets a new entry.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from fleetbench._aggregator import Aggregator
from fleetbench._clock import utc_now
from fleetbench._server._channel import Snapshot
from fleetbench._store import RunRecord, RunStore
from fleetbench.records import Summary

_Key = tuple[str, int, int]


class StoredSummaries:
    """A small cache of exact summaries of stored runs."""

    def __init__(self, store: RunStore, size: int = 64) -> None:
        self._store = store
        self._size = size
        self._entries: OrderedDict[_Key, asyncio.Future[Summary]] = OrderedDict()

    def remember(self, record: RunRecord, summary: Summary) -> None:
        """Keep ``summary`` (e.g. the final one of an execution) for ``record``."""
        future: asyncio.Future[Summary] = asyncio.get_running_loop().create_future()
        future.set_result(summary)
        self._put(_key(record), future)

    async def snapshot(self, record: RunRecord) -> Snapshot:
        """The exact snapshot of ``record``'s stored results."""
        key = _key(record)
        future = self._entries.get(key)
        if future is None or (future.done() and future.exception() is not None):
            future = asyncio.ensure_future(asyncio.to_thread(self._compute, record.run_id))
            self._put(key, future)
        else:
            self._entries.move_to_end(key)
        summary = await asyncio.shield(future)
        return Snapshot(record.planned, summary, record.last_seq, utc_now())

    def _compute(self, run_id: str) -> Summary:
        aggregator = Aggregator()
        aggregator.add_many(result for _, result in self._store.iter_results(run_id))
        return aggregator.finalize()

    def _put(self, key: _Key, future: asyncio.Future[Summary]) -> None:
        self._entries[key] = future
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)


def _key(record: RunRecord) -> _Key:
    return record.run_id, record.done, record.last_seq
