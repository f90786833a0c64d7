"""The blocking client against ``fleetbench serve`` subprocesses: a stream that survives
the server being killed (SIGKILL) and started again on the same port."""

from __future__ import annotations

import asyncio
from pathlib import Path

from client_support import call
from fleetbench_client import FleetBenchClient, ResultBatch, RunStatus

from tests.conftest import FleetDir
from tests.server_support import eventually, slow_fleet, start_serve


async def test_a_stream_survives_a_killed_server(fleet_dir: FleetDir, tmp_path: Path) -> None:
    manifest = slow_fleet(fleet_dir, latency_ms=60).write()
    serve = await start_serve(tmp_path)
    port = serve.address.rsplit(":", 1)[1]
    batches: list[ResultBatch] = []
    try:
        with FleetBenchClient(serve.address, reconnect_timeout_s=60) as client:
            run, _ = await call(lambda: client.start_run(manifest))

            def follow() -> None:
                for batch in client.stream_results(run.run_id, max_batch=2):
                    batches.append(batch)

            following = asyncio.create_task(asyncio.to_thread(follow))

            async def some_results() -> bool:
                return sum(len(b.results) for b in batches) >= 5

            await eventually(some_results, what="the first results")
            await serve.kill()  # SIGKILL: no goodbye, the stream just breaks
            assert not following.done()
            serve = await start_serve(tmp_path, "--port", port, log_name="serve-again.log")
            await asyncio.wait_for(following, 60)
            final = await call(lambda: client.wait(run.run_id, timeout_s=30))
    finally:
        if serve.process.returncode is None:
            await serve.kill()

    results = [r for b in batches for r in b.results]
    seqs = [r.seq for r in results]
    assert seqs == sorted(set(seqs))  # in order, no repeats across the reconnection
    assert len({r.key for r in results}) == len(results) == 32  # and no gaps
    assert batches[-1].status is RunStatus.COMPLETED
    assert batches[-1].reconnects >= 1
    assert RunStatus(final.status) is RunStatus.COMPLETED
