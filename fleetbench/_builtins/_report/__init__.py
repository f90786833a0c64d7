"""The executive HTML report (registered as the ``html`` exporter by
:mod:`fleetbench._builtins.report_html`): one self-contained page built from the exact
Summary, with bounded samples of the slowest and failing tests. User documentation:
docs/artifacts.md.
"""

from __future__ import annotations

from fleetbench._builtins._report._render import render_report
from fleetbench._builtins._report._samples import Samples

__all__ = ["Samples", "render_report"]
