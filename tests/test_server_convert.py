"""The stream's wire encoding: stored JSON converted straight to protobuf gives the same
messages as the records do, messages assembled from pre-encoded results parse as the
messages they stand for, and the store's raw reads behind the replay."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import multiprocessing
import os
import sqlite3
from pathlib import Path

import pytest
from fleetbench_client.v1 import fleetbench_pb2 as pb

from fleetbench._server import _convert as convert
from fleetbench._server._channel import LiveBatch, RunChannel
from fleetbench._server._encoded import SCHEMA_VERSION, EncodedWindows, WindowKey
from fleetbench._server._replay import ReplayCache, Row
from fleetbench._server._stream import StreamMessage
from fleetbench._store import RunStore, encode_result
from fleetbench.events import Event, RunStarted, TestFinished
from fleetbench.records import RunStatus, Status, TestResult

from .test_store import make_result, new_run, rows_for


def sample_rows() -> list[tuple[int, TestResult]]:
    """Every status, fields set and unset, a response over 16 KiB (a 3-byte length on
    the wire) and timestamps outside the engine's own format."""
    rows = rows_for(range(1, 13))
    rows.append((13, make_result(13, Status.PASSED, response_size=20_000)))
    odd = dataclasses.replace(make_result(14, Status.FAILED),
                              started_at="2025-01-31T12:00:00+00:00",
                              finished_at="2025-01-31T12:00:01.5")
    rows.append((14, odd))
    bare = dataclasses.replace(make_result(15, Status.ERROR), verdicts=(),
                               item=dataclasses.replace(make_result(15).item, tags=()))
    rows.append((15, bare))
    return rows


@pytest.mark.parametrize("save_responses", [True, False])
def test_stored_json_converts_to_the_message_of_the_record(tmp_path: Path,
                                                           save_responses: bool) -> None:
    rows = sample_rows()
    expected = [convert.result_message(seq, r, save_responses=save_responses)
                for seq, r in rows]
    assert any(m.HasField("latency_ms") for m in expected)
    assert any(not m.HasField("latency_ms") for m in expected)
    assert any(m.HasField("cost_usd") for m in expected)
    assert any(v.HasField("cost_usd") for m in expected for v in m.verdicts)
    assert all(bool(m.response_text) is save_responses for m in expected
               if m.status == pb.TEST_STATUS_PASSED)

    with RunStore(tmp_path / "state") as store:
        new_run(store, planned=len(rows))
        store.append_results("fleet-abc", rows)
        raw = store.result_json_rows("fleet-abc")
    assert [seq for seq, _ in raw] == [seq for seq, _ in rows]
    assert [json.loads(data) for _, data in raw] == [json.loads(encode_result(r))
                                                     for _, r in rows]

    stored = convert.encode_stored(raw, save_responses=save_responses)
    live = convert.encode_live(LiveBatch(rows), save_responses=save_responses)
    for encoded in (stored, live):
        assert [seq for seq, _ in encoded] == [seq for seq, _ in rows]
        message = pb.StreamResultsResponse.FromString(b"".join(d for _, d in encoded))
        assert list(message.results) == expected
        for (_, data), one in zip(encoded, expected, strict=True):  # each on its own
            assert list(pb.StreamResultsResponse.FromString(data).results) == [one]
    assert expected[13].started_at.ToJsonString() == "2025-01-31T12:00:00Z"
    assert expected[13].finished_at.ToJsonString() == "2025-01-31T12:00:01.500Z"


def test_a_live_batch_is_converted_once_for_every_stream() -> None:
    batch = LiveBatch(rows_for(range(1, 5)))
    first = convert.encode_live(batch, save_responses=True)
    assert convert.encode_live(batch, save_responses=True) is first
    other = convert.encode_live(batch, save_responses=False)
    assert other is not first
    assert len(other[0][1]) < len(first[0][1])  # without the answer's text


