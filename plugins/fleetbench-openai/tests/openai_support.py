"""Helpers for the plugin's tests: a provider config holding the test key, and a fleet
run through fleetbench's real engine (planner, executor with retries, store, exporters)
with the key in its environment.

A uniquely named module (not ``conftest``) so that test modules can import it without
clashing with other ``conftest`` modules collected in the same session."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fleetbench._plugins import PluginHost
from fleetbench.plugin import ProviderConfig, Secret
from fleetbench.testing import FleetRun, run_fleet

__all__ = ["KEY", "KEY_ENV", "config", "run"]

KEY = "sk-test-0123456789abcdefSECRET"
"""The API key every test uses; no error, log or artifact may ever contain it."""
KEY_ENV = "FLEETBENCH_TEST_OPENAI_KEY"


def config(base_url: str | None, *, provider: str = "openai", model: str = "fake-gpt",
           timeout_s: float = 10.0, **params: Any) -> ProviderConfig:
    """A provider config holding :data:`KEY`."""
    return ProviderConfig(provider=provider, model=model, base_url=base_url,
                          api_key=Secret(KEY), timeout_s=timeout_s, params=params)


async def run(root: Path, host: PluginHost, providers: Sequence[Mapping[str, Any]], *,
              max_retries: int = 3) -> FleetRun:
    """Run one test ("Say hello", expecting "Hello") against each provider entry, its key
    read from :data:`KEY_ENV`."""
    return await run_fleet(root, [{"api_key_env": KEY_ENV, **p} for p in providers],
                           host=host, global_settings={"max_retries": max_retries},
                           env={KEY_ENV: KEY})
