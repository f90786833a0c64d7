"""``fleetbench serve`` as a real process: its address line, and runs that survive a
SIGKILL or a SIGTERM of the server by resuming on the next start."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import grpc
from fleetbench_client.v1 import fleetbench_pb2 as pb
from fleetbench_client.v1 import fleetbench_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fleetbench._store import RunStore
from fleetbench.records import RunStatus

from .conftest import FleetDir
from .server_support import (
    collect,
    eventually,
    run_when,
    seqs,
    slow_fleet,
    start_request,
    start_serve,
)


async def _started(address: str, manifest: Path) -> str:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.FleetBenchServiceStub(channel)
        started = await stub.StartFleetRun(start_request(manifest), timeout=30)
        await run_when(stub, started.run.run_id, lambda r: r.progress.done >= 4,
                       what="a few results")
        return started.run.run_id


async def _completes_exactly_once(address: str, run_id: str) -> None:
    """After a restart: the run resumes by itself and ends with one result per test."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.FleetBenchServiceStub(channel)
        run = await run_when(stub, run_id, lambda r: r.status == pb.RUN_STATUS_COMPLETED,
                             what="the resumed run to complete", deadline_s=60)
        assert run.progress.done == run.progress.planned == 32
        messages = await collect(stub, run_id, replay_only=True)
        keys = [r.key for m in messages for r in m.results]
        assert len(keys) == len(set(keys)) == 32
        assert seqs(messages) == sorted(seqs(messages))
        assert {a.name for a in run.artifacts} >= {"results.jsonl", "fleet_results.json"}


async def test_serve_prints_its_address_and_answers_health(tmp_path: Path) -> None:
    serve = await start_serve(tmp_path)
    try:
        assert serve.address.startswith("127.0.0.1:")

        async def serving() -> bool:
            async with grpc.aio.insecure_channel(serve.address) as channel:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=5)
            return reply.status == health_pb2.HealthCheckResponse.SERVING

        await eventually(serving, what="SERVING")
    finally:
        assert await serve.kill(signal.SIGTERM) == 0
    assert '"event": "server stopped"' in serve.log.read_text()


async def test_a_killed_server_resumes_the_run_on_restart(fleet_dir: FleetDir,
                                                          tmp_path: Path) -> None:
    manifest = slow_fleet(fleet_dir, latency_ms=60).write()
    first = await start_serve(tmp_path)
    run_id = await _started(first.address, manifest)
    assert await first.kill(signal.SIGKILL) == -signal.SIGKILL
    with RunStore(tmp_path / "state") as store:
        record = store.get_run(run_id)
    assert record is not None
    assert record.status is RunStatus.RUNNING
    assert 4 <= record.done < 32

    second = await start_serve(tmp_path, log_name="serve-2.log")
    try:
        await _completes_exactly_once(second.address, run_id)
    finally:
        await second.kill(signal.SIGTERM)
    results = (fleet_dir.root / "out" / run_id / "results.jsonl").read_text().splitlines()
    assert len(results) == 32


async def test_sigterm_interrupts_the_run_and_the_next_start_resumes_it(
        fleet_dir: FleetDir, tmp_path: Path) -> None:
    manifest = slow_fleet(fleet_dir, latency_ms=60).write()
    first = await start_serve(tmp_path)
    run_id = await _started(first.address, manifest)
    assert await first.kill(signal.SIGTERM) == 0
    with RunStore(tmp_path / "state") as store:
        record = store.get_run(run_id)
    assert record is not None
    assert record.status is RunStatus.INTERRUPTED, record
    assert 4 <= record.done < 32
    log = first.log.read_text()
    assert '"status": "interrupted"' in log

    second = await start_serve(tmp_path, log_name="serve-2.log")
    try:
        await _completes_exactly_once(second.address, run_id)
    finally:
        await second.kill(signal.SIGTERM)
    assert '"event": "resuming interrupted run"' in (tmp_path / "serve-2.log").read_text()


async def test_a_port_in_use_is_an_error(tmp_path: Path) -> None:
    first = await start_serve(tmp_path)
    try:
        port = first.address.rsplit(":", 1)[1]
        second = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fleetbench", "serve", "--port", port,
            "--data-root", str(tmp_path), "--state-dir", str(tmp_path / "state-2"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "FLEETBENCH_CACHE_DIR": str(tmp_path / "cache")})
        out, err = await asyncio.wait_for(second.communicate(), 30)
        assert second.returncode == 1
        assert out == b""
        assert f"cannot listen on 127.0.0.1:{port}" in err.decode()
    finally:
        await first.kill(signal.SIGTERM)
