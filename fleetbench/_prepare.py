"""Manifest text → checked fleet → plan: the one path every entry point takes
(``fleetbench validate/plan/run`` and the gRPC server), so they cannot disagree."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fleetbench._manifest import parse_manifest, read_manifest_file
from fleetbench._planner import Plan, build_plan
from fleetbench._plugins import PluginHost
from fleetbench._resolve import ResolvedFleet, check_and_resolve


@dataclass(frozen=True, slots=True)
class Prepared:
    """A checked fleet and its plan."""

    fleet: ResolvedFleet
    plan: Plan


def prepare_file(
    path: Path, *, host: PluginHost, cache_dir: Path, run_key: str = ""
) -> Prepared:
    """Load, check and plan a manifest file; relative paths resolve against its folder.

    :raises ManifestError: every problem found (datasets included), each located.
    """
    fleet = check_and_resolve(read_manifest_file(path), base_dir=path.resolve().parent,
                              host=host, cache_dir=cache_dir)
    return Prepared(fleet, build_plan(fleet, run_key))


def prepare_text(
    text: str,
    *,
    base_dir: Path,
    host: PluginHost,
    cache_dir: Path,
    fmt: Literal["json", "yaml"] = "yaml",
    run_key: str = "",
) -> Prepared:
    """Like :func:`prepare_file` for manifest text (as the server receives it)."""
    fleet = check_and_resolve(parse_manifest(text, fmt=fmt), base_dir=base_dir, host=host,
                              cache_dir=cache_dir)
    return Prepared(fleet, build_plan(fleet, run_key))
