"""Prometheus metrics of one server (``fleetbench serve --metrics-port N``).

Everything lives in the server's own :class:`~prometheus_client.CollectorRegistry` (no
global state: several servers in one process keep apart). Where the numbers come from:

- **results** (tests finished by provider, model and status; retries; provider latency
  and time to first token): :class:`ResultMetrics`, one more lossless subscriber on each
  run's bus, after the gRPC streams. The executor does nothing extra; per result the
  subscriber does a few dict and list operations (a bisect per histogram), and a
  collector turns them into Prometheus families when scraped.
- **runs by status**: counted in the run store when scraped.
- **requests in flight**: :class:`InFlightInterceptor`, per gRPC method.
- **stream subscribers and their lag**: the open ``StreamResults`` calls, read when
  scraped; each message a stream sends also records its lag in a histogram.

The endpoint is served by aiohttp on the server's event loop, so a scrape reads the
server's state without threads or locks.
"""

from __future__ import annotations

import inspect
from bisect import bisect_left
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import grpc
from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from fleetbench._store import RunStore
from fleetbench.events import Event, TestFinished

if TYPE_CHECKING:  # generic only in the type stubs
    _Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]
else:
    _Handler = grpc.RpcMethodHandler

__all__ = [
    "LAG_BUCKETS",
    "LATENCY_BUCKETS_S",
    "TTFT_BUCKETS_S",
    "MetricsEndpoint",
    "ServerMetrics",
]

LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0,
    120.0, 300.0)
"""Upper bounds of the provider latency histogram, in seconds: an LLM call takes from
milliseconds (a cache, a tiny model) to minutes (long generations)."""

TTFT_BUCKETS_S: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0,
    30.0)
"""Upper bounds of the time-to-first-token histogram, in seconds (finer below 1 s,
where interactive use draws its lines)."""

LAG_BUCKETS: tuple[float, ...] = (0.0, 100.0, 500.0, 1e3, 5e3, 2e4, 1e5, 1e6)
"""Upper bounds of the stream lag histogram, in results (20,000 is the point where a
stream stops following live and catches up from the store)."""


