"""The export of one run, the same sequence wherever it runs: build the exporters the
manifest names, open them with the run as known at its start, write every stored result
in plan order, finalize them with the exact summary and the final run.

Two places run it: the run's own process after execution (small runs), and the export
worker process while the run executes (large runs, see :mod:`fleetbench._exportworker`).
Both go through :class:`ExportSession`, so they write the same artifacts. The worker
follows the run with :meth:`ExportSession.catch_up` (the stored plan-order prefix) and
both end with :meth:`ExportSession.complete` (everything else, gaps of a cancelled or
failed run included).
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import asdict
from itertools import islice
from pathlib import Path
from typing import Any

import structlog

from fleetbench._aggregator import Aggregator
from fleetbench._plugins import PluginHost
from fleetbench._store import RunStore
from fleetbench.errors import PluginError
from fleetbench.plugin import Exporter, RunInfo
from fleetbench.records import Summary, TestResult

__all__ = ["BATCH", "ExportSession", "build_exporters", "exporter_names", "run_info_from_json",
           "run_info_to_json"]

_log = structlog.get_logger("fleetbench.export")

BATCH = 1000
"""Results read from the store (and reported as progress) at a time."""


def exporter_names(formats: Sequence[str], generate_reports: bool,
                   installed: Container[str]) -> list[str]:
    """The exporters of a run: ``output.formats``, plus ``html`` when reports are asked
    for and an ``html`` exporter is installed."""
    names = list(formats)
    if generate_reports and "html" in installed and "html" not in names:
        names.append("html")
    return names


def build_exporters(host: PluginHost, names: Iterable[str]) -> list[Exporter]:
    """A fresh exporter per name.

    :raises PluginError: an exporter is not installed in this process.
    """
    exporters = []
    for name in names:
        spec = host.exporters.get(name)
        if spec is None:
            raise PluginError(f"exporter {name!r} is not installed")
        exporters.append(spec.factory())
    return exporters


class ExportSession:
    """One run's exporters between ``open`` and ``finalize``, and the exact summary of
    what they were given (an aggregator fed in the same plan order).

    :param progress: told the number of results written after every batch (the export
        worker reports it, so the run's process can tell a busy worker from a stuck one).
    """

    def __init__(self, store: RunStore, run_id: str, exporters: Sequence[Exporter],
                 opening: RunInfo, *, progress: Callable[[int], None] | None = None) -> None:
        self.store, self.run_id = store, run_id
        self.next_index = 0
        """The plan index of the next result to write: every earlier one is written."""
        self.written = 0
        self._exporters: list[Exporter] = []
        self._aggregator = Aggregator()
        self._progress = progress
        for exporter in exporters:
            self._exporters.append(exporter)
            try:
                exporter.open(opening)
            except BaseException:
                self.abort()  # this one too: it may have begun before it failed
                raise

    def catch_up(self) -> int:
        """Write the stored results that continue the plan order without a gap; return
        how many. What a result still in flight holds back is written by a later call."""
        written = self.written
        while batch := self.store.plan_prefix(self.run_id, self.next_index, limit=BATCH):
            self._write(batch)
            if len(batch) < BATCH:
                break
        return self.written - written

    def complete(self, final: RunInfo, results: Iterable[TestResult] | None = None
                 ) -> tuple[Summary, list[Path]]:
        """Write every stored result not written yet (in plan order, across the gaps
        of a cancelled or failed run), then finalize; return the exact summary and the
        paths written. On failure nothing is left half-written.

        :param results: those results, in plan order, when the caller holds them (the
            run's own process, which stored them): they are then not read back."""
        try:
            rest = iter(results) if results is not None else \
                self.store.iter_results_in_plan_order(self.run_id, batch=BATCH,
                                                      start_index=self.next_index)
            while batch := list(islice(rest, BATCH)):
                self._write(batch)
            summary = self._aggregator.finalize()
            return summary, self._finalize(summary, final)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Give up: every exporter not finalized yet removes its temporary files (if
        it can: ``abort`` is optional) and writes no artifact."""
        exporters, self._exporters = self._exporters, []
        for exporter in exporters:
            abort = getattr(exporter, "abort", None)
            if callable(abort):
                try:
                    abort()
                except Exception:  # cleaning up must not hide why the export stopped
                    _log.exception("exporter abort failed", exporter=type(exporter).__name__)

    def _write(self, results: Sequence[TestResult]) -> None:
        self._aggregator.add_many(results)
        for exporter in self._exporters:
            write = exporter.write
            for result in results:
                write(result)
        self.next_index = results[-1].item.index + 1
        self.written += len(results)
        if self._progress is not None:
            self._progress(self.written)

    def _finalize(self, summary: Summary, final: RunInfo) -> list[Path]:
        paths: list[Path] = []
        while self._exporters:
            if self._progress is not None:
                self._progress(self.written)  # a finalize can take a while: stay heard
            paths.extend(Path(p) for p in self._exporters[0].finalize(summary, final))
            self._exporters.pop(0)
        return paths


# ──────────────────────────────────────────────────────────── RunInfo as JSON


def run_info_to_json(run: RunInfo) -> dict[str, Any]:
    """``run`` as JSON data (for the export worker's protocol)."""
    data = asdict(run)
    data["output_dir"] = str(run.output_dir)
    data["warnings"] = list(run.warnings)
    return data


def run_info_from_json(data: Mapping[str, Any]) -> RunInfo:
    """Inverse of :func:`run_info_to_json`.

    :raises ValueError: ``data`` is not a run's JSON.
    """
    try:
        return RunInfo(**{**data, "output_dir": Path(data["output_dir"]),
                          "warnings": tuple(data["warnings"])})
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a run description: {exc}") from exc
