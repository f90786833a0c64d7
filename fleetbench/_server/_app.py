"""Assembles the ``grpc.aio`` server and runs its life: open, ready, serve, stop.

- **open**: open the run store and the server's own file (``_encoded``), load
  plugins, bind the port (TLS if configured) with ``grpc.server.max_pending_requests``
  raised, register the FleetBench service, standard health checking (NOT_SERVING) and
  reflection (v1alpha, the only version grpcio-reflection serves), then start accepting
  calls; with a metrics port, serve Prometheus metrics on the same host (``_metrics``).
- **ready**: recover (stale RUNNING/PENDING runs become INTERRUPTED, and every
  INTERRUPTED run resumes), then health turns SERVING. Calls that start, cancel or
  follow runs wait for this, so they never race the recovery.
- **stop** (SIGTERM/SIGINT under :func:`serve`): health turns NOT_SERVING, new calls
  are refused, executing runs are interrupted (recorded INTERRUPTED, so they resume on
  the next start) which ends their streams, then in-flight calls get ``grace`` seconds;
  the metrics endpoint stops last; windows of results being kept (``_replay``'s
  replay cache) are finished, then the run store and the server's file close.

``SO_REUSEPORT`` is switched off so that a port in use is an error, not a second
server silently sharing it.

:func:`serve` (the ``fleetbench serve`` process) also makes full cyclic garbage
collections rare (:func:`_tune_gc`): each one walks every object of the process (a large
run's plan, its aggregates) with the event loop stopped, 100–180 ms in a 100,000-test
run, which showed up directly as the delay of live results. It also starts the
conversion worker process (``_replay``) right away, so that its start-up (≈ 1 s of
imports) does not compete with the first run for the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Callable

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from fleetbench._plugins import PluginHost, load_plugins
from fleetbench._server._auth import BearerTokenInterceptor
from fleetbench._server._config import ServerConfig
from fleetbench._server._convert import SERVICE_NAME, ResultEncoder, add_service
from fleetbench._server._encoded import EncodedWindows
from fleetbench._server._intake import Intake
from fleetbench._server._metrics import MetricsEndpoint, ServerMetrics
from fleetbench._server._paths import DataRoots
from fleetbench._server._replay import ReplayCache
from fleetbench._server._runs import RunManager
from fleetbench._server._service import FleetBenchService
from fleetbench._store import RunStore

__all__ = ["SERVICE_NAME", "FleetBenchServer", "serve"]

_log = structlog.get_logger("fleetbench.server")

_HEALTH_NAMES = ("", SERVICE_NAME)  # "" is the whole server


class FleetBenchServer:
    """One server over one state directory (see the module docstring).

    :param host: the plugins to use; loaded from the environment when ``None``.
    """

    def __init__(self, config: ServerConfig, *, host: PluginHost | None = None) -> None:
        self.config = config
        self._host = host
        self._server: grpc.aio.Server | None = None
        self._health = health_aio.HealthServicer()
        self._store: RunStore | None = None
        self._encoded: EncodedWindows | None = None
        self._replays: ReplayCache | None = None
        self._manager: RunManager | None = None
        self.metrics = ServerMetrics(lambda: self._store)
        self._metrics_endpoint: MetricsEndpoint | None = None
        self.port = 0
        self.metrics_port = 0
        """The port of the metrics endpoint (0 without one)."""

    @property
    def address(self) -> str:
        """``host:port`` the server listens on (IPv6 hosts in brackets)."""
        host = self.config.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    @property
    def manager(self) -> RunManager:
        if self._manager is None:
            raise RuntimeError("the server is not open")
        return self._manager

    async def start(self) -> None:
        """Open and get ready."""
        await self.open()
        await self.ready()

    async def open(self) -> None:
        """Bind and start accepting calls; health says NOT_SERVING until :meth:`ready`."""
        config = self.config
        self._store = RunStore(config.state_dir)
        self._encoded = EncodedWindows(config.state_dir, self._store)
        replays = self._replays = ReplayCache(self._store, kept=self._encoded,
                                              encoder_for=_encoder, worker=True)
        host = self._host or load_plugins()
        intake = Intake(host, config.cache_dir, DataRoots(config.data_roots))
        self._manager = RunManager(self._store, host, intake, config.limits,
                                   stream_buffer=config.stream_buffer,
                                   run_subscribers=[("metrics", self.metrics.results)],
                                   executor=config.executor, recorder=replays)
        interceptors = [self.metrics.interceptor()]
        if config.auth_token:
            interceptors.append(BearerTokenInterceptor(config.auth_token))
        server = grpc.aio.server(interceptors=interceptors, options=[
            ("grpc.server.max_pending_requests", config.max_pending_requests),
            ("grpc.so_reuseport", 0),
            # Manifests arrive inline: allow large ones (gRPC's default is 4 MiB).
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            # Let clients keep quiet streams alive with pings every 30 s or more, so a
            # connection that dies silently is noticed instead of hanging a stream.
            ("grpc.http2.min_ping_interval_without_data_ms", 30_000),
            ("grpc.keepalive_permit_without_calls", 1),
        ])
        add_service(FleetBenchService(self._manager, self.metrics, replays), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        for name in _HEALTH_NAMES:
            await self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME), server)
        self.port = self._bind(server)
        await server.start()
        self._server = server
        if config.metrics_port is not None:
            await self._serve_metrics(config.metrics_port)
        _log.info("server open", address=self.address, tls=config.tls is not None,
                  auth=bool(config.auth_token),
                  data_roots=[str(r) for r in intake.roots.roots],
                  metrics=self.metrics_url)

    @property
    def metrics_url(self) -> str | None:
        """``http://host:port/metrics``, or ``None`` without a metrics endpoint."""
        if not self.metrics_port:
            return None
        host = self.config.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.metrics_port}/metrics"

    async def _serve_metrics(self, port: int) -> None:
        endpoint = MetricsEndpoint(self.metrics.registry)
        await endpoint.start(self.config.host, port)
        self._metrics_endpoint, self.metrics_port = endpoint, endpoint.port

    def _bind(self, server: grpc.aio.Server) -> int:
        config = self.config
        target = (f"[{config.host}]:{config.port}" if ":" in config.host
                  else f"{config.host}:{config.port}")
        try:
            if config.tls is None:
                port = server.add_insecure_port(target)
            else:
                credentials = grpc.ssl_server_credentials(
                    [(config.tls.key.read_bytes(), config.tls.cert.read_bytes())])
                port = server.add_secure_port(target, credentials)
        except RuntimeError as exc:  # grpc's "Failed to bind to address"
            raise OSError(f"cannot listen on {target} (in use, or not an address of "
                          "this machine)") from exc
        if port == 0:
            raise OSError(f"cannot listen on {target}")
        return port

    def start_worker(self) -> None:
        """Start the process that converts results for the wire now rather than when the
        first run needs it."""
        if self._replays is not None:
            self._replays.start_worker()

    async def ready(self) -> None:
        """Resume interrupted runs, then report SERVING."""
        resumed = await self.manager.recover()
        for name in _HEALTH_NAMES:
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        _log.info("server ready", address=self.address, resumed_runs=resumed)

    async def stop(self, grace_s: float | None = None) -> None:
        """Graceful shutdown (see the module docstring); idempotent."""
        grace = self.config.shutdown_grace_s if grace_s is None else grace_s
        server, self._server = self._server, None
        try:
            if server is not None:
                await self._stop_serving(server, grace)
        finally:
            endpoint, self._metrics_endpoint = self._metrics_endpoint, None
            if endpoint is not None:
                await endpoint.stop()
            replays, self._replays = self._replays, None
            if replays is not None:
                await replays.aclose()
            store, encoded, self._store, self._encoded = self._store, self._encoded, None, None
            for closable in (store, encoded):
                if closable is not None:
                    closable.close()

    async def _stop_serving(self, server: grpc.aio.Server, grace: float) -> None:
        _log.info("server stopping", grace_s=grace)
        await self._health.enter_graceful_shutdown()
        stopping = asyncio.create_task(server.stop(grace))
        try:
            if self._manager is not None:
                await self._manager.shutdown(grace)
        finally:
            await stopping
        _log.info("server stopped")


