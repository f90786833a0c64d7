"""The built-in exporters ``json``, ``jsonl`` and ``csv``, registered through the same
hook a third-party exporter uses. The exporters live in :mod:`._export`; artifact
files and fields are documented in docs/artifacts.md.
"""

from __future__ import annotations

from fleetbench._builtins._export import (
    CSV_FILES,
    JSON_FILE,
    JSONL_FILE,
    CsvExporter,
    JsonExporter,
    JsonlExporter,
)
from fleetbench.plugin import PLUGIN_API_VERSION, ExporterSpec, hookimpl

__all__ = ["fleetbench_register_exporters"]

FLEETBENCH_PLUGIN_API_VERSION = PLUGIN_API_VERSION  # shipped with the core: always current


@hookimpl
def fleetbench_register_exporters() -> list[ExporterSpec]:
    """Declare ``json``, ``jsonl`` and ``csv`` with the files each writes."""
    return [
        ExporterSpec(name="json", factory=JsonExporter, files=(JSON_FILE,),
                     description="fleet_results.json: test-bench's FleetBenchmarkResults "
                                 "(a superset), every result nested under its repository "
                                 "x scenario x provider"),
        ExporterSpec(name="jsonl", factory=JsonlExporter, files=(JSONL_FILE,),
                     description="results.jsonl: one flat result per line, in plan order"),
        ExporterSpec(name="csv", factory=CsvExporter, files=CSV_FILES,
                     description="fleet_summary.csv, repositories.csv, providers.csv and "
                                 "categories.csv: test-bench's columns first, ours appended"),
    ]
