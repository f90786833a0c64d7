"""The SQLite run store and its bus subscriber, on real database files.

Crash safety is shown with a real child process killed by SIGKILL while it writes;
concurrency with a real reader thread while the main thread appends.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from fleetbench._serialize import result_to_dict
from fleetbench._store import (
    DB_NAME,
    MIGRATIONS,
    SCHEMA_VERSION,
    ArtifactRecord,
    InvalidPageTokenError,
    RunStore,
    SchemaVersionError,
    StoreError,
    StoreWriter,
    UnknownRunError,
    apply_migrations,
)
from fleetbench.events import RunFinished, RunStarted, TestFinished
from fleetbench.records import (
    EvaluatorRef,
    GenerationSettings,
    ProviderResponse,
    RunStatus,
    Status,
    TestResult,
    Usage,
    Verdict,
    WorkItem,
)

ROOT = Path(__file__).resolve().parent.parent
STATUSES = tuple(Status)


def make_result(i: int, status: Status = Status.PASSED, *, response_size: int = 0,
                epoch: int = 1) -> TestResult:
    """A result with every field set, distinct per ``i`` (statuses other than passed and
    failed get an error and no response, as the executor records them)."""
    repo, test_id = f"repo-{i % 3}", f"t{i}"
    suffix = f"#r{epoch}" if epoch > 1 else ""
    item = WorkItem(
        key=f"{repo}/coding/simulated:fast/{test_id}{suffix}", index=i, repo_id=repo,
        scenario="coding", provider="simulated", model="fast", test_id=test_id, epoch=epoch,
        prompt=f"Write code #{i} — “quoted” ✓",
        settings=GenerationSettings(temperature=0.25, max_tokens=64, top_p=0.9,
                                    stop=("\n\n", "END"), system="Be brief.",
                                    params={"seed": i, "top_k": 5}),
        stream=i % 2 == 0, category="coding" if i % 4 else None, expected="def",
        references=("ref-a", "ref-b"), metadata={"difficulty": "hard", "n": i},
        tags=("python", "fast"),
        evaluators=(EvaluatorRef("contains", {"value": "def"}), EvaluatorRef("exact")),
    )
    if status in (Status.PASSED, Status.FAILED):
        usage = Usage(input_tokens=10 + i, output_tokens=20, cached_input_tokens=i % 5,
                      estimated=i % 3 == 0)
        response = ProviderResponse(text="def f(): pass " + "x" * response_size, usage=usage,
                                    finish_reason="stop", model="fast-v1",
                                    response_id=f"resp-{i}")
        return TestResult(
            item=item, status=status, started_at="2025-01-31T12:00:00.000001Z",
            finished_at="2025-01-31T12:00:00.250000Z", queue_ms=1.5, latency_ms=200.25 + i,
            ttft_ms=12.5, itl_ms=3.125, total_ms=240.0, retries=i % 2, usage=usage,
            cost_usd=0.000123, response=response,
            verdicts=(Verdict("contains", status is Status.PASSED, 1.0, "found", False, None),
                      Verdict("exact", True, 0.5, "", True, 0.0001)),
            cached=i % 5 == 0,
        )
    return TestResult(item=item, status=status, started_at="2025-01-31T12:00:00Z",
                      finished_at="2025-01-31T12:00:30Z", queue_ms=0.0, total_ms=30000.0,
                      retries=3, error=f"{status.value}: upstream said no", error_kind="http")


def rows_for(seqs: range | list[int], *, offset: int = 0) -> list[tuple[int, TestResult]]:
    """``(seq, result)`` rows; result ``seq + offset`` cycles through every status."""
    return [(s, make_result(s + offset, STATUSES[(s + offset) % len(STATUSES)]))
            for s in seqs]


def new_run(store: RunStore, run_id: str = "fleet-abc", *, fleet_id: str = "fleet",
            planned: int = 10) -> None:
    store.create_run(run_id=run_id, fleet_id=fleet_id, manifest_json='{"fleet_id":"fleet"}',
                     base_dir="/data/fleet", output_dir=f"/out/{run_id}", planned=planned,
                     labels={"team": "x"}, pricing_version="2025-01")


class FakeClock:
    """Timestamps that advance by one second per call, so order is visible."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        return f"2025-01-01T00:00:{self.calls:02d}.000000Z"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RunStore]:
    with RunStore(tmp_path / "state") as opened:
        yield opened


