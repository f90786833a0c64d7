"""The hooks a fleetbench plugin may implement.

Every hook is a *registration* hook: it is called once when the plugins are loaded and
returns declarations (specs). Nothing here runs per request. Implement any subset with
:data:`fleetbench.plugin.hookimpl`; a spec's ``name`` must be unique within its kind
across all installed plugins.
"""

from __future__ import annotations

import pluggy

from fleetbench.plugin import (
    PROJECT_NAME,
    AdapterSpec,
    EvaluatorSpec,
    ExecutorSpec,
    ExporterSpec,
    ProviderSpec,
    SubscriberSpec,
)

hookspec = pluggy.HookspecMarker(PROJECT_NAME)


@hookspec
def fleetbench_register_providers() -> list[ProviderSpec]:  # type: ignore[empty-body]
    """Declare provider kinds: the ``provider`` part of ``provider:model``."""


@hookspec
def fleetbench_register_evaluators() -> list[EvaluatorSpec]:  # type: ignore[empty-body]
    """Declare evaluators usable in a scenario's or a test case's ``evaluators``."""


@hookspec
def fleetbench_register_exporters() -> list[ExporterSpec]:  # type: ignore[empty-body]
    """Declare output formats usable in ``output.formats``."""


@hookspec
def fleetbench_register_repository_adapters() -> list[AdapterSpec]:  # type: ignore[empty-body]
    """Declare repository adapters usable as a repository's ``adapter``."""


@hookspec
def fleetbench_register_executors() -> list[ExecutorSpec]:  # type: ignore[empty-body]
    """Declare executors usable as ``global_settings.executor``."""


@hookspec
def fleetbench_register_subscribers() -> list[SubscriberSpec]:  # type: ignore[empty-body]
    """Declare event subscribers; each receives every event of every run."""
