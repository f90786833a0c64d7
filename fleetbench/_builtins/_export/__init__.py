"""The built-in exporters ``json``, ``jsonl`` and ``csv`` (registered by
:mod:`fleetbench._builtins.exporters`).

Every exporter streams: :meth:`write` is called once per result in plan order and
keeps only what exact per-group statistics need (one float per metric per result,
in compact arrays) — answers and other per-result data go straight to a file. Files
are written under a temporary name and renamed into place, so a crash never leaves a
half-written artifact. File names are fixed; ids never become path components.
User documentation: docs/artifacts.md.
"""

from __future__ import annotations

from fleetbench._builtins._export._csv import CSV_FILES, CsvExporter
from fleetbench._builtins._export._json import JSON_FILE, JsonExporter
from fleetbench._builtins._export._jsonl import JSONL_FILE, JsonlExporter

__all__ = ["CSV_FILES", "JSONL_FILE", "JSON_FILE", "CsvExporter", "JsonExporter",
           "JsonlExporter"]