# ── files, schema, migrations ──────────────────────────────────────────────────────


def test_creates_a_wal_database_at_the_current_schema_version(tmp_path: Path) -> None:
    state = tmp_path / "a" / "b"
    RunStore(state).close()
    with sqlite3.connect(state / DB_NAME) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    raw.close()


def test_a_database_of_an_older_version_is_migrated_and_keeps_its_runs(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    raw = sqlite3.connect(path, isolation_level=None)
    assert apply_migrations(raw, MIGRATIONS[:1]) == 0
    raw.execute("INSERT INTO runs (run_id, fleet_id, status, created_at, planned, "
                "manifest_json, base_dir, output_dir, labels_json) VALUES "
                "('old-run', 'old', 'completed', '2024-01-01T00:00:00Z', 3, '{}', '.', 'o', "
                "'{\"k\":\"v\"}')")
    assert raw.execute("PRAGMA user_version").fetchone()[0] == 1
    raw.close()

    with RunStore(tmp_path) as store:
        run = store.get_run("old-run")
        assert run is not None
        assert (run.status, run.planned, run.labels) == (RunStatus.COMPLETED, 3, {"k": "v"})
        store.cache_put("h", make_result(1))  # the table version 2 added
        assert store.cache_get("h") == make_result(1)
    with sqlite3.connect(path) as raw2:
        assert raw2.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    raw2.close()


def test_runs_of_version_2_get_a_run_key_and_warnings_once_recorded(tmp_path: Path) -> None:
    raw = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)
    apply_migrations(raw, MIGRATIONS[:2])
    raw.execute("INSERT INTO runs (run_id, fleet_id, status, created_at, planned, "
                "manifest_json, base_dir, output_dir, labels_json) VALUES "
                "('old-run', 'old', 'interrupted', '2024-01-01T00:00:00Z', 3, '{}', '.', 'o', "
                "'{}')")
    raw.close()

    with RunStore(tmp_path) as store:
        old = store.get_run("old-run")
        assert old is not None
        assert (old.run_key, old.warnings) == (None, None)  # not recorded
        assert store.set_run_key("old-run", "nightly")
        assert not store.set_run_key("old-run", "other")  # the first key stays
        assert not store.set_run_key("no-such-run", "k")
        store.set_warnings("old-run", ["no price known for x:y", "cancelled"])
        with pytest.raises(UnknownRunError):
            store.set_warnings("no-such-run", [])
        again, created = store.create_run(
            run_id="old-run", fleet_id="old", manifest_json="{}", base_dir=".",
            output_dir="o", planned=3, labels={}, pricing_version=None, run_key="other")
        assert not created
        assert (again.run_key, again.warnings) == ("nightly", ("no price known for x:y",
                                                               "cancelled"))
        new, _ = store.create_run(
            run_id="new-run", fleet_id="new", manifest_json="{}", base_dir=".",
            output_dir="o", planned=1, labels={}, pricing_version=None, run_key="")
        assert (new.run_key, new.warnings) == ("", None)
        store.set_warnings("new-run", [])
        assert store.get_run("new-run") == replace(new, warnings=())


def test_reopening_the_current_version_keeps_everything(tmp_path: Path) -> None:
    with RunStore(tmp_path) as store:
        new_run(store)
        store.append_results("fleet-abc", rows_for(range(1, 6)))
    with RunStore(tmp_path) as again:
        assert [s for s, _ in again.results("fleet-abc")] == [1, 2, 3, 4, 5]
        run = again.get_run("fleet-abc")
        assert run is not None
        assert run.done == 5


def test_a_database_from_a_newer_fleetbench_is_refused_untouched(tmp_path: Path) -> None:
    RunStore(tmp_path).close()
    with sqlite3.connect(tmp_path / DB_NAME) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()

    with pytest.raises(SchemaVersionError) as caught:
        RunStore(tmp_path)
    message = str(caught.value)
    assert str(tmp_path / DB_NAME) in message
    assert f"schema version {SCHEMA_VERSION + 1}" in message
    assert f"up to version {SCHEMA_VERSION}" in message
    assert "newer fleetbench" in message
    with sqlite3.connect(tmp_path / DB_NAME) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    raw.close()