@pytest.mark.parametrize("count", [0, 1, 7])
def test_a_message_of_encoded_results_parses_as_the_message(count: int) -> None:
    rows = rows_for(range(1, count + 1))
    encoded = convert.encode_live(LiveBatch(rows), save_responses=True)
    message = StreamMessage(encoded, None, RunStatus.RUNNING, last_seq=count,
                            head_seq=count + 3)
    data = convert.stream_response(message)
    assert pb.StreamResultsResponse.FromString(data) == pb.StreamResultsResponse(
        results=[convert.result_message(seq, r, save_responses=True) for seq, r in rows],
        status=pb.RUN_STATUS_RUNNING, last_seq=count, head_seq=count + 3)


def test_raw_result_reads_and_run_counts(tmp_path: Path) -> None:
    with RunStore(tmp_path / "state") as store:
        assert store.count_runs() == dict.fromkeys(RunStatus, 0)
        assert store.result_json_rows("nope") == []
        new_run(store, planned=10)
        new_run(store, "fleet-def")
        store.set_status("fleet-def", RunStatus.RUNNING)
        store.append_results("fleet-abc", rows_for(range(1, 11)))
        page = store.result_json_rows("fleet-abc", after_seq=3, limit=4)
        assert [seq for seq, _ in page] == [4, 5, 6, 7]
        assert all(isinstance(data, bytes) for _, data in page)
        assert store.result_json_rows("fleet-abc", after_seq=10) == []
        assert store.count_runs() == {**dict.fromkeys(RunStatus, 0),
                                      RunStatus.PENDING: 1, RunStatus.RUNNING: 1}


# ── the replay cache ──


class CountingEncoder(convert.ResultEncoder):
    """The real encoder, counting the stored results it converts."""

    def __init__(self) -> None:
        super().__init__(save_responses=True)
        self.converted = 0

    def stored(self, rows: list[tuple[int, bytes]]) -> list[Row]:
        self.converted += len(rows)
        return super().stored(rows)


def seq_rows(seqs: range) -> list[tuple[int, TestResult]]:
    return [(seq, make_result(seq)) for seq in seqs]


async def test_the_replay_cache_converts_each_complete_window_once(tmp_path: Path) -> None:
    with RunStore(tmp_path / "state") as store:
        new_run(store, planned=5000)
        store.append_results("fleet-abc", seq_rows(range(2, 2502)))  # seq 1: run started
        cache = ReplayCache(store, window=1000)
        encoder = CountingEncoder()
        direct = encoder.stored(store.result_json_rows("fleet-abc"))
        encoder.converted = 0

        # Twenty streams catching up at once: windows 1-1000 and 1001-2000 are complete
        # and read once between them; 2001-3000 is still open, read by each, not kept.
        everything = await asyncio.gather(*[cache.rows("fleet-abc", encoder, 0, 5000)
                                            for _ in range(20)])
        assert all(rows == direct for rows in everything)
        assert encoder.converted == 1999 + 20 * 501
        assert cache.bytes == sum(len(data) for seq, data in direct if seq <= 2000)

        encoder.converted = 0
        middle = await cache.rows("fleet-abc", encoder, 1500, 10)  # from the cache
        assert [seq for seq, _ in middle] == list(range(1501, 1511))
        across = await cache.rows("fleet-abc", encoder, 995, 10)  # two cached windows
        assert [seq for seq, _ in across] == list(range(996, 1006))
        assert encoder.converted == 0

        store.append_results("fleet-abc", seq_rows(range(2502, 3100)))
        tail = await cache.rows("fleet-abc", encoder, 2990, 20)
        assert [seq for seq, _ in tail] == list(range(2991, 3011))
        assert encoder.converted == 1000 + 10  # 2001-3000 is complete now, 3001- is not
        again = await cache.rows("fleet-abc", encoder, 2000, 1000)
        assert again == direct[1999:] + encoder.stored(
            store.result_json_rows("fleet-abc", after_seq=2501, limit=499))


