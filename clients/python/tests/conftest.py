"""Fixtures of the client tests: a real ``fleetbench`` server on port 0 (in this event
loop, from the core's test helpers) and the fleets on disk the core's tests use."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:  # the core's test helpers live in the repository's tests/
    sys.path.insert(0, str(ROOT))

from fleetbench_client import AsyncFleetBenchClient, FleetBenchClient  # noqa: E402

from fleetbench._plugins import PluginHost  # noqa: E402
from tests.conftest import FleetDir, fleet_dir, host  # noqa: E402
from tests.server_support import Server, config_for, running_server  # noqa: E402

__all__ = ["FleetDir", "fleet_dir", "host"]


@pytest.fixture
async def served(tmp_path: Path, host: PluginHost) -> AsyncIterator[Server]:
    """A server over ``tmp_path`` (its state, and the data root the fleets live in)."""
    async with running_server(config_for(tmp_path), host) as server:
        yield server


@pytest.fixture
def client(served: Server) -> Iterator[FleetBenchClient]:
    with FleetBenchClient(served.server.address, timeout_s=30) as sync_client:
        yield sync_client


@pytest.fixture
async def aclient(served: Server) -> AsyncIterator[AsyncFleetBenchClient]:
    async with AsyncFleetBenchClient(served.server.address, timeout_s=30) as async_client:
        yield async_client

