"""Loads plugins and exposes what they declare through one typed facade.

Order: hookspecs, then third-party entry points (``fleetbench`` group, filtered by
``FLEETBENCH_PLUGINS`` / ``FLEETBENCH_DISABLE_PLUGINS``), then the built-in defaults,
registered through the very same hooks. Each call of :func:`load_plugins` builds a fresh
manager: there is no global plugin state.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import pluggy

import fleetbench
from fleetbench import hookspecs
from fleetbench.errors import PluginError
from fleetbench.plugin import (
    PLUGIN_API_VERSION,
    PROJECT_NAME,
    AdapterSpec,
    EvaluatorSpec,
    ExecutorSpec,
    ExporterSpec,
    ProviderSpec,
    SubscriberSpec,
)

ALLOW_ENV = "FLEETBENCH_PLUGINS"
BLOCK_ENV = "FLEETBENCH_DISABLE_PLUGINS"
API_VERSION_ATTRIBUTE = "FLEETBENCH_PLUGIN_API_VERSION"

BUILTIN_PLUGINS: tuple[str, ...] = (
    "fleetbench._builtins.adapters",
    "fleetbench._builtins.evaluators",
    "fleetbench._builtins.executors",
    "fleetbench._builtins.exporters",
    "fleetbench._builtins.report_html",
    "fleetbench._builtins.report_ci",
    "fleetbench._builtins.simulated",
)
"""Modules registered as plugins named ``builtin.<last part>`` after the entry points."""

_Spec = TypeVar("_Spec", ProviderSpec, EvaluatorSpec, ExporterSpec, AdapterSpec, ExecutorSpec,
                SubscriberSpec)


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """One declared capability, as ``fleetbench plugins`` lists it."""

    name: str
    kind: str
    version: str
    distribution: str
    plugin: str
    description: str


@dataclass(frozen=True, slots=True)
class _Origin:
    plugin: str
    distribution: str
    version: str


class Registry(Generic[_Spec]):
    """The specs of one kind, by name, with the plugin each came from."""

    def __init__(self, kind: str, spec_type: type[_Spec]) -> None:
        self.kind = kind
        self.spec_type: type[_Spec] = spec_type
        self._specs: dict[str, tuple[_Spec, _Origin]] = {}

    def _add(self, spec: _Spec, origin: _Origin) -> None:
        if not isinstance(spec, self.spec_type):
            raise PluginError(
                f"plugin {origin.plugin!r} (distribution {origin.distribution!r}) declared a "
                f"{type(spec).__name__} where a {self.spec_type.__name__} was expected"
            )
        if not isinstance(getattr(spec, "name", None), str) or not spec.name:
            raise PluginError(
                f"plugin {origin.plugin!r} (distribution {origin.distribution!r}) declared a "
                f"{self.kind} without a name"
            )
        if spec.name in self._specs:
            _, first = self._specs[spec.name]
            raise PluginError(
                f"{self.kind} {spec.name!r} is declared twice: by plugin {first.plugin!r} "
                f"(distribution {first.distribution!r}) and by plugin {origin.plugin!r} "
                f"(distribution {origin.distribution!r})"
            )
        self._specs[spec.name] = (spec, origin)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __getitem__(self, name: str) -> _Spec:
        return self._specs[name][0]

    def get(self, name: str) -> _Spec | None:
        entry = self._specs.get(name)
        return entry[0] if entry else None

    def names(self) -> list[str]:
        return sorted(self._specs)

    def infos(self) -> list[PluginInfo]:
        return [
            PluginInfo(
                name=name,
                kind=self.kind,
                version=origin.version,
                distribution=origin.distribution,
                plugin=origin.plugin,
                description=spec.description,
            )
            for name, (spec, origin) in sorted(self._specs.items())
        ]


class PluginHost:
    """What the loaded plugins offer, kind by kind. Built by :func:`load_plugins`."""

    def __init__(self) -> None:
        self.providers = Registry("provider", ProviderSpec)
        self.evaluators = Registry("evaluator", EvaluatorSpec)
        self.exporters = Registry("exporter", ExporterSpec)
        self.adapters = Registry("repository_adapter", AdapterSpec)
        self.executors = Registry("executor", ExecutorSpec)
        self.subscribers = Registry("subscriber", SubscriberSpec)

    def infos(self) -> list[PluginInfo]:
        """Every declared capability, grouped by kind, then sorted by name."""
        out: list[PluginInfo] = []
        for registry in self._registries():
            out.extend(registry.infos())
        return out

    def _registries(self) -> tuple[Registry[Any], ...]:
        return (self.providers, self.evaluators, self.exporters, self.adapters,
                self.executors, self.subscribers)


_HOOKS: tuple[tuple[str, Callable[[PluginHost], Registry[Any]]], ...] = (
    ("fleetbench_register_providers", lambda h: h.providers),
    ("fleetbench_register_evaluators", lambda h: h.evaluators),
    ("fleetbench_register_exporters", lambda h: h.exporters),
    ("fleetbench_register_repository_adapters", lambda h: h.adapters),
    ("fleetbench_register_executors", lambda h: h.executors),
    ("fleetbench_register_subscribers", lambda h: h.subscribers),
)


def load_plugins(
    *,
    env: Mapping[str, str] | None = None,
    entry_points: Iterable[importlib.metadata.EntryPoint] | None = None,
    extra_plugins: Sequence[tuple[str, object]] = (),
) -> PluginHost:
    """Discover, check and register every plugin; return their declarations.

    :param env: where the allow/block lists are read (default ``os.environ``).
    :param entry_points: the entry points to consider (default: the installed ones).
    :param extra_plugins: ``(name, plugin)`` pairs registered after the built-ins
        (tests use this to register a plugin object directly).
    :raises PluginError: a plugin fails to import, declares an incompatible API
        version, implements an unknown hook or declares a duplicate name.
    """
    env = os.environ if env is None else env
    allowed = _name_set(env.get(ALLOW_ENV))
    blocked = _name_set(env.get(BLOCK_ENV)) or set()
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    origins: dict[str, _Origin] = {}

    if entry_points is None:
        entry_points = importlib.metadata.entry_points(group=PROJECT_NAME)
    for ep in sorted(entry_points, key=lambda e: e.name):
        dist = ep.dist.name if ep.dist else "unknown"
        if _listed(ep.name, dist, blocked):
            continue
        if allowed is not None and not _listed(ep.name, dist, allowed):
            continue
        version = ep.dist.version if ep.dist else "unknown"
        _register(pm, ep.name, _load_entry_point(ep, dist), dist)
        origins[ep.name] = _Origin(ep.name, dist, version)

    for module_name in BUILTIN_PLUGINS:
        name = "builtin." + module_name.rsplit(".", 1)[-1]
        if name in blocked:
            continue
        pm.register(importlib.import_module(module_name), name=name)
        origins[name] = _Origin(name, "fleetbench", fleetbench.__version__)

    for name, plugin in extra_plugins:
        _register(pm, name, plugin, name)
        origins[name] = _Origin(name, name, "0")

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        origin = origins[pm.get_name(exc.plugin) or ""]
        raise PluginError(
            f"plugin {origin.plugin!r} (distribution {origin.distribution!r}) implements "
            f"a hook fleetbench does not define: {exc}"
        ) from exc
    return _collect(pm, origins)


def _name_set(value: str | None) -> set[str] | None:
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


def _normalize(name: str) -> str:
    """A distribution name as pip compares it (PEP 503): ``Foo_Bar`` is ``foo-bar``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _listed(ep_name: str, dist: str, names: set[str]) -> bool:
    """Whether an allow/block list names the entry point or its distribution."""
    return ep_name in names or _normalize(dist) in {_normalize(n) for n in names}


