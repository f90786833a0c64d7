"""Helpers for the plugin's tests: a provider config holding the test key, a fake Cohere
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
from fleetbench.records import GenerationSettings, ProviderRequest
from fleetbench.testing import FakeVendorConfig, FakeVendorServer, Fault, run_fleet

__all__ = ["KEY", "KEY_ENV", "MODEL", "config", "fake", "request", "run"]

KEY = "co-test-0123456789abcdefSECRET"
"""The API key every test uses; no error, log or artifact may ever contain it."""
KEY_ENV = "FLEETBENCH_TEST_COHERE_KEY"
MODEL = "command-fake"


def config(base_url: str | None, *, timeout_s: float = 10.0, **params: Any) -> ProviderConfig:
    """A provider config holding :data:`KEY`."""
    return ProviderConfig(provider="cohere", model=MODEL, base_url=base_url,
                          api_key=Secret(KEY), timeout_s=timeout_s, params=params)


def request(stream: bool = False,
            settings: GenerationSettings | None = None) -> ProviderRequest:  # fmt: skip
    """A request for "Say hello" (``expected`` set, so a test can check it is never sent)."""
    return ProviderRequest(model=MODEL, prompt="Say hello", settings=settings
                           or GenerationSettings(), stream=stream,
                           test_key=f"repo/chat/cohere:{MODEL}/t0",
                           expected="SECRET-EXPECTED")  # fmt: skip


def fake(*faults: Fault, capture: bool = False, **knobs: Any) -> FakeVendorServer:
    """A fake Cohere demanding :data:`KEY`, ``faults`` scripted for the first requests."""
    return FakeVendorServer("cohere", capture=capture,
                            config=FakeVendorConfig(faults=faults, api_key=KEY, **knobs))


async def run(root: Path, host: PluginHost, providers: Sequence[Mapping[str, Any]], *,
              max_retries: int = 3) -> list[dict[str, Any]]:
    """Run one test ("Say hello", with ``top_p: 1`` and a system prompt) against each
    provider entry, its key read from :data:`KEY_ENV`; the rows of ``results.jsonl``."""
    fleet = await run_fleet(
        root, [{"api_key_env": KEY_ENV, **p} for p in providers], host=host,
        settings={"temperature": 0, "max_tokens": 64, "top_p": 1, "system": "Be terse."},
        global_settings={"max_retries": max_retries}, env={KEY_ENV: KEY})
    return fleet.rows
