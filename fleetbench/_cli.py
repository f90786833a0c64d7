"""The ``fleetbench`` command line.

Exit codes: 0 success; 2 bad input (every problem is printed with its location);
3 a plugin failed to load. Human output goes to stdout as tables; ``--json`` prints
one JSON document instead, for scripts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import click
from rich.console import Console
from rich.table import Table

import fleetbench
from fleetbench import _config
from fleetbench._cli_common import parse_labels, print_json
from fleetbench._logging import configure_logging
from fleetbench._manifest import manifest_json_schema
from fleetbench._plugins import PluginHost, load_plugins
from fleetbench._prepare import Prepared, prepare_file
from fleetbench._references import known_hint
from fleetbench._server._config import (
    DEFAULT_MAX_CONCURRENT_RUNS,
    DEFAULT_MAX_PLANNED_TESTS,
    DEFAULT_PORT,
    DEFAULT_SHUTDOWN_GRACE_S,
    Limits,
    ServerConfig,
    TlsFiles,
)
from fleetbench._terminal import (
    EXIT_RUN_FAILED,
    RunOptions,
    exit_code,
    outcome_json,
    print_outcome,
    run_in_terminal,
)
from fleetbench.errors import FleetbenchError, InputError, PluginError, Problem

EXIT_BAD_INPUT = 2
EXIT_PLUGIN = 3

_manifest_arg = click.argument(
    "manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
_json_opt = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
_executor_opt = click.option(
    "--executor", metavar="NAME", default=None,
    help="Executor plugin (local, ray …) instead of the manifest's global_settings.executor; "
         "it does not change the run id.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(fleetbench.__version__, prog_name="fleetbench")
@click.option("-v", "--verbose", count=True, help="Log more to stderr (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Benchmark LLM providers across a fleet of repositories."""
    configure_logging({0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG))


@main.command()
@_manifest_arg
@_json_opt
def validate(manifest: Path, as_json: bool) -> None:
    """Check MANIFEST and its datasets; print every problem with its location."""
    prepared = _prepare(manifest, as_json=as_json)
    warnings = prepared.fleet.warnings
    if as_json:
        print_json({"valid": True, "problems": [], "warnings": _problems_json(warnings),
                     "planned_tests": len(prepared.plan), "run_id": prepared.plan.run_id})
        return
    _print_problems("warning", warnings)
    click.echo(f"{manifest}: valid; {len(prepared.plan)} tests planned "
               f"(run id {prepared.plan.run_id})")


@main.command()
@_manifest_arg
@click.option("--run-key", default="", help="Caller-chosen key mixed into the run id.")
@_json_opt
def plan(manifest: Path, run_key: str, as_json: bool) -> None:
    """Show how many tests MANIFEST plans per repository, scenario and provider."""
    prepared = _prepare(manifest, as_json=as_json, run_key=run_key)
    counts = prepared.plan.counts()
    if as_json:
        print_json({
            "run_id": prepared.plan.run_id,
            "fleet_id": prepared.plan.fleet_id,
            "planned_tests": len(prepared.plan),
            "counts": [{"repository": r, "scenario": s, "provider": p, "tests": n}
                       for (r, s, p), n in counts.items()],
            "warnings": _problems_json(prepared.fleet.warnings),
        })
        return
    _print_problems("warning", prepared.fleet.warnings)
    table = Table(title=f"Plan for fleet {prepared.plan.fleet_id}")
    for column in ("repository", "scenario", "provider"):
        table.add_column(column)
    table.add_column("tests", justify="right")
    for (repo, scenario, provider), count in sorted(counts.items()):
        table.add_row(repo, scenario, provider, str(count))
    table.add_section()
    table.add_row("total", "", "", str(len(prepared.plan)))
    Console().print(table)
    click.echo(f"run id: {prepared.plan.run_id}")


