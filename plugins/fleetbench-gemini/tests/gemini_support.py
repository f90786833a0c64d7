"""Helpers for the plugin's tests: a provider config holding a known key, a fake Gemini
demanding it, and a fleet run through fleetbench's real engine (planner, executor with
retries, store, exporters) with the key in its environment.

A uniquely named module (not ``conftest``) so that test modules can import it without
clashing with other plugins' helpers collected in the same session."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fleetbench._plugins import PluginHost
from fleetbench.plugin import ProviderConfig, Secret
from fleetbench.testing import FakeVendorConfig, FakeVendorServer, Fault, run_fleet

__all__ = ["KEY", "KEY_ENV", "MODEL", "config", "fake", "run"]

KEY = "AIzaSy-test-0123456789SECRET"
"""The API key every test uses; no URL, error, log or artifact may ever contain it."""
KEY_ENV = "FLEETBENCH_TEST_GEMINI_KEY"
MODEL = "gemini-2.0-flash"


def config(base_url: str | None, *, timeout_s: float = 10.0, **params: Any) -> ProviderConfig:
    """A ``gemini:gemini-2.0-flash`` config holding :data:`KEY`."""
    return ProviderConfig(provider="gemini", model=MODEL, base_url=base_url,
                          api_key=Secret(KEY), timeout_s=timeout_s, params=params)


def fake(*faults: Fault, capture: bool = False, **knobs: Any) -> FakeVendorServer:
    """A fake Gemini that wants :data:`KEY` and applies ``faults`` to the first requests."""
    return FakeVendorServer("gemini", config=FakeVendorConfig(faults=faults, api_key=KEY,
                                                              **knobs), capture=capture)


async def run(root: Path, host: PluginHost, providers: Sequence[Mapping[str, Any]], *,
              max_retries: int = 3) -> list[dict[str, Any]]:
    """Run one test ("Say hello", expecting "Hello") against each provider entry, its key
    read from :data:`KEY_ENV`; the rows of ``results.jsonl``."""
    fleet = await run_fleet(root, [{"api_key_env": KEY_ENV, **p} for p in providers],
                            host=host, global_settings={"max_retries": max_retries},
                            env={KEY_ENV: KEY})
    return fleet.rows