def _load_entry_point(ep: importlib.metadata.EntryPoint, dist: str) -> object:
    try:
        return ep.load()
    except Exception as exc:
        raise PluginError(
            f"plugin {ep.name!r} from distribution {dist!r} failed to import: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _register(pm: pluggy.PluginManager, name: str, plugin: object, dist: str) -> None:
    declared = getattr(plugin, API_VERSION_ATTRIBUTE, None)
    if declared is None:
        raise PluginError(
            f"plugin {name!r} from distribution {dist!r} does not declare "
            f"{API_VERSION_ATTRIBUTE}; this fleetbench speaks plugin API {PLUGIN_API_VERSION}"
        )
    if declared != PLUGIN_API_VERSION:
        raise PluginError(
            f"plugin {name!r} from distribution {dist!r} was written for plugin API "
            f"{declared!r}, but this fleetbench ({fleetbench.__version__}) speaks plugin API "
            f"{PLUGIN_API_VERSION}; upgrade or remove {dist!r}"
        )
    try:
        pm.register(plugin, name=name)
    except (ValueError, pluggy.PluginValidationError) as exc:
        raise PluginError(f"plugin {name!r} from distribution {dist!r}: {exc}") from exc


def _collect(pm: pluggy.PluginManager, origins: Mapping[str, _Origin]) -> PluginHost:
    host = PluginHost()
    for hook_name, registry_of in _HOOKS:
        registry = registry_of(host)
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            origin = origins[impl.plugin_name]
            try:
                specs = list(impl.function() or ())
            except Exception as exc:
                raise PluginError(
                    f"plugin {origin.plugin!r} (distribution {origin.distribution!r}) failed in "
                    f"{hook_name}: {type(exc).__name__}: {exc}"
                ) from exc
            for spec in specs:
                registry._add(spec, origin)
    return host

