"""The built-in CI report exporters ``junit``, ``markdown`` and ``compare``, registered
through the same hook a third-party exporter uses. The exporters live in :mod:`._ci`;
docs/reports.md documents their files."""

from __future__ import annotations

from fleetbench._builtins._ci import (
    COMPARE_FILES,
    JUNIT_FILE,
    SUMMARY_FILE,
    CompareExporter,
    JunitExporter,
    MarkdownExporter,
)
from fleetbench.plugin import PLUGIN_API_VERSION, ExporterSpec, hookimpl

__all__ = ["fleetbench_register_exporters"]

FLEETBENCH_PLUGIN_API_VERSION = PLUGIN_API_VERSION  # shipped with the core: always current


@hookimpl
def fleetbench_register_exporters() -> list[ExporterSpec]:
    """Declare ``junit``, ``markdown`` and ``compare`` with the files each writes."""
    return [
        ExporterSpec(name="junit", factory=JunitExporter, files=(JUNIT_FILE,),
                     description="junit.xml: one testcase per test in a testsuite per "
                                 "repository x provider, for CI test reports"),
        ExporterSpec(name="markdown", factory=MarkdownExporter, files=(SUMMARY_FILE,),
                     description="summary.md: headline numbers, providers, failing "
                                 "repositories and failures, sized for a PR comment"),
        ExporterSpec(name="compare", factory=CompareExporter, files=COMPARE_FILES,
                     description="compare.md and compare.json: this run against a baseline "
                                 "run (FLEETBENCH_COMPARE_BASELINE, else the fleet's "
                                 "previous completed run)"),
    ]
