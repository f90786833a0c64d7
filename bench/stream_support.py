"""Shared by the StreamResults benchmarks: a real ``fleetbench serve`` subprocess over a
temporary folder, its CPU time, and the clock arithmetic of produced→received delays.

Clocks: a result's ``finished_at`` is the server's wall clock (``time.time_ns``, UTC,
microseconds) when the executor finished the test; the client stamps each message with
the same clock when ``grpc.aio`` hands it over. Client and server run on one machine, so
both read one CLOCK_REALTIME and the difference is the delay through the whole server
path (bus, store writer, aggregator, stream, gRPC) and the client's receive path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from fleetbench_client.v1 import fleetbench_pb2 as pb
from fleetbench_client.v1 import fleetbench_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    """A running ``fleetbench serve`` and a channel to it."""

    process: asyncio.subprocess.Process
    address: str
    channel: grpc.aio.Channel
    stub: pb_grpc.FleetBenchServiceAsyncStub

    def cpu_s(self, *, children: bool = False) -> float:
        """CPU seconds (user + system) the server process has used so far; with
        ``children``, its live child processes' too (the conversion worker, a run's
        export worker)."""
        pid = self.process.pid
        return tree_cpu_s(pid) if children else process_cpu_s(pid)

    async def stop(self) -> None:
        await self.channel.close()
        with contextlib.suppress(ProcessLookupError):
            self.process.terminate()
        await asyncio.wait_for(self.process.wait(), 60)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (``/proc/PID/stat``)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def tree_cpu_s(pid: int) -> float:
    """:func:`process_cpu_s` of a process and of its live descendants."""
    total = process_cpu_s(pid)
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                total += tree_cpu_s(int(child))
    return total


async def start_server(root: Path, *args: str, stamps: Path | None = None) -> Server:
    """``fleetbench serve --port 0`` with its state, cache and data root under ``root``;
    its log goes to ``root/serve.log``. With ``stamps``, through ``probe_serve.py``,
    which writes when each result reached the run channel to that file on exit."""
    env = {**os.environ, "FLEETBENCH_CACHE_DIR": str(root / "cache")}
    command = ([str(Path(__file__).with_name("probe_serve.py")), str(stamps)] if stamps
               else ["-m", "fleetbench"])
    with (root / "serve.log").open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, *command, "serve", "--port", "0",
            "--state-dir", str(root / "state"), "--data-root", str(root),
            "--max-planned-tests", "10000000", *args,
            stdout=asyncio.subprocess.PIPE, stderr=log, cwd=ROOT, env=env)
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
    match = re.fullmatch(r"listening on (\S+)\n", line)
    if match is None:
        process.kill()
        raise SystemExit(f"the server did not start: {line!r}; see {root / 'serve.log'}")
    channel = grpc.aio.insecure_channel(match.group(1), options=[
        ("grpc.max_receive_message_length", 64 * 1024 * 1024)])
    return Server(process, match.group(1), channel, pb_grpc.FleetBenchServiceStub(channel))


async def wait_until(stub: pb_grpc.FleetBenchServiceAsyncStub, run_id: str, *,
                     done: int | None = None, ended: bool = False,
                     deadline_s: float = 600) -> pb.Run:
    """Poll GetRun until ``done`` results are recorded or the run ended."""
    terminal = (pb.RUN_STATUS_COMPLETED, pb.RUN_STATUS_FAILED, pb.RUN_STATUS_CANCELLED,
                pb.RUN_STATUS_INTERRUPTED)
    end = time.monotonic() + deadline_s
    while True:
        run = (await stub.GetRun(pb.GetRunRequest(run_id=run_id), timeout=30)).run
        if (done is not None and run.progress.done >= done) or \
                (ended and run.status in terminal):
            return run
        if time.monotonic() > end:
            raise SystemExit(f"timed out waiting for run {run_id}")
        await asyncio.sleep(0.01)


def stamp_ns(timestamp: object) -> int:
    """A ``google.protobuf.Timestamp`` in Unix nanoseconds."""
    return int(timestamp.seconds) * 1_000_000_000 + int(timestamp.nanos)  # type: ignore[attr-defined]


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear between closest ranks; NaN if empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
