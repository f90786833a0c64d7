"""``fleetbench report`` and ``fleetbench compare``: reports over stored runs.

- ``report RUN_ID_OR_DIR`` writes a run's artifacts again from the run store
  (:mod:`fleetbench._regenerate`).
- ``compare RUN_A RUN_B`` compares a current run (B) with a baseline (A), each a run id
  in the store or an artifact folder (:mod:`fleetbench._compare`), and exits 1 when
  the regressions pass the threshold, so it can gate CI.

Exit codes: 0 fine; 1 ``report``: an exporter failed, ``compare``: the gate failed;
2 bad input (unknown run, unreadable folder, unknown format); 3 a plugin failed to load.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import NoReturn

import click
from rich.console import Console

from fleetbench import _config
from fleetbench._artifacts import write_atomically
from fleetbench._cli_common import print_json
from fleetbench._compare import (
    Baseline,
    ChangeTracker,
    Comparison,
    Gate,
    compare,
    comparison_json,
    measure,
)
from fleetbench._compare_render import render_html, render_markdown, render_table
from fleetbench._plugins import PluginHost, load_plugins
from fleetbench._regenerate import RegenerateError, regenerate, run_id_of
from fleetbench._runsource import RunSourceError, resolve
from fleetbench._store import DB_NAME, RunStore
from fleetbench.errors import FleetbenchError, PluginError

__all__ = ["register"]

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_PLUGIN = 3

_state_dir_opt = click.option(
    "--state-dir", type=click.Path(file_okay=False, path_type=Path),
    help="Run store folder (default: $FLEETBENCH_STATE_DIR).")


def register(group: click.Group) -> None:
    """Add ``report`` and ``compare`` to the ``fleetbench`` command group."""
    group.add_command(report)
    group.add_command(compare_command)


def _fail(code: int, message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _host() -> PluginHost:
    try:
        return load_plugins()
    except PluginError as exc:
        _fail(EXIT_PLUGIN, str(exc))


@click.command()
@click.argument("run", metavar="RUN_ID_OR_DIR")
@_state_dir_opt
@click.option("--format", "formats", multiple=True, metavar="NAME",
              help="Exporter to run (repeatable; default: every format of the run).")
@click.option("--dest", type=click.Path(file_okay=False, path_type=Path),
              help="Write into this folder instead of the run's own (the store's artifact "
                   "list is then left alone).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def report(run: str, state_dir: Path | None, formats: tuple[str, ...], dest: Path | None,
           as_json: bool) -> None:
    """Regenerate the artifacts of a stored run from the run store.

    RUN_ID_OR_DIR is a run id, or a run's artifact folder (its run.json names the run).
    The files equal the originals except for the time the run finished.
    """
    state_dir = state_dir or _config.state_dir()
    if not (state_dir / DB_NAME).is_file():
        _fail(EXIT_BAD_INPUT, f"no run store at {state_dir} (use --state-dir)")
    host = _host()
    try:
        with RunStore(state_dir) as store:
            done = regenerate(store, host, run_id_of(run), formats=formats, dest=dest)
    except RegenerateError as exc:
        _fail(EXIT_BAD_INPUT, str(exc))
    except (OSError, FleetbenchError) as exc:
        _fail(EXIT_FAILED, f"the export failed: {exc}")
    if as_json:
        print_json({"run_id": done.run_id, "status": done.status.value,
                    "output_dir": str(done.output_dir), "formats": list(done.formats),
                    "artifacts": [str(p) for p in done.paths]})
        return
    click.echo(f"run {done.run_id} ({done.status.value}): {len(done.paths)} artifacts in "
               f"{done.output_dir}/")
    for path in done.paths:
        click.echo(f"  {path.name}")


@click.command("compare")
@click.argument("baseline", metavar="RUN_A")
@click.argument("current", metavar="RUN_B")
@_state_dir_opt
@click.option("--threshold", type=click.IntRange(0), default=0, show_default=True,
              help="Regressed tests (passed → failed/error/timeout) allowed; more exit 1.")
@click.option("--max-drop", type=click.FloatRange(0, 100), default=None,
              help="Also exit 1 when the fleet success rate drops by more than this many "
                   "percentage points.")
@click.option("--format", "fmt", type=click.Choice(["table", "markdown", "html", "json"]),
              default="table", show_default=True, help="How to show the comparison.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file instead of stdout.")
def compare_command(baseline: str, current: str, state_dir: Path | None, threshold: int,
                    max_drop: float | None, fmt: str, output: Path | None) -> None:
    """Compare run RUN_B with the baseline RUN_A: deltas per provider, repository and
    category, and the tests that regressed or were fixed.

    Each RUN is a run id in the run store or an artifact folder holding results.jsonl
    or fleet_results.json. Exit 0 when at most --threshold tests regressed (and the
    success rate dropped by at most --max-drop points), 1 otherwise, 2 for bad input.
    """
    state_dir = state_dir or _config.state_dir()
    try:
        with contextlib.ExitStack() as stack:
            before = resolve(baseline, state_dir, stack)
            after = resolve(current, state_dir, stack)
            base = Baseline.collect(before.ref, before.read())
            tracker = ChangeTracker(base.statuses)
            summary = measure(tracker.observe(after.read()))
    except RunSourceError as exc:
        _fail(EXIT_BAD_INPUT, str(exc))
    comparison = compare(base, after.ref, summary, tracker.finish(), Gate(threshold, max_drop))
    _show(comparison, fmt, output)
    if comparison.failed:
        if fmt != "table" or output is not None:
            for reason in comparison.gate_failures:
                click.echo(f"regression: {reason}", err=True)
        sys.exit(EXIT_FAILED)


def _show(comparison: Comparison, fmt: str, output: Path | None) -> None:
    if fmt == "table":
        if output is None:
            render_table(comparison, Console() if sys.stdout.isatty() else Console(width=160))
            return
        with output.open("w", encoding="utf-8") as handle:
            render_table(comparison, Console(file=handle, width=160, no_color=True))
        return
    if fmt == "json":
        text = json.dumps(comparison_json(comparison), indent=2, sort_keys=True) + "\n"
    elif fmt == "markdown":
        text = render_markdown(comparison)
    else:
        text = render_html(comparison)
    if output is None:
        click.echo(text, nl=False)
    else:
        write_atomically(output, text)
