"""A fake vendor in its own process: :class:`FakeVendorProcess` for benchmarks (the client's
CPU measured apart from the server's), :func:`main` behind ``python -m fleetbench.testing``,
and :func:`serve`, which ``fleetbench mock-server`` shares.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import selectors
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Self

from fleetbench.testing._fake import (
    CONTROL_PREFIX,
    READY_PREFIX,
    FakeVendorConfig,
    FakeVendorServer,
    TraceEntry,
    clock_description,
    clock_is_system_wide,
)
from fleetbench.testing._vendors import VENDORS, wire_format

__all__ = ["FakeVendorProcess", "main", "serve"]


class FakeVendorProcess:
    """Run a fake vendor in a child process (``python -m fleetbench.testing``).

    For benchmarks that must measure the client's CPU apart from the server's. A synchronous
    context manager; the control calls (:meth:`fetch`, :meth:`reset`) use blocking stdlib HTTP
    and are meant for between measurement phases, not for the hot path.
    """

    def __init__(
        self,
        config: FakeVendorConfig | None = None,
        *,
        vendor: str = "openai",
        port: int = 0,
        startup_timeout_s: float = 15.0,
    ) -> None:
        wire_format(vendor)  # fail here, not in the child, on an unknown vendor
        self.config = config or FakeVendorConfig()
        self.vendor = vendor
        self._port = port
        self._startup_timeout_s = startup_timeout_s
        self._proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.base_url = ""

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("the server process is not running")
        return self._proc.pid

    def start(self) -> None:
        if not clock_is_system_wide():  # pragma: no cover - Linux is the supported platform
            raise RuntimeError(f"{clock_description()} is not comparable across processes")
        argv = [sys.executable, "-m", "fleetbench.testing", "--vendor", self.vendor,
                "--port", str(self._port), "--config-json", json.dumps(self.config.to_dict())]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        self._proc = proc
        assert proc.stdout is not None
        deadline = time.monotonic() + self._startup_timeout_s
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    self.stop()
                    raise TimeoutError("the fake vendor process did not start in time")
                line = proc.stdout.readline()
                if not line:
                    self.stop()
                    raise RuntimeError(f"the fake vendor process exited ({proc.poll()})")
                if line.startswith(READY_PREFIX):
                    self.url, self.base_url = line[len(READY_PREFIX) :].split()
                    return

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:  # pragma: no cover - defensive
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def fetch(self) -> dict[str, Any]:
        """The server's snapshot; ``trace`` entries are converted to :class:`TraceEntry`."""
        with urllib.request.urlopen(self.url + CONTROL_PREFIX + "/trace", timeout=30) as answer:
            data: dict[str, Any] = json.loads(answer.read())
        data["trace"] = [TraceEntry.from_dict(item) for item in data["trace"]]
        return data

    def reset(self) -> None:
        request = urllib.request.Request(self.url + CONTROL_PREFIX + "/reset", method="POST",
                                         data=b"")  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as answer:
            answer.read()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


async def serve(server: FakeVendorServer, announce: bool = True,
                on_ready: Callable[[FakeVendorServer], None] | None = None) -> None:
    """Serve until SIGTERM/SIGINT; once listening, print the ready line (``url base_url``)
    for :class:`FakeVendorProcess` and call ``on_ready``."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        if announce:
            print(f"{READY_PREFIX}{server.url} {server.base_url}", flush=True)
        if on_ready is not None:
            on_ready(server)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve a fake vendor from the command line until SIGTERM/SIGINT.

    ``python -m fleetbench.testing --vendor openai --port 0 --latency-ms 50`` prints
    ``FAKEVENDOR_READY http://127.0.0.1:PORT http://127.0.0.1:PORT/v1`` on stdout once it
    accepts requests. ``fleetbench mock-server`` is the friendlier front end.
    """
    parser = argparse.ArgumentParser(prog="python -m fleetbench.testing", description=main.__doc__)
    parser.add_argument("--vendor", default="openai", choices=VENDORS)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--config-json", help="a FakeVendorConfig as JSON (overrides knobs)")
    for knob in ("latency_ms", "ttft_ms", "itl_ms"):
        parser.add_argument("--" + knob.replace("_", "-"), type=float, default=0.0)
    parser.add_argument("--output-tokens", type=int, default=16)
    parser.add_argument("--tokens-per-chunk", type=int, default=1)
    parser.add_argument("--model", default="fake-model")
    parser.add_argument("--api-key")
    args = parser.parse_args(argv)
    if args.config_json:
        config = FakeVendorConfig.from_dict(json.loads(args.config_json))
    else:
        config = FakeVendorConfig(
            latency_ms=args.latency_ms, ttft_ms=args.ttft_ms, itl_ms=args.itl_ms,
            output_tokens=args.output_tokens, tokens_per_chunk=args.tokens_per_chunk,
            model=args.model, api_key=args.api_key,
        )  # fmt: skip
    server = FakeVendorServer(args.vendor, port=args.port, host=args.host, config=config)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(server))
    return 0
