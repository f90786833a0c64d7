"""Fixtures of the plugin's tests (helpers live in ``anthropic_support``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from fleetbench._http import create_http_client
from fleetbench._plugins import PluginHost, load_plugins


@pytest.fixture(scope="session")
def host() -> PluginHost:
    """The installed plugins, this one included (through its entry point)."""
    return load_plugins(env={})


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """The core's shared client, as the run would hand it to the provider."""
    client = create_http_client(timeout_s=10.0)
    try:
        yield client
    finally:
        await client.aclose()
