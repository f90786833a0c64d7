"""Benchmark: fleetbench's shared HTTP client against a raw aiohttp loop (issue 3, item 7c).

Runs the fake OpenAI vendor (``fleetbench.testing.FakeVendorProcess``) in a **separate
process**, so that ``time.process_time()`` of this process is the client's CPU alone, then
measures at a fixed
concurrency, for a fixed number of requests each, in the same run:

  (i)   raw     - a minimal aiohttp loop (``aiohttp.ClientSession``), the reference;
  (ii)  fleet   - ``fleetbench._http.create_http_client()`` used through httpx's API;
  (iii) httpx   - a default ``httpx.AsyncClient()`` (httpcore/h11 pool), for contrast.

Two workloads: non-streaming with 50 ms server latency, and SSE streaming with 50 ms TTFT and
a few tokens at a small inter-token latency. Every client parses the JSON (each SSE chunk
when streaming), as a provider plugin would. Each client first warms its pool; rounds
alternate which client goes first.

Honest timings: every request carries an id header; the server records when it received the
request and wrote the first token / last byte (``time.perf_counter()``, i.e. CLOCK_MONOTONIC,
shared by both processes). For each request we report ``client latency - server latency``
and ``client TTFT - server TTFT`` (p50 / p99), and split the latency error at p50 into
*send* (client call -> server received) and *recv* (server last byte -> client done). The
raw and plain httpx clients are timed by the caller's clock; fleetbench's client as its
executor times a request, from the transport's notes (the request's bytes handed to the
socket, the first chunk's and the body end's arrival on the connection).

Start: the workers' first requests are spread over ``--ramp-ms`` (default 50 ms, one latency
period). Against a constant-latency fake vendor an all-at-once start (``--ramp-ms 0``) keeps
all 64 requests in one lock-step wave for the whole run, so each wave queues in the server
and in the client; real vendors' varying latencies break such waves up. Both are reported
in the issue notes; both clients always see the same start.

Targets: fleet >= 0.9x raw requests/s, fleet CPU/request <= 2x raw, timing error <= +2 ms
p50 and <= +10 ms p99. Usage::

    .venv/bin/python bench/bench_http.py [--requests 3000] [--httpx-requests 1000] [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fleetbench._gctuning import gc_tuned_for_runs
from fleetbench._http import create_http_client, track_wire_times, transport_name
from fleetbench.testing import (
    REQUEST_ID_HEADER,
    FakeVendorConfig,
    FakeVendorProcess,
    TraceEntry,
)

# (request id, sent at, first token seen at or None, done at): client perf_counter() seconds
Sample = tuple[str, float, float | None, float]
DoRequest = Callable[[str], Awaitable[Sample]]

PROMPT = {
    "model": "fake-gpt",
    "messages": [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Say hello from the benchmark, please."},
    ],
    "max_tokens": 64,
}
STREAM_PROMPT = {**PROMPT, "stream": True, "stream_options": {"include_usage": True}}


@dataclass
class Phase:
    workload: str
    client: str
    requests: int
    wall_s: float
    cpu_s: float
    server_cpu_s: float
    errors: int
    latency_err_ms: list[float] = field(default_factory=list)
    ttft_err_ms: list[float] = field(default_factory=list)
    send_ms: list[float] = field(default_factory=list)  # client send -> server received
    recv_ms: list[float] = field(default_factory=list)  # server last byte -> client done

    @property
    def rps(self) -> float:
        return self.requests / self.wall_s

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.cpu_s / self.requests

    @property
    def server_cpu_ms_per_request(self) -> float:
        return 1000 * self.server_cpu_s / self.requests


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# --- the three clients ---------------------------------------------------------------------


def raw_client(session: aiohttp.ClientSession, url: str, stream: bool) -> DoRequest:
    async def plain(rid: str) -> Sample:
        t0 = time.perf_counter()
        async with session.post(url, json=PROMPT, headers={REQUEST_ID_HEADER: rid}) as response:
            if response.status != 200:
                raise RuntimeError(f"status {response.status}")
            json.loads(await response.read())
        return rid, t0, None, time.perf_counter()

    async def streaming(rid: str) -> Sample:
        first = None
        t0 = time.perf_counter()
        async with session.post(
            url, json=STREAM_PROMPT, headers={REQUEST_ID_HEADER: rid}
        ) as response:
            if response.status != 200:
                raise RuntimeError(f"status {response.status}")
            async for line in response.content:
                if line.startswith(b"data: ") and line.rstrip() != b"data: [DONE]":
                    if first is None:
                        first = time.perf_counter()
                    json.loads(line[6:])
        return rid, t0, first, time.perf_counter()

    return streaming if stream else plain


def httpx_client(client: httpx.AsyncClient, url: str, stream: bool, *,
                 wire: bool = False) -> DoRequest:  # fmt: skip
    """Requests through ``client``. ``wire``: time them as fleetbench's executor does, from
    the transport's notes (:func:`~fleetbench._http.track_wire_times`: the request's bytes
    handed to the socket, the arrival of the first chunk and of the body's end), rather than
    by the caller's clock."""

    async def plain(rid: str) -> Sample:
        times = track_wire_times() if wire else None
        t0 = time.perf_counter()
        response = await client.post(url, json=PROMPT, headers={REQUEST_ID_HEADER: rid})
        if response.status_code != 200:
            raise RuntimeError(f"status {response.status_code}")
        response.json()
        done = time.perf_counter()
        if times is None:
            return rid, t0, None, done
        return rid, times.sent or t0, None, times.body_end or done

    async def streaming(rid: str) -> Sample:
        times = track_wire_times() if wire else None
        first = None
        t0 = time.perf_counter()
        async with client.stream(
            "POST", url, json=STREAM_PROMPT, headers={REQUEST_ID_HEADER: rid}
        ) as response:
            if response.status_code != 200:
                raise RuntimeError(f"status {response.status_code}")
            async for line in response.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    if first is None:
                        arrived = times.last_arrival() if times is not None else None
                        first = arrived or time.perf_counter()
                    json.loads(line[6:])
        done = time.perf_counter()
        if times is None:
            return rid, t0, first, done
        return rid, times.sent or t0, first, times.body_end or done

    return streaming if stream else plain


