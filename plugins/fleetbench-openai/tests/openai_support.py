"""Helpers for the plugin's tests: a one-repository fleet aimed at a fake vendor, run
through fleetbench's real engine (planner, executor with retries, store, exporters).

A uniquely named module (not ``conftest``) so that test modules can import it without
clashing with other ``conftest`` modules collected in the same session."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fleetbench._plugins import PluginHost
from fleetbench._prepare import prepare_file
from fleetbench._runner import RunOutcome, execute_run
from fleetbench._store import RunStore
from fleetbench.plugin import ProviderConfig, Secret

KEY = "sk-test-0123456789abcdefSECRET"
"""The API key every test uses; no error, log or artifact may ever contain it."""
KEY_ENV = "FLEETBENCH_TEST_OPENAI_KEY"


def config(base_url: str | None, *, provider: str = "openai", model: str = "fake-gpt",
           timeout_s: float = 10.0, **params: Any) -> ProviderConfig:
    """A provider config holding :data:`KEY`."""
    return ProviderConfig(provider=provider, model=model, base_url=base_url,
                          api_key=Secret(KEY), timeout_s=timeout_s, params=params)


class Fleet:
    """A manifest with one repository and one dataset, written under ``root``."""

    def __init__(self, root: Path, providers: Sequence[Mapping[str, Any]],
                 prompts: Sequence[str] = ("Say hello",), *, max_retries: int = 3,
                 test_timeout_s: float = 20.0) -> None:
        self.root = root
        dataset = {"name": "chat", "version": "1", "test_cases": [
            {"id": f"t{i}", "prompt": p, "expected": "Hello"} for i, p in enumerate(prompts)]}
        (root / "repo" / "datasets").mkdir(parents=True)
        (root / "repo" / "datasets" / "chat.json").write_text(json.dumps(dataset))
        self.manifest = {
            "fleet_id": "openai-plugin-test", "version": "1.0",
            "repositories": [{"repo_id": "repo", "path": "repo", "scenarios": ["chat"]}],
            "providers": [{"api_key_env": KEY_ENV, **p} for p in providers],
            "scenario_profiles": {"chat": {"dataset": "chat",
                                           "settings": {"temperature": 0, "max_tokens": 64}}},
            "output": {"base_dir": "./out", "formats": ["jsonl"]},
            "global_settings": {"max_retries": max_retries,
                                "test_timeout_seconds": test_timeout_s},
        }

    async def run(self, host: PluginHost) -> tuple[RunOutcome, list[dict[str, Any]]]:
        path = self.root / "fleet.json"
        path.write_text(json.dumps(self.manifest))
        prepared = prepare_file(path, host=host, cache_dir=self.root / "cache")
        with RunStore(self.root / "state") as store:
            outcome = await execute_run(prepared, host=host, store=store,
                                        env={KEY_ENV: KEY})
        rows = [json.loads(line) for line in
                (outcome.output_dir / "results.jsonl").read_text().splitlines()]
        return outcome, rows


def assert_no_key_under(root: Path) -> None:
    """No file under ``root`` (artifacts, run store) contains :data:`KEY`."""
    for path in root.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


__all__ = ["KEY", "KEY_ENV", "Fleet", "assert_no_key_under", "config"]
