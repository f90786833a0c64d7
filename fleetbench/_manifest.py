"""The fleet manifest: its model, its loader and its JSON Schema.

A superset of test-bench's fleet manifest (reference/origin-test-bench.md §1): every
manifest test-bench accepted still loads, unknown keys are errors with a suggestion,
and every field takes effect later (the planner and the executor consume them all).
This module only checks *structure and values*; :mod:`fleetbench._resolve` checks
what needs plugins and files (scenario references, datasets, provider names …).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fleetbench._validation import problems_from_pydantic
from fleetbench._yaml import load_yaml
from fleetbench.errors import ManifestError, Problem
from fleetbench.records import EvaluatorRef, GenerationSettings

__all__ = [
    "FleetManifest",
    "GlobalSettings",
    "OutputConfig",
    "Pricing",
    "ProviderEntry",
    "RepositoryConfig",
    "ScenarioProfile",
    "SettingsModel",
    "load_manifest",
    "load_manifest_file",
    "manifest_json_schema",
    "manifest_problems",
    "parse_manifest",
    "read_manifest_file",
]

SUPPORTED_VERSIONS = ("1.0",)
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RAY_ADDRESS = re.compile(r"^(ray://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$")

NonBlank = Annotated[str, Field(min_length=1)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class SettingsModel(_Model):
    """Sampling settings (dataset defaults, test config, scenario settings)."""

    temperature: float | None = Field(None, ge=0, le=2, description="Sampling temperature.")
    max_tokens: int | None = Field(None, ge=1, description="Output token cap.")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling mass.")
    stop: str | list[str] | None = Field(None, description="Stop sequence(s).")
    system: str | None = Field(None, description="System prompt.")

    def to_settings(self, params: Mapping[str, Any] | None = None) -> GenerationSettings:
        """As a :class:`GenerationSettings` record."""
        stop = (self.stop,) if isinstance(self.stop, str) else self.stop
        return GenerationSettings(
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            top_p=self.top_p,
            stop=tuple(stop) if stop is not None else None,
            system=self.system,
            params=dict(params or {}),
        )


class Pricing(_Model):
    """USD per million tokens; overrides the shipped pricing table for one provider."""

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)
    cached_input_per_mtok: float | None = Field(None, ge=0)


class ProviderEntry(_Model):
    """One provider/model to benchmark. ``"openai:gpt-4o"`` is shorthand for ``{id: …}``."""

    id: NonBlank = Field(description="`provider:model`; the model named is the model sent.")
    base_url: str | None = Field(None, description="Vendor endpoint (OpenAI-compatible servers).")
    api_key_env: str | None = Field(None, description="Environment variable holding the key.")
    concurrency: int | None = Field(None, ge=1, description="Max requests in flight.")
    rpm: float | None = Field(None, gt=0, description="Max requests per minute.")
    tpm: float | None = Field(None, gt=0, description="Max tokens per minute.")
    timeout_s: float | None = Field(None, gt=0, description="Timeout of one HTTP call.")
    max_retries: int | None = Field(None, ge=0, description="Overrides global max_retries.")
    stream: bool | None = Field(None, description="Overrides the scenario's `stream`.")
    params: dict[str, Any] = Field(default_factory=dict, description="Vendor request fields.")
    pricing: Pricing | None = None
    judge_only: bool = Field(False, description="Only a judge for `llm_judge` evaluators: "
                                                "its model is not benchmarked itself.")

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        provider, sep, model = value.partition(":")
        if not sep or not provider.strip() or not model.strip():
            raise ValueError(f"{value!r} must be 'provider:model' with both parts non-empty")
        if provider != provider.strip().lower() or not re.fullmatch(r"[a-z0-9_.-]+", provider):
            raise ValueError(f"provider name {provider!r} must be lowercase letters, digits, _.-")
        return value

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    @field_validator("api_key_env")
    @classmethod
    def _check_env(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError(f"{value!r} is not an environment variable name")
        return value

    @property
    def provider(self) -> str:
        """The plugin name: the part before the first ``:``."""
        return self.id.partition(":")[0]

    @property
    def model(self) -> str:
        """The model sent: everything after the first ``:`` (``ollama:llama3:8b`` works)."""
        return self.id.partition(":")[2]


class EvaluatorEntry(_Model):
    """An evaluator with options: ``{name: regex, pattern: "^def"}``."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: NonBlank

    def to_ref(self) -> EvaluatorRef:
        return EvaluatorRef(self.name, dict(self.model_extra or {}))


