"""The export worker: writes a run's artifacts in a separate process while it executes.

    python -m fleetbench._exportworker --state-dir DIR --run-id RUN_ID

Why: exporting 100,000 results (decoding them from the run store, rendering every
artifact) takes more than half as long as executing them, and the run's own process
keeps one core busy. The worker uses another core and follows the run: a result is
written as soon as every result before it in plan order is stored, so the artifacts are
done shortly after the last test. The run's process starts it through
:class:`ExportWorker` when a run has enough tests to pay for a process; smaller runs
export in-process. Both go through :class:`fleetbench._export.ExportSession`, so they
write the same artifacts.

The worker loads the plugins itself (the inherited environment decides which) and reads
the results from the run store; the run's process tells it the rest, one JSON object
per line:

stdin, from the run's process:
    ``{"open": RUN, "exporters": [NAME, ...]}`` first: the run as known at its start
    ``{"flushed": SEQ}`` after each store write: more results may be stored
    ``{"final": RUN}`` the run ended; RUN carries its status, end time and warnings

stdout, to the run's process:
    ``{"exported": N}`` progress: N results written (shows the worker is alive); the first,
        ``{"exported": 0}``, says the exporters are open. The run's process starts executing
        only then, so the worker's start (≈ 0.4 s of imports) does not compete for the CPU
        with the run's first tests, their timings, or a client streaming their results.
    ``{"artifacts": [PATH, ...]}`` the files written, once every exporter finalized

Exit codes: 0 done; 1 failed (the last line on stderr says why; nothing half-written
is left); 2 bad arguments; 3 abandoned: stdin ended without ``final`` because the run's
process died, so the exporters' temporary files are removed and no artifact is written.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import queue
import sys
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from fleetbench._export import ExportSession, build_exporters, run_info_from_json, run_info_to_json
from fleetbench._logging import configure_logging
from fleetbench._plugins import load_plugins
from fleetbench._store import RunStore
from fleetbench.errors import FleetbenchError
from fleetbench.plugin import RunInfo

__all__ = ["EXIT_ABANDONED", "EXIT_FAILED", "ExportWorker", "ExportWorkerError", "main"]

EXIT_FAILED = 1
EXIT_ABANDONED = 3
IDLE_TIMEOUT_S = 120.0
"""How long a finishing worker may stay silent (no progress line) before it is killed."""
READY_TIMEOUT_S = 60.0
"""How long a starting worker may take to open its exporters before the run gives up on it
(and exports in-process)."""
EXIT_TIMEOUT_S = 10.0
"""How long a worker may take to exit once its output ended or its input was closed."""

_MODULE = "fleetbench._exportworker"
_STDERR_TAIL = 64 * 1024  # bytes of the worker's stderr kept for the error message
_LINE_LIMIT = 1 << 20  # the longest protocol line read from the worker


class ExportWorkerError(FleetbenchError):
    """The export worker could not start, failed, died or went silent; says why."""


# ───────────────────────────────────────────────────────── the run's side


class ExportWorker:
    """The run's handle on its export worker process (see the module docstring).

    Never blocks the event loop: messages are queued on the pipe, the worker's output
    is read by tasks, and every wait is bounded.
    """

    def __init__(self, process: asyncio.subprocess.Process, *, idle_timeout_s: float) -> None:
        self._process = process
        self._idle_timeout_s = idle_timeout_s
        self._loop = asyncio.get_running_loop()
        self._last_heard = self._loop.time()
        self._artifacts: list[Path] | None = None
        self._stderr = b""
        self._heard = asyncio.Event()
        self._stdout_task = asyncio.create_task(self._read_stdout(), name="export-stdout")
        self._stderr_task = asyncio.create_task(self._read_stderr(), name="export-stderr")

    @classmethod
    async def start(cls, state_dir: Path, run_id: str, opening: RunInfo,
                    exporters: Sequence[str], *,
                    idle_timeout_s: float = IDLE_TIMEOUT_S,
                    ready_timeout_s: float = READY_TIMEOUT_S) -> ExportWorker:
        """Start a worker for ``run_id``, hand it the run as known at its start and
        return once it has opened its exporters.

        The worker gets a session of its own, so a Ctrl-C at the terminal reaches only
        the run's process, which then ends the export properly.

        :raises ExportWorkerError: the process cannot be started, or it failed or stayed
            silent for ``ready_timeout_s`` before opening its exporters.
        """
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", _MODULE, "--state-dir", str(state_dir),
                "--run-id", run_id, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                start_new_session=True, limit=_LINE_LIMIT)
        except OSError as exc:
            raise ExportWorkerError(f"cannot start {sys.executable} -m {_MODULE}: {exc}") \
                from exc
        worker = cls(process, idle_timeout_s=idle_timeout_s)
        worker._send({"open": run_info_to_json(opening), "exporters": list(exporters)})
        try:
            await worker._wait_until_ready(ready_timeout_s)
        except BaseException:
            await worker.aclose()
            raise
        return worker

    async def _wait_until_ready(self, timeout_s: float) -> None:
        """Wait for the worker's first line (its exporters are open).

        :raises ExportWorkerError: it ended or stayed silent first."""
        heard = asyncio.create_task(self._heard.wait())
        try:
            await asyncio.wait({heard, self._stdout_task}, timeout=timeout_s,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            heard.cancel()
        if self._heard.is_set():
            return
        if self._stdout_task.done():
            code = await self._wait_for_exit()
            await asyncio.wait({self._stderr_task}, timeout=EXIT_TIMEOUT_S)
            raise ExportWorkerError(self._failure(code))
        self._kill()
        raise ExportWorkerError(f"it did not open its exporters within {timeout_s:g} s")

    def notify(self, seq: int) -> None:
        """Tell the worker that the results up to ``seq`` are stored."""
        self._send({"flushed": seq})

    async def finish(self, final: RunInfo) -> list[Path]:
        """Hand the worker the final run and wait until it wrote every artifact.

        Waits as long as the worker reports progress; one silent for the idle timeout
        is killed.

        :raises ExportWorkerError: the worker failed, died or went silent.
        """
        self._send({"final": run_info_to_json(final)})
        self._close_input()
        self._last_heard = self._loop.time()
        await self._wait_for_output()
        if self._artifacts is not None:
            return self._artifacts  # complete; the process exits meanwhile (see aclose)
        code = await self._wait_for_exit()
        await asyncio.wait({self._stderr_task}, timeout=EXIT_TIMEOUT_S)  # its last words
        raise ExportWorkerError(self._failure(code))

    async def aclose(self) -> None:
        """End the worker if it still runs (closing its input abandons the export) and
        collect its output tasks. Safe to call at any time, also after :meth:`finish`."""
        if self._process.returncode is None:
            self._close_input()
            await self._wait_for_exit()
        for task in (self._stdout_task, self._stderr_task):
            if not task.done():
                await asyncio.wait({task}, timeout=EXIT_TIMEOUT_S)
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _send(self, message: dict[str, Any]) -> None:
        stdin = self._process.stdin
        if stdin is None or stdin.is_closing():
            return  # the worker is gone or told everything; finish() reports which
        stdin.write(json.dumps(message).encode() + b"\n")

    def _close_input(self) -> None:
        stdin = self._process.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.close()  # the transport sends what is queued, then closes the pipe

    async def _wait_for_output(self) -> None:
        """Wait until the worker lists its artifacts or its stdout ends, killing it if
        it stays silent."""
        while not self._stdout_task.done():
            silent = self._loop.time() - self._last_heard
            if silent >= self._idle_timeout_s:
                self._kill()
                raise ExportWorkerError(f"no progress for {silent:.0f} s; it was stopped")
            await asyncio.wait({self._stdout_task}, timeout=self._idle_timeout_s - silent)

    async def _wait_for_exit(self) -> int:
        try:
            return await asyncio.wait_for(self._process.wait(), EXIT_TIMEOUT_S)
        except TimeoutError:
            self._kill()
            return await self._process.wait()

    def _kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self._process.kill()

    async def _read_stdout(self) -> None:
        stdout = self._process.stdout
        assert stdout is not None
        async for line in stdout:
            self._last_heard = self._loop.time()
            self._heard.set()
            with contextlib.suppress(ValueError):
                message = json.loads(line)
                if isinstance(message, dict) and "artifacts" in message:
                    self._artifacts = [Path(p) for p in message["artifacts"]]
                    return  # the last message

    async def _read_stderr(self) -> None:
        stderr = self._process.stderr
        assert stderr is not None
        while chunk := await stderr.read(1 << 16):
            self._stderr = (self._stderr + chunk)[-_STDERR_TAIL:]

    def _failure(self, code: int) -> str:
        lines = [line.strip() for line in self._stderr.decode(errors="replace").splitlines()]
        reason = next((line for line in reversed(lines) if line), "no message")
        if code == 0:
            return f"it ended without listing its artifacts ({reason})"
        return f"it ended with exit code {code}: {reason}"


# ───────────────────────────────────────────────────────── the worker's side


class _Inbox:
    """The lines of the run's process, read from stdin by a daemon thread, so that the
    worker can wait for the next message and then take every one queued meanwhile
    (notifications that arrive while it writes collapse into one catch-up)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        threading.Thread(target=self._read, args=(stream,), name="inbox", daemon=True).start()

    def _read(self, stream: IO[bytes]) -> None:
        try:
            for line in stream:
                if line.strip():
                    self._queue.put(line)
        finally:
            self._queue.put(None)  # end of input: the run's process closed it or died

    def take(self) -> list[dict[str, Any] | None]:
        """Wait for a message; return it and every other one queued, in order (``None``
        stands for the end of input).

        :raises ValueError: a line is not a JSON object.
        """
        lines = [self._queue.get()]
        with contextlib.suppress(queue.Empty):
            while True:
                lines.append(self._queue.get_nowait())
        return [None if line is None else _message(line) for line in lines]


