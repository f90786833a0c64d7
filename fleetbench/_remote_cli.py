"""Commands that drive a ``fleetbench serve`` server over its gRPC API, through the
Python client (``fleetbench_client``): ``submit``, ``watch``, ``runs``, ``cancel`` and
``artifacts``.

They share ``--server`` (default ``$FLEETBENCH_SERVER``, else ``127.0.0.1:50051``),
``--token`` (default ``$FLEETBENCH_AUTH_TOKEN``) and ``--tls-ca``. Exit codes: 0 success
(for ``watch`` and ``submit --watch``: the run completed); 1 the run failed or was
interrupted; 2 bad input (the manifest's problems are printed with their locations, an
unknown run, a path outside the server's data roots); 4 the server could not be reached
or refused the call; 130 the run was cancelled (or watching was stopped with Ctrl-C).

grpc and the client load only when one of these commands runs, so the other commands
start as fast as before.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, ParamSpec, TypeVar

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from fleetbench._cli_common import parse_labels, print_json

if TYPE_CHECKING:
    from fleetbench_client import (
        FleetBenchClient,
        FleetBenchError,
        ResultBatch,
        Run,
        Snapshot,
        Summary,
    )

__all__ = ["DEFAULT_SERVER", "SERVER_ENV", "TOKEN_ENV", "register"]

SERVER_ENV = "FLEETBENCH_SERVER"
TOKEN_ENV = "FLEETBENCH_AUTH_TOKEN"
DEFAULT_SERVER = "127.0.0.1:50051"

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_SERVER = 4
EXIT_CANCELLED = 130

WATCH_SNAPSHOT_MS = 500
_STATUS_NAMES = ("pending", "running", "completed", "failed", "cancelled", "interrupted")

P = ParamSpec("P")
R = TypeVar("R")


def register(group: click.Group) -> None:
    """Add the remote commands to the ``fleetbench`` command group."""
    for command in (submit, watch, runs, cancel, artifacts):
        group.add_command(command)


# ───────────────────────────────────────────────────────────────────── shared options


def _server_options(command: Callable[P, R]) -> Callable[P, R]:
    options = (
        click.option("--server", envvar=SERVER_ENV, default=DEFAULT_SERVER, show_default=True,
                     show_envvar=True, metavar="HOST:PORT", help="The fleetbench server."),
        click.option("--token", envvar=TOKEN_ENV, default=None, show_envvar=True,
                     help="The server's bearer token (prefer the environment variable: "
                          "a command line is visible to other users)."),
        click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     default=None, help="Connect with TLS, trusting this PEM certificate."),
    )
    for option in reversed(options):
        command = option(command)
    return command


_json_opt = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


@contextmanager
def _client(server: str, token: str | None, tls_ca: Path | None) -> Iterator[FleetBenchClient]:
    """A client of ``server``; every client error ends the command with its exit code."""
    from fleetbench_client import FleetBenchClient, FleetBenchError

    try:
        with FleetBenchClient(server, token=token or None, tls_root_cert=tls_ca) as client:
            yield client
    except FleetBenchError as error:
        _fail(error, server)


def _fail(error: FleetBenchError, server: str) -> NoReturn:
    from fleetbench_client import (
        InvalidArgument,
        InvalidManifest,
        NotFound,
        PermissionDenied,
        Unavailable,
    )

    if isinstance(error, InvalidManifest):
        click.echo(f"error: the manifest has {len(error.violations)} problem(s)", err=True)
        for violation in error.violations:
            click.echo(f"error: {violation}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    if isinstance(error, Unavailable):
        click.echo(f"error: cannot reach the fleetbench server at {server}: {error.details}",
                   err=True)
        sys.exit(EXIT_SERVER)
    click.echo(f"error: {error}", err=True)
    bad_input = isinstance(error, InvalidArgument | NotFound | PermissionDenied)
    sys.exit(EXIT_BAD_INPUT if bad_input else EXIT_SERVER)





def _status_name(value: int) -> str:
    from fleetbench_client import RunStatus

    try:
        return RunStatus(value).name
    except ValueError:
        return str(value)


def _exit_code(status: int) -> int:
    from fleetbench_client import RunStatus

    if status == RunStatus.COMPLETED:
        return EXIT_OK
    if status == RunStatus.CANCELLED:
        return EXIT_CANCELLED
    return EXIT_RUN_FAILED


def _handle_ctrl_c(command: Callable[P, None]) -> Callable[P, None]:
    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            command(*args, **kwargs)
        except KeyboardInterrupt:
            click.echo("stopped watching; the run goes on on the server", err=True)
            sys.exit(EXIT_CANCELLED)

    return wrapper


# ─────────────────────────────────────────────────────────────────────────── commands


@click.command()
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_server_options
@click.option("--run-key", default="", help="Caller-chosen key mixed into the run id.")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="Tag the run.")
@click.option("--manifest-path", default=None, metavar="PATH",
              help="Where MANIFEST lives on the server (relative paths in it resolve "
                   "there). Default: its absolute path here, for a server on this "
                   "machine; '' for the server's first data root.")
@click.option("--watch", "follow", is_flag=True,
              help="Follow the run with progress bars until it ends; exit with its outcome.")
@_json_opt
@_handle_ctrl_c
def submit(manifest: Path, server: str, token: str | None, tls_ca: Path | None, run_key: str,
           labels: tuple[str, ...], manifest_path: str | None, follow: bool,
           as_json: bool) -> None:
    """Start a run of MANIFEST on a fleetbench server (or find the run it already has).

    The run id is a hash of the manifest, its datasets and --run-key: submitting the
    same inputs again returns the existing run (resumed if it had not completed).

    Exit status: 0 submitted (with --watch: completed); 1 failed or interrupted;
    2 bad input (every manifest problem is printed with its location); 4 server
    unreachable or refusing; 130 cancelled.
    """
    from fleetbench_client import to_dict

    with _client(server, token, tls_ca) as client:
        run, created = client.start_run(manifest, run_key=run_key or None,
                                        labels=parse_labels(labels), manifest_path=manifest_path)
        if as_json:
            if follow:
                run = client.wait(run.run_id)
            print_json({"created": created, "run": to_dict(run)})
            sys.exit(_exit_code(run.status) if follow else EXIT_OK)
        planned = run.progress.planned
        if created:
            click.echo(f"created run {run.run_id} ({planned} tests planned)")
        else:
            click.echo(f"run {run.run_id} already exists: {_status_name(run.status)}, "
                       f"{run.progress.done}/{planned} tests done")
        if not follow:
            return
        sys.exit(_watch(client, run.run_id))


@click.command()
@click.argument("run_id")
@_server_options
@_handle_ctrl_c
def watch(run_id: str, server: str, token: str | None, tls_ca: Path | None) -> None:
    """Follow RUN_ID live with progress bars until it ends; exit with its outcome.

    Exit status: 0 completed; 1 failed or interrupted; 2 unknown run; 4 server
    unreachable or refusing; 130 cancelled (or Ctrl-C: the run goes on).
    """
    with _client(server, token, tls_ca) as client:
        code = _watch(client, run_id)
    sys.exit(code)


@click.command()
@_server_options
@click.option("--fleet", "fleet_id", default=None, help="Only runs of this fleet.")
@click.option("--status", "statuses", multiple=True, type=click.Choice(_STATUS_NAMES),
              help="Only runs in this status (repeatable).")
@click.option("--limit", type=click.IntRange(0), default=50, show_default=True,
              help="Show at most this many runs, newest first; 0 for all.")
@_json_opt
def runs(server: str, token: str | None, tls_ca: Path | None, fleet_id: str | None,
         statuses: tuple[str, ...], limit: int, as_json: bool) -> None:
    """List the server's runs, newest first."""
    from fleetbench_client import RunStatus, to_dict

    wanted = [RunStatus[name.upper()] for name in statuses]
    with _client(server, token, tls_ca) as client:
        found: list[Run] = []
        for run in client.list_runs(fleet_id, wanted, page_size=min(limit, 1000)):
            found.append(run)
            if limit and len(found) >= limit:
                break
    if as_json:
        print_json([to_dict(run) for run in found])
        return
    table = Table(title=f"Runs on {server}")
    for column in ("run id", "fleet", "status", "done", "success", "created", "labels"):
        table.add_column(column, justify="right" if column in ("done", "success") else "left")
    for run in found:
        created = (run.created_at.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")
                   if run.HasField("created_at") else "")
        table.add_row(run.run_id, run.fleet_id, _status_name(run.status).lower(),
                      f"{run.progress.done}/{run.progress.planned}",
                      f"{run.summary.success_rate:.1%}" if run.summary.total else "-",
                      created, " ".join(f"{k}={v}" for k, v in sorted(run.labels.items())))
    Console().print(table)


