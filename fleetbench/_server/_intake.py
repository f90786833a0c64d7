"""Manifest text from a caller → a checked, planned run, under the server's data roots.

The same path serves ``StartFleetRun``, ``ValidateManifest`` and the resumption of a
stored run after a restart, so they cannot disagree on a run id or a problem. Order:
parse → check the structure → refuse paths outside the data roots (before anything is
read from disk) → :func:`~fleetbench._prepare.prepare_text` (references, datasets,
plan). Everything here is synchronous and may touch the disk (datasets, git clones):
callers run it in a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fleetbench._manifest import FleetManifest, manifest_problems, parse_manifest
from fleetbench._plugins import PluginHost
from fleetbench._prepare import Prepared, prepare_text
from fleetbench._pricing import PricingTable
from fleetbench._server._paths import DataRoots
from fleetbench.errors import InputError, Problem


@dataclass(frozen=True, slots=True)
class ManifestInput:
    """A manifest as a caller submits it (see ``StartFleetRunRequest``)."""

    text: str
    run_key: str = ""
    manifest_path: str = ""


@dataclass(frozen=True, slots=True)
class Validation:
    """What ``ValidateManifest`` reports: problems, or the plan that would run."""

    problems: tuple[Problem, ...]
    prepared: Prepared | None
    fleet_id: str
    warnings: tuple[str, ...]


class Intake:
    """Prepares manifests for the server (see the module docstring)."""

    def __init__(self, host: PluginHost, cache_dir: Path, roots: DataRoots) -> None:
        self.host = host
        self.cache_dir = cache_dir
        self.roots = roots

    def prepare(self, given: ManifestInput) -> Prepared:
        """Check and plan a submitted manifest.

        :raises InputError: every problem of the manifest and its datasets.
        :raises OutsideDataRootsError: it names a path outside the data roots.
        """
        base_dir = self.roots.manifest_folder(given.manifest_path)
        return self._prepare(given.text, base_dir, given.run_key, "yaml")

    def prepare_stored(self, manifest_json: str, base_dir: Path, run_key: str) -> Prepared:
        """Plan a stored run again (to resume it), under today's data roots."""
        return self._prepare(manifest_json, base_dir, run_key, "json")

    def validate(self, given: ManifestInput) -> Validation:
        """Like :meth:`prepare`, reporting input problems instead of raising them.

        :raises OutsideDataRootsError: as :meth:`prepare` does.
        """
        try:
            prepared = self.prepare(given)
        except InputError as exc:
            return Validation(exc.problems, None, _fleet_id_of(given.text), ())
        return Validation((), prepared, prepared.plan.fleet_id, warnings_of(prepared))

    def _prepare(self, text: str, base_dir: Path, run_key: str,
                 fmt: Literal["json", "yaml"]) -> Prepared:
        manifest, _ = manifest_problems(parse_manifest(text, fmt=fmt))
        if manifest is not None:
            self.roots.check_manifest(manifest, base_dir)
        # With structural problems nothing is read from disk: prepare_text reports them.
        return prepare_text(text, base_dir=base_dir, host=self.host, cache_dir=self.cache_dir,
                            fmt=fmt, run_key=run_key)


def warnings_of(prepared: Prepared) -> tuple[str, ...]:
    """The run's warnings known before it executes: the fleet's, and models without a
    price (whose cost will be absent)."""
    warnings = [str(w) for w in prepared.fleet.warnings]
    unpriced = _unpriced(prepared.fleet.manifest)
    if unpriced:
        warnings.append(f"no price known for {', '.join(unpriced)}: their cost is absent; "
                        "set `pricing:` on the provider entry")
    return tuple(warnings)


def _unpriced(manifest: FleetManifest) -> list[str]:
    table = PricingTable.shipped()
    return [entry.id for entry in manifest.providers
            if entry.pricing is None and table.price(entry.provider, entry.model) is None]


def _fleet_id_of(text: str) -> str:
    """The manifest's ``fleet_id`` if it can be read at all, else ``""``."""
    try:
        value = parse_manifest(text).get("fleet_id")
    except InputError:
        return ""
    return value if isinstance(value, str) else ""