@main.command()
@_manifest_arg
@click.option("--run-key", default="", help="Caller-chosen key mixed into the run id.")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="Tag the run.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Run store folder (default: $FLEETBENCH_STATE_DIR).")
@click.option("--min-success-rate", type=click.FloatRange(0, 1), default=None,
              help="Exit 1 when the fleet's success rate is below this (0..1).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or tables.")
@_executor_opt
@_json_opt
def run(manifest: Path, run_key: str, labels: tuple[str, ...], state_dir: Path | None,
        min_success_rate: float | None, quiet: bool, executor: str | None,
        as_json: bool) -> None:
    """Run MANIFEST (or resume it), with live progress; write its artifacts.

    Exit status: 0 completed; 1 failed, cancelled or below --min-success-rate;
    2 bad input; 3 plugin failure; 130 interrupted by Ctrl-C (run it again to resume).
    """
    prepared = _prepare(manifest, as_json=as_json, run_key=run_key)
    host = _host()
    _check_executor(host, executor)
    options = RunOptions(labels=parse_labels(labels), state_dir=state_dir or _config.state_dir(),
                         show_progress=not (quiet or as_json), executor=executor,
                         run_key=run_key)
    try:
        outcome = run_in_terminal(prepared, host, options)
    except InputError as exc:
        _fail_input(manifest, exc.problems, as_json=as_json)
    except FleetbenchError as exc:  # the executor could not run it (a Ray cluster …)
        click.echo(f"error: {exc} (run it again to resume)", err=True)
        sys.exit(EXIT_RUN_FAILED)
    if as_json:
        print_json(outcome_json(outcome))
    elif not quiet:
        print_outcome(outcome)
    sys.exit(exit_code(outcome, min_success_rate))



@main.command()
def schema() -> None:
    """Print the JSON Schema of the fleet manifest."""
    print_json(manifest_json_schema())


@main.command()
@_json_opt
def plugins(as_json: bool) -> None:
    """List installed plugins: name, kind, version and distribution."""
    infos = _host().infos()
    if as_json:
        print_json([{"name": i.name, "kind": i.kind, "version": i.version,
                      "distribution": i.distribution, "plugin": i.plugin,
                      "description": i.description} for i in infos])
        return
    table = Table(title="fleetbench plugins")
    for column in ("name", "kind", "version", "distribution", "description"):
        table.add_column(column)
    for i in infos:
        table.add_row(i.name, i.kind, i.version, i.distribution, i.description)
    Console().print(table)


AUTH_TOKEN_ENV = "FLEETBENCH_AUTH_TOKEN"
_file_opt = click.Path(exists=True, dir_okay=False, path_type=Path)


@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT,
              show_default=True, help="Port to bind; 0 picks a free one.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Run store folder (default: $FLEETBENCH_STATE_DIR).")
@click.option("--data-root", "data_roots", multiple=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder manifests may use (repeatable; default: the current folder). "
                   "Relative manifest paths resolve against the first one.")
@click.option("--max-concurrent-runs", type=click.IntRange(1), show_default=True,
              default=DEFAULT_MAX_CONCURRENT_RUNS, help="Runs executing at once.")
@click.option("--max-planned-tests", type=click.IntRange(1), show_default=True,
              default=DEFAULT_MAX_PLANNED_TESTS,
              help="Planned tests of all executing runs together.")
@click.option("--auth-token-file", type=_file_opt,
              help=f"Require 'authorization: Bearer <token>' (default: ${AUTH_TOKEN_ENV}).")
@click.option("--tls-cert", type=_file_opt, help="PEM certificate chain (with --tls-key).")
@click.option("--tls-key", type=_file_opt, help="PEM private key (with --tls-cert).")
@click.option("--shutdown-grace", type=click.FloatRange(0), show_default=True,
              default=DEFAULT_SHUTDOWN_GRACE_S,
              help="Seconds a shutdown waits for runs and streams to end.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Serve Prometheus metrics at http://HOST:PORT/metrics; 0: off.")