class _Histogram:
    """Bucket counts and sum of one label set (the collector makes them cumulative):
    cheaper than ``prometheus_client.Histogram`` (no lock, no per-value method calls)."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def family_values(self) -> tuple[list[tuple[str, float]], float]:
        """Cumulative ``(le, count)`` buckets and the sum."""
        cumulative: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip([*map(str, self.bounds), "+Inf"], self.counts, strict=True):
            running += count
            cumulative.append((bound, running))
        return cumulative, self.total


class _ProviderStats:
    """Everything counted for one ``provider:model``."""

    __slots__ = ("finished", "latency", "retries", "ttft")

    def __init__(self) -> None:
        self.finished: dict[str, int] = {}
        self.retries = 0
        self.latency = _Histogram(LATENCY_BUCKETS_S)
        self.ttft = _Histogram(TTFT_BUCKETS_S)


class ResultMetrics:
    """Counts the results of every run; a lossless bus subscriber (see the module
    docstring) and a Prometheus collector."""

    def __init__(self) -> None:
        self._providers: dict[tuple[str, str], _ProviderStats] = {}

    async def handle(self, events: Sequence[Event]) -> None:
        providers = self._providers
        for event in events:
            if type(event) is not TestFinished:
                continue
            result = event.result
            item = result.item
            stats = providers.get((item.provider, item.model))
            if stats is None:
                stats = providers[(item.provider, item.model)] = _ProviderStats()
            status = result.status.value
            stats.finished[status] = stats.finished.get(status, 0) + 1
            stats.retries += result.retries
            if result.latency_ms is not None:
                stats.latency.observe(result.latency_ms / 1000)
            if result.ttft_ms is not None:
                stats.ttft.observe(result.ttft_ms / 1000)

    def collect(self) -> Iterator[Metric]:
        labels = ["provider", "model"]
        finished = CounterMetricFamily(
            "fleetbench_tests_finished", "Tests finished, by provider, model and status.",
            labels=[*labels, "status"])
        retries = CounterMetricFamily(
            "fleetbench_provider_retries", "Provider calls retried, by provider and model.",
            labels=labels)
        latency = HistogramMetricFamily(
            "fleetbench_provider_latency_seconds",
            "Latency of the final attempt of provider calls that got an answer "
            "(TestResult.latency_ms).", labels=labels)
        ttft = HistogramMetricFamily(
            "fleetbench_provider_ttft_seconds",
            "Time to first token of streamed provider calls (TestResult.ttft_ms).",
            labels=labels)
        for (provider, model), stats in sorted(self._providers.items()):
            for status, count in sorted(stats.finished.items()):
                finished.add_metric([provider, model, status], count)
            retries.add_metric([provider, model], stats.retries)
            latency.add_metric([provider, model], *stats.latency.family_values())
            ttft.add_metric([provider, model], *stats.ttft.family_values())
        yield from (finished, retries, latency, ttft)


class _RunsByStatus:
    """``fleetbench_runs``: the stored runs in each status, counted when scraped."""

    def __init__(self, store: Callable[[], RunStore | None]) -> None:
        self._store = store

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("fleetbench_runs", "Runs in the run store, by status.",
                                   labels=["status"])
        store = self._store()
        if store is not None:
            for status, count in store.count_runs().items():
                family.add_metric([status.value], count)
        yield family


class _Lagging(Protocol):
    @property
    def lag(self) -> int: ...


class _Streams:
    """The open ``StreamResults`` calls: how many, the largest lag now, and the lag of
    every message sent."""

    def __init__(self) -> None:
        self.open: set[_Lagging] = set()
        self.lag = _Histogram(LAG_BUCKETS)

    def collect(self) -> Iterator[Metric]:
        streams = list(self.open)
        lag = HistogramMetricFamily(
            "fleetbench_stream_lag_results",
            "Lag of a StreamResults call when it sends a message (the run's last seq "
            "minus the last seq sent), in results.")
        lag.add_metric([], *self.lag.family_values())
        yield lag
        yield GaugeMetricFamily("fleetbench_stream_subscribers",
                                "Open StreamResults calls.", value=len(streams))
        yield GaugeMetricFamily(
            "fleetbench_stream_max_lag_results",
            "The largest lag of an open StreamResults call: results the run has recorded "
            "that the stream has not sent yet.",
            value=max((s.lag for s in streams), default=0))


class ServerMetrics:
    """Every metric of one server, in its own registry (see the module docstring).

    :param store: the server's run store, or ``None`` while it is closed.
    """

    def __init__(self, store: Callable[[], RunStore | None]) -> None:
        self.registry = CollectorRegistry()
        self.results = ResultMetrics()
        self._streams = _Streams()
        collectors: list[Collector] = [_RunsByStatus(store), self.results, self._streams]
        for collector in collectors:
            self.registry.register(collector)
        self.in_flight = Gauge(
            "fleetbench_grpc_requests_in_flight", "gRPC calls being handled, by method.",
            ["grpc_service", "grpc_method"], registry=self.registry)

    @contextmanager
    def streaming(self, stream: _Lagging) -> Iterator[Callable[[int], None]]:
        """Count ``stream`` as open while in the block; gives the function that records
        the lag of each message it sends."""
        self._streams.open.add(stream)
        try:
            yield self._streams.lag.observe
        finally:
            self._streams.open.discard(stream)

    def interceptor(self) -> grpc.aio.ServerInterceptor:
        return InFlightInterceptor(self.in_flight)


class InFlightInterceptor(grpc.aio.ServerInterceptor):
    """Keeps ``fleetbench_grpc_requests_in_flight`` per method."""

    def __init__(self, gauge: Gauge) -> None:
        self._gauge = gauge

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        service, _, method = (handler_call_details.method or "").lstrip("/").rpartition("/")
        gauge = self._gauge.labels(service, method)
        options: dict[str, Any] = {"request_deserializer": handler.request_deserializer,
                                   "response_serializer": handler.response_serializer}
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _counted(handler.unary_unary, gauge), **options)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _counted(handler.unary_stream, gauge), **options)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _counted(handler.stream_unary, gauge), **options)
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                _counted(handler.stream_stream, gauge), **options)
        return handler


def _counted(behavior: Callable[..., Any], gauge: Any) -> Callable[..., Any]:
    """``behavior`` (a coroutine or async generator function) with ``gauge`` raised
    while a call runs."""
    if inspect.isasyncgenfunction(behavior):
        async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
            gauge.inc()
            try:
                async for message in behavior(request, context):
                    yield message
            finally:
                gauge.dec()

        return stream

    async def call(request: Any, context: Any) -> Any:
        gauge.inc()
        try:
            return await behavior(request, context)
        finally:
            gauge.dec()

    return call


class MetricsEndpoint:
    """``GET /metrics`` over HTTP on the server's event loop."""

    def __init__(self, registry: CollectorRegistry) -> None:
        app = web.Application()
        app.router.add_get("/metrics", make_aiohttp_handler(registry))
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        """Bind ``host:port`` (0: a free port, then in :attr:`port`)."""
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_port=False)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise OSError(f"cannot serve metrics on {host}:{port} ({exc.strerror or exc})"
                          ) from exc
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        await self._runner.cleanup()