EvaluatorConfig = NonBlank | EvaluatorEntry


def evaluator_ref(config: str | EvaluatorEntry) -> EvaluatorRef:
    """A manifest evaluator entry as a record."""
    return EvaluatorRef(config) if isinstance(config, str) else config.to_ref()


class ScenarioProfile(_Model):
    """How a scenario runs: which dataset, how much of it, how fast, with what settings."""

    dataset: NonBlank = Field(description="Dataset name (resolved by the adapter) or path.")
    concurrency: int = Field(5, ge=1, description="Max tests of this scenario in flight.")
    num_examples: int | None = Field(None, ge=1, description="Seeded sample of test cases.")
    request_delay_ms: int = Field(0, ge=0, description="Pause before each request is sent.")
    settings: SettingsModel = Field(default_factory=SettingsModel)
    evaluators: list[EvaluatorConfig] = Field(default_factory=list)
    repeat: int = Field(1, ge=1, description="Epochs: how many times each test runs.")
    stream: bool = Field(False, description="Stream answers to measure TTFT and ITL.")


class RepositoryConfig(_Model):
    """One repository of the fleet."""

    repo_id: NonBlank
    path: str = Field("", description="Folder, relative to the manifest's folder.")
    git_url: str | None = Field(None, description="Cloned at `ref` into the cache first.")
    ref: str | None = Field(None, description="Branch, tag or commit of `git_url`.")
    adapter: str = Field("native", description="Repository adapter plugin.")
    scenarios: list[NonBlank] = Field(min_length=1)
    metadata: dict[str, str] = Field(default_factory=dict)

    @field_validator("repo_id")
    @classmethod
    def _check_repo_id(cls, value: str) -> str:
        if "/" in value or "\\" in value:
            raise ValueError(f"{value!r} must not contain '/' or '\\' (it is part of test keys)")
        return value

    @field_validator("adapter")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()  # test-bench matched adapter names case-insensitively

    @model_validator(mode="after")
    def _ref_needs_url(self) -> RepositoryConfig:
        if self.ref is not None and self.git_url is None:
            raise ValueError("`ref` is set but `git_url` is not")
        return self


class OutputConfig(_Model):
    """Where artifacts go and which ones."""

    base_dir: NonBlank = Field(description="Artifacts go to {base_dir}/{run_id}/.")
    formats: list[NonBlank] = Field(
        default_factory=lambda: ["json", "csv"], description="Exporter plugin names."
    )
    save_responses: bool = Field(True, description="Keep answer texts in artifacts.")
    generate_reports: bool = Field(True, description="Also write the executive HTML report.")

    @field_validator("formats")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("formats must not repeat")
        return value


class GlobalSettings(_Model):
    """Run-wide behaviour."""

    continue_on_failure: bool = Field(True, description="False: stop at the first error.")
    random_seed: int | None = Field(None, description="Seeds sampling (0 when unset).")
    test_timeout_seconds: float | None = Field(None, gt=0, description="Per-test time limit.")
    max_retries: int | None = Field(None, ge=0, description="Retries of retryable errors.")
    max_in_flight: int | None = Field(None, ge=1, description="Global cap on requests.")
    cache: bool = Field(False, description="Reuse results of identical earlier requests.")
    executor: NonBlank = Field("local", description="Executor plugin.")
    ray_address: str | None = Field(
        None, description="`ray` executor: the cluster: `auto` (the one running on this "
        "machine), `ray://host:port` (Ray Client), `host:port` (a head node's GCS), `local` "
        "(always start one here) or unset (RAY_ADDRESS, else a running local one, else start "
        "one here).")
    ray_actors: int | None = Field(
        None, ge=1, description="`ray` executor: how many actors share the run (default: "
        "the cluster's CPUs).")
    custom: dict[str, Any] = Field(default_factory=dict, description="Passed to plugins.")

    @field_validator("ray_address")
    @classmethod
    def _check_ray_address(cls, value: str | None) -> str | None:
        if value is None or value in ("auto", "local") or _RAY_ADDRESS.match(value):
            return value
        raise ValueError(f"{value!r} is not a Ray address: use 'auto', 'local', "
                         "'ray://host:port' or 'host:port'")


