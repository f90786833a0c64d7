"""Stored results encoded for the wire, by windows of seqs: what streams replay.

A stream replaying a run would otherwise convert each stored result from its JSON
(≈ 10 µs a result, which held a first replay near 100,000 results/s). The
:class:`ReplayCache` converts each complete window once and keeps it, in memory (shared
by every stream: fifty clients attaching at once read each window once between them)
and in the server's own file (``_encoded``: a replay after a restart reads ready
bytes). The windows of a run the server executes are converted as they complete, in a
worker process, so that the runs' event loop does not pay for it.
"""

from __future__ import annotations

import asyncio
import importlib
import multiprocessing
import os
import threading
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from multiprocessing.connection import wait
from pathlib import Path
from typing import Protocol

import structlog

from fleetbench._server._channel import LiveBatch, RunChannel
from fleetbench._server._encoded import EncodedWindows, WindowKey
from fleetbench._store import RunStore

__all__ = ["Encoder", "ReplayCache", "Row"]

_log = structlog.get_logger("fleetbench.server")

WORKER_NICENESS = 19
"""The conversion worker's niceness where Linux's idle scheduling class is not
available: it is to work on what CPU the runs leave (it converts windows for later
replays; no stream waits for it)."""

Row = tuple[int, bytes]
"""A result's seq and the result encoded for the wire."""


class Encoder(Protocol):
    """Converts results for the wire (``_convert.ResultEncoder``); encoders of equal
    ``variant`` give equal messages (they share kept conversions)."""

    @property
    def variant(self) -> str: ...

    def stored(self, rows: list[tuple[int, bytes]]) -> list[Row]:
        """Stored ``(seq, result JSON)`` rows; called in a worker thread or process
        (encoders pickle)."""
        ...

    def live(self, batch: LiveBatch) -> list[Row]:
        """A live batch's results (converted once, whoever asks)."""
        ...


_WindowKey = tuple[str, str, int]
_Loaded = tuple[list[Row], WindowKey | None]
"""A window's rows, and its key in ``kept`` if it still has to be kept."""


def _seq(row: Row) -> int:
    return row[0]


