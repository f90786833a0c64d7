"""``run_fleet``: a whole fleet through fleetbench's real engine, in a few lines of a test.

For plugin authors: put a provider (usually aimed at a fake vendor) in a one-repository
fleet, run it with the real planner, executor (limits, retries, timeouts), run store,
aggregator and exporters, and get back the rows of ``results.jsonl`` and the summary.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetbench._plugins import PluginHost, load_plugins
from fleetbench._prepare import prepare_file
from fleetbench._runner import execute_run
from fleetbench._store import RunStore
from fleetbench.records import Summary

__all__ = ["FleetRun", "assert_secret_absent", "run_fleet"]


@dataclass(frozen=True, slots=True)
class FleetRun:
    """What a fleet run left: its status, rows, summary and artifact folder."""

    run_id: str
    status: str
    """``completed``, ``failed`` or ``cancelled``."""
    rows: list[dict[str, Any]]
    """``results.jsonl``, one dict per test in plan order (docs/artifacts.md)."""
    summary: Summary
    output_dir: Path
    warnings: tuple[str, ...]
    error: str | None


async def run_fleet(
    root: Path,
    providers: Sequence[Mapping[str, Any]],
    *,
    prompts: Sequence[str] = ("Say hello",),
    expected: str | None = "Hello",
    settings: Mapping[str, Any] | None = None,
    global_settings: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    host: PluginHost | None = None,
) -> FleetRun:
    """Write a one-repository fleet under ``root`` (an empty folder, e.g. ``tmp_path``) and
    run it to the end.

    :param providers: manifest provider entries (``{"id": "openai:fake", "base_url": …,
        "api_key_env": "MY_KEY"}``); every prompt runs against each.
    :param prompts: one test case per prompt (ids ``t0``, ``t1`` …), each expecting
        ``expected`` (checked with the default ``contains`` evaluator; ``None``: no check).
    :param settings: the scenario's generation settings (default ``temperature: 0``,
        ``max_tokens: 64``).
    :param global_settings: merged over ``max_retries: 3``, ``test_timeout_seconds: 20``.
    :param env: the environment the providers' API keys are read from (default: none, so
        the test names its keys explicitly rather than leaking the developer's own).
    :param host: the plugins to use (default: every installed plugin).
    """
    cases = [{"id": f"t{i}", "prompt": prompt, **({} if expected is None else
                                                  {"expected": expected})}
             for i, prompt in enumerate(prompts)]  # fmt: skip
    datasets = root / "repo" / "datasets"
    datasets.mkdir(parents=True, exist_ok=True)
    (datasets / "chat.json").write_text(
        json.dumps({"name": "chat", "version": "1", "test_cases": cases}), encoding="utf-8"
    )
    manifest = {
        "fleet_id": "plugin-test", "version": "1.0",
        "repositories": [{"repo_id": "repo", "path": "repo", "scenarios": ["chat"]}],
        "providers": [dict(p) for p in providers],
        "scenario_profiles": {"chat": {
            "dataset": "chat", "settings": dict(settings or {"temperature": 0, "max_tokens": 64})}},
        "output": {"base_dir": "./out", "formats": ["jsonl"]},
        "global_settings": {"max_retries": 3, "test_timeout_seconds": 20,
                            **(global_settings or {})},
    }  # fmt: skip
    path = root / "fleet.json"
    path.write_text(json.dumps(manifest), encoding="utf-8")
    host = host or load_plugins(env={})
    prepared = prepare_file(path, host=host, cache_dir=root / "cache")
    with RunStore(root / "state") as store:
        outcome = await execute_run(prepared, host=host, store=store, env=dict(env or {}))
    lines = (outcome.output_dir / "results.jsonl").read_text(encoding="utf-8").splitlines()
    return FleetRun(outcome.run_id, str(outcome.status), [json.loads(line) for line in lines],
                    outcome.summary, outcome.output_dir, outcome.warnings, outcome.error)


def assert_secret_absent(root: Path, secret: str) -> None:
    """Fail if any file under ``root`` (artifacts, the run store, logs) contains ``secret``."""
    needle = secret.encode()
    for path in root.rglob("*"):
        if path.is_file():
            assert needle not in path.read_bytes(), f"{path} contains the secret"
