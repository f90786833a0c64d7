"""The run keys of the runs this server started, so it can resume them after a restart.

A run id hashes the manifest, its datasets and the caller's ``run_key`` (DESIGN §4). The
run store keeps the canonical manifest but not the key, and a resumed run must be
planned again with the very same key to get the same id. The server keeps them here,
in ``{state_dir}/server.sqlite3`` (WAL), next to the run store and owned by the server
alone. Calls are short single statements, safe from any thread.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from fleetbench._clock import utc_now

DB_NAME = "server.sqlite3"

_SCHEMA = """CREATE TABLE IF NOT EXISTS run_keys (
    run_id TEXT PRIMARY KEY,
    run_key TEXT NOT NULL,
    stored_at TEXT NOT NULL
) STRICT"""


class RunKeys:
    """``run_id`` → ``run_key`` for the runs started through the server."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(state_dir / DB_NAME, isolation_level=None,
                                     check_same_thread=False, timeout=10.0)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute(_SCHEMA)

    def remember(self, run_id: str, run_key: str) -> None:
        """Record the key of ``run_id`` (the first one stays: ids are unique per key)."""
        with self._lock:
            self._conn.execute(
                "INSERT INTO run_keys (run_id, run_key, stored_at) VALUES (?, ?, ?) "
                "ON CONFLICT (run_id) DO NOTHING", (run_id, run_key, utc_now()))

    def get(self, run_id: str) -> str | None:
        """The key ``run_id`` was started with, or ``None`` if the server never saw it."""
        with self._lock:
            row = self._conn.execute("SELECT run_key FROM run_keys WHERE run_id = ?",
                                     (run_id,)).fetchone()
        return None if row is None else str(row[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()