class ReplayCache:
    """Stored results by windows of seqs, encoded once and shared by every stream that
    replays them; the :class:`~fleetbench._server._channel.Recorder` of the runs the
    server executes, so that their windows are encoded as they complete.

    Window ``k`` holds the results with ``k * window < seq <= (k + 1) * window``. Only
    complete windows are kept: once the run's stored ``last_seq`` has passed the
    window's end (the store writer stores results in seq order, and a resumed run
    continues after ``last_seq``, so nothing can arrive in them any more). A stream
    reads a window from memory (the least recently used go beyond ``max_bytes`` of
    encoded results), else from ``kept`` (the server's file, which outlives restarts),
    else converts it from the run store's JSON in a thread and keeps it. Streams that
    ask for a window being read wait for that read instead of starting their own, and
    the window after the one asked for is read ahead (while the stream sends).

    The windows a run executing here completes are converted as it goes, in a worker
    process if there is one (a conversion costs ≈ 10 µs a result: another core does it
    rather than this process, whose event loop executes the runs), and go to memory and
    ``kept``. A stream never waits for that: one that needs such a window first reads
    it itself (and the worker's copy is dropped).

    :param encoder_for: the encoder of a run by its ``save_responses``, for the windows
        completed live (without it they are converted when a stream asks).
    :param worker: convert the windows completed live in a worker process (spawned on
        first use, at a lower priority than the server's); a worker that dies is not
        replaced: those windows are then converted when a stream asks. Needs ``kept``
        (the worker writes the windows there).
    """

    def __init__(self, store: RunStore, *, kept: EncodedWindows | None = None,
                 encoder_for: Callable[[bool], Encoder] | None = None, worker: bool = False,
                 window: int = 1000, max_bytes: int = 64 * 1024 * 1024) -> None:
        if worker and kept is None:
            raise ValueError("a worker process needs the file of kept windows")
        self._store = store
        self._kept = kept
        self._encoder_for = encoder_for
        self._pool = (ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn"),
                                          initializer=_worker_init) if worker else None)
        self._window = window
        self._max_bytes = max_bytes
        self._windows: OrderedDict[_WindowKey, tuple[list[Row], int]] = OrderedDict()
        self._loading: dict[_WindowKey, asyncio.Task[_Loaded | None]] = {}
        self._recording: dict[_WindowKey, asyncio.Task[None]] = {}
        self._keeping: set[asyncio.Task[None]] = set()
        self.bytes = 0
        """Encoded bytes held."""

    @property
    def window(self) -> int:
        """Seqs per window."""
        return self._window

    def start_worker(self) -> None:
        """Start the worker process now (it is started on first use otherwise), so that
        the first run does not share the machine with its start-up."""
        if self._pool is not None:
            self._pool.submit(_warm_up)

    async def aclose(self, timeout_s: float = 10.0) -> None:
        """Finish the windows being read, and those being converted for the recorder
        within ``timeout_s`` (the rest are dropped: a stream converts them when it needs
        them), then end the worker process."""
        recording = set(self._recording.values())
        if recording:
            _, late = await asyncio.wait(recording, timeout=timeout_s)
            for task in late:
                task.cancel()
        await asyncio.gather(*self._loading.values(), *recording, return_exceptions=True)
        await asyncio.gather(*self._keeping, return_exceptions=True)
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, cancel_futures=True)

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

    def window_complete(self, channel: RunChannel, index: int) -> None:
        """Convert (and keep) a window that a run executing here completed."""
        if self._encoder_for is None:
            return
        encoder = self._encoder_for(channel.save_responses)
        key = (channel.run_id, encoder.variant, index)
        if all(key not in held for held in (self._windows, self._loading, self._recording)):
            task = self._recording[key] = asyncio.create_task(self._record(key, encoder))
            task.add_done_callback(lambda done: self._recorded(key, done))

    def _recorded(self, key: _WindowKey, task: asyncio.Task[None]) -> None:
        if self._recording.get(key) is task:
            del self._recording[key]

    async def _record(self, key: _WindowKey, encoder: Encoder) -> None:
        """:meth:`window_complete`'s conversion; a failure is logged (a stream reads the
        window itself when it needs it)."""
        try:
            found = await asyncio.to_thread(self._find, key)
            if found is None or found[1] is not None:
                return  # not complete after all (the store decides), or kept already
            window = found[0]
            if self._pool is None:
                rows = await asyncio.to_thread(convert_window, self._store, encoder, window)
                self._keep(window, rows)
            else:
                rows = await asyncio.get_running_loop().run_in_executor(
                    self._pool, _convert_in_worker, self._store.path.parent, encoder, window)
        except BrokenProcessPool:
            _log.warning("the conversion worker died; windows are converted when asked")
            pool, self._pool = self._pool, None
            if pool is not None:
                pool.shutdown(wait=False)
            return
        except Exception:
            _log.exception("could not convert a window of results", run_id=key[0],
                           window=key[2])
            return
        if key not in self._windows:
            self._cache(key, rows)

    async def _complete_window(self, run_id: str, encoder: Encoder,
                               index: int) -> list[Row] | None:
        key = (run_id, encoder.variant, index)
        cached = self._windows.get(key)
        if cached is not None:
            self._windows.move_to_end(key)
            rows: list[Row] | None = cached[0]
        else:  # a stream that goes away leaves the read to the others
            loaded = await asyncio.shield(self._loader(key, encoder))
            rows = None if loaded is None else loaded[0]
        ahead = (run_id, encoder.variant, index + 1)
        if rows is not None and ahead not in self._windows:
            self._loader(ahead, encoder)  # read ahead
        return rows

    def _loader(self, key: _WindowKey, encoder: Encoder) -> asyncio.Task[_Loaded | None]:
        """The read of a window: the one under way, or a new one (which makes a
        conversion for the recorder that has not started needless)."""
        task = self._loading.get(key)
        if task is None:
            recording = self._recording.pop(key, None)
            if recording is not None:
                recording.cancel()
            task = asyncio.create_task(asyncio.to_thread(self._load, key, encoder))
            self._loading[key] = task
            task.add_done_callback(lambda done: self._loaded(key, done))
        return task

    def _load(self, key: _WindowKey, encoder: Encoder) -> _Loaded | None:
        """A complete window, kept or converted (then with its key, to be kept);
        ``None`` if it is not complete."""
        found = self._find(key)
        if found is None:
            return None
        window, kept = found
        if kept is not None:
            return kept, None
        return convert_window(self._store, encoder, window), window

    def _find(self, key: _WindowKey) -> tuple[WindowKey, list[Row] | None] | None:
        """``None`` if the window is not complete, else its key in ``kept`` and its kept
        rows (``None``: not kept)."""
        run_id, variant, index = key
        first, last = index * self._window, (index + 1) * self._window
        run = self._store.get_run(run_id)
        if run is None or run.last_seq < last:
            return None
        window = WindowKey(run_id, run.created_at, variant, first, last)
        return window, (None if self._kept is None else self._kept.get(window))

    def _read(self, run_id: str, encoder: Encoder, after_seq: int, limit: int) -> list[Row]:
        return encoder.stored(self._store.result_json_rows(run_id, after_seq=after_seq,
                                                           limit=limit))

    def _loaded(self, key: _WindowKey, task: asyncio.Task[_Loaded | None]) -> None:
        del self._loading[key]
        if task.cancelled() or task.exception() is not None:
            return  # the waiting streams get the error
        loaded = task.result()
        if loaded is not None:
            rows, window = loaded
            self._cache(key, rows)
            if window is not None:
                self._keep(window, rows)

    def _keep(self, window: WindowKey, rows: list[Row]) -> None:
        """Write a converted window to ``kept`` in a thread, while the streams go on."""
        if self._kept is not None:
            task = asyncio.create_task(asyncio.to_thread(self._kept.put, window, rows))
            self._keeping.add(task)
            task.add_done_callback(self._kept_done)

    def _kept_done(self, task: asyncio.Task[None]) -> None:
        self._keeping.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.warning("could not keep a window of results", exc_info=task.exception())

    def _cache(self, key: _WindowKey, rows: list[Row]) -> None:
        size = sum(len(data) for _, data in rows)
        self._windows[key] = (rows, size)
        self.bytes += size
        while self.bytes > self._max_bytes:
            _, (_, dropped) = self._windows.popitem(last=False)
            self.bytes -= dropped


