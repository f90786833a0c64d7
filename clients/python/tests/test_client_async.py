"""The asyncio client against a real server on port 0 over a real channel, including a
stream that outlives a server restart."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest
from client_support import sha256
from fleetbench_client import (
    AsyncFleetBenchClient,
    InvalidManifest,
    NotFound,
    ResultBatch,
    RunStatus,
    Unauthenticated,
)

from fleetbench._plugins import PluginHost
from fleetbench._server._app import FleetBenchServer
from tests.conftest import FleetDir
from tests.server_support import (
    config_for,
    eventually,
    fast_fleet,
    running_server,
    slow_fleet,
)


async def test_start_stream_wait_download(fleet_dir: FleetDir, aclient: AsyncFleetBenchClient,
                                          tmp_path: Path) -> None:
    manifest = fast_fleet(fleet_dir).write()
    run, created = await aclient.start_run(manifest, labels={"team": "sim"})
    assert created
    batches = [b async for b in aclient.stream_results(run.run_id, max_batch=4,
                                                       snapshot_interval_ms=1)]
    results = [r for b in batches for r in b.results]
    assert len(results) == len({r.key for r in results}) == 32
    assert [r.seq for r in results] == sorted({r.seq for r in results})
    assert batches[0].snapshot is not None
    assert batches[-1].status is RunStatus.COMPLETED
    final = await aclient.wait(run.run_id, timeout_s=30)
    assert RunStatus(final.status) is RunStatus.COMPLETED
    assert final.progress.done == 32

    dest = tmp_path / "downloads"
    paths = await aclient.download_artifacts(run.run_id, dest)
    announced = {a.name: a for a in final.artifacts}
    assert {p.relative_to(dest).as_posix() for p in paths} == set(announced)
    for path in paths:
        assert sha256(path) == announced[path.relative_to(dest).as_posix()].sha256

    again, created_again = await aclient.start_run(manifest)
    assert not created_again
    assert again.run_id == run.run_id
    listed = [r.run_id async for r in aclient.list_runs(page_size=1)]
    assert listed == [run.run_id]
    assert {p.name for p in await aclient.list_plugins()} >= {"simulated", "json"}
    answer = await aclient.validate(manifest)
    assert answer.run_id == run.run_id
    flat = [r.key async for r in aclient.results(run.run_id)]
    assert flat == [r.key for r in results]


async def test_errors(fleet_dir: FleetDir, aclient: AsyncFleetBenchClient) -> None:
    fleet_dir.manifest["repositories"][0]["scenarios"] = ["codng"]
    with pytest.raises(InvalidManifest) as caught:
        await aclient.start_run(fleet_dir.write())
    assert any(v.field.startswith("repositories[0].scenarios") and "codng" in v.description
               for v in caught.value.violations), caught.value.violations
    with pytest.raises(NotFound):
        await aclient.get_run("nope-000000000000")
    with pytest.raises(NotFound):
        [b async for b in aclient.stream_results("nope-000000000000")]
    with pytest.raises(NotFound):
        await aclient.cancel_run("nope-000000000000")


async def test_cancel(fleet_dir: FleetDir, aclient: AsyncFleetBenchClient) -> None:
    manifest = slow_fleet(fleet_dir, latency_ms=50).write()
    run, _ = await aclient.start_run(manifest)
    async for batch in aclient.stream_results(run.run_id):
        if batch.results:
            break
    cancelled = await aclient.cancel_run(run.run_id)
    assert RunStatus(cancelled.status) is RunStatus.CANCELLED
    assert RunStatus((await aclient.wait(run.run_id)).status) is RunStatus.CANCELLED


async def test_bearer_token(fleet_dir: FleetDir, tmp_path: Path, host: PluginHost) -> None:
    async with running_server(config_for(tmp_path, auth_token="s3cret"), host) as served:
        async with AsyncFleetBenchClient(served.server.address) as anonymous:
            with pytest.raises(Unauthenticated):
                await anonymous.list_plugins()
        async with AsyncFleetBenchClient(served.server.address, token="s3cret") as trusted:
            assert await trusted.list_plugins()


async def test_a_stream_resumes_across_a_server_restart_on_the_same_port(
        fleet_dir: FleetDir, tmp_path: Path, host: PluginHost) -> None:
    """The server stops mid-run (the run becomes INTERRUPTED and the stream ends), is
    down for a while, then starts again on the same port and resumes the run: the
    client's one stream reconnects and delivers every result exactly once."""
    manifest = slow_fleet(fleet_dir, latency_ms=30).write()
    config = config_for(tmp_path)
    server = FleetBenchServer(config, host=host)
    await server.start()
    batches: list[ResultBatch] = []
    try:
        async with AsyncFleetBenchClient(server.address) as client:
            run, _ = await client.start_run(manifest)

            async def follow() -> None:
                async for batch in client.stream_results(run.run_id, max_batch=3):
                    batches.append(batch)

            following = asyncio.create_task(follow())

            def delivered() -> int:
                return sum(len(b.results) for b in batches)

            async def some_results() -> bool:
                return delivered() >= 5

            await eventually(some_results, what="the first results")
            await server.stop(grace_s=2.0)

            async def interrupted() -> bool:
                return any(b.status is RunStatus.INTERRUPTED for b in batches)

            await eventually(interrupted, what="the stream to report the interruption")
            before = delivered()
            assert before < 32
            # While the server is down, the stream keeps trying and loses nothing.
            assert not following.done()

            server = FleetBenchServer(replace(config, port=server.port), host=host)
            await server.start()
            await asyncio.wait_for(following, 60)
            final = await client.wait(run.run_id, timeout_s=30)
    finally:
        await server.stop(grace_s=2.0)

    results = [r for b in batches for r in b.results]
    seqs = [r.seq for r in results]
    assert seqs == sorted(set(seqs))  # no repeats, in order
    assert len({r.key for r in results}) == len(results) == 32  # nothing missing
    assert batches[-1].status is RunStatus.COMPLETED
    assert batches[-1].reconnects >= 1
    assert RunStatus(final.status) is RunStatus.COMPLETED
    assert final.progress.done == 32
