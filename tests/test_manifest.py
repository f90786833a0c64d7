"""The manifest: test-bench's manifests load unchanged, and bad input gets located errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fleetbench._manifest import (
    FleetManifest,
    load_manifest,
    load_manifest_file,
    manifest_json_schema,
)
from fleetbench._plugins import PluginHost
from fleetbench._prepare import prepare_file
from fleetbench.errors import ManifestError, Problem

from .conftest import FleetDir, Mutation

# The example of reference/origin-test-bench.md §1, as test-bench's users write it.
TEST_BENCH_MANIFEST = """\
fleet_id: "enterprise-proof"
version: "1.0"
description: "Enterprise proof run"
repositories:
  - repo_id: "llm-test-bench"
    path: "."
    adapter: "native"
    scenarios: ["coding", "reasoning"]
  - repo_id: "external-service"
    path: "./external"
    git_url: "https://github.com/example/external-service"
    adapter: "generic"
    scenarios: ["coding", "multimodal", "custom"]
    metadata:
      owner: "platform-team"
providers:
  - "openai:gpt-4"
  - "anthropic:claude-3-opus-20240229"
  - "anthropic:claude-3-sonnet-20240229"
scenario_profiles:
  coding: {dataset: "coding-tasks", concurrency: 5, num_examples: 100}
  reasoning: {dataset: "reasoning-tasks", concurrency: 3, num_examples: 50,
              request_delay_ms: 100}
  multimodal: {dataset: "multimodal-tasks", concurrency: 2, num_examples: 25,
               settings: {temperature: 0.7, max_tokens: 2000}}
  custom: {dataset: "custom", concurrency: 5, num_examples: 100}
output:
  base_dir: "./fleet-results"
  formats: ["json", "csv"]
  save_responses: true
  generate_reports: true
global_settings:
  continue_on_failure: false
  random_seed: 42
  test_timeout_seconds: 180
  max_retries: 2
  custom: {environment: "staging"}
