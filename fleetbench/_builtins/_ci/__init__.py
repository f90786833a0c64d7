"""The built-in CI exporters ``junit``, ``markdown`` and ``compare`` (registered by
:mod:`fleetbench._builtins.report_ci`). User documentation: docs/reports.md."""

from __future__ import annotations

from fleetbench._builtins._ci._compare import COMPARE_FILES, CompareExporter
from fleetbench._builtins._ci._junit import JUNIT_FILE, JunitExporter
from fleetbench._builtins._ci._summary import SUMMARY_FILE, MarkdownExporter

__all__ = ["COMPARE_FILES", "JUNIT_FILE", "SUMMARY_FILE", "CompareExporter", "JunitExporter",
           "MarkdownExporter"]
