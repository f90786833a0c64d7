"""Benchmark: the full fleetbench path (executor + openai plugin + shared client) against a
raw aiohttp loop, both hitting the fake OpenAI vendor in a separate process.

The fake (``FakeVendorProcess``) runs with 50 ms latency (streaming: 50 ms TTFT, then
a few tokens 5 ms apart); this process is the client only, so ``time.process_time()`` is the
client's CPU (every thread: the store writer's and the export's too). ``fleet`` runs a real
fleet through ``fleetbench._runner.execute_run`` (executor, the openai plugin, the shared
client, bus, store, live aggregator, run.json, and the export: ``results.jsonl`` plus the
executive HTML report that ``output.generate_reports`` adds by default, as a user's run
would) at concurrency 64; ``raw`` is 64 aiohttp workers posting the same requests and parsing
the JSON / every SSE event. Planning and plugin loading happen before the clock starts,
and each path first runs once untimed, as many requests as a timed run, so that what a
process does once (imports, the TLS context, compiling the report template, growing its heap
to a run's size: ~20 ms of page faults and allocator work on the first run of 2,000) is not
counted as the cost of a run.
Reported per workload: requests/s, client CPU per request, and the measured latency / TTFT
p50 and p99 minus the fake's own trace p50 and p99 (what the client adds); then fleet/raw
ratios of each round (raw and fleet alternate which goes first; this machine is shared, so
compare the two paths within a round). Targets: >= 0.9x the requests/s, <= 2x the CPU.

    .venv/bin/python bench/bench_provider_http.py [--requests 2000] [--concurrency 64] \
        [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from fleetbench._plugins import load_plugins
from fleetbench._prepare import prepare_file
from fleetbench._runner import execute_run
from fleetbench._store import RunStore
from fleetbench.testing import FakeVendorConfig, FakeVendorProcess, TraceEntry

KEY_ENV = "BENCH_OPENAI_KEY"
CASES = 50


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = (len(ordered) - 1) * q
    low = int(index)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (index - low)


def _truth(trace: list[TraceEntry], stream: bool) -> tuple[list[float], list[float]]:
    lat = [e.latency_s * 1000 for e in trace if e.latency_s is not None]
    ttft = [e.ttft_s * 1000 for e in trace if stream and e.ttft_s is not None]
    return lat, ttft


async def fleet_phase(base_url: str, requests: int, concurrency: int, stream: bool,
                      root: Path) -> dict[str, Any]:
    repeat = max(1, requests // CASES)
    (root / "repo" / "datasets").mkdir(parents=True, exist_ok=True)
    cases = [{"id": f"c{i}", "prompt": f"Question {i}: say hello"} for i in range(CASES)]
    (root / "repo" / "datasets" / "chat.json").write_text(json.dumps(
        {"name": "chat", "version": "1", "test_cases": cases}))
    manifest = {
        "fleet_id": "bench", "version": "1.0",
        "repositories": [{"repo_id": "repo", "path": "repo", "scenarios": ["chat"]}],
        "providers": [{"id": "openai:fake-gpt", "base_url": base_url, "api_key_env": KEY_ENV,
                       "concurrency": concurrency, "stream": stream}],
        "scenario_profiles": {"chat": {"dataset": "chat", "repeat": repeat,
                                       "concurrency": concurrency}},
        "output": {"base_dir": "./out", "formats": ["jsonl"], "generate_reports": True},
        "global_settings": {"max_in_flight": concurrency},
    }
    path = root / f"fleet-{stream}.json"
    path.write_text(json.dumps(manifest))
    host = load_plugins(env={})
    prepared = prepare_file(path, host=host, cache_dir=root / "cache")
    with RunStore(root / f"state-{stream}-{time.monotonic_ns()}") as store:
        cpu, wall = time.process_time(), time.perf_counter()
        outcome = await execute_run(prepared, host=host, store=store, env={KEY_ENV: "sk-bench"},
                                    export_worker_min_tests=10**9)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    rows = [json.loads(line) for line in
            (outcome.output_dir / "results.jsonl").read_text().splitlines()]
    ok = [r for r in rows if r["latency_ms"] is not None]
    return {"n": len(rows), "errors": len(rows) - len(ok), "wall": wall, "cpu": cpu,
            "lat": [r["latency_ms"] for r in ok],
            "ttft": [r["ttft_ms"] for r in ok if r["ttft_ms"] is not None]}


async def raw_phase(base_url: str, requests: int, concurrency: int,
                    stream: bool) -> dict[str, Any]:
    url = f"{base_url}/chat/completions"
    lat: list[float] = []
    ttft: list[float] = []
    counter = iter(range(requests))
    headers = {"Authorization": "Bearer sk-bench", "Content-Type": "application/json"}

    async def worker(session: aiohttp.ClientSession) -> None:
        for i in counter:
            body: dict[str, Any] = {"model": "fake-gpt", "messages": [
                {"role": "user", "content": f"Question {i % CASES}: say hello"}]}
            if stream:
                body |= {"stream": True, "stream_options": {"include_usage": True}}
            sent = time.perf_counter()
            first = None
            async with session.post(url, data=json.dumps(body), headers=headers) as response:
                if stream:
                    async for line in response.content:
                        if line.startswith(b"data: ") and line[6:].strip() != b"[DONE]":
                            chunk = json.loads(line[6:])
                            if first is None and chunk.get("choices") and \
                                    chunk["choices"][0]["delta"].get("content"):
                                first = time.perf_counter()
                else:
                    json.loads(await response.read())
            done = time.perf_counter()
            lat.append((done - sent) * 1000)
            if first is not None:
                ttft.append((first - sent) * 1000)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"n": requests, "errors": 0, "wall": wall, "cpu": cpu, "lat": lat, "ttft": ttft}


def report(name: str, stream: bool, result: dict[str, Any],
           truth: tuple[list[float], list[float]]) -> str:
    lat, ttft = truth
    def err(measured: list[float], real: list[float]) -> str:
        if not measured or not real:
            return "      -      "
        return (f"{_pct(measured, .5) - _pct(real, .5):+6.2f}/"
                f"{_pct(measured, .99) - _pct(real, .99):+6.2f}")
    return (f"| {'stream' if stream else 'plain':6} | {name:5} | {result['n']:5} | "
            f"{result['errors']:3} | {result['n'] / result['wall']:8.0f} | "
            f"{result['cpu'] / result['n'] * 1e6:8.0f} | {err(result['lat'], lat)} | "
            f"{err(result['ttft'], ttft)} |")


async def amain(args: argparse.Namespace) -> None:
    lines = ["| mode   | path  |     n | err |    req/s | CPU µs/req | latency err p50/p99 ms"
             " | TTFT err p50/p99 ms |", "|---|---|---|---|---|---|---|---|"]
    ratios: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for stream in (False, True):
            config = FakeVendorConfig(latency_ms=50, ttft_ms=50 if stream else 0,
                                      itl_ms=5 if stream else 0, output_tokens=8)
            with FakeVendorProcess(config) as server:
                await raw_phase(server.base_url, args.requests, args.concurrency, stream)
                await fleet_phase(server.base_url, args.requests, args.concurrency,
                                  stream, Path(tmp) / "warm-up")
                for round_index in range(args.rounds):
                    order = ("raw", "fleet") if round_index % 2 == 0 else ("fleet", "raw")
                    results: dict[str, dict[str, Any]] = {}
                    for name in order:
                        server.reset()
                        if name == "raw":
                            result = await raw_phase(server.base_url, args.requests,
                                                     args.concurrency, stream)
                        else:
                            result = await fleet_phase(server.base_url, args.requests,
                                                       args.concurrency, stream, Path(tmp))
                        truth = _truth(server.fetch()["trace"], stream)
                        lines.append(report(name, stream, result, truth))
                        results[name] = result
                    ratios.append(_ratio(stream, round_index + 1, results["raw"],
                                         results["fleet"]))
    print("\n".join(lines))
    print("\nfleet / raw, same round: target req/s >= 0.90x, CPU/request <= 2.00x")
    print("\n".join(ratios))


def _ratio(stream: bool, round_number: int, raw: dict[str, Any], fleet: dict[str, Any]) -> str:
    rps = (fleet["n"] / fleet["wall"]) / (raw["n"] / raw["wall"])
    cpu = (fleet["cpu"] / fleet["n"]) / (raw["cpu"] / raw["n"])
    return (f"  {'stream' if stream else 'plain':6} round {round_number}: req/s {rps:.2f}x "
            f"[{'ok' if rps >= 0.9 else 'MISS'}], CPU/request {cpu:.2f}x "
            f"[{'ok' if cpu <= 2 else 'MISS'}]")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1, help="raw/fleet pairs per workload")
    asyncio.run(amain(parser.parse_args()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
