"""The server's own SQLite file, ``{state_dir}/server.sqlite3``: stored results already
encoded for the wire, so that a replay reads ready bytes instead of converting every
result from its stored JSON again (≈ 8 µs a result, which held a first replay near
100,000 results/s), also after a restart.

Results are kept by *window*, the seqs ``first < seq <= last`` (see
``_replay.ReplayCache``): one row holds a window's encoded results end to end, with
their seqs and end offsets, written once the window is complete (the run store has
recorded a seq beyond it, so no result can join it any more). A window holds exactly
the run store's results of its range, so this file is a cache of the run store and
deleting it loses nothing. Rows are keyed by the run's id *and* creation time: a run
store made anew in the same folder (whose runs may get the same ids) never meets the
windows of its predecessor.

The schema has a version (``PRAGMA user_version``); a file of another version (another
encoding, or another fleetbench) is emptied rather than migrated, as its content can
always be made again. Files of version 0 held the server's run keys before the run
store kept them (``runs.run_key``): the keys move into the run store first.

Two connections, one that reads and one that writes (WAL lets them work at once, so a
stream reading a window never waits for another being written), each used by one
thread at a time; any thread may call.
"""

from __future__ import annotations

import sqlite3
import threading
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from fleetbench._store import RunStore

__all__ = ["DB_NAME", "SCHEMA_VERSION", "EncodedWindows", "WindowKey"]

_log = structlog.get_logger("fleetbench.server")

DB_NAME = "server.sqlite3"
SCHEMA_VERSION = 1
"""Raise it when the wire encoding of a result changes: older windows are dropped."""

_SCHEMA = (
    """CREATE TABLE windows (
        run_id TEXT NOT NULL,
        created_at TEXT NOT NULL,
        variant TEXT NOT NULL,
        first INTEGER NOT NULL,
        last INTEGER NOT NULL,
        seqs BLOB NOT NULL,
        ends BLOB NOT NULL,
        data BLOB NOT NULL,
        UNIQUE (run_id, created_at, variant, first, last)
    ) STRICT""",
)

Row = tuple[int, bytes]
"""A result's seq and its wire bytes (``_replay.Row``)."""


@dataclass(frozen=True)
class WindowKey:
    """A window of a run's results: ``first < seq <= last``, encoded as ``variant``."""

    run_id: str
    created_at: str
    """The run's (see the module docstring)."""
    variant: str
    first: int
    last: int


class EncodedWindows:
    """Windows of encoded results by run (see the module docstring).

    :param store: the run store, told the run keys a version 0 file held.
    """

    def __init__(self, state_dir: Path, store: RunStore) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / DB_NAME
        self._writer, self._write_lock = _connect(self.path), threading.Lock()
        self._reader, self._read_lock = _connect(self.path), threading.Lock()
        try:
            self._writer.execute("PRAGMA journal_mode = WAL")
            self._writer.execute("PRAGMA synchronous = NORMAL")
            self._open(store)
        except BaseException:
            self.close()
            raise

    def _open(self, store: RunStore) -> None:
        conn = self._writer
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version == SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            if version == 0:
                self._move_run_keys(store)
            tables = [name for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")]
            for name in tables:
                conn.execute(f'DROP TABLE "{name}"')
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if version:
            _log.info("encoded results of another version dropped", path=str(self.path),
                      version=version)

    def _move_run_keys(self, store: RunStore) -> None:
        """The run keys of a version 0 file (its ``run_keys`` table) into the run store."""
        found = self._writer.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'run_keys'").fetchone()
        if found is None:
            return
        for run_id, run_key in self._writer.execute("SELECT run_id, run_key FROM run_keys"):
            store.set_run_key(run_id, run_key)

    def get(self, key: WindowKey) -> list[Row] | None:
        """The window's ``(seq, bytes)`` rows in seq order, or ``None`` if not kept."""
        with self._read_lock:
            row = self._reader.execute(
                "SELECT seqs, ends, data FROM windows WHERE run_id = ? AND created_at = ? "
                "AND variant = ? AND first = ? AND last = ?",
                (key.run_id, key.created_at, key.variant, key.first, key.last)).fetchone()
        if row is None:
            return None
        seqs, ends, data = array("q"), array("q"), row[2]
        seqs.frombytes(row[0])
        ends.frombytes(row[1])
        out: list[Row] = []
        start = 0
        for seq, end in zip(seqs, ends, strict=True):
            out.append((seq, data[start:end]))
            start = end
        return out

    def put(self, key: WindowKey, rows: Sequence[Row]) -> None:
        """Keep a complete window (a window kept already stays as it is)."""
        ends = array("q")
        end = 0
        for _, data in rows:
            end += len(data)
            ends.append(end)
        seqs = array("q", [seq for seq, _ in rows])
        with self._write_lock:
            self._writer.execute(
                "INSERT INTO windows (run_id, created_at, variant, first, last, seqs, ends, "
                "data) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (key.run_id, key.created_at, key.variant, key.first, key.last,
                 seqs.tobytes(), ends.tobytes(), b"".join([data for _, data in rows])))

    def close(self) -> None:
        with self._read_lock, self._write_lock:
            self._reader.close()
            self._writer.close()


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