class FleetManifest(_Model):
    """The whole fleet manifest."""

    fleet_id: NonBlank
    version: str = Field(description=f"Manifest format version: one of {SUPPORTED_VERSIONS}.")
    description: str = ""
    repositories: list[RepositoryConfig] = Field(min_length=1)
    providers: list[ProviderEntry] = Field(min_length=1)
    scenario_profiles: dict[str, ScenarioProfile] = Field(default_factory=dict)
    output: OutputConfig
    global_settings: GlobalSettings = Field(default_factory=GlobalSettings)

    @field_validator("fleet_id")
    @classmethod
    def _check_fleet_id(cls, value: str) -> str:
        if not _SAFE_ID.match(value):
            raise ValueError(
                f"{value!r} must start with a letter or digit and contain only letters, "
                "digits, '.', '_' and '-' (it names the run and its folder)"
            )
        return value

    @field_validator("version")
    @classmethod
    def _check_version(cls, value: str) -> str:
        if value not in SUPPORTED_VERSIONS:
            raise ValueError(f"unsupported version {value!r}; supported: {SUPPORTED_VERSIONS}")
        return value

    @field_validator("providers", mode="before")
    @classmethod
    def _expand_shorthand(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"id": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("providers")
    @classmethod
    def _check_something_is_benchmarked(cls, value: list[ProviderEntry]) -> list[ProviderEntry]:
        if value and all(p.judge_only for p in value):
            raise ValueError("every provider is judge_only: there is no model to benchmark")
        return value

    @field_validator("scenario_profiles")
    @classmethod
    def _check_scenario_names(cls, value: dict[str, ScenarioProfile]) -> dict[str, Any]:
        for name in value:
            if not name.strip() or "/" in name:
                raise ValueError(f"scenario name {name!r} must be non-blank without '/'")
        return value

    def canonical_json(self) -> str:
        """The manifest with every default filled in, as sorted compact JSON."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


# ----------------------------------------------------------------------------- loading


def read_manifest_file(path: Path) -> dict[str, Any]:
    """Parse a manifest file into plain data; YAML unless the name ends in ``.json``
    (as test-bench decided).

    :raises ManifestError: the file cannot be read or parsed.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError([Problem(str(path), f"cannot read manifest: {exc}")]) from exc
    return parse_manifest(text, fmt="json" if path.suffix.lower() == ".json" else "yaml")


def parse_manifest(text: str, *, fmt: Literal["json", "yaml"] = "yaml") -> dict[str, Any]:
    """Parse manifest text into plain data (YAML is a superset of JSON, so ``yaml``
    reads both; ``json`` is strict JSON).

    :raises ManifestError: the text is not YAML/JSON or not a mapping.
    """
    data = _parse(text, fmt)
    if not isinstance(data, dict):
        raise ManifestError([Problem("", "a manifest must be a mapping of keys to values")])
    return data


def manifest_problems(data: Mapping[str, Any]) -> tuple[FleetManifest | None, list[Problem]]:
    """Check the structure and values of parsed manifest data.

    :returns: the manifest model, or ``None`` and every problem found.
    """
    try:
        return FleetManifest.model_validate(data), []
    except pydantic.ValidationError as exc:
        return None, problems_from_pydantic(exc, FleetManifest)


def load_manifest(text: str, *, fmt: Literal["json", "yaml"] = "yaml") -> FleetManifest:
    """Parse and check a manifest's structure and values.

    :raises ManifestError: every problem found, each with its location.
    """
    manifest, problems = manifest_problems(parse_manifest(text, fmt=fmt))
    if manifest is None:
        raise ManifestError(problems)
    return manifest


def load_manifest_file(path: Path) -> FleetManifest:
    """:func:`load_manifest` for a file."""
    manifest, problems = manifest_problems(read_manifest_file(path))
    if manifest is None:
        raise ManifestError(problems)
    return manifest


def manifest_json_schema() -> dict[str, Any]:
    """The JSON Schema of the manifest (``fleetbench schema``)."""
    schema = FleetManifest.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "fleetbench fleet manifest"
    # The shorthand "provider:model" string is accepted wherever a provider entry is.
    schema["properties"]["providers"]["items"] = {
        "anyOf": [{"type": "string", "pattern": "^[a-z0-9_.-]+:.+$"},
                  {"$ref": "#/$defs/ProviderEntry"}]
    }
    return schema


def _parse(text: str, fmt: Literal["json", "yaml"]) -> Any:
    if fmt == "json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            where = f"line {exc.lineno}, column {exc.colno}"
            raise ManifestError([Problem(where, f"invalid JSON: {exc.msg}")]) from None
    try:
        return load_yaml(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ManifestError([Problem(where, f"invalid YAML: {exc.problem}")]) from None
    except yaml.YAMLError as exc:
        raise ManifestError([Problem("", f"invalid YAML: {exc}")]) from None
