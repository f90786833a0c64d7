"""Helpers of the Ray executor's tests: fleets written under a tmp folder and run through
fleetbench's real engine, with the local or the Ray executor.

A uniquely named module (not ``conftest``) so that test modules can import it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ray

from fleetbench._plugins import PluginHost
from fleetbench._prepare import prepare_file
from fleetbench._runner import RunOutcome, execute_run
from fleetbench._store import RunStore

KEY = "sk-ray-test-0123456789SECRET"
"""The fake vendor's API key; no artifact or stored state may contain it."""
NODE_KEY_ENV = "FLEETBENCH_TEST_RAY_NODE_KEY"
"""Set in the cluster's environment (conftest), so actors can read the key themselves."""


def write_fleet(root: Path, providers: Sequence[Mapping[str, Any]], *, tests: int = 8,
                repositories: Sequence[str] = ("repo",), scenarios: Sequence[str] = ("chat",),
                scenario: Mapping[str, Any] | None = None,
                global_settings: Mapping[str, Any] | None = None,
                fleet_id: str = "ray-test") -> Path:
    """A manifest with ``repositories`` × ``scenarios``, each scenario a dataset of
    ``tests`` prompts expecting "Hello"; returns the manifest's path."""
    for repo in repositories:
        for name in scenarios:
            dataset = {"name": name, "version": "1", "test_cases": [
                {"id": f"t{i}", "prompt": f"Say hello #{i}", "expected": "Hello",
                 "category": ("greeting", "other")[i % 2]} for i in range(tests)]}
            folder = root / repo / "datasets"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{name}.json").write_text(json.dumps(dataset))
    manifest = {
        "fleet_id": fleet_id, "version": "1.0",
        "repositories": [{"repo_id": r, "path": r, "scenarios": list(scenarios)}
                         for r in repositories],
        "providers": list(providers),
        "scenario_profiles": {s: {"dataset": s, "settings": {"max_tokens": 32},
                                  **(scenario or {})} for s in scenarios},
        "output": {"base_dir": "./out", "formats": ["jsonl"]},
        "global_settings": dict(global_settings or {}),
    }
    path = root / "fleet.json"
    path.write_text(json.dumps(manifest))
    return path


def fake_vendor_entry(base_url: str, **entry: Any) -> dict[str, Any]:
    """An ``openai`` provider entry aimed at a fake vendor, its key read from
    :data:`NODE_KEY_ENV`."""
    return {"id": "openai:fake-gpt", "base_url": base_url, "api_key_env": NODE_KEY_ENV,
            **entry}


async def run(path: Path, host: PluginHost, state: Path, *, executor: str | None = "ray",
              env: Mapping[str, str] | None = None, **kwargs: Any) -> RunOutcome:
    """Plan and run the manifest at ``path`` with ``executor``. The driver's environment
    (``env``) holds the key too: it checks every key before the run starts."""
    prepared = prepare_file(path, host=host, cache_dir=state / "cache")
    with RunStore(state / "store") as store:
        return await execute_run(prepared, host=host, store=store, executor=executor,
                                 env={NODE_KEY_ENV: KEY} if env is None else env, **kwargs)


def rows(outcome: RunOutcome) -> list[dict[str, Any]]:
    """``results.jsonl`` of a run."""
    text = (outcome.output_dir / "results.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def live_actors(fleet_id: str = "") -> list[str]:
    """Names of the executor's actors alive in the cluster (of runs of ``fleet_id``)."""
    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == "fleetbench" and a["name"].startswith(fleet_id)]


async def eventually(check: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still not the case after {timeout_s:g} s")
        await asyncio.sleep(0.05)


__all__ = ["KEY", "NODE_KEY_ENV", "eventually", "fake_vendor_entry", "live_actors", "rows",
           "run", "write_fleet"]
