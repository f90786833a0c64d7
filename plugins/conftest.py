"""Fixtures shared by the provider plugins' tests (each plugin's helpers live in its own
uniquely named ``<vendor>_support`` module)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from fleetbench._http import create_http_client
from fleetbench._plugins import PluginHost, load_plugins


@pytest.fixture(scope="session")
def host() -> PluginHost:
    """The installed plugins, each plugin under test included (through its entry point)."""
    return load_plugins(env={})


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """The core's shared client, as a run hands it to the provider."""
    async with create_http_client(timeout_s=10.0) as client:
        yield client
