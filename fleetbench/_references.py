"""Cross-reference checks on *parsed* manifest data, before (and whether or not) its
structure is valid: scenario names, provider and adapter plugins, duplicate ids.

They read the raw data and skip whatever is malformed (the structural check reports
that), so a manifest with a typo in one key still gets every reference problem reported
in the same pass — "all problems at once".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fleetbench._plugins import PluginHost, Registry
from fleetbench._validation import suggest
from fleetbench.errors import Problem

__all__ = ["known_hint", "reference_problems"]


def reference_problems(data: Mapping[str, Any], host: PluginHost) -> list[Problem]:
    """Every broken reference in ``data``, each located."""
    problems: list[Problem] = []
    profiles = data.get("scenario_profiles")
    scenario_names = set(profiles) if isinstance(profiles, Mapping) else set()
    _repositories(_list(data.get("repositories")), scenario_names, host, problems)
    _providers(_list(data.get("providers")), host, problems)
    _plugin_names(data, host, problems)
    return problems


def known_hint(name: str, registry: Registry[Any]) -> str:
    """``; did you mean 'x'?`` or the list of installed names."""
    return suggest(name, registry.names()) or (
        f" (installed: {', '.join(registry.names()) or 'none'})"
    )


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _repositories(
    repos: list[Any], scenarios: set[str], host: PluginHost, problems: list[Problem]
) -> None:
    first_at: dict[str, int] = {}
    for i, repo in enumerate(repos):
        if not isinstance(repo, Mapping):
            continue
        repo_id = repo.get("repo_id")
        if isinstance(repo_id, str):
            if repo_id in first_at:
                problems.append(Problem(f"repositories[{i}].repo_id",
                                        f"duplicate repo_id {repo_id!r} "
                                        f"(first at repositories[{first_at[repo_id]}])"))
            first_at.setdefault(repo_id, i)
        listed = _list(repo.get("scenarios"))
        for j, scenario in enumerate(listed):
            if isinstance(scenario, str) and scenario not in scenarios:
                problems.append(Problem(f"repositories[{i}].scenarios[{j}]",
                                        f"unknown scenario {scenario!r}"
                                        + suggest(scenario, scenarios)))
        if len(set(map(str, listed))) != len(listed):
            problems.append(Problem(f"repositories[{i}].scenarios", "a scenario is listed twice"))
        adapter = repo.get("adapter", "native")
        if isinstance(adapter, str) and adapter.lower() not in host.adapters:
            problems.append(Problem(f"repositories[{i}].adapter",
                                    f"unknown adapter {adapter!r}"
                                    + known_hint(adapter.lower(), host.adapters)))


def _providers(providers: list[Any], host: PluginHost, problems: list[Problem]) -> None:
    first_at: dict[str, int] = {}
    for i, entry in enumerate(providers):
        provider_id = entry.get("id") if isinstance(entry, Mapping) else entry
        if not isinstance(provider_id, str):
            continue
        provider, sep, model = provider_id.partition(":")
        if not sep or not provider or not model:
            continue  # malformed: the structural check says so
        if provider_id in first_at:
            first = first_at[provider_id]
            problems.append(Problem(f"providers[{i}]", f"duplicate provider {provider_id!r} "
                                                       f"(first at providers[{first}])"))
        first_at.setdefault(provider_id, i)
        if provider not in host.providers:
            problems.append(Problem(f"providers[{i}].id", f"unknown provider {provider!r}"
                                    + known_hint(provider, host.providers)))


def _plugin_names(data: Mapping[str, Any], host: PluginHost, problems: list[Problem]) -> None:
    output = data.get("output")
    formats = _list(output.get("formats")) if isinstance(output, Mapping) else []
    for j, fmt in enumerate(formats):
        if isinstance(fmt, str) and fmt not in host.exporters:
            problems.append(Problem(f"output.formats[{j}]", f"unknown format {fmt!r}"
                                    + known_hint(fmt, host.exporters)))
    settings = data.get("global_settings")
    executor = settings.get("executor") if isinstance(settings, Mapping) else None
    if isinstance(executor, str) and executor not in host.executors:
        problems.append(Problem("global_settings.executor", f"unknown executor {executor!r}"
                                + known_hint(executor, host.executors)))
