"""The plugin inside a real run: executor retries, timings and artifacts (no mocks).

Each test counts the requests the fake received, so "retried" and "tried once" are facts
seen at the vendor's side, and measures waits on the fake's own clock."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from anthropic_support import KEY, MODEL, fake, run

from fleetbench._plugins import PluginHost
from fleetbench.testing import FakeVendorServer, Fault, assert_secret_absent


def _entry(server: FakeVendorServer, **extra: Any) -> dict[str, Any]:
    return {"id": f"anthropic:{MODEL}", "base_url": server.base_url, **extra}


def _gap_s(server: FakeVendorServer) -> float:
    """Seconds between the end of the first answer and the arrival of the retry."""
    refused = server.trace[0].last_byte
    assert refused is not None
    return server.trace[1].received - refused


async def test_a_429_with_retry_after_is_waited_out_then_succeeds(
        tmp_path: Path, host: PluginHost) -> None:
    async with fake(Fault.rate_limited({"retry-after": "1"})) as server:
        (row,) = await run(tmp_path, host, [_entry(server)])
    assert server.requests == 2
    assert (row["status"], row["retries"]) == ("passed", 1)
    assert row["total_ms"] >= 1000  # the executor slept at least the vendor's hint
    assert _gap_s(server) >= 1.0


async def test_a_429_with_only_reset_headers_waits_until_the_exhausted_limit_resets(
        tmp_path: Path, host: PluginHost) -> None:
    reset_at = time.time() + 1.5
    reset = datetime.fromtimestamp(reset_at, UTC).isoformat()
    headers = {"anthropic-ratelimit-tokens-remaining": "0",
               "anthropic-ratelimit-tokens-reset": reset,
               "anthropic-ratelimit-requests-remaining": "40",
               "anthropic-ratelimit-requests-reset": reset.replace("+00:00", "Z")}
    async with fake(Fault.rate_limited(headers)) as server:
        (row,) = await run(tmp_path, host, [_entry(server)])
    assert server.requests == 2
    assert (row["status"], row["retries"]) == ("passed", 1)
    wall_minus_perf = time.time() - time.perf_counter()
    retried_at = server.trace[1].received + wall_minus_perf
    assert retried_at >= reset_at - 0.05  # 50 ms for converting between the two clocks


async def test_overload_and_server_errors_are_retried_streaming_or_not(
        tmp_path: Path, host: PluginHost) -> None:
    faults = (Fault.http_error(529, message="Overloaded", headers={"retry-after": "0.2"}),
              Fault.http_error(500, message="Internal server error"),
              Fault.stream_error(status=529, message="Overloaded"),
              Fault.stream_error(after_chunks=2, status=500))
    async with fake(*faults, output_tokens=4) as server:
        (row,) = await run(tmp_path, host, [_entry(server, stream=True)], max_retries=4)
    assert server.requests == 5
    assert (row["status"], row["retries"]) == ("passed", 4)
    assert row["response"] == "Hello from the fake"  # no text from failed attempts
    assert _gap_s(server) >= 0.2


@pytest.mark.parametrize(("fault", "kind"), [
    (Fault.http_error(401, message="invalid x-api-key"), "authentication"),
    (Fault.http_error(403, message="not allowed"), "authentication"),
    (Fault.http_error(400, message="temperature: must be <= 1"), "bad_request"),
    (Fault.http_error(400, message="prompt is too long: 207791 tokens > 200000 maximum"),
     "context_length"),
    (Fault.http_error(413, message="Request exceeds the maximum size"), "context_length"),
    (Fault.http_error(404, message="model: claude-nope"), "bad_request"),
    (Fault.http_error(429, code="enforced_spend_limit_reached",
                      message="You have reached your specified API usage limits"),
     "rate_limited"),
    (Fault.malformed(), "malformed_response"),
])
async def test_errors_that_cannot_heal_are_tried_once(tmp_path: Path, host: PluginHost,
                                                      fault: Fault, kind: str) -> None:
    async with fake(fault) as server:
        (row,) = await run(tmp_path, host, [_entry(server)])
    assert server.requests == 1
    assert (row["status"], row["error_kind"], row["retries"]) == ("error", kind, 0)


async def test_retries_give_up_after_max_retries(tmp_path: Path, host: PluginHost) -> None:
    async with fake(*[Fault.http_error(529, message="Overloaded")] * 5) as server:
        (row,) = await run(tmp_path, host, [_entry(server, max_retries=2)])
    assert server.requests == 3
    assert (row["status"], row["error_kind"], row["retries"]) == ("error", "transient", 2)


async def test_ttft_is_the_first_text_delta_and_itl_comes_from_usage(
        tmp_path: Path, host: PluginHost) -> None:
    # message_start, content_block_start and a ping arrive with the headers; the first
    # text delta only after ttft_ms. Then 16 tokens in chunks of 4, 40 ms apart: 3 gaps =
    # 120 ms between the first and the last token, 8 ms per token over the 15 token gaps.
    async with fake(output_tokens=16, tokens_per_chunk=4, ttft_ms=300, itl_ms=40) as server:
        (row,) = await run(tmp_path, host, [_entry(server, stream=True)])
    assert row["status"] == "passed"
    assert row["ttft_ms"] >= 300  # not ~0: the opening events are not the first token
    truth = server.trace[0]
    assert truth.ttft_s is not None
    assert row["ttft_ms"] >= truth.ttft_s * 1000
    assert (row["output_tokens"], row["tokens_estimated"]) == (16, False)
    assert row["input_tokens"] > 0  # from message_start
    assert 120 / 15 <= row["itl_ms"] < 40  # per token (usage), not per chunk


async def test_the_key_appears_in_no_error_log_or_artifact(
        tmp_path: Path, host: PluginHost, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    leaky = Fault.http_error(401, message=f"invalid x-api-key {KEY}")
    stream_leak = Fault.stream_error(error_type="authentication_error", message=f"echo {KEY}")
    async with fake(leaky, stream_leak) as server:
        rows = await run(tmp_path, host, [
            _entry(server), _entry(server, id="anthropic:claude-fake-2", stream=True)])
    assert [r["error_kind"] for r in rows] == ["authentication", "authentication"]
    assert all("***" in r["error"] for r in rows)
    captured = capsys.readouterr()
    assert KEY not in caplog.text + captured.out + captured.err
    assert_secret_absent(tmp_path, KEY)
