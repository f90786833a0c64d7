"""The ``jsonl`` exporter: ``results.jsonl``, one line per test in plan order.

Each line is :func:`fleetbench._serialize.result_to_dict` with sorted keys — the same
flat shape as the run store — so ``result_from_dict(json.loads(line))`` gives the
result back (minus the answer text when ``output.save_responses`` is false). Lines go
straight to a hidden temporary file that is renamed into place by ``finalize``:
nothing per result stays in memory, and a crash never leaves a truncated file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import orjson

from fleetbench._builtins._export._files import AtomicFile, prepare_output_dir
from fleetbench._serialize import result_to_dict
from fleetbench.plugin import RunInfo
from fleetbench.records import Summary, TestResult

__all__ = ["JSONL_FILE", "JsonlExporter"]

JSONL_FILE = "results.jsonl"
_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE
"""Compact JSON with sorted keys, one line per result (orjson: encoding dominates)."""


class JsonlExporter:
    """Writes ``results.jsonl`` as results arrive."""

    def __init__(self) -> None:
        self._file: AtomicFile | None = None
        self._save_responses = True

    def open(self, run: RunInfo) -> None:
        """Start the temporary file (removing leftovers of a crashed export)."""
        if self._file is not None:  # reopened without finalize: drop the old file
            self._file.discard()
        prepare_output_dir(run.output_dir, (JSONL_FILE,))
        self._save_responses = run.save_responses
        self._file = AtomicFile(run.output_dir / JSONL_FILE)

    def write(self, result: TestResult) -> None:
        """Append one line; the answer text is nulled when responses are not saved."""
        data = result_to_dict(result)
        if not self._save_responses:
            data["response"] = None
        self._require_open().handle.write(orjson.dumps(data, option=_OPTIONS).decode())

    def finalize(self, summary: Summary, run: RunInfo) -> Sequence[Path]:
        """Rename the finished file into place (lines carry nothing of the run's end)."""
        file = self._require_open()
        self._file = None
        try:
            return [file.commit()]
        except BaseException:
            file.discard()
            raise

    def abort(self) -> None:
        """Delete the temporary file without committing it (the export was abandoned)."""
        if self._file is not None:
            self._file.discard()
            self._file = None

    def _require_open(self) -> AtomicFile:
        if self._file is None:
            raise RuntimeError("JsonlExporter: open() must be called before write/finalize")
        return self._file
