"""The gRPC server on a real port with a real channel: runs, streams, artifacts, paging,
validation, errors."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from fleetbench_client.v1 import fleetbench_pb2 as pb

from fleetbench._plugins import PluginHost
from fleetbench._server._config import Limits
from fleetbench._store import RunStore
from fleetbench.records import RunStatus

from .conftest import FleetDir
from .server_support import (
    Server,
    bad_request,
    big_fleet,
    collect,
    config_for,
    fast_fleet,
    run_when,
    running_server,
    seqs,
    slow_fleet,
    start_request,
)

ENDED = (pb.RUN_STATUS_COMPLETED, pb.RUN_STATUS_FAILED, pb.RUN_STATUS_CANCELLED,
         pb.RUN_STATUS_INTERRUPTED)


@pytest.fixture
async def served(tmp_path: Path, host: PluginHost) -> AsyncIterator[Server]:
    async with running_server(config_for(tmp_path), host) as server:
        yield server


async def test_start_stream_complete_with_artifacts(fleet_dir: FleetDir, served: Server) -> None:
    manifest = fast_fleet(fleet_dir).write()
    started = await served.stub.StartFleetRun(start_request(manifest, labels={"team": "qa"}))
    assert started.created
    run_id = started.run.run_id
    assert run_id.startswith("test-fleet-")
    assert started.run.status in (pb.RUN_STATUS_PENDING, pb.RUN_STATUS_RUNNING,
                                  pb.RUN_STATUS_COMPLETED)
    assert started.run.progress.planned == 32

    messages = await collect(served.stub, run_id, max_batch=7, snapshot_interval_ms=1)
    results = [r for m in messages for r in m.results]
    assert len(results) == 32
    assert len({r.key for r in results}) == 32
    assert seqs(messages) == sorted(seqs(messages))
    assert all(len(m.results) <= 7 for m in messages)
    assert all(m.last_seq >= (m.results[-1].seq if m.results else 0) for m in messages)
    first, last = messages[0], messages[-1]
    assert first.HasField("snapshot")
    assert last.HasField("snapshot")
    assert last.status == pb.RUN_STATUS_COMPLETED
    assert last.last_seq == results[-1].seq
    final = last.snapshot
    assert (final.progress.planned, final.progress.done, final.summary.total) == (32, 32, 32)
    assert final.summary.latency_ms.method == pb.PERCENTILE_METHOD_LINEAR
    dimensions = {g.dimension for g in final.groups}
    assert dimensions == {pb.GROUP_DIMENSION_PROVIDER, pb.GROUP_DIMENSION_REPOSITORY,
                          pb.GROUP_DIMENSION_CATEGORY, pb.GROUP_DIMENSION_SCENARIO,
                          pb.GROUP_DIMENSION_REPOSITORY_PROVIDER}
    providers = {(g.provider, g.model): g.summary for g in final.groups
                 if g.dimension == pb.GROUP_DIMENSION_PROVIDER}
    assert providers[("simulated", "fast")].HasField("cost_usd")  # priced
    assert not providers[("simulated", "slow")].HasField("cost_usd")  # no price: absent
    sample = results[0]
    assert sample.provider == "simulated"
    assert sample.status == pb.TEST_STATUS_PASSED
    assert sample.HasField("started_at")
    assert sample.response_text

    run = (await served.stub.GetRun(pb.GetRunRequest(run_id=run_id))).run
    assert run.status == pb.RUN_STATUS_COMPLETED
    assert (run.progress.planned, run.progress.done, run.summary.total) == (32, 32, 32)
    assert dict(run.labels) == {"team": "qa"}
    assert run.HasField("finished_at")
    assert run.pricing_version
    names = {a.name for a in run.artifacts}
    assert {"fleet_results.json", "results.jsonl", "providers.csv", "manifest.json"} <= names
    assert any("no price known for simulated:slow" in w for w in run.warnings)


async def test_start_is_idempotent_by_run_id(fleet_dir: FleetDir, served: Server) -> None:
    manifest = slow_fleet(fleet_dir).write()
    first = await served.stub.StartFleetRun(start_request(manifest))
    again = await served.stub.StartFleetRun(start_request(manifest, labels={"x": "y"}))
    assert first.created
    assert not again.created
    assert again.run.run_id == first.run.run_id
    other = await served.stub.StartFleetRun(start_request(manifest, run_key="second"))
    assert other.created
    assert other.run.run_id != first.run.run_id
    for run_id in (first.run.run_id, other.run.run_id):
        messages = await collect(served.stub, run_id)
        assert len(set(r.key for m in messages for r in m.results)) == 32
        assert messages[-1].status == pb.RUN_STATUS_COMPLETED
    done = await served.stub.StartFleetRun(start_request(manifest))
    assert not done.created
    assert done.run.status == pb.RUN_STATUS_COMPLETED
    assert done.run.progress.done == 32


async def test_a_stream_resumed_after_last_seq_gets_exactly_the_rest(
        fleet_dir: FleetDir, served: Server) -> None:
    manifest = slow_fleet(fleet_dir, latency_ms=20).write()
    run_id = (await served.stub.StartFleetRun(start_request(manifest))).run.run_id
    seen: list[pb.TestResult] = []
    last_seq = 0
    call = served.stub.StreamResults(pb.StreamResultsRequest(run_id=run_id, max_batch=3))
    async for message in call:
        seen.extend(message.results)
        last_seq = message.last_seq
        if len(seen) >= 5:
            break  # the client goes away mid-run
    call.cancel()
    assert 5 <= len(seen) < 32
    rest = await collect(served.stub, run_id, after_seq=last_seq)
    keys = [r.key for r in seen] + [r.key for m in rest for r in m.results]
    assert len(keys) == len(set(keys)) == 32
    assert min(seqs(rest)) > last_seq
    assert rest[-1].status == pb.RUN_STATUS_COMPLETED

    replay = await collect(served.stub, run_id, after_seq=seen[2].seq, replay_only=True)
    assert seqs(replay) == [r.seq for r in seen[3:]] + seqs(rest)


@pytest.mark.parametrize("buffer", [20_000, 4])  # 4: streams lag and catch up from the store
async def test_concurrent_subscribers_each_get_every_result_once(
        fleet_dir: FleetDir, host: PluginHost, tmp_path: Path, buffer: int) -> None:
    manifest = big_fleet(fleet_dir).write()
    async with running_server(config_for(tmp_path, stream_buffer=buffer), host) as served:
        run_id = (await served.stub.StartFleetRun(start_request(manifest))).run.run_id
        streams = [collect(served.stub, run_id, max_batch=batch, snapshot_interval_ms=5)
                   for batch in (1, 2, 500)]
        outcomes = await asyncio.gather(*streams)
    for messages in outcomes:
        assert seqs(messages) == sorted(set(seqs(messages)))
        assert len(seqs(messages)) == 1208
        assert messages[-1].status == pb.RUN_STATUS_COMPLETED
        assert messages[0].HasField("snapshot")
        assert messages[-1].HasField("snapshot")
    assert seqs(outcomes[0]) == seqs(outcomes[1]) == seqs(outcomes[2])


async def test_cancel_keeps_results_and_start_resumes(fleet_dir: FleetDir,
                                                      served: Server) -> None:
    manifest = slow_fleet(fleet_dir, latency_ms=50).write()
    run_id = (await served.stub.StartFleetRun(start_request(manifest))).run.run_id
    await run_when(served.stub, run_id, lambda r: r.progress.done >= 3, what="3 results")
    cancelled = (await served.stub.CancelRun(
        pb.CancelRunRequest(run_id=run_id, reason="operator said so"))).run
    assert cancelled.status == pb.RUN_STATUS_CANCELLED
    assert cancelled.error_message == "operator said so"
    assert 3 <= cancelled.progress.done < 32
    assert any(a.name == "results.jsonl" for a in cancelled.artifacts)  # partial artifacts
    stream = await collect(served.stub, run_id)
    assert stream[-1].status == pb.RUN_STATUS_CANCELLED
    assert len(seqs(stream)) == cancelled.progress.done

    again = (await served.stub.CancelRun(pb.CancelRunRequest(run_id=run_id))).run
    assert again.status == pb.RUN_STATUS_CANCELLED  # an ended run stays as it is

    resumed = await served.stub.StartFleetRun(start_request(manifest))
    assert not resumed.created
    messages = await collect(served.stub, run_id)
    assert messages[-1].status == pb.RUN_STATUS_COMPLETED
    keys = [r.key for m in messages for r in m.results]
    assert len(keys) == len(set(keys)) == 32


async def test_a_stream_of_a_resumed_run_replays_the_earlier_sessions_results(
        fleet_dir: FleetDir, served: Server) -> None:
    # The resumed run's first new result takes 100 ms: the stream attaches while the new
    # session's channel has handled nothing yet, and must still send the earlier results.
    manifest = slow_fleet(fleet_dir, latency_ms=100).write()
    run_id = (await served.stub.StartFleetRun(start_request(manifest))).run.run_id
    await run_when(served.stub, run_id, lambda r: r.progress.done >= 2, what="2 results")
    cancelled = (await served.stub.CancelRun(pb.CancelRunRequest(run_id=run_id))).run
    earlier = cancelled.progress.done
    assert earlier >= 2
    await served.stub.StartFleetRun(start_request(manifest))
    messages = await collect(served.stub, run_id)
    assert messages[-1].status == pb.RUN_STATUS_COMPLETED
    assert seqs(messages) == sorted(set(seqs(messages)))  # in order, each once
    keys = [r.key for m in messages for r in m.results]
    assert len(keys) == len(set(keys)) == 32


async def test_get_artifact_streams_chunks_with_sha256(fleet_dir: FleetDir,
                                                       served: Server) -> None:
    manifest = fast_fleet(fleet_dir).write()
    run_id = (await served.stub.StartFleetRun(start_request(manifest))).run.run_id
    run = await run_when(served.stub, run_id, lambda r: r.status == pb.RUN_STATUS_COMPLETED,
                         what="completion")
    artifact = next(a for a in run.artifacts if a.name == "results.jsonl")
    chunks = [c async for c in served.stub.GetArtifact(
        pb.GetArtifactRequest(run_id=run_id, name="results.jsonl", chunk_size=1000))]
    data = b"".join(c.data for c in chunks)
    on_disk = (fleet_dir.root / "out" / run_id / "results.jsonl").read_bytes()
    assert data == on_disk
    assert len(data) == artifact.size_bytes
    assert [c.offset for c in chunks] == list(range(0, len(data), 1000))
    assert all(c.total_size_bytes == len(data) for c in chunks)
    assert [bool(c.sha256) for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert chunks[-1].sha256 == hashlib.sha256(data).hexdigest() == artifact.sha256
    tail = [c async for c in served.stub.GetArtifact(
        pb.GetArtifactRequest(run_id=run_id, name="results.jsonl", offset=len(data) - 10))]
    assert b"".join(c.data for c in tail) == data[-10:]
    assert tail[-1].sha256 == artifact.sha256  # the whole file's, also when resumed

    for owner, name in ((run_id, "run.json"), (run_id, "../fleet.json"), ("nope-1", "x")):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            _ = [c async for c in served.stub.GetArtifact(
                pb.GetArtifactRequest(run_id=owner, name=name))]
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        _ = [c async for c in served.stub.GetArtifact(pb.GetArtifactRequest(
            run_id=run_id, name="results.jsonl", offset=len(data) + 1))]
    assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE


async def test_list_runs_pages_newest_first_and_filters(fleet_dir: FleetDir,
                                                        served: Server) -> None:
    manifest = fast_fleet(fleet_dir).write()
    ids = []
    for n in range(5):
        started = await served.stub.StartFleetRun(start_request(manifest, run_key=f"k{n}"))
        ids.append(started.run.run_id)
        await collect(served.stub, started.run.run_id)  # until it ends
    pages: list[list[str]] = []
    token = ""
    while True:
        page = await served.stub.ListRuns(pb.ListRunsRequest(page_size=2, page_token=token))
        pages.append([r.run_id for r in page.runs])
        token = page.next_page_token
        if not token:
            break
    assert pages == [ids[4:2:-1], ids[2:0:-1], ids[0:1]]
    completed = await served.stub.ListRuns(pb.ListRunsRequest(
        fleet_id="test-fleet", statuses=[pb.RUN_STATUS_COMPLETED]))
    assert [r.run_id for r in completed.runs] == ids[::-1]
    assert all(r.progress.done == 32 and r.summary.total == 32 for r in completed.runs)
    for request in (pb.ListRunsRequest(fleet_id="other"),
                    pb.ListRunsRequest(statuses=[pb.RUN_STATUS_FAILED]),
                    pb.ListRunsRequest(statuses=[pb.RUN_STATUS_UNSPECIFIED])):
        assert not (await served.stub.ListRuns(request)).runs
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.ListRuns(pb.ListRunsRequest(page_token="garbage"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_validate_manifest_reports_the_plan_or_every_problem(
        fleet_dir: FleetDir, served: Server) -> None:
    manifest = fast_fleet(fleet_dir).write()
    valid = await served.stub.ValidateManifest(pb.ValidateManifestRequest(
        manifest=manifest.read_text(), manifest_path=str(manifest), run_key="k"))
    assert not valid.problems
    assert valid.planned_tests == 32
    assert valid.fleet_id == "test-fleet"
    assert dict(valid.tests_per_repository) == {"api-gateway": 20, "user-service": 12}
    assert dict(valid.tests_per_scenario) == {"coding": 24, "reasoning": 8}
    assert dict(valid.tests_per_provider) == {"simulated:fast": 16, "simulated:slow": 16}
    assert any("simulated:slow" in w for w in valid.warnings)
    started = await served.stub.StartFleetRun(start_request(manifest, run_key="k"))
    assert started.run.run_id == valid.run_id

    fleet_dir.manifest["repositories"][0]["scenarios"] = ["codng"]
    fleet_dir.manifest["version"] = "2.0"
    bad = fleet_dir.write("bad.json")
    invalid = await served.stub.ValidateManifest(pb.ValidateManifestRequest(
        manifest=bad.read_text(), manifest_path=str(bad)))
    assert {p.location for p in invalid.problems} >= {"version", "repositories[0].scenarios[0]"}
    assert invalid.planned_tests == 0
    assert not invalid.run_id
    assert invalid.fleet_id == "test-fleet"


async def test_list_plugins_names_the_builtins(served: Server) -> None:
    plugins = (await served.stub.ListPlugins(pb.ListPluginsRequest())).plugins
    kinds = {(p.name, p.kind) for p in plugins}
    assert ("simulated", pb.PLUGIN_KIND_PROVIDER) in kinds
    assert ("json", pb.PLUGIN_KIND_EXPORTER) in kinds
    assert ("local", pb.PLUGIN_KIND_EXECUTOR) in kinds
    assert all(p.version and p.distribution for p in plugins)


async def test_unknown_runs_are_not_found(served: Server) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.GetRun(pb.GetRunRequest(run_id="nope-000000000000"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.CancelRun(pb.CancelRunRequest(run_id="nope-000000000000"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(served.stub, "nope-000000000000")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.GetRun(pb.GetRunRequest())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_an_internal_error_is_short_and_the_server_keeps_serving(
        fleet_dir: FleetDir, served: Server, tmp_path: Path) -> None:
    manifest = fast_fleet(fleet_dir).write()
    run_id = (await served.stub.StartFleetRun(start_request(manifest))).run.run_id
    await collect(served.stub, run_id)
    with sqlite3.connect(tmp_path / "state" / "runs.sqlite3") as db:  # a damaged row
        db.execute("UPDATE results SET result_json = '{\"broken\": 1}' WHERE seq = "
                   "(SELECT min(seq) FROM results)")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(served.stub, run_id)
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "Traceback" not in (caught.value.details() or "")
    assert caught.value.details() == ("internal error in StreamResults; the server log "
                                      "has the details")
    runs = (await served.stub.ListRuns(pb.ListRunsRequest())).runs  # still serving
    assert [r.run_id for r in runs] == [run_id]
    assert (await served.stub.ListPlugins(pb.ListPluginsRequest())).plugins


async def test_server_limits_are_resource_exhausted(fleet_dir: FleetDir, host: PluginHost,
                                                    tmp_path: Path) -> None:
    manifest = slow_fleet(fleet_dir, latency_ms=50).write()
    config = config_for(tmp_path, limits=Limits(max_concurrent_runs=1, max_planned_tests=40))
    async with running_server(config, host) as served:
        first = await served.stub.StartFleetRun(start_request(manifest))
        for run_key in ("second", "third"):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await served.stub.StartFleetRun(start_request(manifest, run_key=run_key))
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        again = await served.stub.StartFleetRun(start_request(manifest))  # same run: fine
        assert again.run.run_id == first.run.run_id
        await served.stub.CancelRun(pb.CancelRunRequest(run_id=first.run.run_id))
    tight = config_for(tmp_path, limits=Limits(max_planned_tests=31))
    async with running_server(tight, host) as served:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await served.stub.StartFleetRun(start_request(manifest, run_key="big"))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "31" in (caught.value.details() or "")


async def test_a_missing_api_key_is_invalid_argument(fleet_dir: FleetDir,
                                                     served: Server) -> None:
    fast_fleet(fleet_dir).manifest["providers"][0]["api_key_env"] = "FLEETBENCH_UNSET_TEST_KEY"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.StartFleetRun(start_request(fleet_dir.write()))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = [v.field for v in bad_request(caught.value).field_violations]
    assert fields == ["providers[0].api_key_env"]


async def test_shutdown_interrupts_runs_and_ends_their_streams(
        fleet_dir: FleetDir, host: PluginHost, tmp_path: Path) -> None:
    manifest = slow_fleet(fleet_dir, latency_ms=50).write()
    async with running_server(config_for(tmp_path), host) as served:
        run_id = (await served.stub.StartFleetRun(start_request(
            manifest, run_key="nightly"))).run.run_id
        stream = asyncio.ensure_future(collect(served.stub, run_id))
        await run_when(served.stub, run_id, lambda r: r.progress.done >= 2, what="results")
        await served.server.stop(grace_s=5.0)
        messages = await stream
    assert messages[-1].status == pb.RUN_STATUS_INTERRUPTED
    assert messages[-1].HasField("snapshot")
    with RunStore(tmp_path / "state") as store:
        record = store.get_run(run_id)
    assert record is not None
    assert record.status is RunStatus.INTERRUPTED
    assert record.run_key == "nightly"  # what the id hashes: the restart plans with it
    assert record.done == len(seqs(messages))
    async with running_server(config_for(tmp_path), host) as served:  # resumes by itself
        messages = await collect(served.stub, run_id)
        assert messages[-1].status == pb.RUN_STATUS_COMPLETED
        assert len({r.key for m in await collect(served.stub, run_id)
                    for r in m.results}) == 32


async def test_a_replay_after_a_restart_reads_the_windows_encoded_during_the_run(
        fleet_dir: FleetDir, host: PluginHost, tmp_path: Path) -> None:
    manifest = big_fleet(fleet_dir).write()
    async with running_server(config_for(tmp_path), host) as served:
        run_id = (await served.stub.StartFleetRun(start_request(manifest))).run.run_id
        live = await collect(served.stub, run_id, max_batch=100)
    with sqlite3.connect(tmp_path / "state" / "server.sqlite3") as raw:
        kept = raw.execute("SELECT run_id, variant, first, last FROM windows").fetchall()
    raw.close()
    assert kept == [(run_id, "responses", 0, 1000)]  # 1001-: not complete, not kept
    async with running_server(config_for(tmp_path), host) as served:
        replay = await collect(served.stub, run_id, max_batch=100, replay_only=True)
    assert [r for m in replay for r in m.results] == [r for m in live for r in m.results]
    assert len(seqs(replay)) == 1208
