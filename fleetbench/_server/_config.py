"""What ``fleetbench serve`` was asked to do: one immutable value the server is built from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PORT = 50051
DEFAULT_MAX_CONCURRENT_RUNS = 4
DEFAULT_MAX_PLANNED_TESTS = 1_000_000
DEFAULT_MAX_PENDING_REQUESTS = 20_000
"""gRPC core drops calls beyond ``grpc.server.max_pending_requests`` (default 1,000) with
CANCELLED; a burst of clients must be queued instead (reference/environment.md §1)."""
DEFAULT_SHUTDOWN_GRACE_S = 10.0
DEFAULT_STREAM_BUFFER = 20_000
"""Live results a stream may have waiting before it catches up from the store instead."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Server-wide limits; a start beyond them is RESOURCE_EXHAUSTED.

    :param max_concurrent_runs: runs executing at the same time.
    :param max_planned_tests: planned tests of all executing runs together (a single
        run larger than this is refused too).
    """

    max_concurrent_runs: int = DEFAULT_MAX_CONCURRENT_RUNS
    max_planned_tests: int = DEFAULT_MAX_PLANNED_TESTS


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM certificate chain and private key of the server."""

    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything the server needs; ``port`` 0 picks a free port.

    :param data_roots: folders manifests may reference; empty means the current
        directory only. The first one is where relative manifest paths resolve.
    :param auth_token: when set, every FleetBench call needs ``authorization: Bearer
        <token>``; health checking and reflection stay open.
    :param shutdown_grace_s: how long a shutdown waits for runs and streams to end
        before it cuts them off.
    :param stream_buffer: live results one stream may have waiting in memory; a stream that
        falls further behind reads from the run store until it has caught up.
    :param metrics_port: serve Prometheus metrics over HTTP at ``/metrics`` on this port
        of ``host`` (0: a free one); ``None``: no metrics endpoint.
    :param executor: the executor plugin of every run (``--executor``), instead of each
        manifest's ``global_settings.executor``; not part of a run's id.
    """

    state_dir: Path
    cache_dir: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    data_roots: tuple[Path, ...] = ()
    limits: Limits = field(default_factory=Limits)
    auth_token: str | None = None
    tls: TlsFiles | None = None
    max_pending_requests: int = DEFAULT_MAX_PENDING_REQUESTS
    shutdown_grace_s: float = DEFAULT_SHUTDOWN_GRACE_S
    stream_buffer: int = DEFAULT_STREAM_BUFFER
    metrics_port: int | None = None
    executor: str | None = None