# --- measurement ---------------------------------------------------------------------------


async def drive(
    do: DoRequest,
    tag: str,
    n: int,
    concurrency: int,
    ramp_s: float = 0.0,
    max_s: float = float("inf"),
) -> tuple[list[Sample], int]:
    """``n`` requests through ``concurrency`` workers; returns samples and the error count.

    With ``ramp_s`` > 0 the workers start evenly spread over that time instead of all at once.
    No new request starts after ``max_s`` seconds (a bound for slow clients).
    """
    samples: list[Sample] = []
    errors = 0
    next_index = 0
    deadline = time.perf_counter() + max_s

    async def worker(delay: float) -> None:
        nonlocal next_index, errors
        if delay:
            await asyncio.sleep(delay)
        while next_index < n and time.perf_counter() < deadline:
            index = next_index
            next_index += 1
            try:
                samples.append(await do(f"{tag}-{index}"))
            except Exception as exc:
                errors += 1
                if errors <= 3:
                    print(f"  ! {tag}: {type(exc).__name__}: {exc}", file=sys.stderr)

    await asyncio.gather(*(worker(k * ramp_s / concurrency) for k in range(concurrency)))
    return samples, errors


async def measure(
    server: FakeVendorProcess,
    workload: str,
    name: str,
    do: DoRequest,
    n: int,
    args: argparse.Namespace,
) -> Phase:
    concurrency, ramp_s = args.concurrency, args.ramp_ms / 1000
    await drive(do, f"warm-{name}", concurrency * 3, concurrency)  # open and warm the pool
    await asyncio.to_thread(server.reset)
    server_cpu0 = (await asyncio.to_thread(server.fetch))["cpu_s"]
    gc.collect()
    cpu0, t0 = time.process_time(), time.perf_counter()
    samples, errors = await drive(do, name, n, concurrency, ramp_s, args.max_phase_s)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    snapshot = await asyncio.to_thread(server.fetch)
    truth: dict[str | None, TraceEntry] = {e.request_id: e for e in snapshot["trace"]}
    count = len(samples) + errors
    phase = Phase(workload, name, count, wall, cpu, snapshot["cpu_s"] - server_cpu0, errors)
    for rid, sent, first, done in samples:
        entry = truth.get(rid)
        if entry is None or entry.last_byte is None:
            continue
        # Same clock in both processes (CLOCK_MONOTONIC), so the error splits into the part
        # before the server saw the request and the part after it wrote the last byte.
        phase.send_ms.append(1000 * (entry.received - sent))
        phase.recv_ms.append(1000 * (done - entry.last_byte))
        phase.latency_err_ms.append(1000 * ((done - sent) - (entry.last_byte - entry.received)))
        if first is not None and entry.first_token is not None:
            client_ttft = first - sent
            phase.ttft_err_ms.append(1000 * (client_ttft - (entry.first_token - entry.received)))
    return phase


