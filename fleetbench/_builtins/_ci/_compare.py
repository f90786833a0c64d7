"""The ``compare`` exporter: ``compare.md`` and ``compare.json``, this run against a
baseline run, as ``fleetbench compare BASELINE THIS_RUN`` would show them.

The baseline is an artifact folder holding ``results.jsonl`` or ``fleet_results.json``:

1. ``FLEETBENCH_COMPARE_BASELINE``, when set: a folder path, or a run id whose folder
   sits next to this run's (``{output.base_dir}/{run_id}/``);
2. otherwise the previous run of the same ``fleet_id`` in the same ``base_dir``: the
   latest completed one created before this run.

Without a baseline (the fleet's first run, say) both files are still written and say
why there is none. The gate is the default one (any regressed test fails it); it is
reported in the files and never changes the run's outcome.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fleetbench import _markdown as md
from fleetbench._builtins._export._files import atomic_write, prepare_output_dir
from fleetbench._compare import (
    Baseline,
    ChangeTracker,
    Comparison,
    RunRef,
    compare,
    comparison_json,
)
from fleetbench._compare_render import render_markdown
from fleetbench._runsource import RunSource, RunSourceError, from_folder, previous_folder
from fleetbench.plugin import RunInfo
from fleetbench.records import Summary, TestResult

__all__ = ["BASELINE_ENV", "COMPARE_FILES", "BaselineLink", "CompareExporter"]

BASELINE_ENV = "FLEETBENCH_COMPARE_BASELINE"
COMPARE_MD = "compare.md"
COMPARE_JSON = "compare.json"
COMPARE_FILES = (COMPARE_MD, COMPARE_JSON)


def _find_baseline(run: RunInfo, env: Mapping[str, str]) -> tuple[RunSource | None, str]:
    """The baseline's source and how it was chosen, or ``None`` and why there is none."""
    named = env.get(BASELINE_ENV, "").strip()
    if not named:
        folder = previous_folder(run.output_dir, run.fleet_id, run.created_at)
        if folder is None:
            return None, (f"no earlier completed run of fleet {run.fleet_id!r} with a results "
                          f"file in {run.output_dir.parent}")
        how = "the previous completed run of this fleet"
    else:
        folder = Path(named).expanduser()
        if not folder.is_dir():
            folder = run.output_dir.parent / named
        if not folder.is_dir():
            return None, (f"{BASELINE_ENV}={named!r} names no artifact folder (give a folder, "
                          f"or the id of a run whose folder is in {run.output_dir.parent})")
        how = f"named by {BASELINE_ENV}"
    try:
        source = from_folder(folder)
    except RunSourceError as exc:
        return None, str(exc)
    if source.ref.run_id == run.run_id:
        return None, f"{BASELINE_ENV}={named!r} names this run itself"
    return source, how


class BaselineLink:
    """This run's link to its baseline while it is exported: the baseline (read when
    the export opens) and a tracker of this run's changes against it."""

    def __init__(self, run: RunInfo, env: Mapping[str, str] | None = None) -> None:
        self.baseline: Baseline | None = None
        self.tracker: ChangeTracker | None = None
        source, self.how = _find_baseline(run, os.environ if env is None else env)
        if source is None:
            return
        try:
            self.baseline = Baseline.collect(source.ref, source.read())
        except (RunSourceError, OSError) as exc:  # the export goes on without a baseline
            self.how = str(exc)
            return
        self.tracker = ChangeTracker(self.baseline.statuses)

    def add(self, result: TestResult) -> None:
        """Account for one result of this run."""
        if self.tracker is not None:
            self.tracker.add(result)

    def comparison(self, summary: Summary, run: RunInfo) -> Comparison | None:
        """This run (its exact summary) against the baseline; ``None`` without one."""
        if self.baseline is None or self.tracker is None:
            return None
        current = RunRef(run.run_id, run.fleet_id, run.status, "store")
        return compare(self.baseline, current, summary, self.tracker.finish())


class CompareExporter:
    """Writes ``compare.md`` and ``compare.json``; memory holds the baseline's status
    per test key and this run's regressed and fixed tests."""

    def __init__(self) -> None:
        self._link: BaselineLink | None = None

    def open(self, run: RunInfo) -> None:
        """Find and read the baseline."""
        prepare_output_dir(run.output_dir, COMPARE_FILES)
        self._link = BaselineLink(run)

    def write(self, result: TestResult) -> None:
        """Classify one result against the baseline."""
        self._require_open().add(result)

    def finalize(self, summary: Summary, run: RunInfo) -> Sequence[Path]:
        """Write both files atomically."""
        link = self._require_open()
        self._link = None
        comparison = link.comparison(summary, run)
        note = f"Baseline: {link.how}."
        if comparison is None:
            text = (f"## fleetbench compare\n\nNo baseline to compare run "
                    f"{md.escape(run.run_id)} with: {md.escape(link.how)}.\n")
            data: dict[str, Any] = {"baseline": None, "current": {
                "run_id": run.run_id, "fleet_id": run.fleet_id, "status": run.status}}
        else:
            text = render_markdown(comparison) + f"\n{md.escape(note)}\n"
            data = comparison_json(comparison)
        data["note"] = note
        paths = [run.output_dir / COMPARE_MD, run.output_dir / COMPARE_JSON]
        for path, content in zip(paths, (text, _json_text(data)), strict=True):
            with atomic_write(path) as out:
                out.write(content)
        return paths

    def abort(self) -> None:
        """Forget the baseline (nothing is on disk before ``finalize``)."""
        self._link = None

    def _require_open(self) -> BaselineLink:
        if self._link is None:
            raise RuntimeError("CompareExporter: open() must be called before write/finalize")
        return self._link


def _json_text(data: Mapping[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True, allow_nan=False, ensure_ascii=False) + "\n"
