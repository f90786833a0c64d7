"""StreamResults to one Python ``grpc.aio`` client while a zero-latency run executes,
and replays of ended runs.

    python bench/bench_stream.py [--tests 100000] [--max-batch 500] [--catch-up-at 0.5]
                                 [--concurrency 64] [--latency-ms MS]

A real ``fleetbench serve`` subprocess; this process is the client. Three phases:

1. **live**: start a run and follow it from its first result to its end: results/s
   received, and the produced→received delay of every result (p50/p99/max; see
   ``stream_support`` for the clocks), split at the moment the result reached the
   server's run channel (a bench-only probe, ``probe_serve.py``) into the engine's part
   (bus, store writer, aggregator) and the stream's (stream, gRPC, client). The run
   itself bounds this rate: the client can only receive what the engine produces.
2. **catch-up while in flight**: start a second run, attach when ``--catch-up-at`` of it
   is stored, and stream from seq 0: the rate of the replay while the run keeps
   executing in the same server process (they share its interpreter), then the delay
   once the stream follows live again.
3. **replay**, with nothing else running: a run executed by ``fleetbench run`` (not by
   the server, so never encoded for the wire: the first replay converts every result
   from its stored JSON and keeps the encodings), streamed twice; then the server is
   restarted and the first run, whose results the server encoded while executing it,
   streamed twice: first from the server's file, then from its memory. Rates and the
   server's CPU per result (its conversion worker process included).

Targets (issue 4): ≥ 200,000 results/s to one Python client; delay p99 ≤ 100 ms at that
load. Server and client share the machine's two cores. With ``--latency-ms`` every test
takes that long instead of no time, so the run produces about ``2 × concurrency /
latency`` results/s and leaves the server's core partly idle: the delays at a rate the
server is not saturated by.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench_run import write_fleet
from fleetbench_client.v1 import fleetbench_pb2 as pb
from stream_support import ROOT, Server, percentile, stamp_ns, start_server, wait_until


@dataclass
class Received:
    """What one stream delivered, stamped on arrival."""

    seqs: list[int] = field(default_factory=list)
    delays_ms: list[float] = field(default_factory=list)
    received_ns: list[int] = field(default_factory=list)
    finished_ns: list[int] = field(default_factory=list)
    called_s: float = 0.0  # perf_counter when the call started
    first_s: float = 0.0  # perf_counter at the first message with results
    last_s: float = 0.0
    caught_up_s: float = 0.0  # the first message with lag <= max_batch
    caught_up_count: int = 0
    messages: int = 0
    final: int = pb.RUN_STATUS_UNSPECIFIED

    @property
    def rate(self) -> float:
        span = self.last_s - self.first_s
        return len(self.seqs) / span if span > 0 else float("nan")

    def check_exactly_once(self, expected: int) -> None:
        if len(self.seqs) != expected or len(set(self.seqs)) != expected \
                or self.seqs != sorted(self.seqs):
            raise SystemExit(f"stream broke its contract: {len(self.seqs)} results, "
                             f"{len(set(self.seqs))} distinct, {expected} expected")


async def receive(server: Server, run_id: str, *, max_batch: int, delays: bool = True,
                  replay_only: bool = False) -> Received:
    got = Received(called_s=time.perf_counter())
    call = server.stub.StreamResults(pb.StreamResultsRequest(
        run_id=run_id, max_batch=max_batch, replay_only=replay_only))
    async for message in call:
        now_s, now_ns = time.perf_counter(), time.time_ns()
        got.messages += 1
        results = message.results
        if results:
            if not got.first_s:
                got.first_s = now_s
            got.last_s = now_s
            got.seqs.extend([r.seq for r in results])
            if delays:
                finished = [stamp_ns(r.finished_at) for r in results]
                got.finished_ns.extend(finished)
                got.received_ns.extend([now_ns] * len(finished))
                got.delays_ms.extend([(now_ns - f) / 1e6 for f in finished])
        if not got.caught_up_s and message.head_seq - message.last_seq <= max_batch:
            got.caught_up_s, got.caught_up_count = now_s, len(got.seqs)
        got.final = message.status
    return got


def delay_line(label: str, delays: list[float]) -> str:
    return (f"{label:<34}p50 {percentile(delays, 50):8.1f} ms   p99 "
            f"{percentile(delays, 99):8.1f} ms   max {max(delays, default=float('nan')):8.1f}"
            f" ms   ({len(delays):,} results)")


async def main(tests: int, max_batch: int, catch_up_at: float, concurrency: int,
               latency_ms: float | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest = fleet(root, tests, concurrency, latency_ms)
        stamps = root / "channel-stamps.json"
        server = await start_server(root, stamps=stamps)
        try:
            run_id, live, catch_up = await live_phases(server, root, manifest, tests,
                                                       max_batch, catch_up_at)
        finally:
            await server.stop()
        cli_run = await run_with_cli(root, tests)
        server = await start_server(root)
        try:
            cold, warm = await replays(server, tests, max_batch, cli_run, run_id)
        finally:
            await server.stop()
        at_channel = {int(seq): ns for seq, ns in json.loads(stamps.read_text())[run_id]
                      .items()}
        engine = [(at_channel[seq] - f) / 1e6
                  for seq, f in zip(live.seqs, live.finished_ns, strict=True)]
        stream = [(r - at_channel[seq]) / 1e6
                  for seq, r in zip(live.seqs, live.received_ns, strict=True)]
        print("\nphase 1's delay, split where the result reached the server's run channel")
        print(delay_line("produced → channel (engine)", engine))
        print(delay_line("channel → received (stream)", stream))
        print(f"\nto one client: live {live.rate:,.0f} results/s (what the run produced), "
              f"catch-up in flight {catch_up:,.0f}, first replay of a run never encoded "
              f"{cold:,.0f}, replay of an encoded run after a restart {warm:,.0f} "
              f"(target >= 200,000); live delay p99 {percentile(live.delays_ms, 99):.1f} ms "
              "(target <= 100)")


def fleet(root: Path, tests: int, concurrency: int, latency_ms: float | None) -> str:
    """``bench_run``'s fleet, its tests taking ``latency_ms`` each if given."""
    path = write_fleet(root, tests, concurrency)
    if latency_ms is not None:
        data = json.loads(path.read_text())
        for provider in data["providers"]:
            provider["params"] = {**provider["params"], "zero_latency": False,
                                  "latency_ms": latency_ms}
        path.write_text(json.dumps(data))
    return path.read_text()


