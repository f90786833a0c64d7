"""Many StreamResults subscribers on one run: each gets every result exactly once, at
what rate, and what they cost the server.

    python bench/bench_subscribers.py [--tests 100000] [--subscribers 50] [--max-batch 500]

A real ``fleetbench serve`` subprocess (with its metrics endpoint on); this process runs
every subscriber, each on its own channel (its own HTTP/2 connection), all attached
before the run starts executing. Two runs of the same zero-latency fleet:

1. **baseline**: no subscriber: the run's duration and the server's CPU.
2. **subscribers**: the same fleet again (another run key) with every subscriber
   following from seq 0 to the end. Per subscriber: results, results/s (first → last
   result), and whether its seqs are exactly the run's stored seqs, in order (checked
   against a replay of the ended run). Produced→received delay of the oldest result of
   every message, over all subscribers. Server CPU, and its stream-lag histogram from
   ``/metrics``.

Target (issue 4): 50 subscribers each receive every result exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import tempfile
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
from bench_run import write_fleet
from fleetbench_client.v1 import fleetbench_pb2 as pb
from fleetbench_client.v1 import fleetbench_pb2_grpc as pb_grpc
from prometheus_client.parser import text_string_to_metric_families
from stream_support import Server, percentile, stamp_ns, start_server, wait_until


@dataclass
class Subscriber:
    seqs: array[int] = field(default_factory=lambda: array("q"))
    first_s: float = 0.0
    last_s: float = 0.0
    oldest_delays_ms: list[float] = field(default_factory=list)
    final: int = pb.RUN_STATUS_UNSPECIFIED

    @property
    def rate(self) -> float:
        span = self.last_s - self.first_s
        return len(self.seqs) / span if span > 0 else float("nan")


async def follow(address: str, run_id: str, max_batch: int) -> Subscriber:
    got = Subscriber()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.FleetBenchServiceStub(channel)
        call = stub.StreamResults(pb.StreamResultsRequest(run_id=run_id, max_batch=max_batch))
        async for message in call:
            now_s, now_ns = time.perf_counter(), time.time_ns()
            results = message.results
            if results:
                if not got.first_s:
                    got.first_s = now_s
                got.last_s = now_s
                got.seqs.extend([r.seq for r in results])
                got.oldest_delays_ms.append((now_ns - stamp_ns(results[0].finished_at)) / 1e6)
            got.final = message.status
    return got


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics", timeout=30)).text
    return {family.name: [(s.labels, s.value) for s in family.samples]
            for family in text_string_to_metric_families(text)}


async def timed_run(server: Server, manifest: str, path: str, run_key: str
                    ) -> tuple[str, float, float]:
    """Start a run and wait for its end: run id, seconds (server clock), server CPU."""
    cpu0 = server.cpu_s()
    run_id = (await server.stub.StartFleetRun(pb.StartFleetRunRequest(
        manifest=manifest, manifest_path=path, run_key=run_key))).run.run_id
    run = await wait_until(server.stub, run_id, ended=True)
    seconds = (stamp_ns(run.finished_at) - stamp_ns(run.started_at)) / 1e9
    return run_id, seconds, server.cpu_s() - cpu0


async def main(tests: int, subscribers: int, max_batch: int, metrics: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest = write_fleet(root, tests).read_text()
        port = free_port() if metrics else 0
        server = await start_server(root, *(("--metrics-port", str(port)) if port else ()))
        try:
            await measure(server, port, manifest, str(root / "fleet.json"), tests,
                          subscribers, max_batch)
        finally:
            await server.stop()


async def measure(server: Server, port: int, manifest: str, path: str, tests: int,
                  count: int, max_batch: int) -> None:
    print(f"{tests:,} zero-latency tests, {count} subscribers, max_batch {max_batch}, "
          f"server pid {server.process.pid}")
    _, base_s, base_cpu = await timed_run(server, manifest, path, "baseline")
    print(f"{'baseline run, no subscriber':<36}{base_s:7.2f} s   {tests / base_s:9,.0f} "
          f"results/s   server CPU {base_cpu:6.2f} s ({base_cpu / base_s:4.2f} cores)")

    # Every subscriber attaches right after the start (the run executes at once, so what
    # it produced before a subscriber attached comes from the store, the rest live).
    cpu0, client0 = server.cpu_s(), time.process_time()
    run_id = (await server.stub.StartFleetRun(pb.StartFleetRunRequest(
        manifest=manifest, manifest_path=path, run_key="subscribers"))).run.run_id
    subs = await asyncio.gather(*[follow(server.address, run_id, max_batch)
                                  for _ in range(count)])
    run = await wait_until(server.stub, run_id, ended=True)
    cpu, client_cpu = server.cpu_s() - cpu0, time.process_time() - client0
    seconds = (stamp_ns(run.finished_at) - stamp_ns(run.started_at)) / 1e9
    metrics = await scrape(port) if port else {}

    stored = array("q")
    async for message in server.stub.StreamResults(pb.StreamResultsRequest(
            run_id=run_id, replay_only=True, max_batch=5000)):
        stored.extend([r.seq for r in message.results])
    exact = sum(1 for s in subs if s.seqs == stored)
    rates = sorted(s.rate for s in subs)
    delays = [d for s in subs for d in s.oldest_delays_ms]
    print(f"{'run with subscribers':<36}{seconds:7.2f} s   {tests / seconds:9,.0f} "
          f"results/s   server CPU {cpu:6.2f} s ({cpu / seconds:4.2f} cores, "
          f"+{cpu - base_cpu:.2f} s over the baseline)")
    print(f"{'client CPU (all subscribers)':<36}{client_cpu:7.2f} s   "
          f"({client_cpu / seconds:4.2f} cores)")
    print(f"{'exactly once (seqs = stored seqs)':<36}{exact} of {count} subscribers; "
          f"{len(stored):,} results stored; final status "
          f"{pb.RunStatus.Name(subs[0].final)}")
    print(f"{'results/s per subscriber':<36}min {rates[0]:,.0f}   median "
          f"{percentile(rates, 50):,.0f}   max {rates[-1]:,.0f}   (all together "
          f"{sum(len(s.seqs) for s in subs) / seconds:,.0f} results/s)")
    print(f"{'delay of the oldest result/message':<36}p50 {percentile(delays, 50):.1f} ms   "
          f"p99 {percentile(delays, 99):.1f} ms   max {max(delays):.1f} ms   "
          f"({len(delays):,} messages)")
    lag = {labels["le"]: value for labels, value
           in metrics.get("fleetbench_stream_lag_results", []) if "le" in labels}
    if lag:
        print(f"{'server stream lag per message':<36}" + "  ".join(
            f"<={le.removesuffix('.0')}: {int(n):,}" for le, n in lag.items()))
    if exact != count:
        raise SystemExit("a subscriber did not get every result exactly once")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=100_000)
    parser.add_argument("--subscribers", type=int, default=50)
    parser.add_argument("--max-batch", type=int, default=500)
    parser.add_argument("--no-metrics", action="store_true",
                        help="no metrics endpoint (a server from before --metrics-port)")
    options = parser.parse_args()
    asyncio.run(main(options.tests, options.subscribers, options.max_batch,
                     not options.no_metrics))
