"""The built-in ``html`` exporter: ``executive_report.html``, the executive report.

One self-contained page (inline CSS, JavaScript and SVG, no network) with headline
figures, provider, repository and category comparisons, the slowest and failing tests
and the run's metadata. The run engine adds ``html`` to ``output.formats`` when
``output.generate_reports`` is true (the default). While results stream by, the
exporter keeps only bounded samples (see :mod:`._report._samples`); the page is
rendered and written atomically by ``finalize``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fleetbench._builtins._export._files import atomic_write, prepare_output_dir
from fleetbench._builtins._report import Samples, render_report
from fleetbench.plugin import PLUGIN_API_VERSION, ExporterSpec, RunInfo, hookimpl
from fleetbench.records import Summary, TestResult

__all__ = ["REPORT_FILE", "HtmlExporter", "fleetbench_register_exporters"]

FLEETBENCH_PLUGIN_API_VERSION = PLUGIN_API_VERSION  # shipped with the core: always current

REPORT_FILE = "executive_report.html"


class HtmlExporter:
    """Writes ``executive_report.html``; memory holds only bounded samples."""

    def __init__(self) -> None:
        self._samples: Samples | None = None

    def open(self, run: RunInfo) -> None:
        """Prepare the output folder (removing leftovers of a crashed export)."""
        prepare_output_dir(run.output_dir, (REPORT_FILE,))
        self._samples = Samples(save_responses=run.save_responses)

    def write(self, result: TestResult) -> None:
        """Keep what the report shows of this result, if anything."""
        self._require_open().add(result)

    def finalize(self, summary: Summary, run: RunInfo) -> Sequence[Path]:
        """Render the page for the final run and write it atomically."""
        samples = self._require_open()
        self._samples = None
        path = run.output_dir / REPORT_FILE
        html = render_report(summary, run, samples)
        with atomic_write(path) as out:
            out.write(html)
        return [path]

    def abort(self) -> None:
        """Forget the samples (nothing is on disk before ``finalize``)."""
        self._samples = None

    def _require_open(self) -> Samples:
        if self._samples is None:
            raise RuntimeError("HtmlExporter: open() must be called before write/finalize")
        return self._samples


@hookimpl
def fleetbench_register_exporters() -> list[ExporterSpec]:
    """Declare ``html``."""
    return [ExporterSpec(name="html", factory=HtmlExporter, files=(REPORT_FILE,),
                         description="executive_report.html: a self-contained executive "
                                     "report (charts, comparisons, slowest and failing "
                                     "tests); added when output.generate_reports is true")]