async def test_the_replay_cache_keeps_within_its_bytes(tmp_path: Path) -> None:
    with RunStore(tmp_path / "state") as store:
        new_run(store, planned=5000)
        store.append_results("fleet-abc", seq_rows(range(1, 501)))
        window = sum(len(data) for _, data in
                     CountingEncoder().stored(store.result_json_rows("fleet-abc", limit=100)))
        cache = ReplayCache(store, window=100, max_bytes=2 * window + window // 2)
        rows = await cache.rows("fleet-abc", CountingEncoder(), 0, 1000)
        assert [seq for seq, _ in rows] == list(range(1, 501))
        assert 2 * window * 0.9 < cache.bytes <= 2 * window + window // 2  # the last two


# ── windows kept in the server's file ──


def kept_seqs(kept: EncodedWindows, store: RunStore, first: int, last: int,
              run_id: str = "fleet-abc") -> list[int] | None:
    run = store.get_run(run_id)
    assert run is not None
    rows = kept.get(WindowKey(run_id, run.created_at, "responses", first, last))
    return None if rows is None else [seq for seq, _ in rows]


async def test_kept_windows_outlive_the_cache_but_not_their_run(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with RunStore(state) as store:
        new_run(store, planned=5000)
        store.append_results("fleet-abc", seq_rows(range(2, 2502)))
        direct = CountingEncoder().stored(store.result_json_rows("fleet-abc"))
        kept = EncodedWindows(state, store)
        first = CountingEncoder()
        assert await ReplayCache(store, kept=kept).rows("fleet-abc", first, 0, 5000) == direct
        assert first.converted == 2500
        kept.close()

        kept = EncodedWindows(state, store)  # a restarted server: a new cache, same file
        again = CountingEncoder()
        assert await ReplayCache(store, kept=kept).rows("fleet-abc", again, 0, 5000) == direct
        assert again.converted == 501  # only the open window 2001-3000
        assert kept_seqs(kept, store, 0, 1000) == list(range(2, 1001))

    for stale in state.glob("runs.sqlite3*"):  # a new run store, the same run id
        stale.unlink()
    with RunStore(state) as store:
        new_run(store, planned=5000)
        store.append_results("fleet-abc", rows_for(range(2, 2502), offset=7))
        fresh = CountingEncoder()
        rows = await ReplayCache(store, kept=kept).rows("fleet-abc", fresh, 0, 5000)
        assert rows == fresh.stored(store.result_json_rows("fleet-abc")) != direct
        assert fresh.converted == 2 * 2500
        kept.close()


def test_a_server_file_of_version_0_hands_its_run_keys_to_the_store(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    with sqlite3.connect(state / "server.sqlite3") as raw:  # as fleetbench 0.1 left it
        raw.execute("CREATE TABLE run_keys (run_id TEXT PRIMARY KEY, run_key TEXT NOT NULL, "
                    "stored_at TEXT NOT NULL) STRICT")
        raw.executemany("INSERT INTO run_keys VALUES (?, ?, '2025-01-01T00:00:00Z')",
                        [("fleet-abc", "nightly"), ("gone-run", "x")])
    raw.close()
    with RunStore(state) as store:
        new_run(store)
        EncodedWindows(state, store).close()
        run = store.get_run("fleet-abc")
        assert run is not None
        assert run.run_key == "nightly"
        assert store.get_run("gone-run") is None
    with sqlite3.connect(state / "server.sqlite3") as raw:
        tables = {name for (name,) in raw.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert tables == {"windows"}
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        raw.execute("INSERT INTO windows VALUES ('r', 'c', 'v', 0, 1, x'', x'', x'')")
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")  # another encoding
    raw.close()
    with RunStore(state) as store:
        EncodedWindows(state, store).close()
    with sqlite3.connect(state / "server.sqlite3") as raw:
        assert raw.execute("SELECT count(*) FROM windows").fetchone()[0] == 0
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    raw.close()


async def feed(channel: RunChannel, store: RunStore | None, seqs: range, *, batch: int,
               unstored: frozenset[int] = frozenset()) -> None:
    """What the bus does: store each batch (but the ``unstored`` seqs; nothing without a
    store), then hand it to the channel; the first seq is the run's start."""
    run_id = channel.run_id
    events: list[Event] = [RunStarted(run_id, seqs[0], "fleet", 5000, 0, "now")]
    events += [TestFinished(run_id, seq, make_result(seq)) for seq in seqs[1:]]
    for start in range(0, len(events), batch):
        chunk = events[start:start + batch]
        if store is not None:
            store.append_results(run_id, [(e.seq, e.result) for e in chunk
                                          if isinstance(e, TestFinished)
                                          and e.seq not in unstored])
        await channel.handle(chunk)


async def test_a_run_executing_here_has_its_windows_encoded_as_they_complete(
        tmp_path: Path) -> None:
    state = tmp_path / "state"
    with RunStore(state) as store:
        new_run(store, planned=5000)
        new_run(store, "fleet-def")
        kept = EncodedWindows(state, store)
        encoder = CountingEncoder()
        cache = ReplayCache(store, kept=kept, encoder_for=lambda _: encoder)
        channel = RunChannel("fleet-abc", 5000, follower_limit=10, recorder=cache)
        await feed(channel, store, range(1, 2301), batch=300, unstored=frozenset({1500}))
        # The channel saw 1-2000 before it saw 2001-2300, but the store has no seq 2000
        # for fleet-def: its window is not complete there, so it is not kept.
        await feed(RunChannel("fleet-def", 5000, follower_limit=10, recorder=cache), None,
                   range(1, 1201), batch=600)
        await cache.aclose()  # the conversions under way
        assert encoder.converted == 999 + 999  # the store decides: it has no seq 1500
        assert kept_seqs(kept, store, 0, 1000) == list(range(2, 1001))
        assert kept_seqs(kept, store, 1000, 2000) == [s for s in range(1001, 2001)
                                                      if s != 1500]
        assert kept_seqs(kept, store, 0, 1000, "fleet-def") is None
        everything = await cache.rows("fleet-abc", encoder, 0, 5000)
        assert encoder.converted == 1998 + 300  # only the open window, 2001-2300
        assert [seq for seq, _ in everything] == [s for s in range(2, 2301) if s != 1500]

        resumed = RunChannel("fleet-abc", 5000, follower_limit=10, recorder=cache)
        await feed(resumed, store, range(2301, 4101), batch=700)
        await cache.aclose()
        # 2001-3000, begun before the run resumed, and 3001-4000 are complete.
        assert kept_seqs(kept, store, 2000, 3000) == [s for s in range(2001, 3001)
                                                      if s != 2301]
        assert kept_seqs(kept, store, 3000, 4000) == list(range(3001, 4001))
        kept.close()


class DyingEncoder(CountingEncoder):
    """Kills the worker process it converts in (and works in the server's own)."""

    def stored(self, rows: list[tuple[int, bytes]]) -> list[Row]:
        if multiprocessing.parent_process() is not None:
            os._exit(3)
        return super().stored(rows)


@pytest.mark.parametrize("encoder_type", [CountingEncoder, DyingEncoder])
async def test_a_worker_process_converts_the_windows_of_runs_executing_here(
        tmp_path: Path, encoder_type: type[CountingEncoder]) -> None:
    state = tmp_path / "state"
    with RunStore(state) as store:
        new_run(store, planned=5000)
        kept = EncodedWindows(state, store)
        encoder = encoder_type()
        cache = ReplayCache(store, kept=kept, encoder_for=lambda _: encoder, worker=True)
        await feed(RunChannel("fleet-abc", 5000, follower_limit=10, recorder=cache), store,
                   range(1, 2301), batch=500)
        await cache.aclose()
        rows = await cache.rows("fleet-abc", encoder, 0, 5000)
        assert [seq for seq, _ in rows] == list(range(2, 2301))
        if encoder_type is CountingEncoder:  # converted over there, read from memory here
            assert encoder.converted == 300
            assert kept_seqs(kept, store, 1000, 2000) == list(range(1001, 2001))
        else:  # the worker died: the stream converted them here
            assert encoder.converted == 2299
        with pytest.raises(ValueError, match="needs the file"):
            ReplayCache(store, worker=True)
        kept.close()
