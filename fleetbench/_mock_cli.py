"""``fleetbench mock-server``: a fake vendor from the command line (:mod:`fleetbench.testing`).

For trying a provider plugin or a manifest without an account: point the provider's
``base_url`` at the printed URL. Faults can be injected on a seeded schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import click

from fleetbench.testing import VENDORS, FakeVendorConfig, FakeVendorServer, Fault
from fleetbench.testing._process import serve

__all__ = ["mock_server"]

_FAULTS = {
    "429": Fault.rate_limited({"retry-after": "1"}),
    "500": Fault.http_error(500),
    "503": Fault.http_error(503, message="overloaded"),
    "529": Fault.http_error(529, message="overloaded"),
    "disconnect": Fault.disconnect(),
    "malformed": Fault.malformed(after_chunks=1),
    "truncate": Fault.truncated(after_chunks=1),
    "stream-error": Fault.stream_error(after_chunks=1),
}


@click.command("mock-server")
@click.option("--vendor", type=click.Choice(VENDORS), default="openai", show_default=True,
              help="Which vendor's wire format to speak.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="0 picks a free port.")
@click.option("--latency-ms", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Non-streaming: delay before the answer.")
@click.option("--ttft-ms", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Streaming: delay before the first token.")
@click.option("--itl-ms", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Streaming: delay between chunks.")
@click.option("--output-tokens", type=click.IntRange(0), default=16, show_default=True)
@click.option("--tokens-per-chunk", type=click.IntRange(1), default=1, show_default=True)
@click.option("--answer", default=None, help="A fixed answer text (one token per word).")
@click.option("--api-key-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Demand this key (the file's first line), the vendor's way; else 401.")
@click.option("--fault-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of requests that get a fault from --fault.")
@click.option("--fault", "faults", multiple=True, type=click.Choice(sorted(_FAULTS)),
              help="Fault kinds to draw from (repeatable; default all).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seeds the fault schedule: same seed, same faulty requests.")
def mock_server(vendor: str, host: str, port: int, latency_ms: float, ttft_ms: float,
                itl_ms: float, output_tokens: int, tokens_per_chunk: int, answer: str | None,
                api_key_file: Path | None, fault_rate: float, faults: tuple[str, ...],
                seed: int) -> None:  # fmt: skip
    """Serve a fake LLM vendor on HOST:PORT until Ctrl-C.

    It prints the base URL to configure the provider with, then stays quiet;
    ``GET /_fakevendor/trace`` shows what it saw (requests, timings, faults).
    """
    api_key = None
    if api_key_file is not None:
        api_key = api_key_file.read_text(encoding="utf-8").splitlines()[0].strip()
    mix = tuple(_FAULTS[name] for name in (faults or sorted(_FAULTS)))
    config = FakeVendorConfig(
        latency_ms=latency_ms, ttft_ms=ttft_ms, itl_ms=itl_ms, output_tokens=output_tokens,
        tokens_per_chunk=tokens_per_chunk, answer=answer, api_key=api_key,
        fault_rate=fault_rate, fault_mix=mix if fault_rate else (), seed=seed,
    )  # fmt: skip
    server = FakeVendorServer(vendor, host=host, port=port, config=config)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(server, announce=False, on_ready=_announce))


def _announce(server: FakeVendorServer) -> None:
    click.echo(f"fake {server.service.wire.name} vendor listening; base_url: {server.base_url}")
    click.echo(f"trace: {server.url}/_fakevendor/trace  (Ctrl-C stops)", err=True)