async def live_phases(server: Server, root: Path, manifest: str, tests: int, max_batch: int,
                      catch_up_at: float) -> tuple[str, Received, float]:
    path = str(root / "fleet.json")
    print(f"{tests:,} tests per run, max_batch {max_batch}, server pid {server.process.pid}")

    # 1. live
    cpu0 = server.cpu_s()
    started = await server.stub.StartFleetRun(pb.StartFleetRunRequest(
        manifest=manifest, manifest_path=path, run_key="live"))
    run_id = started.run.run_id
    live = await receive(server, run_id, max_batch=max_batch)
    live_cpu = server.cpu_s() - cpu0
    live.check_exactly_once(tests)
    run = await wait_until(server.stub, run_id, ended=True)
    produced_s = (stamp_ns(run.finished_at) - stamp_ns(run.started_at)) / 1e9
    print("\n1. follow a run live from its start")
    print(f"{'run (started → ended, server)':<34}{produced_s:8.2f} s   "
          f"{tests / produced_s:10,.0f} results/s produced")
    print(f"{'received (first → last result)':<34}{live.last_s - live.first_s:8.2f} s   "
          f"{live.rate:10,.0f} results/s   {live.messages:,} messages")
    print(delay_line("produced → received", live.delays_ms))
    print(f"{'server CPU':<34}{live_cpu:8.2f} s")
    for warning in run.warnings:
        print(f"{'run warning':<34}{warning}")

    # 2. catch up while the run is in flight
    started = await server.stub.StartFleetRun(pb.StartFleetRunRequest(
        manifest=manifest, manifest_path=path, run_key="catch-up"))
    second = started.run.run_id
    attach_at = await wait_until(server.stub, second, done=int(tests * catch_up_at))
    attached_s = time.perf_counter()
    catch = await receive(server, second, max_batch=max_batch)
    catch.check_exactly_once(tests)
    ended = await wait_until(server.stub, second, ended=True)
    second_s = (stamp_ns(ended.finished_at) - stamp_ns(ended.started_at)) / 1e9
    caught = catch.caught_up_count
    span = catch.caught_up_s - attached_s
    live_after = catch.delays_ms[caught:]
    print(f"\n2. attach at {attach_at.progress.done:,} stored results, stream from seq 0 "
          "while the run executes")
    print(f"{'run (started → ended, server)':<34}{second_s:8.2f} s   "
          f"{tests / second_s:10,.0f} results/s produced")
    if catch.caught_up_s:
        print(f"{'catch-up (attach → lag <= batch)':<34}{span:8.2f} s   "
              f"{caught / span:10,.0f} results/s   ({caught:,} results)")
    if live_after:
        print(delay_line("then live: produced → received", live_after))
    return run_id, live, caught / span if span > 0 else float("nan")