def test_a_closed_store_refuses_calls(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.get_run("x")


# ── runs ───────────────────────────────────────────────────────────────────────────


def test_create_run_is_idempotent(tmp_path: Path) -> None:
    with RunStore(tmp_path, clock=FakeClock()) as store:
        first, created = store.create_run(
            run_id="fleet-1", fleet_id="fleet", manifest_json='{"a":1}', base_dir="/m",
            output_dir="/o/fleet-1", planned=7, labels={"b": "2", "a": "1"},
            pricing_version="2025-01")
        again, created_again = store.create_run(
            run_id="fleet-1", fleet_id="other", manifest_json="{}", base_dir="/x",
            output_dir="/y", planned=99, labels={}, pricing_version=None)
        assert (created, created_again) == (True, False)
        assert again == first == store.get_run("fleet-1")
        assert first.fleet_id == "fleet"
        assert (first.status, first.planned, first.done, first.last_seq) == (
            RunStatus.PENDING, 7, 0, 0)
        assert (first.manifest_json, first.base_dir, first.output_dir) == (
            '{"a":1}', "/m", "/o/fleet-1")
        assert first.labels == {"a": "1", "b": "2"}
        assert (first.pricing_version, first.counts, first.artifacts) == ("2025-01", {}, [])
        assert (first.created_at, first.started_at, first.finished_at, first.error) == (
            "2025-01-01T00:00:01.000000Z", None, None, None)
        assert store.get_run("fleet-2") is None


def test_status_transitions_stamp_and_clear_timestamps(tmp_path: Path) -> None:
    clock = FakeClock()
    with RunStore(tmp_path, clock=clock) as store:
        new_run(store)  # created at :01

        running = store.set_status("fleet-abc", RunStatus.RUNNING, seq=1)  # :02
        assert (running.status, running.started_at, running.finished_at) == (
            RunStatus.RUNNING, "2025-01-01T00:00:02.000000Z", None)
        assert running.last_seq == 1

        cut = store.set_status("fleet-abc", RunStatus.INTERRUPTED, error="killed")
        assert (cut.status, cut.finished_at, cut.error) == (RunStatus.INTERRUPTED, None,
                                                            "killed")
        resumed = store.set_status("fleet-abc", RunStatus.RUNNING, seq=9)
        assert resumed.started_at == "2025-01-01T00:00:02.000000Z"  # the first start stays
        assert (resumed.error, resumed.last_seq) == (None, 9)

        failed = store.set_status("fleet-abc", RunStatus.FAILED, error="boom", seq=5)
        assert (failed.status, failed.error) == (RunStatus.FAILED, "boom")
        assert failed.finished_at == f"2025-01-01T00:00:{clock.calls:02d}.000000Z"
        assert failed.last_seq == 9  # never lowered

        again = store.set_status("fleet-abc", RunStatus.RUNNING)
        assert (again.finished_at, again.error) == (None, None)
        done = store.set_status("fleet-abc", RunStatus.COMPLETED)
        assert done.finished_at is not None
        assert (done.status, done.error) == (RunStatus.COMPLETED, None)
        assert store.get_run("fleet-abc") == done

        with pytest.raises(UnknownRunError):
            store.set_status("nope", RunStatus.RUNNING)


def test_mark_running_as_interrupted_only_touches_live_runs(store: RunStore) -> None:
    for run_id, status in [("a", RunStatus.RUNNING), ("b", RunStatus.COMPLETED),
                           ("c", None), ("d", RunStatus.FAILED), ("e", RunStatus.RUNNING)]:
        new_run(store, run_id)
        if status is not None:
            store.set_status(run_id, status)

    assert store.mark_running_as_interrupted() == ["a", "c", "e"]
    statuses = {r.run_id: r.status for r in store.list_runs()[0]}
    assert statuses == {"a": RunStatus.INTERRUPTED, "b": RunStatus.COMPLETED,
                        "c": RunStatus.INTERRUPTED, "d": RunStatus.FAILED,
                        "e": RunStatus.INTERRUPTED}
    assert store.mark_running_as_interrupted() == []


def _all_pages(store: RunStore, limit: int, *, fleet_id: str | None = None,
               statuses: set[RunStatus] | None = None) -> list[list[str]]:
    """The run ids of every page, following the tokens to the end."""
    pages: list[list[str]] = []
    token: str | None = None
    while True:
        runs, token = store.list_runs(limit=limit, after=token, fleet_id=fleet_id,
                                      statuses=statuses)
        pages.append([r.run_id for r in runs])
        if token is None:
            return pages


def test_paging_through_120_runs_returns_each_once_newest_first(store: RunStore) -> None:
    fleets, cycle = ("alpha", "beta", "gamma"), (RunStatus.PENDING, RunStatus.RUNNING,
                                                 RunStatus.COMPLETED, RunStatus.FAILED)
    created: list[tuple[str, str, RunStatus]] = []
    for n in range(120):
        run_id, fleet, status = f"run-{n:03d}", fleets[n % 3], cycle[n % 4 if n % 7 else 2]
        new_run(store, run_id, fleet_id=fleet)
        if status is not RunStatus.PENDING:
            store.set_status(run_id, status)
        created.append((run_id, fleet, status))
    newest_first = list(reversed(created))

    pages = _all_pages(store, 7)
    assert [len(p) for p in pages] == [7] * 17 + [1]
    assert [r for page in pages for r in page] == [c[0] for c in newest_first]

    wanted = {RunStatus.COMPLETED, RunStatus.FAILED}
    pages = _all_pages(store, 5, fleet_id="beta", statuses=wanted)
    expected = [c[0] for c in newest_first if c[1] == "beta" and c[2] in wanted]
    assert len(expected) > 10
    assert [r for page in pages for r in page] == expected
    assert all(0 < len(p) <= 5 for p in pages)

    only_fleet = [r for page in _all_pages(store, 50, fleet_id="gamma") for r in page]
    assert only_fleet == [c[0] for c in newest_first if c[1] == "gamma"]
    assert store.list_runs(statuses=[])[0][0].run_id == "run-119"  # empty = any status


def test_paging_is_stable_while_runs_are_created(store: RunStore) -> None:
    for n in range(10):
        new_run(store, f"run-{n}")
    first, token = store.list_runs(limit=4)
    new_run(store, "run-late")
    second, token = store.list_runs(limit=4, after=token)
    third, token = store.list_runs(limit=4, after=token)
    assert [r.run_id for r in first + second + third] == [f"run-{n}" for n in range(9, -1, -1)]
    assert token is None
    assert store.list_runs(limit=1)[0][0].run_id == "run-late"


def test_bad_paging_arguments_are_refused(store: RunStore) -> None:
    for token in ("garbage!", "bm90LWEtdG9rZW4", ""):
        with pytest.raises(InvalidPageTokenError):
            store.list_runs(after=token)
    with pytest.raises(ValueError, match="limit"):
        store.list_runs(limit=0)


def test_artifacts_are_replaced_and_read_back(store: RunStore) -> None:
    new_run(store)
    first = [ArtifactRecord("fleet_results.json", 1234, "ab" * 32, "application/json"),
             ArtifactRecord("results.jsonl", 99, "cd" * 32, "application/x-ndjson")]
    store.set_artifacts("fleet-abc", first)
    run = store.get_run("fleet-abc")
    assert run is not None
    assert run.artifacts == first
    store.set_artifacts("fleet-abc", first[1:])
    run = store.get_run("fleet-abc")
    assert run is not None
    assert run.artifacts == first[1:]
    with pytest.raises(UnknownRunError):
        store.set_artifacts("nope", first)


# ── results ────────────────────────────────────────────────────────────────────────


def test_results_round_trip_with_every_field(store: RunStore) -> None:
    new_run(store)
    rows = [(1, make_result(1, Status.PASSED)), (2, make_result(2, Status.FAILED, epoch=3)),
            (3, make_result(3, Status.ERROR)), (4, make_result(4, Status.TIMEOUT)),
            (5, make_result(5, Status.SKIPPED)), (6, make_result(6, Status.CANCELLED))]
    store.append_results("fleet-abc", rows)
    assert store.results("fleet-abc") == rows
    assert rows[0][1].response is not None
    assert rows[0][1].verdicts[1].cost_usd == 0.0001  # the fixture really sets everything

    with sqlite3.connect(store.path) as raw:
        stored = raw.execute("SELECT result_json FROM results ORDER BY seq").fetchall()
    raw.close()
    assert [json.loads(text) for (text,) in stored] == [result_to_dict(r) for _, r in rows]
    assert ", " not in stored[0][0]
    assert '": ' not in stored[0][0]  # compact separators


def test_append_ignores_keys_already_stored_and_counts_stay_right(store: RunStore) -> None:
    new_run(store, planned=20)
    batch = rows_for(range(1, 11))
    store.append_results("fleet-abc", batch)
    before = store.transactions
    store.append_results("fleet-abc", batch)  # a retried write
    assert store.transactions == before + 1  # one transaction per call

    # a resumed run offers 5 old keys again under new seqs, plus 5 new keys, one twice
    resumed = rows_for(range(11, 16), offset=-10) + rows_for(range(16, 21))
    resumed.append((21, resumed[-1][1]))
    store.append_results("fleet-abc", resumed)

    stored = store.results("fleet-abc")
    assert [s for s, _ in stored] == list(range(1, 11)) + list(range(16, 21))
    assert stored[:10] == batch
    assert len({r.key for _, r in stored}) == 15
    run = store.get_run("fleet-abc")
    assert run is not None
    assert run.done == 15
    assert run.counts == dict(Counter(r.status.value for _, r in stored))
    assert sum(run.counts.values()) == 15
    assert run.last_seq == store.last_seq("fleet-abc") == 21


def test_a_seq_reused_by_another_test_rejects_the_whole_batch(store: RunStore) -> None:
    new_run(store)
    store.append_results("fleet-abc", rows_for(range(1, 4)))
    clash = [(4, make_result(100)), (2, make_result(101))]
    with pytest.raises(StoreError, match="seq"):
        store.append_results("fleet-abc", clash)
    assert [s for s, _ in store.results("fleet-abc")] == [1, 2, 3]
    run = store.get_run("fleet-abc")
    assert run is not None
    assert (run.done, run.last_seq) == (3, 3)


def test_iter_results_streams_in_seq_order_from_after_seq(store: RunStore) -> None:
    new_run(store)
    seqs = [s for s in range(2, 5002) if s % 10]  # gaps where status events took seqs
    store.append_results("fleet-abc", rows_for(seqs[2000:]))  # batches need not come first
    store.append_results("fleet-abc", rows_for(seqs[:2000]))

    stream = store.iter_results("fleet-abc", after_seq=1234, batch=100)
    first = [next(stream) for _ in range(3)]
    store.append_results("fleet-abc", rows_for([6000, 6001]))  # appended mid-stream
    got = first + list(stream)
    assert [s for s, _ in got] == [s for s in seqs if s > 1234] + [6000, 6001]
    assert got[:3] == rows_for(seqs[seqs.index(1235):seqs.index(1235) + 3])
    assert [s for s, _ in store.results("fleet-abc", after_seq=4990, limit=3)] == [
        4991, 4992, 4993]
    assert list(store.iter_results("fleet-abc", after_seq=6001)) == []


def test_iter_results_in_plan_order_follows_the_plan_not_the_finish_order(
        store: RunStore) -> None:
    new_run(store)
    indices = [(i * 37) % 101 for i in range(101)]  # every plan index once, scrambled
    rows = [(seq, make_result(index)) for seq, index in enumerate(indices, start=1)]
    store.append_results("fleet-abc", rows[50:])
    store.append_results("fleet-abc", rows[:50])
    new_run(store, "other")
    store.append_results("other", [(1, make_result(0)), (2, make_result(200))])

    in_plan_order = list(store.iter_results_in_plan_order("fleet-abc", batch=8))
    assert [r.item.index for r in in_plan_order] == list(range(101))
    assert in_plan_order == [make_result(i) for i in range(101)]


def test_iter_results_in_plan_order_can_start_at_a_plan_index(store: RunStore) -> None:
    new_run(store)
    store.append_results("fleet-abc", [(seq, make_result(index)) for seq, index in
                                       enumerate([5, 0, 9, 3, 7], start=1)])
    later = store.iter_results_in_plan_order("fleet-abc", batch=2, start_index=4)
    assert [r.item.index for r in later] == [5, 7, 9]  # gaps are crossed


def test_plan_prefix_stops_at_the_first_plan_index_without_a_result(store: RunStore) -> None:
    new_run(store)
    store.append_results("fleet-abc", [(seq, make_result(index)) for seq, index in
                                       enumerate([2, 0, 1, 4, 5, 6], start=1)])
    assert [r.item.index for r in store.plan_prefix("fleet-abc", 0)] == [0, 1, 2]
    assert store.plan_prefix("fleet-abc", 3) == []  # 3 is still in flight
    assert [r.item.index for r in store.plan_prefix("fleet-abc", 4, limit=2)] == [4, 5]
    store.append_results("fleet-abc", [(7, make_result(3))])
    prefix = store.plan_prefix("fleet-abc", 3)
    assert prefix == [make_result(i) for i in (3, 4, 5, 6)]
    assert store.plan_prefix("nope", 0) == []
    with pytest.raises(ValueError, match="limit"):
        store.plan_prefix("fleet-abc", 0, limit=0)


def test_finished_keys_are_the_stored_results(store: RunStore) -> None:
    new_run(store)
    new_run(store, "other")
    assert store.finished_keys("fleet-abc") == set()
    rows = rows_for(range(1, 8))
    store.append_results("fleet-abc", rows)
    store.append_results("other", rows_for(range(1, 3), offset=50))
    assert store.finished_keys("fleet-abc") == {r.key for _, r in rows}


def test_writes_to_an_unknown_run_raise_and_reads_find_nothing(store: RunStore) -> None:
    with pytest.raises(UnknownRunError, match="nope"):
        store.append_results("nope", rows_for(range(1, 2)))
    new_run(store)
    store.append_results("fleet-abc", rows_for(range(1, 4)))
    assert store.get_run("nope") is None
    assert store.results("nope") == []
    assert list(store.iter_results("nope")) == []
    assert list(store.iter_results_in_plan_order("nope")) == []
    assert store.finished_keys("nope") == set()
    assert store.last_seq("nope") == 0


# ── result cache ───────────────────────────────────────────────────────────────────


def test_cache_hits_misses_and_never_keeps_errors(tmp_path: Path) -> None:
    with RunStore(tmp_path) as store:
        assert store.cache_get("h1") is None
        store.cache_put("h1", make_result(1, Status.PASSED))
        store.cache_put("h2", make_result(2, Status.FAILED))
        store.cache_put("h2", make_result(3, Status.FAILED))  # the latest wins
        for n, status in enumerate((Status.ERROR, Status.TIMEOUT, Status.SKIPPED,
                                    Status.CANCELLED)):
            store.cache_put(f"bad{n}", make_result(10 + n, status))
            store.cache_put("h1", make_result(10 + n, status))  # nor overwrites a hit
    with RunStore(tmp_path) as later:  # an earlier run's cache serves a later one
        assert later.cache_get("h1") == make_result(1, Status.PASSED)
        assert later.cache_get("h2") == make_result(3, Status.FAILED)
        assert [later.cache_get(f"bad{n}") for n in range(4)] == [None] * 4


# ── concurrency and crashes ────────────────────────────────────────────────────────


def test_a_reader_thread_sees_whole_batches_in_seq_order_while_the_writer_appends(
        store: RunStore) -> None:
    total, batch = 50_000, 1000
    new_run(store, planned=total)
    midway, finished = threading.Event(), threading.Event()
    failures: list[BaseException] = []
    prefixes: list[int] = []

    def read() -> None:
        try:
            cursor, deadline = 0, time.monotonic() + 120
            while cursor < total and time.monotonic() < deadline:
                cursor = _check_new_rows(store, cursor, batch)
                prefixes.append(cursor)
                if 0 < cursor < total:
                    midway.set()
        except BaseException as exc:
            failures.append(exc)
        finally:
            finished.set()

    reader = threading.Thread(target=read)
    reader.start()
    for start in range(1, total + 1, batch):
        store.append_results("fleet-abc", rows_for(range(start, start + batch)))
        if start == 25 * batch + 1:  # make sure the reader has seen a partial prefix
            assert midway.wait(60) or failures
    reader.join(120)
    assert finished.is_set()
    assert not failures, failures[0]
    assert prefixes[-1] == total
    assert any(0 < p < total for p in prefixes)
    assert prefixes == sorted(prefixes)


def _check_new_rows(store: RunStore, cursor: int, batch: int) -> int:
    """Read what was added after ``cursor``: it must continue the seqs without a gap and
    end on a batch boundary; the run row must agree. Returns the new cursor."""
    rows = store.results("fleet-abc", after_seq=cursor)
    assert [s for s, _ in rows] == list(range(cursor + 1, cursor + len(rows) + 1))
    if rows:
        cursor = rows[-1][0]
        assert cursor % batch == 0, f"partial batch visible: {cursor}"
        assert rows[-1][1].key == make_result(cursor).key
    run = store.get_run("fleet-abc")
    assert run is not None
    assert run.done >= cursor
    assert run.done % batch == 0
    assert sum(run.counts.values()) == run.done == run.last_seq
    return cursor


CHILD = """
import sys
from pathlib import Path
from fleetbench._store import RunStore
from tests.test_store import new_run, make_result

store = RunStore(Path(sys.argv[1]))
new_run(store, planned=10**9)
size = int(sys.argv[2])
for b in range(10**6):
    seqs = range(b * size + 1, (b + 1) * size + 1)
    rows = [(s, make_result(s, response_size=4000)) for s in seqs]
    store.append_results("fleet-abc", rows)
    print(b + 1, flush=True)
"""


def _wait_for_lines(proc: subprocess.Popen[bytes], count: int, deadline: float) -> int:
    """Read the child's progress lines until ``count`` arrived; fail at ``deadline``."""
    assert proc.stdout is not None
    fd, seen, buffer = proc.stdout.fileno(), 0, b""
    while seen < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, "the child made no progress in time"
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        assert chunk, f"the child exited early: {proc.wait()}"
        buffer += chunk
        seen = buffer.count(b"\n")
    return seen


def _kill_inside_a_write(proc: subprocess.Popen[bytes], db: Path, deadline: float) -> None:
    """SIGKILL the child while it holds the write lock, i.e. inside an append transaction.

    A probe that cannot take the write lock at once knows another writer is in a
    transaction; the kill follows within microseconds, far less than a batch takes.
    """
    probe = sqlite3.connect(db, timeout=0, isolation_level=None)
    try:
        while True:
            assert time.monotonic() < deadline, "never caught the child inside a write"
            try:
                probe.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:
                proc.send_signal(signal.SIGKILL)
                proc.wait(30)
                return
            probe.execute("ROLLBACK")
    finally:
        probe.close()


def test_a_writer_killed_mid_append_leaves_only_whole_batches(tmp_path: Path) -> None:
    size = 2000  # rows of ~4 KB: each batch is ~8 MB, spilling to the WAL before commit
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), str(size)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        committed = _wait_for_lines(proc, 3, time.monotonic() + 120)
        _kill_inside_a_write(proc, tmp_path / DB_NAME, time.monotonic() + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.stdout.close()
    proc.stderr.close()

    with sqlite3.connect(tmp_path / DB_NAME) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    raw.close()
    with RunStore(tmp_path) as store:
        seqs = [s for s, _ in store.iter_results("fleet-abc")]
        stored = len(seqs)
        assert seqs == list(range(1, stored + 1))
        assert stored % size == 0
        assert stored >= committed * size
        run = store.get_run("fleet-abc")
        assert run is not None
        assert run.done == run.last_seq == sum(run.counts.values()) == stored
        assert store.results("fleet-abc", after_seq=stored - 1) == [
            (stored, make_result(stored, response_size=4000))]
        # and it resumes: the next batch goes in, an old one is ignored
        store.append_results("fleet-abc", rows_for(range(stored + 1, stored + 11)))
        store.append_results("fleet-abc", rows_for(range(1, 11)))
        assert store.last_seq("fleet-abc") == stored + 10
        assert len(store.finished_keys("fleet-abc")) == stored + 10


# ── the bus subscriber ─────────────────────────────────────────────────────────────


def finished(seq: int, run_id: str = "fleet-abc") -> TestFinished:
    return TestFinished(run_id=run_id, seq=seq, result=make_result(seq))


async def test_store_writer_batches_and_flushes_on_run_finished(store: RunStore) -> None:
    new_run(store, planned=4500)
    writer = StoreWriter(store, max_batch=2000, max_delay_s=3600)
    before = store.transactions

    await writer.handle(RunStarted(run_id="fleet-abc", seq=1, fleet_id="fleet",
                                   planned=4500, done=0, at="2025-01-01T00:00:00Z"))
    run = store.get_run("fleet-abc")
    assert run is not None
    assert run.status is RunStatus.RUNNING
    for seq in range(2, 2001):
        await writer.handle(finished(seq))
    assert (writer.flushes, writer.pending, store.results("fleet-abc")) == (0, 1999, [])
    for seq in range(2001, 4502):
        await writer.handle(finished(seq))
    assert (writer.flushes, writer.pending) == (2, 500)
    assert store.last_seq("fleet-abc") == 4001

    await writer.handle(RunFinished(run_id="fleet-abc", seq=4502, status=RunStatus.FAILED,
                                    at="2025-01-01T00:01:00Z", error="stopped"))
    assert (writer.flushes, writer.pending) == (3, 0)
    assert store.transactions - before == 5  # started, 3 batches, finished
    assert [s for s, _ in store.iter_results("fleet-abc")] == list(range(2, 4502))
    run = store.get_run("fleet-abc")
    assert run is not None
    assert (run.status, run.error, run.done, run.last_seq) == (
        RunStatus.FAILED, "stopped", 4500, 4502)
    assert run.finished_at is not None


async def test_store_writer_flushes_old_results_and_when_idle(store: RunStore) -> None:
    new_run(store)
    now = [0.0]
    writer = StoreWriter(store, max_batch=1000, max_delay_s=0.05, clock=lambda: now[0])
    for seq, at in [(1, 0.0), (2, 0.02), (3, 0.049)]:
        now[0] = at
        await writer.handle(finished(seq))
    assert (writer.flushes, writer.pending, writer.flush_due()) == (0, 3, False)
    now[0] = 0.05
    assert writer.flush_due()
    await writer.handle(finished(4))
    assert (writer.flushes, writer.pending) == (1, 0)
    assert [s for s, _ in store.results("fleet-abc")] == [1, 2, 3, 4]

    now[0] = 0.06
    await writer.handle(finished(5))
    assert writer.pending == 1
    await writer.flush()  # the bus found no further event queued
    before = store.transactions
    await writer.flush()  # nothing buffered: no transaction
    assert (writer.flushes, writer.pending, store.transactions) == (2, 0, before)
    assert store.last_seq("fleet-abc") == 5


async def test_store_writer_aclose_writes_what_is_buffered(store: RunStore) -> None:
    new_run(store)
    new_run(store, "second")
    writer = StoreWriter(store, max_batch=100, max_delay_s=3600)
    for seq in range(1, 11):
        await writer.handle(finished(seq))
        await writer.handle(finished(seq, "second"))
    assert store.results("fleet-abc") == []
    await writer.aclose()
    assert [s for s, _ in store.results("fleet-abc")] == list(range(1, 11))
    assert [s for s, _ in store.results("second")] == list(range(1, 11))
    assert writer.flushes == 1


async def test_store_writer_keeps_rows_when_a_write_fails(tmp_path: Path) -> None:
    with RunStore(tmp_path, busy_timeout_s=0.05) as store:
        new_run(store)
        writer = StoreWriter(store, max_batch=100, max_delay_s=3600)
        for seq in range(1, 6):
            await writer.handle(finished(seq))
        blocker = sqlite3.connect(store.path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await writer.flush()
        assert (writer.pending, writer.flushes) == (5, 0)
        blocker.execute("ROLLBACK")
        blocker.close()

        await writer.handle(finished(6))
        await writer.flush()
        assert [s for s, _ in store.results("fleet-abc")] == [1, 2, 3, 4, 5, 6]
        assert writer.flushes == 1
