"""``fleetbench report``: write a stored run's artifacts again, from the run store.

The export is the run's own (:class:`~fleetbench._export.ExportSession` over the stored
results in plan order, exporters told about the run by
:func:`~fleetbench._runner.run_info`), so the files equal the originals except where
they show when the run finished: the run stamped that time just before its
``finished_at`` was stored. The run's warnings come from the store, its error last as
the run gave them (for a run stored by a fleetbench that did not record them, from its
``run.json`` if it is still there).

Regenerating into the run's own folder also refreshes the artifact list (size, sha256)
in the store and in ``run.json``; with ``dest`` neither is touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pydantic

from fleetbench._artifacts import describe_artifacts, write_atomically
from fleetbench._export import ExportSession, build_exporters, exporter_names
from fleetbench._manifest import FleetManifest
from fleetbench._plugins import PluginHost
from fleetbench._runner import _RunJson, artifacts_json, manifest_text, run_info
from fleetbench._runsource import RUN_JSON, read_run_json
from fleetbench._store import RunRecord, RunStore
from fleetbench.errors import FleetbenchError
from fleetbench.records import RunStatus, Summary

__all__ = ["RegenerateError", "Regenerated", "regenerate", "run_id_of"]

MANIFEST_JSON = "manifest.json"


class RegenerateError(FleetbenchError):
    """The run cannot be regenerated as asked; the message says why."""


@dataclass(frozen=True, slots=True)
class Regenerated:
    """What ``fleetbench report`` wrote."""

    run_id: str
    status: RunStatus
    output_dir: Path
    formats: tuple[str, ...]
    paths: tuple[Path, ...]
    summary: Summary


def run_id_of(spec: str) -> str:
    """``spec`` itself, or the run id in ``spec/run.json`` when ``spec`` is a folder.

    :raises RegenerateError: a folder without a readable ``run.json``.
    """
    folder = Path(spec)
    if not folder.is_dir():
        return spec
    meta = read_run_json(folder)
    if meta is None or not isinstance(meta.get("run_id"), str):
        raise RegenerateError(f"{folder} has no readable {RUN_JSON} naming its run; "
                              "give the run id instead")
    return str(meta["run_id"])


def regenerate(store: RunStore, host: PluginHost, run_id: str, *,
               formats: Sequence[str] = (), dest: Path | None = None) -> Regenerated:
    """Write the artifacts of ``run_id`` again: ``formats`` (default: the run's own
    exporters) into ``dest`` (default: the run's folder), plus ``manifest.json``.

    :raises RegenerateError: unknown run, a run still executing, an unknown format, or
        a stored manifest this fleetbench cannot read.
    """
    record = store.get_run(run_id)
    if record is None:
        raise RegenerateError(f"no run {run_id!r} in the run store {store.path}")
    if record.status in (RunStatus.PENDING, RunStatus.RUNNING):
        raise RegenerateError(f"run {run_id!r} is {record.status.value}: its artifacts are "
                              "written when it ends (run it again to resume an interrupted "
                              "run)")
    try:
        manifest = FleetManifest.model_validate_json(record.manifest_json)
    except pydantic.ValidationError as exc:
        raise RegenerateError(f"run {run_id!r}: its stored manifest no longer loads "
                              f"({exc.error_count()} problem(s): {exc.errors()[0]['msg']})"
                              ) from None
    output = manifest.output
    names = list(formats) or exporter_names(output.formats, output.generate_reports,
                                            host.exporters)
    unknown = [name for name in names if name not in host.exporters]
    if unknown:
        raise RegenerateError(f"unknown format(s) {', '.join(map(repr, unknown))}; installed "
                              f"exporters: {', '.join(host.exporters.names())}")
    own_dir = Path(record.output_dir)
    output_dir = dest.resolve() if dest is not None else own_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(output_dir / MANIFEST_JSON, manifest_text(manifest))
    warnings = (_run_json_warnings(own_dir) if record.warnings is None
                else (*record.warnings, *([record.error] if record.error else [])))

    opening = run_info(record, manifest, host, status=RunStatus.RUNNING,
                       output_dir=output_dir, finished_at=None, warnings=warnings)
    final = run_info(record, manifest, host, status=record.status, output_dir=output_dir,
                     finished_at=record.finished_at, warnings=warnings)
    session = ExportSession(store, run_id, build_exporters(host, names), opening)
    summary, paths = session.complete(final)
    written = (output_dir / MANIFEST_JSON, *paths)
    if dest is None:
        _refresh_artifact_list(store, record, written, warnings)
    return Regenerated(run_id, record.status, output_dir, tuple(names), written, summary)


def _run_json_warnings(folder: Path) -> tuple[str, ...]:
    """The run's final warnings as its ``run.json`` recorded them (none if it is gone)."""
    warnings = (read_run_json(folder) or {}).get("warnings")
    return tuple(str(w) for w in warnings) if isinstance(warnings, list) else ()


def _refresh_artifact_list(store: RunStore, record: RunRecord, written: Sequence[Path],
                           warnings: Sequence[str]) -> None:
    """The run's artifacts (those listed before and those just written) as they are now
    on disk, in the store and in ``run.json``."""
    folder = Path(record.output_dir)
    described = describe_artifacts([*(folder / a.name for a in record.artifacts), *written])
    store.set_artifacts(record.run_id, described)
    run_json = _RunJson(folder / RUN_JSON, record, record.planned)
    run_json.status = record.status
    run_json.write(record.done, record.error, artifacts_json(described), warnings)