def convert_window(store: RunStore, encoder: Encoder, window: WindowKey) -> list[Row]:
    """A complete window's stored results, converted from their JSON."""
    stored = store.result_json_rows(window.run_id, after_seq=window.first,
                                    limit=window.last - window.first)
    return encoder.stored([row for row in stored if row[0] <= window.last])


_WORKER_STORES: dict[Path, tuple[RunStore, EncodedWindows]] = {}
"""The stores of the conversion worker process, opened on its first window."""


def _worker_init() -> None:
    """Set up the worker process: the lowest priority (it runs when a core is idle), no
    hold on the server's standard input and output (a pipe the server's caller waits
    on), and an exit as soon as the server process is gone, however it ended (the
    executor's own queues would keep the worker waiting)."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux
        os.nice(WORKER_NICENESS)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    parent = multiprocessing.parent_process()
    if parent is not None:
        sentinel = parent.sentinel
        threading.Thread(target=lambda: (wait([sentinel]), os._exit(0)), daemon=True,
                         name="parent-watch").start()


def _warm_up() -> None:
    """Import, in the worker process, what converting needs (``_convert``)."""
    importlib.import_module("fleetbench._server._convert")


def _convert_in_worker(state_dir: Path, encoder: Encoder, window: WindowKey) -> list[Row]:
    """:func:`convert_window` in the worker process, which keeps the window too."""
    stores = _WORKER_STORES.get(state_dir)
    if stores is None:
        store = RunStore(state_dir)
        stores = _WORKER_STORES[state_dir] = (store, EncodedWindows(state_dir, store))
    store, kept = stores
    rows = convert_window(store, encoder, window)
    kept.put(window, rows)
    return rows
