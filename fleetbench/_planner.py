"""Turns a resolved fleet into a plan: the ordered list of every test to run.

Pure and deterministic: no clock, no I/O, no global randomness. The same manifest,
dataset contents and ``run_key`` give the same run id, the same test keys and the same
order, on any machine (DESIGN §4).

Order: within a repository, scenario by scenario (manifest order), test case by test
case (dataset order), epoch by epoch, provider by provider; the repositories' lists are
then interleaved round-robin so every repository makes progress from the start and no
single provider's queue holds all the early work.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import zip_longest
from typing import Any

from fleetbench._manifest import FleetManifest, evaluator_ref
from fleetbench._resolve import ResolvedFleet, ResolvedScenario
from fleetbench._templates import render_template
from fleetbench.records import EvaluatorRef, GenerationSettings, TestCase, WorkItem

__all__ = ["DEFAULT_EVALUATOR", "Plan", "build_plan", "compute_run_id", "test_key"]

DEFAULT_EVALUATOR = "contains"
"""Evaluates a test case that has ``expected`` text and no evaluator configured."""

_SETTING_PARAMS = ("temperature", "max_tokens", "top_p", "stop", "system")


@dataclass(frozen=True, slots=True)
class Plan:
    """Every test of a run, in the order the executor should start them."""

    run_id: str
    fleet_id: str
    items: tuple[WorkItem, ...]

    def __len__(self) -> int:
        return len(self.items)

    def counts(self) -> dict[tuple[str, str, str], int]:
        """Planned tests per (repository, scenario, ``provider:model``), in plan order."""
        return dict(Counter((i.repo_id, i.scenario, i.provider_key) for i in self.items))


def test_key(repo_id: str, scenario: str, provider_key: str, test_id: str, epoch: int) -> str:
    """``{repo_id}/{scenario}/{provider}:{model}/{test_id}``, plus ``#r{epoch}`` after the
    first epoch, so adding epochs never renames the tests that already ran."""
    key = f"{repo_id}/{scenario}/{provider_key}/{test_id}"
    return key if epoch == 1 else f"{key}#r{epoch}"


test_key.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


_WHERE_IT_RUNS = ("executor", "ray_address", "ray_actors")
"""Global settings that choose where a run executes, not what it runs: left out of the run
id, so a run started on one executor resumes on another."""


def compute_run_id(fleet: ResolvedFleet, run_key: str = "") -> str:
    """``{fleet_id}-{12 hex}``: a hash of the canonical manifest (but for where it runs),
    every dataset's content and the caller's ``run_key``. No clock: a retried start maps
    to the same run."""
    data = fleet.manifest.model_dump(mode="json")
    for name in _WHERE_IT_RUNS:  # the same tests, wherever they execute: one run id
        data["global_settings"].pop(name, None)
    digest = hashlib.sha256()
    digest.update(json.dumps(data, sort_keys=True, separators=(",", ":")).encode())
    for scenario in fleet.scenarios:
        line = f"\n{scenario.repo.repo_id}/{scenario.scenario}:{scenario.dataset.content_sha256}"
        digest.update(line.encode())
    digest.update(f"\nrun_key:{run_key}".encode())
    return f"{fleet.manifest.fleet_id}-{digest.hexdigest()[:12]}"


def build_plan(fleet: ResolvedFleet, run_key: str = "") -> Plan:
    """Plan every test of ``fleet``; see the module docstring for the order."""
    manifest = fleet.manifest
    per_repo: dict[int, list[_Draft]] = {}
    for scenario in fleet.scenarios:
        per_repo.setdefault(scenario.repo_index, []).extend(_drafts(manifest, scenario))
    ordered = _interleave([per_repo[i] for i in sorted(per_repo)])
    items = tuple(draft.build(index) for index, draft in enumerate(ordered))
    return Plan(compute_run_id(fleet, run_key), manifest.fleet_id, items)


@dataclass(frozen=True, slots=True)
class _Provider:
    """A provider entry's identity, split once per plan rather than once per test."""

    key: str
    name: str
    model: str
    stream: bool | None