async def run_with_cli(root: Path, tests: int) -> str:
    """The same fleet run by ``fleetbench run`` in its own process: the server never
    sees it execute."""
    env = {**os.environ, "FLEETBENCH_CACHE_DIR": str(root / "cache")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fleetbench", "run", str(root / "fleet.json"), "--run-key",
        "cli", "--state-dir", str(root / "state"), "--json", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"fleetbench run failed ({process.returncode})")
    run_id: str = json.loads(out)["run_id"]
    return run_id


async def replays(server: Server, tests: int, max_batch: int, cli_run: str,
                  served_run: str) -> tuple[float, float]:
    print("\n3. replay ended runs (nothing else running); the first message of a stream "
          "carries the run's exact summary,\n   which the server computes from the store "
          "once per run and start (GetRun does it here before each run's first replay)")
    rates = []
    for run_id, label in ((cli_run, "run by the CLI, first replay"),
                          (cli_run, "run by the CLI, again"),
                          (served_run, "run by the server, after restart"),
                          (served_run, "run by the server, again")):
        summary_s = time.perf_counter()
        await server.stub.GetRun(pb.GetRunRequest(run_id=run_id))
        summary_s = time.perf_counter() - summary_s
        cpu0 = server.cpu_s(children=True)
        replay = await receive(server, run_id, max_batch=max_batch, delays=False,
                               replay_only=True)
        cpu = server.cpu_s(children=True) - cpu0
        replay.check_exactly_once(tests)
        rates.append(replay.rate)
        print(f"{label:<34}{replay.last_s - replay.first_s:8.2f} s   {replay.rate:10,.0f} "
              f"results/s   server CPU {cpu / tests * 1e6:5.1f} us/result   (GetRun "
              f"{summary_s:.2f} s, first results after {replay.first_s - replay.called_s:.2f}"
              " s)")
    return rates[0], rates[2]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=100_000)
    parser.add_argument("--max-batch", type=int, default=500)
    parser.add_argument("--catch-up-at", type=float, default=0.5)
    parser.add_argument("--concurrency", type=int, default=64,
                        help="requests in flight per model (bench_run.py: 64)")
    parser.add_argument("--latency-ms", type=float, default=None,
                        help="each test takes this long (default: no time at all)")
    options = parser.parse_args()
    asyncio.run(main(options.tests, options.max_batch, options.catch_up_at,
                     options.concurrency, options.latency_ms))
