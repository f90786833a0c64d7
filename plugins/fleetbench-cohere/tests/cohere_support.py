"""Helpers for the plugin's tests: a provider config holding the test key, a fake Cohere
demanding it, and a one-repository fleet run through fleetbench's real engine (planner,
executor with retries, store, exporters).

A uniquely named module (not ``conftest``) so that test modules can import it without
clashing with other plugins' helpers collected in the same session."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fleetbench._plugins import PluginHost
from fleetbench._prepare import prepare_file
from fleetbench._runner import execute_run
from fleetbench._store import RunStore
from fleetbench.plugin import ProviderConfig, Secret
from fleetbench.records import GenerationSettings, ProviderRequest
from fleetbench.testing import FakeVendorConfig, FakeVendorServer, Fault

__all__ = ["KEY", "KEY_ENV", "MODEL", "assert_no_key_under", "config", "fake", "request",
           "run_fleet"]  # fmt: skip

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


async def run_fleet(root: Path, host: PluginHost, providers: Sequence[Mapping[str, Any]], *,
                    max_retries: int = 3) -> list[dict[str, Any]]:
    """Run one test ("Say hello") against each provider entry (``api_key_env`` filled in)
    and return the rows of ``results.jsonl``."""
    dataset = {"name": "chat", "version": "1",
               "test_cases": [{"id": "t0", "prompt": "Say hello", "expected": "Hello"}]}
    (root / "repo" / "datasets").mkdir(parents=True)
    (root / "repo" / "datasets" / "chat.json").write_text(json.dumps(dataset))
    manifest = {
        "fleet_id": "cohere-plugin-test", "version": "1.0",
        "repositories": [{"repo_id": "repo", "path": "repo", "scenarios": ["chat"]}],
        "providers": [{"api_key_env": KEY_ENV, **p} for p in providers],
        "scenario_profiles": {"chat": {"dataset": "chat", "settings": {
            "temperature": 0, "max_tokens": 64, "top_p": 1, "system": "Be terse."}}},
        "output": {"base_dir": "./out", "formats": ["jsonl"]},
        "global_settings": {"max_retries": max_retries, "test_timeout_seconds": 20},
    }
    path = root / "fleet.json"
    path.write_text(json.dumps(manifest))
    prepared = prepare_file(path, host=host, cache_dir=root / "cache")
    with RunStore(root / "state") as store:
        outcome = await execute_run(prepared, host=host, store=store, env={KEY_ENV: KEY})
    return [json.loads(line) for line in
            (outcome.output_dir / "results.jsonl").read_text().splitlines()]


def assert_no_key_under(root: Path) -> None:
    """No file under ``root`` (artifacts, run store) contains :data:`KEY`."""
    for path in root.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
