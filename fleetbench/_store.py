"""The run store: runs and their per-test results in one SQLite file, the source of truth.

Everything a run produced lives here, so a run can be resumed after a crash (only tests
without a stored result run again), a ``StreamResults`` subscriber can replay from any
``seq``, and artifacts can be regenerated. The file is ``{state_dir}/runs.sqlite3``; the
caller resolves the folder (``FLEETBENCH_STATE_DIR``, see ``fleetbench._config``).

Durability and concurrency:

- WAL journal with ``synchronous=NORMAL``: a commit is atomic and survives a killed
  process (a power loss may drop the last commits, never corrupt the file). Readers never
  block the writer and see only whole transactions, so a reader always sees a prefix of
  whole ``append_results`` batches.
- Connections come from a small pool: a call borrows a connection, uses it alone and
  gives it back, so any thread may call any method (connections are opened with
  ``check_same_thread=False``; the pool guarantees one user at a time). No call holds a
  read transaction between calls, so WAL checkpoints are never starved by a slow stream.
- Every write is one ``BEGIN IMMEDIATE`` transaction; competing writers (another thread
  or process) wait up to the busy timeout.

Schema changes are versioned: ``MIGRATIONS[i]`` takes the schema from version ``i`` to
``i + 1`` and ``PRAGMA user_version`` records the version reached. A database written by
a newer fleetbench is refused with :class:`SchemaVersionError` rather than misread.

:class:`StoreWriter` is the bus subscriber that batches results into the store.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from fleetbench._clock import utc_now
from fleetbench._serialize import result_from_dict, result_to_dict
from fleetbench.errors import FleetbenchError
from fleetbench.events import Event, RunFinished, RunStarted, TestFinished
from fleetbench.records import RunStatus, Status, TestResult

__all__ = [
    "DB_NAME",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "ArtifactRecord",
    "InvalidPageTokenError",
    "RunRecord",
    "RunStore",
    "SchemaVersionError",
    "StoreError",
    "StoreWriter",
    "UnknownRunError",
    "apply_migrations",
    "decode_result",
    "encode_result",
]

DB_NAME = "runs.sqlite3"
MAX_PAGE = 1000
"""The largest page ``list_runs`` returns, whatever ``limit`` asks for."""

_CACHEABLE = frozenset({Status.PASSED, Status.FAILED})
_WAL_SIZE_LIMIT = 64 * 1024 * 1024  # bytes the WAL file keeps after a checkpoint
_IN_CHUNK = 500  # keys per ``IN (...)`` lookup, well under SQLite's variable limit

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: runs and their results. ``runs.id`` orders runs by creation (paging key) and
    # keeps the results table and its indexes small (an integer instead of the run id).
    (
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT NOT NULL UNIQUE,
            fleet_id TEXT NOT NULL,
            status TEXT NOT NULL,
            created_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT,
            planned INTEGER NOT NULL,
            done INTEGER NOT NULL DEFAULT 0,
            manifest_json TEXT NOT NULL,
            base_dir TEXT NOT NULL,
            output_dir TEXT NOT NULL,
            labels_json TEXT NOT NULL,
            error TEXT,
            last_seq INTEGER NOT NULL DEFAULT 0,
            artifacts_json TEXT NOT NULL DEFAULT '[]',
            pricing_version TEXT,
            counts_json TEXT NOT NULL DEFAULT '{}'
        ) STRICT""",
        "CREATE INDEX runs_by_fleet ON runs (fleet_id, id)",
        "CREATE INDEX runs_by_status ON runs (status, id)",
        """CREATE TABLE results (
            run_pk INTEGER NOT NULL REFERENCES runs (id),
            seq INTEGER NOT NULL,
            key TEXT NOT NULL,
            plan_index INTEGER NOT NULL,
            status TEXT NOT NULL,
            result_json TEXT NOT NULL,
            PRIMARY KEY (run_pk, seq)
        ) STRICT""",
        "CREATE UNIQUE INDEX results_by_key ON results (run_pk, key)",
        "CREATE INDEX results_in_plan_order ON results (run_pk, plan_index, seq)",
    ),
    # 2: the result cache (global_settings.cache), keyed by the request's hash.
    (
        """CREATE TABLE result_cache (
            request_hash TEXT PRIMARY KEY,
            result_json TEXT NOT NULL,
            stored_at TEXT NOT NULL
        ) STRICT""",
    ),
    # 3: the caller's run key (a run is planned again with it to resume, as the id hashes
    # it) and the run's final warnings (``fleetbench report`` gives them to exporters
    # again); NULL when not recorded: a run stored before, or not ended.
    (
        "ALTER TABLE runs ADD COLUMN run_key TEXT",
        "ALTER TABLE runs ADD COLUMN warnings_json TEXT",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(FleetbenchError):
    """The run store cannot do what was asked (bad state, unknown run, closed store)."""


class SchemaVersionError(StoreError):
    """The database was written by a newer fleetbench than this one."""


class UnknownRunError(StoreError, LookupError):
    """No run with this id is stored."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"unknown run {run_id!r}")


class InvalidPageTokenError(StoreError, ValueError):
    """A ``list_runs`` paging token that this store did not issue."""


@dataclass(frozen=True, slots=True)
class ArtifactRecord:
    """One file a run produced, as listed in ``Run.artifacts``."""

    name: str
    size_bytes: int
    sha256: str
    media_type: str


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A stored run. Timestamps are ISO-8601 UTC strings; ``done`` counts stored results
    and ``counts`` splits them by result status; ``last_seq`` is the highest bus
    sequence number the store has seen for the run (results and status events)."""

    run_id: str
    fleet_id: str
    status: RunStatus
    created_at: str
    started_at: str | None
    finished_at: str | None
    planned: int
    done: int
    manifest_json: str
    base_dir: str
    output_dir: str
    labels: dict[str, str]
    error: str | None
    last_seq: int
    artifacts: list[ArtifactRecord]
    pricing_version: str | None
    counts: dict[str, int]
    run_key: str | None = None
    """The run key the run id was computed with (``None``: not recorded)."""
    warnings: tuple[str, ...] | None = None
    """The warnings the run ended with, as its exporters got them except for the run's
    ``error``, which they get last (``None``: not recorded)."""


def encode_result(result: TestResult) -> str:
    """The stored JSON of a result: compact, in ``_serialize``'s one flat shape
    (orjson: encoding is most of the cost of persisting a result)."""
    return orjson.dumps(result_to_dict(result)).decode()


def decode_result(text: str) -> TestResult:
    """Inverse of :func:`encode_result`."""
    return result_from_dict(orjson.loads(text))


# ── schema ─────────────────────────────────────────────────────────────────────────


def _user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def apply_migrations(conn: sqlite3.Connection, migrations: Sequence[Sequence[str]] = MIGRATIONS,
                     *, where: str = "the run store") -> int:
    """Bring the database to ``len(migrations)``; return the version it had before.

    All pending steps run in one transaction (SQLite DDL is transactional), so a crash
    mid-migration leaves the old version intact. ``conn`` must be in autocommit mode.
    """
    target = len(migrations)
    found = _user_version(conn)
    if found == target:
        return found
    _check_not_newer(found, target, where)
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = _user_version(conn)  # another process may have migrated meanwhile
        _check_not_newer(found, target, where)
        for step in migrations[found:]:
            for statement in step:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {target:d}")
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    return found


def _rollback(conn: sqlite3.Connection) -> None:
    """Undo the open transaction, if any, so the connection goes back to the pool clean."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _check_not_newer(found: int, target: int, where: str) -> None:
    if found > target:
        raise SchemaVersionError(
            f"{where} has schema version {found}, but this fleetbench supports up to "
            f"version {target}: it was written by a newer fleetbench. Upgrade fleetbench, "
            "or point FLEETBENCH_STATE_DIR at another folder."
        )


# ── connections ────────────────────────────────────────────────────────────────────


def _connect(path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    """A connection in autocommit mode (we issue BEGIN/COMMIT ourselves)."""
    conn = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None,
                           check_same_thread=False)
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"PRAGMA journal_size_limit = {_WAL_SIZE_LIMIT:d}")  # shrink after big runs
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


class _Pool:
    """Connections lent to one caller at a time, so any thread can use the store.

    At most ``max_idle`` connections are kept between calls; extra ones are closed when
    given back. After :meth:`close`, borrowing fails and lent connections are closed as
    soon as they come back.
    """

    def __init__(self, path: Path, busy_timeout_s: float, max_idle: int = 8) -> None:
        self._path, self._busy_timeout_s, self._max_idle = path, busy_timeout_s, max_idle
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        conn = self._take()
        try:
            yield conn
        finally:
            self._give_back(conn)

    def _take(self) -> sqlite3.Connection:
        with self._lock:
            if self._closed:
                raise StoreError("the run store is closed")
            if self._idle:
                return self._idle.pop()
        return _connect(self._path, self._busy_timeout_s)

    def _give_back(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


# ── the store ──────────────────────────────────────────────────────────────────────

_Row = tuple[int, str, int, str, str]
"""A result row to insert: seq, key, plan index, status, result JSON."""

_RUN_COLUMNS = (
    "run_id, fleet_id, status, created_at, started_at, finished_at, planned, done, "
    "manifest_json, base_dir, output_dir, labels_json, error, last_seq, artifacts_json, "
    "pricing_version, counts_json, run_key, warnings_json"
)


def _run_from_row(row: Sequence[Any]) -> RunRecord:
    (run_id, fleet_id, status, created_at, started_at, finished_at, planned, done,
     manifest_json, base_dir, output_dir, labels_json, error, last_seq, artifacts_json,
     pricing_version, counts_json, run_key, warnings_json) = row
    return RunRecord(
        run_id=run_id, fleet_id=fleet_id, status=RunStatus(status), created_at=created_at,
        started_at=started_at, finished_at=finished_at, planned=planned, done=done,
        manifest_json=manifest_json, base_dir=base_dir, output_dir=output_dir,
        labels=json.loads(labels_json), error=error, last_seq=last_seq,
        artifacts=[ArtifactRecord(**a) for a in json.loads(artifacts_json)],
        pricing_version=pricing_version, counts=json.loads(counts_json), run_key=run_key,
        warnings=None if warnings_json is None else tuple(json.loads(warnings_json)),
    )


def _encode_page_token(run_pk: int) -> str:
    return base64.urlsafe_b64encode(f"runs:{run_pk}".encode()).decode().rstrip("=")


def _decode_page_token(token: str) -> int:
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        prefix, _, number = text.partition(":")
        if prefix == "runs" and number.isdigit():
            return int(number)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise InvalidPageTokenError(f"invalid page token {token!r}")


class RunStore:
    """Runs, results and the result cache in ``{state_dir}/runs.sqlite3``.

    Thread-safe: every method may be called from any thread (see the module docstring).
    For an unknown run, writes raise :class:`UnknownRunError` (nothing may be lost
    silently) while reads answer as for a run without results: ``get_run`` gives
    ``None``, result reads give nothing, ``last_seq`` gives 0, so a caller can look
    before it creates (use ``get_run`` to tell "unknown" from "empty"). SQLite I/O
    problems surface as ``sqlite3.Error`` (e.g. ``OperationalError: database is
    locked`` after the busy timeout).
    """

    def __init__(self, state_dir: Path, *, busy_timeout_s: float = 10.0,
                 clock: Callable[[], str] = utc_now) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / DB_NAME
        self._clock = clock
        self._pool = _Pool(self.path, busy_timeout_s)
        self._tx_lock = threading.Lock()
        self._transactions = 0
        try:
            with self._pool.connection() as conn:
                self._enable_wal(conn)
                apply_migrations(conn, where=str(self.path))
        except BaseException:
            self._pool.close()
            raise

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"{self.path}: SQLite refused WAL mode (got {mode!r}); "
                             "put the state directory on a local file system")

    @property
    def transactions(self) -> int:
        """How many write transactions this store has committed (for tests and metrics)."""
        return self._transactions

    def close(self) -> None:
        """Close every idle connection; later calls raise :class:`StoreError`."""
        self._pool.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed on success, rolled back on any error."""
        with self._pool.connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
        with self._tx_lock:
            self._transactions += 1

    @staticmethod
    def _find_run_pk(conn: sqlite3.Connection, run_id: str) -> int | None:
        row = conn.execute("SELECT id FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else int(row[0])

    @classmethod
    def _run_pk(cls, conn: sqlite3.Connection, run_id: str) -> int:
        run_pk = cls._find_run_pk(conn, run_id)
        if run_pk is None:
            raise UnknownRunError(run_id)
        return run_pk

    @staticmethod
    def _load_run(conn: sqlite3.Connection, run_id: str) -> RunRecord | None:
        row = conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?",
                           (run_id,)).fetchone()
        return None if row is None else _run_from_row(row)

    # ── runs ──

    def create_run(self, *, run_id: str, fleet_id: str, manifest_json: str, base_dir: str,
                   output_dir: str, planned: int, labels: dict[str, str],
                   pricing_version: str | None,
                   run_key: str | None = None) -> tuple[RunRecord, bool]:
        """Store a new PENDING run; if ``run_id`` exists, return it untouched and ``False``
        (except that a run key it lacks is recorded: the id hashes the key, so it is
        the same key).

        Idempotent so that a retrying caller never starts (or pays for) a run twice.
        """
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO runs (run_id, fleet_id, status, created_at, planned, "
                "manifest_json, base_dir, output_dir, labels_json, pricing_version) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id) DO NOTHING",
                (run_id, fleet_id, RunStatus.PENDING.value, self._clock(), planned,
                 manifest_json, base_dir, output_dir, json.dumps(labels, sort_keys=True),
                 pricing_version),
            )
            if run_key is not None:
                self._fill_run_key(conn, run_id, run_key)
            record = self._load_run(conn, run_id)
        assert record is not None  # inserted or already there, inside one transaction
        return record, cursor.rowcount == 1

    def get_run(self, run_id: str) -> RunRecord | None:
        """The run, or ``None`` if no run has this id."""
        with self._pool.connection() as conn:
            return self._load_run(conn, run_id)

    def list_runs(self, *, fleet_id: str | None = None,
                  statuses: Iterable[RunStatus] | None = None, limit: int = 50,
                  after: str | None = None) -> tuple[list[RunRecord], str | None]:
        """One page of runs, newest first, and the token of the next page (``None`` at
        the end). ``statuses`` empty or ``None`` means any status.

        The token is the position of the page's last run in creation order, so paging
        is stable: runs created while paging neither repeat nor shift later pages.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        limit = min(limit, MAX_PAGE)
        where, params = self._run_filters(fleet_id, statuses, after)
        sql = (f"SELECT id, {_RUN_COLUMNS} FROM runs {where} ORDER BY id DESC LIMIT ?")
        with self._pool.connection() as conn:
            rows = conn.execute(sql, (*params, limit + 1)).fetchall()
        page = rows[:limit]
        token = _encode_page_token(page[-1][0]) if len(rows) > limit else None
        return [_run_from_row(row[1:]) for row in page], token

    def count_runs(self) -> dict[RunStatus, int]:
        """How many runs are stored in each status (every status, 0 for none)."""
        with self._pool.connection() as conn:
            rows = conn.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall()
        counts = dict.fromkeys(RunStatus, 0)
        counts.update((RunStatus(status), int(n)) for status, n in rows)
        return counts

    @staticmethod
    def _run_filters(fleet_id: str | None, statuses: Iterable[RunStatus] | None,
                     after: str | None) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if fleet_id is not None:
            clauses.append("fleet_id = ?")
            params.append(fleet_id)
        wanted = sorted({RunStatus(s).value for s in statuses or ()})
        if wanted:
            clauses.append(f"status IN ({', '.join('?' * len(wanted))})")
            params.extend(wanted)
        if after is not None:
            clauses.append("id < ?")
            params.append(_decode_page_token(after))
        return ("WHERE " + " AND ".join(clauses) if clauses else ""), params

    def set_status(self, run_id: str, status: RunStatus, *, error: str | None = None,
                   seq: int | None = None) -> RunRecord:
        """Record a status change and return the updated run.

        RUNNING stamps ``started_at`` the first time only and clears ``finished_at`` and
        ``error`` (a resumed run is live again); COMPLETED, FAILED and CANCELLED stamp
        ``finished_at`` and store ``error``; INTERRUPTED and PENDING store ``error`` and
        leave the timestamps alone. ``seq``, the bus sequence number of the status
        event, raises ``last_seq`` so that a resumed run never reuses a number.
        """
        now = self._clock()
        if status is RunStatus.RUNNING:
            sql = ("status = ?, started_at = coalesce(started_at, ?), finished_at = NULL, "
                   "error = NULL")
            params: tuple[Any, ...] = (status.value, now)
        elif status.is_final:
            sql, params = "status = ?, finished_at = ?, error = ?", (status.value, now, error)
        else:
            sql, params = "status = ?, error = ?", (status.value, error)
        with self._write() as conn:
            cursor = conn.execute(
                f"UPDATE runs SET {sql}, last_seq = max(last_seq, ?) WHERE run_id = ?",
                (*params, seq or 0, run_id))
            if cursor.rowcount == 0:
                raise UnknownRunError(run_id)
            record = self._load_run(conn, run_id)
        assert record is not None
        return record

    def mark_running_as_interrupted(self) -> list[str]:
        """At start-up: every RUNNING or PENDING run was cut short by the last process's
        end, so mark it INTERRUPTED (it resumes on request); return their ids, oldest
        first."""
        with self._write() as conn:
            rows = conn.execute(
                "UPDATE runs SET status = ? WHERE status IN (?, ?) RETURNING id, run_id",
                (RunStatus.INTERRUPTED.value, RunStatus.RUNNING.value,
                 RunStatus.PENDING.value),
            ).fetchall()
        return [run_id for _, run_id in sorted(rows)]

    def set_run_key(self, run_id: str, run_key: str) -> bool:
        """Record the run key of a stored run that has none; whether it did (an unknown
        run or one with a key already is left alone)."""
        with self._write() as conn:
            return self._fill_run_key(conn, run_id, run_key)

    @staticmethod
    def _fill_run_key(conn: sqlite3.Connection, run_id: str, run_key: str) -> bool:
        return conn.execute("UPDATE runs SET run_key = ? WHERE run_id = ? AND run_key IS NULL",
                            (run_key, run_id)).rowcount == 1

    def set_warnings(self, run_id: str, warnings: Sequence[str]) -> None:
        """Record the warnings the run ended with (replacing any recorded before)."""
        with self._write() as conn:
            cursor = conn.execute("UPDATE runs SET warnings_json = ? WHERE run_id = ?",
                                  (json.dumps(list(warnings)), run_id))
            if cursor.rowcount == 0:
                raise UnknownRunError(run_id)

    def set_artifacts(self, run_id: str, artifacts: Sequence[ArtifactRecord]) -> None:
        """Replace the run's artifact list (in the order given)."""
        payload = json.dumps([
            {"name": a.name, "size_bytes": a.size_bytes, "sha256": a.sha256,
             "media_type": a.media_type}
            for a in artifacts
        ])
        with self._write() as conn:
            cursor = conn.execute("UPDATE runs SET artifacts_json = ? WHERE run_id = ?",
                                  (payload, run_id))
            if cursor.rowcount == 0:
                raise UnknownRunError(run_id)

    # ── results ──

    def append_results(self, run_id: str, rows: Sequence[tuple[int, TestResult]]) -> None:
        """Store ``(seq, result)`` rows in one transaction and update the run's progress.

        A row whose test key already has a result in this run (or earlier in ``rows``) is
        skipped, so re-writing a batch after a crash or a failed flush never duplicates
        a result nor double-counts it. ``last_seq`` becomes the highest seq offered.
        A seq already used by another key is a bug upstream: :class:`StoreError`, and
        nothing of the batch is stored.
        """
        if not rows:
            return
        encoded = [(seq, r.key, r.item.index, r.status.value, encode_result(r))
                   for seq, r in rows]
        top_seq = max(seq for seq, _ in rows)
        try:
            with self._write() as conn:
                run_pk = self._run_pk(conn, run_id)
                fresh = self._fresh_rows(conn, run_pk, encoded)
                conn.executemany(
                    "INSERT INTO results (run_pk, seq, key, plan_index, status, result_json) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [(run_pk, *row) for row in fresh])
                self._add_progress(conn, run_pk, Counter(row[3] for row in fresh), top_seq)
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"run {run_id!r}: a seq in this batch is already stored for "
                             f"another test ({exc})") from exc

    @staticmethod
    def _fresh_rows(conn: sqlite3.Connection, run_pk: int,
                    rows: list[_Row]) -> list[_Row]:
        """``rows`` without those whose key is stored already or repeats within ``rows``."""
        keys = list(dict.fromkeys(row[1] for row in rows))
        seen: set[str] = set()
        for start in range(0, len(keys), _IN_CHUNK):
            chunk = keys[start:start + _IN_CHUNK]
            marks = ", ".join("?" * len(chunk))
            seen.update(k for (k,) in conn.execute(
                f"SELECT key FROM results WHERE run_pk = ? AND key IN ({marks})",
                (run_pk, *chunk)))
        fresh: list[_Row] = []
        for row in rows:
            if row[1] not in seen:
                seen.add(row[1])
                fresh.append(row)
        return fresh

    @staticmethod
    def _add_progress(conn: sqlite3.Connection, run_pk: int, added: Counter[str],
                      top_seq: int) -> None:
        (counts_json,) = conn.execute("SELECT counts_json FROM runs WHERE id = ?",
                                      (run_pk,)).fetchone()
        counts = Counter[str](json.loads(counts_json))
        counts.update(added)
        conn.execute(
            "UPDATE runs SET done = done + ?, last_seq = max(last_seq, ?), counts_json = ? "
            "WHERE id = ?",
            (added.total(), top_seq, json.dumps(dict(sorted(counts.items()))), run_pk))

    def results(self, run_id: str, *, after_seq: int = 0,
                limit: int | None = None) -> list[tuple[int, TestResult]]:
        """Stored ``(seq, result)`` pairs with ``seq > after_seq``, in seq order."""
        with self._pool.connection() as conn:
            run_pk = self._find_run_pk(conn, run_id)
            return [] if run_pk is None else self._read_results(conn, run_pk, after_seq, limit)

    @staticmethod
    def _read_results(conn: sqlite3.Connection, run_pk: int, after_seq: int,
                      limit: int | None) -> list[tuple[int, TestResult]]:
        rows = conn.execute(
            "SELECT seq, result_json FROM results WHERE run_pk = ? AND seq > ? "
            "ORDER BY seq LIMIT ?",
            (run_pk, after_seq, -1 if limit is None else limit)).fetchall()
        return [(seq, decode_result(text)) for seq, text in rows]

    def result_json_rows(self, run_id: str, *, after_seq: int = 0,
                         limit: int | None = None) -> list[tuple[int, bytes]]:
        """Like :meth:`results`, but each result as its stored JSON (UTF-8 bytes, the
        shape of :func:`encode_result`), not decoded: for readers that convert the JSON
        straight to another format (the gRPC stream's replay), decoding into a
        :class:`TestResult` costs several times the read."""
        with self._pool.connection() as conn:
            run_pk = self._find_run_pk(conn, run_id)
            if run_pk is None:
                return []
            return conn.execute(
                "SELECT seq, CAST(result_json AS BLOB) FROM results WHERE run_pk = ? "
                "AND seq > ? ORDER BY seq LIMIT ?",
                (run_pk, after_seq, -1 if limit is None else limit)).fetchall()

    def iter_results(self, run_id: str, *, after_seq: int = 0,
                     batch: int = 1000) -> Iterator[tuple[int, TestResult]]:
        """Like :meth:`results`, but read ``batch`` rows at a time so memory stays flat.

        Each batch is its own short read, so no read transaction is held while the
        consumer works; rows appended meanwhile are picked up if their seq is higher.
        """
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        with self._pool.connection() as conn:
            run_pk = self._find_run_pk(conn, run_id)
        return iter(()) if run_pk is None else self._iter_batches(run_pk, after_seq, batch)

    def _iter_batches(self, run_pk: int, after_seq: int,
                      batch: int) -> Iterator[tuple[int, TestResult]]:
        while True:
            with self._pool.connection() as conn:
                rows = self._read_results(conn, run_pk, after_seq, batch)
            yield from rows
            if len(rows) < batch:
                return
            after_seq = rows[-1][0]

    def iter_results_in_plan_order(self, run_id: str, *, batch: int = 1000,
                                   start_index: int = 0) -> Iterator[TestResult]:
        """Every stored result in plan order (``item.index``, then seq), ``batch`` rows
        at a time: what artifacts are written from, so a resumed run's artifacts list
        results exactly as an uninterrupted run's would. ``start_index`` skips the
        results before that plan index (an export that already wrote them)."""
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        with self._pool.connection() as conn:
            run_pk = self._find_run_pk(conn, run_id)
        return iter(()) if run_pk is None else self._iter_plan_order(run_pk, batch,
                                                                     start_index)

    def _iter_plan_order(self, run_pk: int, batch: int,
                         start_index: int) -> Iterator[TestResult]:
        after = (start_index, -1)  # every seq is positive
        while True:
            with self._pool.connection() as conn:
                rows = conn.execute(
                    "SELECT plan_index, seq, result_json FROM results WHERE run_pk = ? "
                    "AND (plan_index, seq) > (?, ?) ORDER BY plan_index, seq LIMIT ?",
                    (run_pk, *after, batch)).fetchall()
            for _, _, text in rows:
                yield decode_result(text)
            if len(rows) < batch:
                return
            after = (rows[-1][0], rows[-1][1])

    def plan_prefix(self, run_id: str, start_index: int, *,
                    limit: int = 1000) -> list[TestResult]:
        """The stored results at plan indexes ``start_index``, ``start_index + 1`` …
        up to the first index without a result, at most ``limit`` of them.

        What a run's export can write while the run still executes: results arrive in
        completion order, artifacts list them in plan order. Reading stops at the first
        gap, so a test still in flight costs one row, not a re-read of all after it.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        with self._pool.connection() as conn:
            run_pk = self._find_run_pk(conn, run_id)
            if run_pk is None:
                return []
            rows = conn.execute(
                "SELECT plan_index, result_json FROM results WHERE run_pk = ? "
                "AND plan_index >= ? AND plan_index < ? ORDER BY plan_index, seq",
                (run_pk, start_index, start_index + limit))
            with closing(rows):  # ends the read even when stopped at a gap
                texts = list(_contiguous(rows, start_index))
        return [decode_result(text) for text in texts]

    def finished_keys(self, run_id: str) -> set[str]:
        """The test keys that have a stored result: what a resumed run must not rerun."""
        with self._pool.connection() as conn:
            run_pk = self._find_run_pk(conn, run_id)
            return set() if run_pk is None else {key for (key,) in conn.execute(
                "SELECT key FROM results WHERE run_pk = ?", (run_pk,))}

    def last_seq(self, run_id: str) -> int:
        """The highest bus seq stored for the run (0 before any); a resumed run's bus
        continues after it."""
        with self._pool.connection() as conn:
            row = conn.execute("SELECT last_seq FROM runs WHERE run_id = ?",
                               (run_id,)).fetchone()
        return 0 if row is None else int(row[0])

    # ── result cache ──

    def cache_get(self, request_hash: str) -> TestResult | None:
        """The cached result of an identical earlier request, as it was stored."""
        with self._pool.connection() as conn:
            row = conn.execute("SELECT result_json FROM result_cache WHERE request_hash = ?",
                               (request_hash,)).fetchone()
        return None if row is None else decode_result(row[0])

    def cache_put(self, request_hash: str, result: TestResult) -> None:
        """Cache a PASSED or FAILED result (the latest wins); any other status is not
        cached, because an error, timeout, skip or cancellation says nothing about what
        the model answers, so the executor may offer every result."""
        if result.status not in _CACHEABLE:
            return
        text = encode_result(result)
        with self._write() as conn:
            conn.execute(
                "INSERT INTO result_cache (request_hash, result_json, stored_at) "
                "VALUES (?, ?, ?) ON CONFLICT (request_hash) DO UPDATE SET "
                "result_json = excluded.result_json, stored_at = excluded.stored_at",
                (request_hash, text, self._clock()))


def _contiguous(rows: Iterable[tuple[int, str]], start_index: int) -> Iterator[str]:
    """The texts of ``rows`` (in plan order) while their plan indexes run on from
    ``start_index`` without a gap."""
    expected = start_index
    for plan_index, text in rows:
        if plan_index != expected:
            return
        expected += 1
        yield text


# ── the bus subscriber ─────────────────────────────────────────────────────────────


class StoreWriter:
    """A lossless bus subscriber: batches results into the store.

    How the bus drives it (no timer task is needed):

    - ``await writer.handle(event)`` for every event, in seq order, one at a time.
      Results are buffered; the buffer is written when it holds ``max_batch`` results
      or its oldest result is ``max_delay_s`` old (checked on each ``handle``).
    - Whenever the bus has no further event queued for this subscriber (before it
      waits for the next one), ``await writer.flush()``: under load batches stay big,
      and when the run goes quiet nothing waits in the buffer. ``flush`` on an empty
      buffer is free.
    - ``await writer.aclose()`` when the bus shuts down.

    Writes run in a worker thread (``asyncio.to_thread``) on a connection the store
    lends to that call alone, so the event loop never blocks on SQLite. Flushes are
    serialized by a lock, so results reach the store in seq order. If a write fails,
    its rows go back to the front of the buffer and the error propagates; the next
    flush retries them, and ``append_results`` ignores whatever was already stored.
    """

    def __init__(self, store: RunStore, *, max_batch: int = 2000, max_delay_s: float = 0.05,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._store, self._max_batch, self._max_delay_s = store, max_batch, max_delay_s
        self._clock = clock
        self._buffer: list[tuple[str, int, TestResult]] = []
        self._oldest = 0.0
        self._lock = asyncio.Lock()
        self.flushes = 0
        """Non-empty flushes so far: each wrote its rows in one transaction per run."""

    @property
    def pending(self) -> int:
        """Results buffered and not yet written."""
        return len(self._buffer)

    def flush_due(self) -> bool:
        """Whether the buffer is full or its oldest result has waited ``max_delay_s``."""
        return bool(self._buffer) and (
            len(self._buffer) >= self._max_batch
            or self._clock() - self._oldest >= self._max_delay_s)

    async def handle(self, event: Event) -> None:
        """Buffer results; write status changes after the results before them."""
        if isinstance(event, TestFinished):
            if not self._buffer:
                self._oldest = self._clock()
            self._buffer.append((event.run_id, event.seq, event.result))
            if self.flush_due():
                await self.flush()
        elif isinstance(event, RunStarted):
            await self.flush()
            await asyncio.to_thread(self._store.set_status, event.run_id, RunStatus.RUNNING,
                                    seq=event.seq)
        elif isinstance(event, RunFinished):
            await self.flush()
            await asyncio.to_thread(self._store.set_status, event.run_id, event.status,
                                    error=event.error, seq=event.seq)

    async def flush(self) -> None:
        """Write every buffered result now."""
        async with self._lock:
            if not self._buffer:
                return
            rows, self._buffer = self._buffer, []
            try:
                await asyncio.to_thread(self._write_rows, rows)
            except BaseException:
                self._buffer[:0] = rows
                self._oldest = self._clock()
                raise
            self.flushes += 1

    def _write_rows(self, rows: list[tuple[str, int, TestResult]]) -> None:
        by_run: dict[str, list[tuple[int, TestResult]]] = {}
        for run_id, seq, result in rows:
            by_run.setdefault(run_id, []).append((seq, result))
        for run_id, run_rows in by_run.items():
            self._store.append_results(run_id, run_rows)

    async def aclose(self) -> None:
        """Final flush. The store stays open (its owner closes it)."""
        await self.flush()