"""


def test_test_bench_manifest_loads_unchanged() -> None:
    manifest = load_manifest(TEST_BENCH_MANIFEST)
    assert manifest.fleet_id == "enterprise-proof"
    assert [p.id for p in manifest.providers] == [
        "openai:gpt-4", "anthropic:claude-3-opus-20240229", "anthropic:claude-3-sonnet-20240229"]
    assert manifest.providers[1].provider == "anthropic"
    assert manifest.providers[1].model == "claude-3-opus-20240229"
    assert manifest.repositories[1].git_url == "https://github.com/example/external-service"
    assert manifest.repositories[1].metadata == {"owner": "platform-team"}
    assert manifest.scenario_profiles["reasoning"].request_delay_ms == 100
    assert manifest.scenario_profiles["multimodal"].settings.max_tokens == 2000
    assert manifest.global_settings.continue_on_failure is False
    assert manifest.global_settings.max_retries == 2


def test_same_manifest_as_json_file_loads_the_same(tmp_path: Path) -> None:
    yaml_manifest = load_manifest(TEST_BENCH_MANIFEST)
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps(yaml_manifest.model_dump(mode="json")), encoding="utf-8")
    assert load_manifest_file(path) == yaml_manifest


@pytest.mark.parametrize("block", ["absent", "empty"])
def test_continue_on_failure_defaults_to_true_with_or_without_the_block(block: str) -> None:
    # test-bench flipped this default depending on whether global_settings was present.
    text = TEST_BENCH_MANIFEST.split("global_settings:")[0]
    if block == "empty":
        text += "global_settings: {}\n"
    assert load_manifest(text).global_settings.continue_on_failure is True


def test_model_keeps_everything_after_the_first_colon() -> None:
    manifest = load_manifest(TEST_BENCH_MANIFEST.replace('"openai:gpt-4"', '"ollama:llama3:8b"'))
    assert (manifest.providers[0].provider, manifest.providers[0].model) == ("ollama", "llama3:8b")


def test_shorthand_and_object_providers_are_the_same_thing() -> None:
    short = load_manifest(TEST_BENCH_MANIFEST)
    long = load_manifest(TEST_BENCH_MANIFEST.replace('"openai:gpt-4"', '{id: "openai:gpt-4"}'))
    assert short.canonical_json() == long.canonical_json()


def test_defaults_are_documented_values() -> None:
    manifest = load_manifest(TEST_BENCH_MANIFEST.replace("concurrency: 5, num_examples: 100}",
                                                         "num_examples: 100}", 1))
    coding = manifest.scenario_profiles["coding"]
    assert (coding.concurrency, coding.repeat, coding.stream, coding.request_delay_ms) == (
        5, 1, False, 0)
    assert manifest.output.formats == ["json", "csv"]


# --------------------------------------------------------------------- the bad-input table


def _parent(root: Any, path: str) -> tuple[Any, str | int]:
    """The container holding the dotted ``path`` (list indexes as numbers) and its key."""
    parts: list[str | int] = [int(p) if p.isdigit() else p for p in path.split(".")]
    for part in parts[:-1]:
        root = root[part]
    return root, parts[-1]


def _set(path: str, value: Any) -> Mutation:
    """A mutation setting a dotted path in the manifest."""

    def mutate(fleet: FleetDir) -> None:
        parent, key = _parent(fleet.manifest, path)
        parent[key] = value

    return mutate


def _delete(path: str) -> Mutation:
    def mutate(fleet: FleetDir) -> None:
        parent, key = _parent(fleet.manifest, path)
        del parent[key]

    return mutate


def _dataset(relative: str, path: str, value: Any) -> Mutation:
    def mutate(fleet: FleetDir) -> None:
        parent, key = _parent(fleet.datasets[relative], path)
        parent[key] = value

    return mutate


BAD_INPUTS: list[tuple[str, Mutation, str, str]] = [
    ("top-level typo", _set("scenario_profile", {}), "scenario_profile",
     "unknown key; did you mean 'scenario_profiles'?"),
    ("unsupported version", _set("version", "2.0"), "version", "unsupported version '2.0'"),
    ("missing fleet_id", _delete("fleet_id"), "fleet_id", "required key is missing"),
    ("unsafe fleet_id", _set("fleet_id", "../escape"), "fleet_id", "must start with a letter"),
    ("no repositories", _set("repositories", []), "repositories", "at least 1 item"),
    ("unknown scenario", _set("repositories.0.scenarios", ["codng"]),
     "repositories[0].scenarios[0]", "unknown scenario 'codng'; did you mean 'coding'?"),
    ("duplicate repo_id", _set("repositories.1.repo_id", "api-gateway"),
     "repositories[1].repo_id", "duplicate repo_id 'api-gateway'"),
    ("slash in repo_id", _set("repositories.0.repo_id", "api/gateway"),
     "repositories[0].repo_id", "must not contain '/'"),
    ("unknown adapter", _set("repositories.0.adapter", "nativ"),
     "repositories[0].adapter", "unknown adapter 'nativ'; did you mean 'native'?"),
    ("ref without git_url", _set("repositories.0.ref", "v1"),
     "repositories[0]", "`ref` is set but `git_url` is not"),
    ("repository key typo", _set("repositories.0.scenario", ["coding"]),
     "repositories[0].scenario", "did you mean 'scenarios'?"),
    ("empty model", _set("providers.0", "openai:"), "providers[0].id",
     "must be 'provider:model'"),
    ("no colon", _set("providers.0", "simulated"), "providers[0].id",
     "must be 'provider:model'"),
    ("unknown provider", _set("providers.0", "simulatd:x"), "providers[0].id",
     "unknown provider 'simulatd'; did you mean 'simulated'?"),
    ("duplicate provider", _set("providers.1", "simulated:fast"), "providers[1]",
     "duplicate provider 'simulated:fast'"),
    ("provider key typo", _set("providers.1.concurency", 3), "providers[1].concurency",
     "unknown key; did you mean 'concurrency'?"),
    ("provider concurrency 0", _set("providers.1.concurrency", 0),
     "providers[1].concurrency", "greater than or equal to 1"),
    ("provider bad base_url", _set("providers.1.base_url", "ftp://host"),
     "providers[1].base_url", "is not an http(s) URL"),
    ("provider bad api_key_env", _set("providers.1.api_key_env", "1-KEY"),
     "providers[1].api_key_env", "is not an environment variable name"),
    ("provider negative price", _set("providers.1.pricing", {"input_per_mtok": -1,
                                                            "output_per_mtok": 1}),
     "providers[1].pricing.input_per_mtok", "greater than or equal to 0"),
    ("scenario concurrency 0", _set("scenario_profiles.coding.concurrency", 0),
     "scenario_profiles.coding.concurrency", "greater than or equal to 1"),
    ("num_examples 0", _set("scenario_profiles.coding.num_examples", 0),
     "scenario_profiles.coding.num_examples", "greater than or equal to 1"),
    ("repeat 0", _set("scenario_profiles.coding.repeat", 0),
     "scenario_profiles.coding.repeat", "greater than or equal to 1"),
    ("temperature too high", _set("scenario_profiles.coding.settings.temperature", 5),
     "scenario_profiles.coding.settings.temperature", "less than or equal to 2"),
    ("settings typo", _set("scenario_profiles.coding.settings.max_token", 5),
     "scenario_profiles.coding.settings.max_token", "did you mean 'max_tokens'?"),
    ("scenario typo", _set("scenario_profiles.coding.num_example", 5),
     "scenario_profiles.coding.num_example", "did you mean 'num_examples'?"),
    ("negative delay", _set("scenario_profiles.coding.request_delay_ms", -5),
     "scenario_profiles.coding.request_delay_ms", "greater than or equal to 0"),
    ("slash in scenario name", _set("scenario_profiles.a/b", {"dataset": "x"}),
     "scenario_profiles", "must be non-blank without '/'"),
    ("unknown evaluator", _set("scenario_profiles.coding.evaluators", ["containz"]),
     "scenario_profiles.coding.evaluators[0]", "unknown evaluator 'containz'"),
    ("missing dataset", _set("scenario_profiles.reasoning.dataset", "nope"),
     "repositories[0].scenarios[1] (reasoning)", "dataset 'nope'"),
    ("missing output", _delete("output"), "output", "required key is missing"),
    ("repeated format", _set("output.formats", ["json", "json"]), "output.formats",
     "formats must not repeat"),
    ("unknown format", _set("output.formats", ["json", "jsn1"]), "output.formats[1]",
     "unknown format 'jsn1'"),
    ("unknown executor", _set("global_settings", {"executor": "lokal"}),
     "global_settings.executor", "unknown executor 'lokal'; did you mean 'local'?"),
    ("negative timeout", _set("global_settings", {"test_timeout_seconds": -1}),
     "global_settings.test_timeout_seconds", "greater than 0"),
    ("negative retries", _set("global_settings", {"max_retries": -1}),
     "global_settings.max_retries", "greater than or equal to 0"),
    ("global typo", _set("global_settings", {"continue_on_failur": False}),
     "global_settings.continue_on_failur", "did you mean 'continue_on_failure'?"),
    ("wrong type", _set("global_settings", {"cache": "sometimes"}),
     "global_settings.cache", "valid boolean"),
    ("dataset missing variable",
     _dataset("repos/api/datasets/reasoning-tasks.json", "test_cases.0.prompt",
              "Hello {{who}}"),
     "reasoning-tasks.json", "who"),
    ("dataset duplicate id",
     _dataset("repos/api/datasets/reasoning-tasks.json", "test_cases.1.id", "r-1"),
     "reasoning-tasks.json", "r-1"),
]


@pytest.mark.parametrize(("mutation", "location", "message"),
                         [case[1:] for case in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_reported_with_its_location(
    fleet_dir: FleetDir, host: PluginHost, tmp_path: Path, mutation: Mutation,
    location: str, message: str,
) -> None:
    mutation(fleet_dir)
    with pytest.raises(ManifestError) as caught:
        prepare_file(fleet_dir.write(), host=host, cache_dir=tmp_path / "cache")
    problems = caught.value.problems
    matching = [p for p in problems if location in p.location and message in p.message]
    assert matching, f"expected {location!r}: {message!r}; got {[str(p) for p in problems]}"


def test_the_table_is_big_enough() -> None:
    assert len(BAD_INPUTS) >= 25


def test_valid_fleet_has_no_problems(fleet_dir: FleetDir, host: PluginHost,
                                     tmp_path: Path) -> None:
    prepared = prepare_file(fleet_dir.write(), host=host, cache_dir=tmp_path / "cache")
    assert len(prepared.plan) > 0


def test_all_problems_are_reported_at_once(fleet_dir: FleetDir, host: PluginHost,
                                           tmp_path: Path) -> None:
    fleet_dir.manifest["repositories"][0]["scenarios"] = ["codng", "reasonin"]
    fleet_dir.manifest["providers"][0] = "simulatd:x"
    fleet_dir.manifest["repositories"][1]["adapter"] = "generik"
    with pytest.raises(ManifestError) as caught:
        prepare_file(fleet_dir.write(), host=host, cache_dir=tmp_path / "cache")
    locations = {p.location for p in caught.value.problems}
    assert {"repositories[0].scenarios[0]", "repositories[0].scenarios[1]", "providers[0].id",
            "repositories[1].adapter"} <= locations


def test_structural_problems_are_all_reported_too() -> None:
    with pytest.raises(ManifestError) as caught:
        load_manifest('fleet_id: x\nversion: "9"\nrepositories: []\nproviders: ["a"]\n')
    locations = [p.location for p in caught.value.problems]
    assert {"version", "repositories", "providers[0].id", "output"} <= set(locations)


@pytest.mark.parametrize(("text", "location", "message"), [
    ("fleet_id: [unclosed\n", "line 2, column 1", "invalid YAML"),
    ("fleet_id: a\nfleet_id: b\n", "line 2, column 1",
     "duplicate key 'fleet_id' (first on line 1)"),
    ("- just\n- a list\n", "", "must be a mapping"),
])
def test_unparseable_yaml_is_located(text: str, location: str, message: str) -> None:
    with pytest.raises(ManifestError) as caught:
        load_manifest(text)
    (problem,) = caught.value.problems
    assert problem.location == location
    assert message in problem.message


def test_unparseable_json_is_located(tmp_path: Path) -> None:
    path = tmp_path / "fleet.json"
    path.write_text('{"fleet_id": "x",\n  "version": }', encoding="utf-8")
    with pytest.raises(ManifestError) as caught:
        load_manifest_file(path)
    assert caught.value.problems == (Problem("line 2, column 14", "invalid JSON: Expecting value"),)


def test_warnings_for_legal_but_suspicious_input(fleet_dir: FleetDir, host: PluginHost,
                                                 tmp_path: Path) -> None:
    fleet_dir.manifest["scenario_profiles"]["unused"] = {"dataset": "coding-tasks"}
    fleet_dir.manifest["scenario_profiles"]["coding"]["num_examples"] = 50
    prepared = prepare_file(fleet_dir.write(), host=host, cache_dir=tmp_path / "cache")
    messages = [str(w) for w in prepared.fleet.warnings]
    assert "scenario_profiles.unused: not used by any repository" in messages
    assert any("num_examples 50 exceeds the 6 test cases" in m for m in messages)


def test_json_schema_describes_the_manifest() -> None:
    schema = manifest_json_schema()
    assert schema["required"] == ["fleet_id", "version", "repositories", "providers", "output"]
    assert set(schema["properties"]) == set(FleetManifest.model_fields)
    assert schema["$defs"]["ScenarioProfile"]["additionalProperties"] is False
    provider_forms = schema["properties"]["providers"]["items"]["anyOf"]
    assert {"type": "string", "pattern": "^[a-z0-9_.-]+:.+$"} in provider_forms


# ------------------------------------------------------------------------------ the CLI


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fleetbench", *args], capture_output=True,
                          text=True, cwd=cwd, check=False, timeout=120)


def test_cli_validate_prints_every_problem_and_exits_2(fleet_dir: FleetDir,
                                                       isolated_env: Path) -> None:
    fleet_dir.manifest["repositories"][0]["scenarios"] = ["codng"]
    fleet_dir.manifest["providers"][1]["concurency"] = 3
    result = _cli("validate", str(fleet_dir.write()))
    assert result.returncode == 2, result.stderr
    assert "error: repositories[0].scenarios[0]: unknown scenario 'codng'; did you mean " \
           "'coding'?" in result.stderr
    assert "error: providers[1].concurency: unknown key; did you mean 'concurrency'?" \
           in result.stderr


def test_cli_validate_json_on_success(fleet_dir: FleetDir, isolated_env: Path) -> None:
    result = _cli("validate", "--json", str(fleet_dir.write()))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["valid"] is True
    assert report["run_id"].startswith("test-fleet-")
    assert report["planned_tests"] == (6 + 2 * 2 + 6) * 2


def test_cli_schema_is_json_schema() -> None:
    result = _cli("schema")
    assert result.returncode == 0
    assert json.loads(result.stdout)["title"] == "fleetbench fleet manifest"


def test_user_keys_that_look_like_type_names_stay_in_the_location() -> None:
    # pydantic tags union members in error locations ("str", "EvaluatorEntry"); a
    # scenario called "Coding" must not be mistaken for such a tag and dropped.
    text = TEST_BENCH_MANIFEST.replace("coding:", "Coding:").replace(
        "concurrency: 5, num_examples: 100}", "concurrency: 0, num_examples: 100,"
        " settings: {stop: 5}}", 1)
    with pytest.raises(ManifestError) as caught:
        load_manifest(text)
    locations = {p.location for p in caught.value.problems}
    assert "scenario_profiles.Coding.concurrency" in locations
    assert "scenario_profiles.Coding.settings.stop" in locations
    assert not any("constrained" in loc or loc.endswith(".str") for loc in locations)


def test_input_errors_survive_pickling() -> None:
    import pickle

    from fleetbench.errors import ManifestError, Problem

    error = ManifestError([Problem("providers[0]", "bad"), Problem("a.yaml: b", "c")])
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is ManifestError
    assert again.problems == error.problems
    assert str(again) == str(error)
