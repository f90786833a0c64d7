"""Checks a manifest against the installed plugins and the file system, and loads its
datasets: the step between "the YAML is well-formed" and "here is a plan".

Every problem is collected and reported at once with its location
(``repositories[2].scenarios[0]: unknown scenario 'codng'; did you mean 'coding'?``).
Things that are legal but probably not meant (an unused scenario profile, a sample
larger than its dataset) are returned as warnings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetbench._datasets import CONFIG_MODEL_KEY, load_dataset
from fleetbench._evalcontext import RunEvaluatorContext
from fleetbench._executor import bind_evaluator
from fleetbench._manifest import (
    FleetManifest,
    RepositoryConfig,
    ScenarioProfile,
    evaluator_ref,
    manifest_problems,
)
from fleetbench._plugins import PluginHost
from fleetbench._references import known_hint, reference_problems
from fleetbench.errors import DatasetError, ManifestError, Problem
from fleetbench.plugin import (
    EvaluatorContext,
    ProviderConfig,
    RepositoryAdapter,
    RepositoryContext,
)
from fleetbench.records import Dataset, EvaluatorRef

__all__ = ["ResolvedFleet", "ResolvedScenario", "check_and_resolve", "resolve_fleet"]



@dataclass(frozen=True, slots=True)
class ResolvedScenario:
    """One (repository, scenario) pair with its loaded dataset."""

    repo_index: int
    repo: RepositoryConfig
    scenario: str
    profile: ScenarioProfile
    dataset: Dataset


@dataclass(frozen=True, slots=True)
class ResolvedFleet:
    """A manifest whose every reference checked out, ready for the planner."""

    manifest: FleetManifest
    base_dir: Path
    scenarios: tuple[ResolvedScenario, ...]
    warnings: tuple[Problem, ...] = field(default=())


def check_and_resolve(
    data: Mapping[str, Any], *, base_dir: Path, host: PluginHost, cache_dir: Path
) -> ResolvedFleet:
    """Check parsed manifest data completely and resolve it.

    Structure and references are checked together, so one pass reports both kinds of
    problem; datasets are loaded only once both are clean.

    :raises ManifestError: every problem found, each located.
    """
    manifest, problems = manifest_problems(data)
    problems.extend(reference_problems(data, host))
    if manifest is None or problems:
        raise ManifestError(sorted(set(problems), key=problems.index))
    return resolve_fleet(manifest, base_dir=base_dir, host=host, cache_dir=cache_dir)


def resolve_fleet(
    manifest: FleetManifest,
    *,
    base_dir: Path,
    host: PluginHost,
    cache_dir: Path,
) -> ResolvedFleet:
    """Check ``manifest`` against ``host``'s plugins and load every dataset it names.

    :param base_dir: the manifest's folder; relative paths resolve against it.
    :param cache_dir: where adapters may keep checkouts (git clones).
    :raises ManifestError: all problems found, each located.
    """
    problems: list[Problem] = []
    warnings = _unused_fields(manifest)
    _check_provider_params(manifest, host, problems)
    evaluators_ok = _EvaluatorChecker(host, problems,
                                      RunEvaluatorContext.for_validation(manifest))
    for name, profile in manifest.scenario_profiles.items():
        for j, config in enumerate(profile.evaluators):
            evaluators_ok.check(evaluator_ref(config), f"scenario_profiles.{name}.evaluators[{j}]")

    scenarios: list[ResolvedScenario] = []
    for i, repo in enumerate(manifest.repositories):
        adapter = _make_adapter(repo, f"repositories[{i}]", base_dir, cache_dir, host, problems)
        for j, scenario in enumerate(repo.scenarios):
            found = manifest.scenario_profiles.get(scenario)
            if adapter is None or found is None:
                continue
            profile = found
            where = f"repositories[{i}].scenarios[{j}] ({scenario})"
            dataset = _load(adapter, profile.dataset, where, problems)
            if dataset is None:
                continue
            _check_dataset_use(dataset, profile, where, evaluators_ok, warnings)
            scenarios.append(ResolvedScenario(i, repo, scenario, profile, dataset))
    if problems:
        raise ManifestError(problems)
    return ResolvedFleet(manifest, base_dir, tuple(scenarios), tuple(warnings))


def _check_provider_params(manifest: FleetManifest, host: PluginHost,
                           problems: list[Problem]) -> None:
    for i, entry in enumerate(manifest.providers):
        spec = host.providers.get(entry.provider)
        if spec is None or spec.validate is None:
            continue  # unknown providers are reported by the reference check
        try:
            spec.validate(ProviderConfig(
                provider=entry.provider, model=entry.model, base_url=entry.base_url,
                timeout_s=entry.timeout_s or 60.0, params=entry.params,
            ))
        except ValueError as exc:
            problems.append(Problem(f"providers[{i}].params", str(exc)))


def _unused_fields(manifest: FleetManifest) -> list[Problem]:
    used = {s for repo in manifest.repositories for s in repo.scenarios}
    warnings = [Problem(f"scenario_profiles.{name}", "not used by any repository")
                for name in sorted(set(manifest.scenario_profiles) - used)]
    for i, repo in enumerate(manifest.repositories):
        if repo.git_url and repo.adapter != "git":
            warnings.append(Problem(
                f"repositories[{i}].git_url",
                f"only adapter 'git' clones it; with adapter {repo.adapter!r} it is recorded "
                "as the repository's origin and the datasets are read from `path`",
            ))
    return warnings


class _EvaluatorChecker:
    """Checks evaluator names and options once per distinct configuration; evaluators
    that call a model are bound to the manifest's providers, as a run would bind them."""

    def __init__(self, host: PluginHost, problems: list[Problem],
                 context: EvaluatorContext) -> None:
        self._host = host
        self._problems = problems
        self._context = context

    def check(self, ref: EvaluatorRef, where: str) -> None:
        spec = self._host.evaluators.get(ref.name)
        if spec is None:
            self._problems.append(Problem(where, f"unknown evaluator {ref.name!r}"
                                          + known_hint(ref.name, self._host.evaluators)))
            return
        try:
            bind_evaluator(spec.factory(ref.options), self._context)
        except (ValueError, TypeError) as exc:
            self._problems.append(Problem(where, f"evaluator {ref.name!r}: {exc}"))