def _encoder(save_responses: bool) -> ResultEncoder:
    return ResultEncoder(save_responses=save_responses)


GC_THRESHOLDS = (700, 10, 1000)
"""Python's defaults are (700, 10, 10): a full collection after every 10 collections of
the middle generation (and once the long-lived objects grew by 25 %); 1000 makes them a
hundred times rarer. Young generations are collected as usual, so garbage cycles are
still reclaimed, only those that survive long enough to reach the oldest generation
wait longer."""


def _tune_gc() -> None:
    """Freeze what start-up allocated (imports, plugins: never garbage) so collections
    skip it, and make full collections rare (:data:`GC_THRESHOLDS`)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def serve(config: ServerConfig, *, announce: Callable[[str], None],
                host: PluginHost | None = None) -> None:
    """Run a server until SIGTERM or SIGINT, then stop it gracefully; the process's
    garbage collection is tuned for a server first (:func:`_tune_gc`).

    :param announce: told ``listening on HOST:PORT`` once the port is bound.
    """
    server = FleetBenchServer(config, host=host)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.open()
        server.start_worker()
        _tune_gc()
        announce(f"listening on {server.address}")
        ready = asyncio.create_task(server.ready())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({ready, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if ready.done() and ready.exception() is None:
            await stopped
        stopped.cancel()
        if not ready.done():
            ready.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ready  # re-raises a failed recovery after the server stopped
    finally:
        await server.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