@dataclass(frozen=True, slots=True)
class _Draft:
    """A work item before its plan position is known."""

    scenario: ResolvedScenario
    case: TestCase
    prompt: str
    provider: _Provider
    epoch: int
    settings: GenerationSettings
    evaluators: tuple[EvaluatorRef, ...]

    def build(self, index: int) -> WorkItem:
        s, case, provider = self.scenario, self.case, self.provider
        stream = provider.stream if provider.stream is not None else s.profile.stream
        return WorkItem(
            key=test_key(s.repo.repo_id, s.scenario, provider.key, case.id, self.epoch),
            index=index,
            repo_id=s.repo.repo_id,
            scenario=s.scenario,
            provider=provider.name,
            model=provider.model,
            test_id=case.id,
            epoch=self.epoch,
            prompt=self.prompt,
            settings=self.settings,
            stream=stream,
            category=case.category,
            expected=case.expected,
            references=case.references,
            metadata=case.metadata,
            tags=case.tags,
            evaluators=self.evaluators,
        )


def _drafts(manifest: FleetManifest, scenario: ResolvedScenario) -> Iterator[_Draft]:
    profile = scenario.profile
    scenario_settings = profile.settings.to_settings()
    scenario_evaluators = tuple(evaluator_ref(e) for e in profile.evaluators)
    empty = GenerationSettings()
    layers = [(_Provider(p.id, p.provider, p.model, p.stream), _settings_from_params(p.params))
              for p in manifest.providers if not p.judge_only]
    for case in _sample(manifest, scenario):
        prompt = render_template(case.prompt, case.variables, test_id=case.id)
        base = scenario.dataset.defaults.overlaid_with(case.config).overlaid_with(
            scenario_settings
        )
        evaluators = case.evaluators or scenario_evaluators or _default_evaluators(case)
        per_provider = [(p, base if layer == empty else base.overlaid_with(layer))
                        for p, layer in layers]
        for epoch in range(1, profile.repeat + 1):
            for provider, settings in per_provider:
                yield _Draft(scenario, case, prompt, provider, epoch, settings, evaluators)


def _sample(manifest: FleetManifest, scenario: ResolvedScenario) -> Sequence[TestCase]:
    """The scenario's test cases, or a seeded sample of ``num_examples`` of them, kept in
    dataset order. The seed mixes in the repository and scenario so that two scenarios
    over the same dataset do not draw the same sample."""
    cases = scenario.dataset.test_cases
    wanted = scenario.profile.num_examples
    if wanted is None or wanted >= len(cases):
        return cases
    seed = manifest.global_settings.random_seed or 0
    rng = random.Random(f"{seed}|{scenario.repo.repo_id}|{scenario.scenario}")
    return [cases[i] for i in sorted(rng.sample(range(len(cases)), wanted))]


def _settings_from_params(params: Mapping[str, Any]) -> GenerationSettings:
    """Provider ``params`` are the top settings layer: the known setting names override
    the lower layers, everything else passes through to the provider plugin."""
    stop = params.get("stop")
    return GenerationSettings(
        temperature=params.get("temperature"),
        max_tokens=params.get("max_tokens"),
        top_p=params.get("top_p"),
        stop=((stop,) if isinstance(stop, str) else tuple(stop)) if stop is not None else None,
        system=params.get("system"),
        params={k: v for k, v in params.items() if k not in _SETTING_PARAMS},
    )


def _default_evaluators(case: TestCase) -> tuple[EvaluatorRef, ...]:
    return (EvaluatorRef(DEFAULT_EVALUATOR),) if case.expected is not None else ()


def _interleave(lists: Sequence[list[_Draft]]) -> list[_Draft]:
    out: list[_Draft] = []
    for row in zip_longest(*lists):  # shorter lists are padded with None
        out.extend(draft for draft in row if draft is not None)
    return out