def _message(line: bytes) -> dict[str, Any]:
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError(f"expected a JSON object from the run's process, got {line!r:.80}")
    return message


class _Outbox:
    """The protocol's output: one JSON line per message, flushed at once."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream

    def send(self, message: dict[str, Any]) -> None:
        self._stream.write(json.dumps(message).encode() + b"\n")
        self._stream.flush()

    def progress(self, written: int) -> None:
        self.send({"exported": written})


def _serve(store: RunStore, run_id: str, inbox: _Inbox, out: _Outbox) -> int:
    """Open the exporters, follow the run, complete the export; return the exit code."""
    messages = inbox.take()
    first = messages.pop(0)
    if first is None:
        return EXIT_ABANDONED
    if "open" not in first:
        raise ValueError("the first message must be 'open'")
    exporters = build_exporters(load_plugins(), first.get("exporters", ()))
    session = ExportSession(store, run_id, exporters, run_info_from_json(first["open"]),
                            progress=out.progress)
    out.progress(0)  # ready: the run's process starts executing now
    try:
        final = _follow(session, inbox, messages)
        if final is None:
            session.abort()
            return EXIT_ABANDONED
        _, paths = session.complete(final)
    except BaseException:
        session.abort()
        raise
    out.send({"artifacts": [str(path) for path in paths]})
    return 0


def _follow(session: ExportSession, inbox: _Inbox,
            messages: list[dict[str, Any] | None]) -> RunInfo | None:
    """Write what the store holds in plan order, again after every notification;
    return the final run, or ``None`` when the input ended without it. The first
    catch-up comes before any notification: a resumed run has results stored already."""
    while True:
        session.catch_up()
        for message in messages:
            if message is None:
                return None
            if "final" in message:
                return run_info_from_json(message["final"])
        messages = inbox.take()


def _protocol_input() -> IO[bytes]:
    """Standard input for the protocol, as a reader of its own: the inbox thread blocks
    in it until the run's process closes the pipe, and a worker that ends first (it
    failed) must not find ``sys.stdin`` busy when the interpreter shuts down (Python
    aborts then)."""
    return os.fdopen(os.dup(0), "rb")


def _protocol_output() -> IO[bytes]:
    """The real stdout, kept for the protocol; file descriptor 1 then points at stderr,
    so a plugin's ``print`` or an unconfigured logger cannot garble the protocol."""
    sys.stdout.flush()
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    return channel


def _arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m {_MODULE}",
                                     description="Export a run's artifacts as it executes.")
    parser.add_argument("--state-dir", required=True, type=Path,
                        help="the folder of the run store (runs.sqlite3)")
    parser.add_argument("--run-id", required=True, help="the run to export")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the worker (see the module docstring); return its exit code."""
    args = _arguments().parse_args(argv)
    configure_logging()
    out = _Outbox(_protocol_output())
    try:
        with RunStore(args.state_dir) as store:
            return _serve(store, args.run_id, _Inbox(_protocol_input()), out)
    except Exception as exc:
        _report(exc)
        return EXIT_FAILED


def _report(exc: Exception) -> None:
    """The error as the last line on stderr (a bug's traceback before it)."""
    with contextlib.suppress(OSError):  # the run's process may be gone
        if not isinstance(exc, (FleetbenchError, ValueError, OSError)):
            traceback.print_exception(exc, file=sys.stderr)
        sys.stderr.write(f"export worker: {type(exc).__name__}: {exc}\n")
        sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())