def _make_adapter(
    repo: RepositoryConfig,
    where: str,
    base_dir: Path,
    cache_dir: Path,
    host: PluginHost,
    problems: list[Problem],
) -> RepositoryAdapter | None:
    spec = host.adapters.get(repo.adapter)
    if spec is None:
        return None
    # A cloned repository's path is a folder inside its checkout, not on this machine.
    path = Path(repo.path) if repo.adapter == "git" else (base_dir / repo.path).resolve()
    context = RepositoryContext(
        repo_id=repo.repo_id,
        path=path,
        git_url=repo.git_url,
        ref=repo.ref,
        metadata=repo.metadata,
        cache_dir=cache_dir,
    )
    try:
        return spec.factory(context)
    except (OSError, ValueError, RuntimeError) as exc:
        problems.append(Problem(where, f"adapter {repo.adapter!r}: {exc}"))
        return None


def _load(
    adapter: RepositoryAdapter, name: str, where: str, problems: list[Problem]
) -> Dataset | None:
    try:
        path = adapter.locate_dataset(name)
    except (OSError, ValueError, RuntimeError) as exc:
        problems.append(Problem(where, f"dataset {name!r}: {_plain(exc)}"))
        return None
    try:
        return load_dataset(path)
    except DatasetError as exc:
        problems.extend(exc.problems)
        return None


def _plain(exc: BaseException) -> str:
    # FileNotFoundError(str) renders as the message itself; keep it that way.
    return exc.args[0] if len(exc.args) == 1 and isinstance(exc.args[0], str) else str(exc)


def _check_dataset_use(
    dataset: Dataset,
    profile: ScenarioProfile,
    where: str,
    evaluators: _EvaluatorChecker,
    warnings: list[Problem],
) -> None:
    count = len(dataset.test_cases)
    if profile.num_examples is not None and profile.num_examples > count:
        warnings.append(Problem(where, f"num_examples {profile.num_examples} exceeds the "
                                       f"{count} test cases of {dataset.name!r}; all are used"))
    for case in dataset.test_cases:
        for k, ref in enumerate(case.evaluators):
            evaluators.check(ref, f"{dataset.source}: test {case.id!r} evaluators[{k}]")
        model = case.metadata.get(CONFIG_MODEL_KEY)
        if model is not None:
            warnings.append(Problem(
                f"{dataset.source}: test {case.id!r} config.model",
                f"{model!r} is not sent: fleetbench always sends the model of the manifest's "
                "provider entry",
            ))

