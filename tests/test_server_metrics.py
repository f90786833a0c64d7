"""Prometheus metrics of ``fleetbench serve``: scraped over real HTTP on 127.0.0.1 from
real servers (each with its own registry), compared with the results of the run."""

from __future__ import annotations

import asyncio
import signal
import socket
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import httpx
import pytest
from fleetbench_client.v1 import fleetbench_pb2 as pb
from prometheus_client.parser import text_string_to_metric_families

from fleetbench._plugins import PluginHost
from fleetbench._server._metrics import LATENCY_BUCKETS_S, TTFT_BUCKETS_S

from .conftest import FleetDir
from .server_support import (
    collect,
    config_for,
    eventually,
    fast_fleet,
    running_server,
    slow_fleet,
    start_request,
    start_serve,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(url: str) -> Samples:
    """Every sample of ``url`` by name and labels."""
    async with httpx.AsyncClient() as client:
        response = await client.get(url, timeout=10)
    response.raise_for_status()
    assert response.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples}


def labels(**values: str) -> frozenset[tuple[str, str]]:
    return frozenset(values.items())


def by_labels(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {key: value for (sample, key), value in samples.items() if sample == name}


def status_name(status: int) -> str:
    return pb.TestStatus.Name(status).removeprefix("TEST_STATUS_").lower()


def mixed_fleet(fleet: FleetDir) -> FleetDir:
    """32 zero-latency tests: one model streams (TTFT) and is rate limited at times
    (retries with no wait), the other answers a bad request at times (ERROR)."""
    fast_fleet(fleet)
    fleet.manifest["providers"] = [
        {"id": "simulated:fast", "stream": True,
         "params": {"zero_latency": True, "seed": 1, "rate_limit_rate": 0.4,
                    "retry_after_s": 0}},
        {"id": "simulated:slow",
         "params": {"zero_latency": True, "seed": 2, "bad_request_rate": 0.3}},
    ]
    return fleet


def bucket_counts(values: Iterable[float], bounds: Iterable[float]) -> dict[str, int]:
    seconds = [v / 1000 for v in values]
    counts = {str(b): sum(1 for s in seconds if s <= b) for b in bounds}
    counts["+Inf"] = len(seconds)
    return counts


async def test_metrics_count_exactly_the_results_of_a_run(fleet_dir: FleetDir,
                                                          host: PluginHost,
                                                          tmp_path: Path) -> None:
    manifest = mixed_fleet(fleet_dir).write()
    one_config = config_for(tmp_path, metrics_port=0, state_dir=tmp_path / "state-one")
    two_config = config_for(tmp_path, metrics_port=0, state_dir=tmp_path / "state-two")
    async with running_server(one_config, host) as one, \
            running_server(two_config, host) as two:
        url = one.server.metrics_url
        assert url is not None
        assert url.startswith("http://127.0.0.1:")
        assert one.server.metrics_port not in (0, two.server.metrics_port)

        run_id = (await one.stub.StartFleetRun(start_request(manifest))).run.run_id
        messages = await collect(one.stub, run_id)
        assert messages[-1].status == pb.RUN_STATUS_COMPLETED
        results = [r for m in messages for r in m.results]
        assert len(results) == 32
        samples = await scrape(url)
        other = await scrape(two.server.metrics_url or "")

    finished = Counter((r.provider, r.model, status_name(r.status)) for r in results)
    assert len({status for _, _, status in finished}) > 1  # PASSED/FAILED and ERROR
    assert by_labels(samples, "fleetbench_tests_finished_total") == {
        labels(provider=p, model=m, status=s): n for (p, m, s), n in finished.items()}

    retries = Counter[tuple[str, str]]()
    for r in results:
        retries[(r.provider, r.model)] += r.retries
    assert retries[("simulated", "fast")] > 0
    assert by_labels(samples, "fleetbench_provider_retries_total") == {
        labels(provider=p, model=m): n for (p, m), n in retries.items()}

    for name, field, bounds in (("latency", "latency_ms", LATENCY_BUCKETS_S),
                                ("ttft", "ttft_ms", TTFT_BUCKETS_S)):
        family = f"fleetbench_provider_{name}_seconds"
        for model in ("fast", "slow"):
            values = [getattr(r, field) for r in results
                      if r.model == model and r.HasField(field)]
            key = labels(provider="simulated", model=model)
            assert samples[(f"{family}_count", key)] == len(values)
            assert samples[(f"{family}_sum", key)] == pytest.approx(sum(values) / 1000)
            buckets = {dict(k)["le"]: v for k, v in by_labels(samples, f"{family}_bucket")
                       .items() if {("provider", "simulated"), ("model", model)} <= k}
            assert buckets == {_go_float(le): n for le, n in bucket_counts(values, bounds)
                               .items()}
    assert samples[("fleetbench_provider_ttft_seconds_count",
                    labels(provider="simulated", model="fast"))] > 0  # it streams

    assert samples[("fleetbench_runs", labels(status="completed"))] == 1
    assert samples[("fleetbench_runs", labels(status="running"))] == 0
    assert samples[("fleetbench_stream_subscribers", labels())] == 0
    assert samples[("fleetbench_stream_lag_results_count", labels())] == len(messages)
    assert samples[("fleetbench_grpc_requests_in_flight",
                    labels(grpc_service="fleetbench.v1.FleetBenchService",
                           grpc_method="StartFleetRun"))] == 0

    # The second server has a registry of its own: nothing of the first one's run.
    assert by_labels(other, "fleetbench_tests_finished_total") == {}
    assert other[("fleetbench_runs", labels(status="completed"))] == 0


def _go_float(le: str) -> str:
    """A bound as the exposition writes it (``1.0``, ``0.005``, ``+Inf``)."""
    return le if le == "+Inf" else repr(float(le))


async def test_open_streams_count_as_subscribers_and_requests_in_flight(
        fleet_dir: FleetDir, host: PluginHost, tmp_path: Path) -> None:
    manifest = slow_fleet(fleet_dir, latency_ms=50).write()
    async with running_server(config_for(tmp_path, metrics_port=0), host) as served:
        url = served.server.metrics_url or ""
        run_id = (await served.stub.StartFleetRun(start_request(manifest))).run.run_id
        follow = asyncio.create_task(collect(served.stub, run_id, max_batch=1))
        in_flight = ("fleetbench_grpc_requests_in_flight",
                     labels(grpc_service="fleetbench.v1.FleetBenchService",
                            grpc_method="StreamResults"))

        async def following() -> Samples | None:
            samples = await scrape(url)
            return samples if samples[("fleetbench_stream_subscribers", labels())] == 1 \
                else None

        samples = await eventually(following, what="one stream subscriber")
        assert samples[in_flight] == 1
        assert samples[("fleetbench_runs", labels(status="running"))] == 1
        assert samples[("fleetbench_stream_max_lag_results", labels())] >= 0

        await served.stub.CancelRun(pb.CancelRunRequest(run_id=run_id))
        messages = await follow

        async def closed() -> Samples | None:
            samples = await scrape(url)
            return samples if samples[in_flight] == 0 else None

        samples = await eventually(closed, what="no StreamResults in flight")
        assert samples[("fleetbench_stream_subscribers", labels())] == 0
        assert samples[("fleetbench_runs", labels(status="cancelled"))] == 1
        finished = sum(v for v in by_labels(samples, "fleetbench_tests_finished_total")
                       .values())
        assert finished == len([r for m in messages for r in m.results])


def free_port() -> int:
    """A port nobody listens on now (the CLI takes 0 as "no metrics", not "any port")."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_serve_metrics_port_option(tmp_path: Path) -> None:
    port = free_port()
    serve = await start_serve(tmp_path, "--metrics-port", str(port))
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        samples = await scrape(url)  # bound before the address line is printed
        assert samples[("fleetbench_runs", labels(status="completed"))] == 0
    finally:
        assert await serve.kill(signal.SIGTERM) == 0
    assert f'"metrics": "{url}"' in serve.log.read_text()