async def run_workload(
    workload: str, config: FakeVendorConfig, stream: bool, args: argparse.Namespace
) -> list[Phase]:
    phases: list[Phase] = []
    with FakeVendorProcess(config) as server:
        url = server.base_url + "/chat/completions"
        for round_index in range(args.rounds):
            order = ["raw", "fleet"] if round_index % 2 == 0 else ["fleet", "raw"]
            for name in order:
                if name == "raw":
                    async with aiohttp.ClientSession() as session:
                        do = raw_client(session, url, stream)
                        phases.append(
                            await measure(server, workload, name, do, args.requests, args)
                        )
                else:  # with the garbage collector set as during a run
                    with gc_tuned_for_runs():
                        async with create_http_client() as client:
                            do = httpx_client(client, url, stream, wire=True)
                            phases.append(
                                await measure(server, workload, name, do, args.requests, args)
                            )
            if args.httpx_requests:
                async with httpx.AsyncClient() as plain:
                    do = httpx_client(plain, url, stream)
                    n = args.httpx_requests
                    phases.append(await measure(server, workload, "httpx", do, n, args))
    return phases


def _fmt_err(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{_percentile(values, 0.5):+.2f} / {_percentile(values, 0.99):+.2f}"


def _timing_verdict(phase: Phase) -> str:
    ok = all(
        _percentile(values, 0.5) <= 2 and _percentile(values, 0.99) <= 10
        for values in (phase.latency_err_ms, phase.ttft_err_ms)
        if values
    )
    return "ok" if ok else "MISS"


def report(phases: list[Phase]) -> None:
    header = (
        f"{'workload':<10} {'client':<6} {'reqs':>5} {'err':>3} {'req/s':>7} {'CPU ms/req':>10} "
        f"{'srv CPU ms/req':>14} {'latency err p50/p99 ms':>23} {'TTFT err p50/p99 ms':>20} "
        f"{'send / recv p50 ms':>18}"
    )
    print(header)
    print("-" * len(header))
    for p in phases:
        print(
            f"{p.workload:<10} {p.client:<6} {p.requests:>5} {p.errors:>3} {p.rps:>7.0f} "
            f"{p.cpu_ms_per_request:>10.3f} {p.server_cpu_ms_per_request:>14.3f} "
            f"{_fmt_err(p.latency_err_ms):>23} {_fmt_err(p.ttft_err_ms):>20} "
            f"{_percentile(p.send_ms, 0.5):>8.2f} / {_percentile(p.recv_ms, 0.5):<7.2f}"
        )
    print()
    print("fleet vs raw (same workload and round): target req/s >= 0.90x, CPU/req <= 2.00x")
    by_key: dict[tuple[str, int], dict[str, Phase]] = {}
    rounds: dict[tuple[str, str], int] = {}
    for p in phases:
        key = (p.workload, p.client)
        rounds[key] = rounds.get(key, 0) + 1
        by_key.setdefault((p.workload, rounds[key]), {})[p.client] = p
    for (workload, rnd), clients in by_key.items():
        raw, fleet = clients.get("raw"), clients.get("fleet")
        if raw is None or fleet is None:
            continue
        rps_ratio = fleet.rps / raw.rps
        cpu_ratio = fleet.cpu_ms_per_request / raw.cpu_ms_per_request
        line = (
            f"  {workload:<10} round {rnd}: req/s {rps_ratio:.2f}x "
            f"[{'ok' if rps_ratio >= 0.9 else 'MISS'}], "
            f"CPU/req {cpu_ratio:.2f}x [{'ok' if cpu_ratio <= 2 else 'MISS'}], "
            f"timing error (<= +2 / +10 ms) fleet [{_timing_verdict(fleet)}] "
            f"raw [{_timing_verdict(raw)}]"
        )
        if "httpx" in clients:
            line += f"; plain httpx: {clients['httpx'].rps / raw.rps:.2f}x req/s, "
            line += f"{clients['httpx'].cpu_ms_per_request / raw.cpu_ms_per_request:.1f}x CPU"
        print(line)


async def amain(args: argparse.Namespace) -> list[Phase]:
    plain = FakeVendorConfig(latency_ms=args.latency_ms, output_tokens=16)
    streaming = FakeVendorConfig(
        ttft_ms=args.ttft_ms, itl_ms=args.itl_ms, output_tokens=args.tokens, tokens_per_chunk=1
    )
    phases = await run_workload("json", plain, False, args)
    phases += await run_workload("stream", streaming, True, args)
    return phases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="per client: raw, fleet")
    parser.add_argument("--httpx-requests", type=int, default=1000, help="plain httpx; 0 = skip")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--ramp-ms",
        type=float,
        default=50.0,
        help="spread the workers' first requests over this time (0 = all at once)",
    )
    parser.add_argument(
        "--max-phase-s", type=float, default=120.0, help="stop starting requests after this"
    )
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--ttft-ms", type=float, default=50.0)
    parser.add_argument("--itl-ms", type=float, default=2.0)
    parser.add_argument("--tokens", type=int, default=8, help="streamed output tokens")
    parser.add_argument("--json-out", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()
    print(f"transport: {transport_name()}; python {sys.version.split()[0]}")
    print(
        f"workloads: json = {args.latency_ms:g} ms latency; stream = {args.ttft_ms:g} ms TTFT, "
        f"{args.tokens} tokens, {args.itl_ms:g} ms ITL; concurrency {args.concurrency}; "
        f"start ramp {args.ramp_ms:g} ms; server in a subprocess on 127.0.0.1"
    )
    print()
    load_before = os.getloadavg()[0]
    phases = asyncio.run(amain(args))
    report(phases)
    print(
        f"\n1-minute load average before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f} "
        f"on {os.cpu_count()} CPUs (other processes skew the timing errors more than req/s)"
    )
    if args.json_out:
        rows: list[dict[str, Any]] = []
        for p in phases:
            rows.append(
                {
                    "workload": p.workload,
                    "client": p.client,
                    "requests": p.requests,
                    "errors": p.errors,
                    "rps": round(p.rps, 1),
                    "cpu_ms_per_request": round(p.cpu_ms_per_request, 4),
                    "server_cpu_ms_per_request": round(p.server_cpu_ms_per_request, 4),
                    "latency_err_ms_p50": round(_percentile(p.latency_err_ms, 0.5), 3),
                    "latency_err_ms_p99": round(_percentile(p.latency_err_ms, 0.99), 3),
                    "ttft_err_ms_p50": round(_percentile(p.ttft_err_ms, 0.5), 3),
                    "ttft_err_ms_p99": round(_percentile(p.ttft_err_ms, 0.99), 3),
                }
            )
        args.json_out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