@click.command()
@click.argument("run_id")
@_server_options
@click.option("--reason", default="cancelled from the command line", show_default=True,
              help="Recorded as the run's error message.")
@_json_opt
def cancel(run_id: str, server: str, token: str | None, tls_ca: Path | None, reason: str,
           as_json: bool) -> None:
    """Cancel RUN_ID: it stops, keeps the results so far and writes partial artifacts.
    Submitting the same manifest again resumes it."""
    from fleetbench_client import to_dict

    with _client(server, token, tls_ca) as client:
        run = client.cancel_run(run_id, reason)
    if as_json:
        print_json(to_dict(run))
        return
    click.echo(f"run {run.run_id}: {_status_name(run.status)}, "
               f"{run.progress.done}/{run.progress.planned} tests done")


@click.command()
@click.argument("run_id")
@_server_options
@click.option("--dest", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder to download into (created if needed).")
@click.option("--name", "names", multiple=True,
              help="Only this artifact (repeatable); default: every one.")
@_json_opt
def artifacts(run_id: str, server: str, token: str | None, tls_ca: Path | None, dest: Path,
              names: tuple[str, ...], as_json: bool) -> None:
    """Download RUN_ID's artifacts into --dest, each checked against its SHA-256."""
    with _client(server, token, tls_ca) as client:
        run = client.get_run(run_id)
        paths = client.download_artifacts(run_id, dest, names or None)
    by_name = {a.name: a for a in run.artifacts}
    rows = [(path, by_name[path.relative_to(dest).as_posix()]) for path in paths]
    if as_json:
        print_json([{"name": a.name, "path": str(p), "size_bytes": a.size_bytes,
                      "sha256": a.sha256, "media_type": a.media_type} for p, a in rows])
        return
    for path, artifact in rows:
        click.echo(f"{path}  {artifact.size_bytes} bytes  sha256 {artifact.sha256}")
    if not rows:
        click.echo(f"run {run_id} has no artifacts yet")


# ──────────────────────────────────────────────────────────────────────────── watching


def _watch(client: FleetBenchClient, run_id: str) -> int:
    """Progress bars until the run ends, then its summary; returns the exit code."""
    run = client.get_run(run_id)
    console = Console()
    view = _RemoteProgress(Console(stderr=True))
    last: ResultBatch | None = None
    with view.progress:
        for batch in client.stream_results(run_id, run.last_seq,
                                           snapshot_interval_ms=WATCH_SNAPSHOT_MS):
            view.update(batch)
            last = batch
    final = client.get_run(run_id)
    snapshot = last.snapshot if last is not None else None
    if snapshot is not None:
        console.print(_provider_table(snapshot))
    console.print(_outcome_line(final), highlight=False)
    return _exit_code(final.status)


class _RemoteProgress:
    """Bars for the fleet and each provider, from the stream's snapshots (exact counts
    and statistics) advanced by the results that arrive between them."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description:<32}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(),
            console=console, transient=False, refresh_per_second=4)
        self._fleet = self.progress.add_task("fleet", total=None, stats="")
        self._providers: dict[str, TaskID] = {}
        self._as_of = 0

    def update(self, batch: ResultBatch) -> None:
        if batch.snapshot is not None:
            self._apply(batch.snapshot)
        fresh = [r for r in batch.results if r.seq > self._as_of]
        for result in fresh:
            self.progress.advance(self._task(f"{result.provider}:{result.model}"))
        self.progress.advance(self._fleet, len(fresh))
        if batch.final:
            for task in self._providers.values():
                done = self.progress.tasks[task].completed
                self.progress.update(task, total=done)

    def _apply(self, snapshot: Snapshot) -> None:
        from fleetbench_client import GroupDimension

        self._as_of = snapshot.as_of_seq
        self.progress.update(self._fleet, total=snapshot.progress.planned or None,
                             completed=snapshot.progress.done, stats=_stats(snapshot.summary))
        for group in snapshot.groups:
            if GroupDimension(group.dimension) is GroupDimension.PROVIDER:
                task = self._task(f"{group.provider}:{group.model}")
                self.progress.update(task, completed=group.summary.total,
                                     stats=_stats(group.summary))

    def _task(self, key: str) -> TaskID:
        if key not in self._providers:
            self._providers[key] = self.progress.add_task(key, total=None, stats="")
        return self._providers[key]


def _stats(summary: Summary) -> str:
    rate = f"{summary.success_rate:6.1%}" if summary.total else "     -"
    latency = summary.latency_ms
    p50 = f"{latency.p50:7.0f} ms" if latency.count else "      - ms"
    cost = f"${summary.cost_usd:.4f}" if summary.HasField("cost_usd") else "$-"
    return f"pass {rate}  p50 {p50}  {cost}"


def _provider_table(snapshot: Snapshot) -> Table:
    from fleetbench_client import GroupDimension

    table = Table(title="Results by provider")
    for column in ("provider", "tests", "passed", "failed", "errors", "success", "p50 ms",
                   "p95 ms", "ttft p50", "tokens", "cost $"):
        table.add_column(column, justify="left" if column == "provider" else "right")
    rows = [(f"{g.provider}:{g.model}", g.summary) for g in snapshot.groups
            if GroupDimension(g.dimension) is GroupDimension.PROVIDER]
    for name, summary in [*rows, ("fleet", snapshot.summary)]:
        if name == "fleet":
            table.add_section()
        counts = summary.counts
        table.add_row(
            name, str(summary.total), str(counts.passed), str(counts.failed),
            str(counts.error + counts.timeout), f"{summary.success_rate:.1%}",
            _ms(summary.latency_ms.p50, summary.latency_ms.count),
            _ms(summary.latency_ms.p95, summary.latency_ms.count),
            _ms(summary.ttft_ms.p50, summary.ttft_ms.count),
            f"{summary.input_tokens + summary.output_tokens:,}",
            (f"{summary.cost_usd:.4f}" if summary.HasField("cost_usd") else "-")
            + ("*" if summary.unpriced_tests else ""))
    return table


def _ms(value: float, count: int) -> str:
    return f"{value:.0f}" if count else "-"


def _outcome_line(run: Run) -> str:
    line = (f"run {run.run_id}: {_status_name(run.status)}, "
            f"{run.progress.done}/{run.progress.planned} tests done")
    if run.error_message:
        line += f" ({run.error_message})"
    return line
