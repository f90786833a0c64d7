"""StreamResults to one Python ``grpc.aio`` client while a zero-latency run executes.

    python bench/bench_stream.py [--tests 100000] [--max-batch 500] [--catch-up-at 0.5]

A real ``fleetbench serve`` subprocess; this process is the client. Three phases:

1. **live**: start a run and follow it from its first result to its end: results/s
   received, and the produced→received delay of every result (p50/p99/max; see
   ``stream_support`` for the clocks), split at the moment the result reached the
   server's run channel (a bench-only probe, ``probe_serve.py``) into the engine's part
   (bus, store writer, aggregator) and the stream's (stream, gRPC, client). The run
   itself bounds this rate: the client can only receive what the engine produces.
2. **catch-up while in flight**: start a second run, attach when ``--catch-up-at`` of it
   is stored, and stream from seq 0: the rate of the replay from the store while the run
   keeps executing in the same server process (they share its interpreter), then the
   delay once the stream follows live again.
3. **replay**: stream the first (ended) run again three times, with nothing else
   running: the first time cold (every result read from the store and converted from
   its JSON), then warm (the windows the first replay converted, from the server's
   replay cache). Rates and the server's CPU per result.

Targets (issue 4): ≥ 200,000 results/s to one Python client; delay p99 ≤ 100 ms at that
load. Server and client share the machine's two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench_run import write_fleet
from fleetbench_client.v1 import fleetbench_pb2 as pb
from stream_support import Server, percentile, stamp_ns, start_server, wait_until


@dataclass
class Received:
    """What one stream delivered, stamped on arrival."""

    seqs: list[int] = field(default_factory=list)
    delays_ms: list[float] = field(default_factory=list)
    received_ns: list[int] = field(default_factory=list)
    finished_ns: list[int] = field(default_factory=list)
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
    got = Received()
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


async def main(tests: int, max_batch: int, catch_up_at: float, concurrency: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest = write_fleet(root, tests, concurrency).read_text()
        stamps = root / "channel-stamps.json"
        server = await start_server(root, stamps=stamps)
        try:
            run_id, live = await phases(server, root, manifest, tests, max_batch,
                                        catch_up_at)
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


async def phases(server: Server, root: Path, manifest: str, tests: int, max_batch: int,
                 catch_up_at: float) -> tuple[str, Received]:
    path = str(root / "fleet.json")
    print(f"{tests:,} zero-latency tests per run, max_batch {max_batch}, "
          f"server pid {server.process.pid}")

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

    # 3. replay of the ended run
    print("\n3. replay the ended run (nothing else running)")
    rates = []
    for attempt, label in enumerate(("cold", "warm", "warm")):
        cpu0 = server.cpu_s()
        replay = await receive(server, run_id, max_batch=max_batch, delays=False,
                               replay_only=True)
        cpu = server.cpu_s() - cpu0
        replay.check_exactly_once(tests)
        rates.append(replay.rate)
        print(f"{f'replay {attempt + 1} ({label})':<34}{replay.last_s - replay.first_s:8.2f} s"
              f"   {replay.rate:10,.0f} results/s   server CPU {cpu / tests * 1e6:5.1f} "
              "us/result")
    print(f"\nto one client: live {live.rate:,.0f} results/s (what the run produced), "
          f"catch-up in flight {caught / span if span > 0 else float('nan'):,.0f}, "
          f"cold replay {rates[0]:,.0f}, warm replay {max(rates[1:]):,.0f} "
          f"(target >= 200,000); live delay p99 {percentile(live.delays_ms, 99):.1f} ms "
          "(target <= 100)")
    return run_id, live


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=100_000)
    parser.add_argument("--max-batch", type=int, default=500)
    parser.add_argument("--catch-up-at", type=float, default=0.5)
    parser.add_argument("--concurrency", type=int, default=64,
                        help="requests in flight per model (bench_run.py: 64)")
    options = parser.parse_args()
    asyncio.run(main(options.tests, options.max_batch, options.catch_up_at,
                     options.concurrency))