@_executor_opt
def serve_command(host: str, port: int, state_dir: Path | None, data_roots: tuple[Path, ...],
                  max_concurrent_runs: int, max_planned_tests: int,
                  auth_token_file: Path | None, tls_cert: Path | None, tls_key: Path | None,
                  shutdown_grace: float, metrics_port: int, executor: str | None) -> None:
    """Serve the fleetbench.v1 gRPC API until SIGTERM or SIGINT.

    Prints `listening on HOST:PORT` on stdout once bound; logs JSON lines to stderr.
    Runs interrupted by a shutdown or crash resume when the server starts again.
    """
    verbose = click.get_current_context().find_root().params.get("verbose", 0)
    configure_logging(logging.DEBUG if verbose > 1 else logging.INFO, json_lines=True)
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    plugins = _host()
    _check_executor(plugins, executor)
    config = ServerConfig(
        state_dir=state_dir or _config.state_dir(), cache_dir=_config.cache_dir(),
        host=host, port=port, data_roots=data_roots,
        limits=Limits(max_concurrent_runs, max_planned_tests),
        auth_token=_auth_token(auth_token_file),
        tls=TlsFiles(tls_cert, tls_key) if tls_cert and tls_key else None,
        shutdown_grace_s=shutdown_grace, metrics_port=metrics_port or None, executor=executor)
    from fleetbench._server._app import serve  # grpc loads only for this command

    try:
        asyncio.run(serve(config, host=plugins, announce=_announce))
    except OSError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


def _auth_token(path: Path | None) -> str | None:
    token = (path.read_text(encoding="utf-8") if path else os.environ.get(AUTH_TOKEN_ENV, ""))
    token = token.strip()
    if path is not None and not token:
        raise click.BadParameter(f"{path} is empty", param_hint="--auth-token-file")
    return token or None


def _announce(line: str) -> None:
    click.echo(line)
    sys.stdout.flush()


# ----------------------------------------------------------------------------- helpers


def _host() -> PluginHost:
    try:
        return load_plugins()
    except PluginError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_PLUGIN)


def _check_executor(host: PluginHost, name: str | None) -> None:
    """Exit with status 2 when ``--executor`` names no installed executor."""
    if name is not None and name not in host.executors:
        click.echo(f"error: --executor: unknown executor {name!r}"
                   + known_hint(name, host.executors), err=True)
        sys.exit(EXIT_BAD_INPUT)


def _prepare(manifest: Path, *, as_json: bool, run_key: str = "") -> Prepared:
    try:
        return prepare_file(manifest, host=_host(), cache_dir=_config.cache_dir(),
                            run_key=run_key)
    except InputError as exc:
        _fail_input(manifest, exc.problems, as_json=as_json)


def _fail_input(manifest: Path, problems: Sequence[Problem], *, as_json: bool) -> NoReturn:
    if as_json:
        print_json({"valid": False, "problems": _problems_json(problems)})
    else:
        click.echo(f"{manifest}: {len(problems)} problem(s)", err=True)
        _print_problems("error", problems)
    sys.exit(EXIT_BAD_INPUT)


def _print_problems(label: str, problems: Sequence[Problem]) -> None:
    for problem in problems:
        click.echo(f"{label}: {problem}", err=True)


def _problems_json(problems: Sequence[Problem]) -> list[dict[str, str]]:
    return [{"location": p.location, "message": p.message} for p in problems]




# Commands over the gRPC API (submit, watch, runs, cancel, artifacts): fleetbench._remote_cli.
from fleetbench._remote_cli import register as _register_remote_commands  # noqa: E402

_register_remote_commands(main)

# Reports over stored runs (report, compare): fleetbench._report_cli.
from fleetbench._report_cli import register as _register_report_commands  # noqa: E402

_register_report_commands(main)

from fleetbench._mock_cli import mock_server  # noqa: E402

main.add_command(mock_server)
