"""The planner: deterministic keys, run ids, sampling, epochs, order and settings layers."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fleetbench._plugins import PluginHost
from fleetbench._prepare import Prepared, prepare_file
from fleetbench.records import EvaluatorRef

from .conftest import FleetDir


def _plan(fleet: FleetDir, host: PluginHost, tmp_path: Path, run_key: str = "") -> Prepared:
    return prepare_file(fleet.write(), host=host, cache_dir=tmp_path / "cache", run_key=run_key)


def test_test_keys_follow_the_documented_format(fleet_dir: FleetDir, host: PluginHost,
                                               tmp_path: Path) -> None:
    keys = [item.key for item in _plan(fleet_dir, host, tmp_path).plan.items]
    assert "api-gateway/coding/simulated:fast/code-0" in keys
    assert "user-service/coding/simulated:slow/code-5" in keys
    # reasoning has repeat: 2 -> the second epoch carries #r2, the first has no suffix
    assert "api-gateway/reasoning/simulated:fast/r-1" in keys
    assert "api-gateway/reasoning/simulated:fast/r-1#r2" in keys
    assert len(keys) == len(set(keys)) == 32


def test_same_inputs_give_the_same_plan_and_run_id(fleet_dir: FleetDir, host: PluginHost,
                                                   tmp_path: Path) -> None:
    first = _plan(fleet_dir, host, tmp_path).plan
    second = _plan(fleet_dir, host, tmp_path).plan
    assert first == second
    assert re.fullmatch(r"test-fleet-[0-9a-f]{12}", first.run_id)


def test_run_id_is_the_same_in_another_process(fleet_dir: FleetDir, host: PluginHost,
                                               tmp_path: Path, isolated_env: Path) -> None:
    path = fleet_dir.write()
    result = subprocess.run([sys.executable, "-m", "fleetbench", "plan", "--json", str(path)],
                            capture_output=True, text=True, check=True, timeout=120)
    run_id = json.loads(result.stdout)["run_id"]
    assert run_id == prepare_file(path, host=host, cache_dir=tmp_path / "c").plan.run_id


@pytest.mark.parametrize("change", ["dataset content", "manifest", "run key"])
def test_run_id_changes_with_any_input(fleet_dir: FleetDir, host: PluginHost, tmp_path: Path,
                                       change: str) -> None:
    before = _plan(fleet_dir, host, tmp_path).plan.run_id
    run_key = ""
    if change == "dataset content":
        fleet_dir.datasets["repos/api/datasets/reasoning-tasks.json"]["test_cases"][1][
            "prompt"] = "3 + 3 = ?"
    elif change == "manifest":
        fleet_dir.manifest["scenario_profiles"]["coding"]["concurrency"] = 4
    else:
        run_key = "nightly-2026-11-27"
    assert _plan(fleet_dir, host, tmp_path, run_key).plan.run_id != before


def test_repositories_are_interleaved_fairly(fleet_dir: FleetDir, host: PluginHost,
                                             tmp_path: Path) -> None:
    items = _plan(fleet_dir, host, tmp_path).plan.items
    assert [i.index for i in items] == list(range(len(items)))
    head = [i.repo_id for i in items[:24]]  # user-service has 12 tests, api-gateway 20
    assert head[:4] == ["api-gateway", "user-service", "api-gateway", "user-service"]
    assert head.count("user-service") == 12
    # providers alternate inside a repository, so neither waits for the other
    api = [i.provider_key for i in items if i.repo_id == "api-gateway"][:4]
    assert api == ["simulated:fast", "simulated:slow"] * 2


def test_num_examples_samples_deterministically_by_seed(fleet_dir: FleetDir, host: PluginHost,
                                                        tmp_path: Path) -> None:
    fleet_dir.manifest["scenario_profiles"]["coding"]["num_examples"] = 3

    def sample(seed: int) -> list[str]:
        fleet_dir.manifest["global_settings"] = {"random_seed": seed}
        items = _plan(fleet_dir, host, tmp_path).plan.items
        return [i.test_id for i in items
                if i.repo_id == "api-gateway" and i.scenario == "coding"
                and i.provider_key == "simulated:fast"]

    first = sample(42)
    assert len(first) == 3
    assert first == sorted(first, key=lambda t: int(t.split("-")[1]))  # dataset order kept
    assert sample(42) == first
    assert any(sample(seed) != first for seed in range(1, 6))


def test_settings_layer_defaults_config_scenario_provider(fleet_dir: FleetDir, host: PluginHost,
                                                          tmp_path: Path) -> None:
    fleet_dir.manifest["providers"][1]["params"] = {"seed": 7, "top_p": 0.5, "max_tokens": 9}
    items = _plan(fleet_dir, host, tmp_path).plan.items
    fast = next(i for i in items if i.key == "api-gateway/coding/simulated:fast/code-2")
    slow = next(i for i in items if i.key == "api-gateway/coding/simulated:slow/code-2")
    # dataset default temperature 0.1 < scenario 0.5; test config max_tokens 52 > default 100
    assert (fast.settings.temperature, fast.settings.max_tokens) == (0.5, 52)
    # provider params are the top layer; unknown params pass through to the provider
    assert (slow.settings.max_tokens, slow.settings.top_p) == (9, 0.5)
    assert slow.settings.params == {"seed": 7}


def test_prompts_are_rendered(fleet_dir: FleetDir, host: PluginHost, tmp_path: Path) -> None:
    items = _plan(fleet_dir, host, tmp_path).plan.items
    assert items[0].prompt == "Write Python code #0"


def test_stream_provider_overrides_scenario(fleet_dir: FleetDir, host: PluginHost,
                                            tmp_path: Path) -> None:
    fleet_dir.manifest["scenario_profiles"]["coding"]["stream"] = True
    fleet_dir.manifest["providers"][1]["stream"] = False
    items = _plan(fleet_dir, host, tmp_path).plan.items
    coding = {(i.provider_key, i.stream) for i in items if i.scenario == "coding"}
    assert coding == {("simulated:fast", True), ("simulated:slow", False)}


def test_expected_text_without_evaluators_gets_contains(fleet_dir: FleetDir, host: PluginHost,
                                                        tmp_path: Path) -> None:
    items = _plan(fleet_dir, host, tmp_path).plan.items
    by_test = {i.test_id: i.evaluators for i in items}
    assert by_test["r-1"] == (EvaluatorRef("contains"),)  # has expected text
    assert by_test["r-2"] == ()  # no expected text: passing means answering


def test_cli_plan_prints_counts_and_run_id(fleet_dir: FleetDir, isolated_env: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "fleetbench", "plan", str(fleet_dir.write())],
                            capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    assert re.search(r"api-gateway\s*│\s*reasoning\s*│\s*simulated:fast\s*│\s*4", result.stdout)
    assert re.search(r"total\s*│.*│\s*32", result.stdout)
    assert re.search(r"run id: test-fleet-[0-9a-f]{12}", result.stdout)


def test_where_a_run_executes_is_not_part_of_its_id(fleet_dir: FleetDir, host: PluginHost,
                                                      tmp_path: Path) -> None:
    ids = set()
    for settings in ({}, {"executor": "ray", "ray_address": "auto", "ray_actors": 4}):
        fleet_dir.manifest["global_settings"] = settings
        ids.add(prepare_file(fleet_dir.write(), host=host, cache_dir=tmp_path).plan.run_id)
    assert len(ids) == 1
    fleet_dir.manifest["global_settings"] = {"max_retries": 1}  # what runs: a new id
    ids.add(prepare_file(fleet_dir.write(), host=host, cache_dir=tmp_path).plan.run_id)
    assert len(ids) == 2
