"""Helpers of the gRPC server tests: fleets on disk, a real server on port 0 with a real
channel, stream collection and polling with a deadline (never a bare sleep)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import grpc
from fleetbench_client.v1 import fleetbench_pb2 as pb
from fleetbench_client.v1 import fleetbench_pb2_grpc as pb_grpc
from google.rpc import error_details_pb2, status_pb2

from fleetbench._plugins import PluginHost
from fleetbench._server._app import FleetBenchServer
from fleetbench._server._config import ServerConfig

from .conftest import FleetDir

T = TypeVar("T")
DEADLINE_S = 30.0
ROOT = Path(__file__).resolve().parent.parent


def fast_fleet(fleet: FleetDir) -> FleetDir:
    """32 tests on two zero-latency simulated models (16 each)."""
    fleet.manifest["providers"] = [
        {"id": "simulated:fast", "params": {"zero_latency": True, "seed": 1},
         "pricing": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
        {"id": "simulated:slow", "params": {"zero_latency": True, "seed": 2}},
    ]
    fleet.manifest["output"]["formats"] = ["json", "jsonl", "csv"]
    return fleet


def big_fleet(fleet: FleetDir, cases: int = 300) -> FleetDir:
    """:func:`fast_fleet` with ``cases`` coding tests per repository (1,208 tests for
    300): a zero-latency run that is still executing when streams attach."""
    fast_fleet(fleet)
    for name, dataset in fleet.datasets.items():
        if name.endswith("coding-tasks.json"):
            template = dataset["test_cases"][0]
            dataset["test_cases"] = [{**template, "id": f"code-{i}"} for i in range(cases)]
    return fleet


def slow_fleet(fleet: FleetDir, latency_ms: float = 40.0) -> FleetDir:
    """The same 32 tests, one at a time per model, each taking ``latency_ms``: a run that
    stays live long enough to be watched, cancelled or killed mid-way."""
    fast_fleet(fleet)
    for entry in fleet.manifest["providers"]:
        entry["params"] = {"seed": entry["params"]["seed"], "latency_ms": latency_ms}
        entry["concurrency"] = 1
    return fleet


def start_request(manifest: Path, **kwargs: Any) -> pb.StartFleetRunRequest:
    return pb.StartFleetRunRequest(manifest=manifest.read_text(encoding="utf-8"),
                                   manifest_path=str(manifest), **kwargs)


@dataclass
class Server:
    """A running server and a channel to it."""

    server: FleetBenchServer
    channel: grpc.aio.Channel
    stub: pb_grpc.FleetBenchServiceAsyncStub


def config_for(root: Path, **overrides: Any) -> ServerConfig:
    config = ServerConfig(state_dir=root / "state", cache_dir=root / "cache", port=0,
                          data_roots=(root,), shutdown_grace_s=5.0)
    return replace(config, **overrides)


@asynccontextmanager
async def running_server(config: ServerConfig, host: PluginHost,
                         credentials: grpc.ChannelCredentials | None = None,
                         ) -> AsyncIterator[Server]:
    """Start a server, connect to it, and stop both at the end."""
    server = FleetBenchServer(config, host=host)
    await server.start()
    channel = (grpc.aio.secure_channel(server.address, credentials) if credentials
               else grpc.aio.insecure_channel(server.address))
    try:
        yield Server(server, channel, pb_grpc.FleetBenchServiceStub(channel))
    finally:
        await channel.close()
        await server.stop(grace_s=2.0)


async def collect(stub: pb_grpc.FleetBenchServiceAsyncStub, run_id: str,
                  metadata: Sequence[tuple[str, str]] = (),
                  **kwargs: Any) -> list[pb.StreamResultsResponse]:
    """Every message of one StreamResults call."""
    request = pb.StreamResultsRequest(run_id=run_id, **kwargs)
    call = stub.StreamResults(request, timeout=DEADLINE_S, metadata=metadata)
    return [message async for message in call]


def seqs(messages: Sequence[pb.StreamResultsResponse]) -> list[int]:
    return [r.seq for m in messages for r in m.results]


async def eventually(check: Callable[[], Awaitable[T | None]], *,
                     deadline_s: float = DEADLINE_S, what: str = "condition") -> T:
    """Poll ``check`` until it returns something other than ``None``/``False``."""
    end = time.monotonic() + deadline_s
    while True:
        value = await check()
        if value is not None and value is not False:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline_s} s waiting for {what}")
        await asyncio.sleep(0.02)


async def run_when(stub: pb_grpc.FleetBenchServiceAsyncStub, run_id: str,
                   predicate: Callable[[pb.Run], bool], *, what: str,
                   deadline_s: float = DEADLINE_S) -> pb.Run:
    """Poll GetRun until ``predicate`` holds."""

    async def check() -> pb.Run | None:
        try:
            run = (await stub.GetRun(pb.GetRunRequest(run_id=run_id), timeout=5)).run
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND):
                return None
            raise
        return run if predicate(run) else None

    return await eventually(check, deadline_s=deadline_s, what=what)


def bad_request(error: grpc.aio.AioRpcError) -> error_details_pb2.BadRequest:
    """The ``google.rpc.BadRequest`` detail of an INVALID_ARGUMENT error."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                found = error_details_pb2.BadRequest()
                if detail.Unpack(found):
                    return found
    raise AssertionError(f"no BadRequest detail in {error!r}")


# ── `fleetbench serve` as a subprocess ──


@dataclass
class ServeProcess:
    process: asyncio.subprocess.Process
    address: str
    log: Path

    async def kill(self, sig: int = signal.SIGKILL) -> int:
        self.process.send_signal(sig)
        return await asyncio.wait_for(self.process.wait(), DEADLINE_S)


async def start_serve(root: Path, *args: str, log_name: str = "serve.log",
                      env: dict[str, str] | None = None) -> ServeProcess:
    """``fleetbench serve --port 0`` over ``root`` (state, cache and data root in it);
    returns once it printed its address."""
    log = root / log_name
    environment = {**os.environ, "FLEETBENCH_STATE_DIR": str(root / "state"),
                   "FLEETBENCH_CACHE_DIR": str(root / "cache"), **(env or {})}
    with log.open("ab") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fleetbench", "serve", "--port", "0",
            "--data-root", str(root), "--shutdown-grace", "5", *args,
            stdout=asyncio.subprocess.PIPE, stderr=stderr, cwd=ROOT, env=environment)
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), DEADLINE_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"serve printed no address; log: {log.read_text()}") from None
    match = re.fullmatch(r"listening on (\S+:\d+)\n", line.decode())
    assert match, f"unexpected first line {line!r}; log: {log.read_text()}"
    return ServeProcess(process, match.group(1), log)
