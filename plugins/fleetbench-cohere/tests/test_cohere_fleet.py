"""The plugin inside a real run: executor retries, timings and artifacts (no mocks)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
from cohere_support import KEY, MODEL, fake, run

from fleetbench._plugins import PluginHost
from fleetbench.testing import FakeVendorServer, Fault, assert_secret_absent


def _entry(server: FakeVendorServer, **extra: Any) -> dict[str, Any]:
    return {"id": f"cohere:{MODEL}", "base_url": server.base_url, **extra}


def _gap_s(server: FakeVendorServer, before: int) -> float:
    """Seconds between the end of request ``before`` (0-based) and the next one's arrival,
    as the fake measured them."""
    answered = server.trace[before].last_byte
    assert answered is not None
    return server.trace[before + 1].received - answered


async def test_a_429_with_retry_after_ms_is_waited_out_then_succeeds(
        tmp_path: Path, host: PluginHost) -> None:
    async with fake(Fault.rate_limited({"retry-after-ms": "300"})) as server:
        (row,) = await run(tmp_path, host, [_entry(server)])
    assert server.requests == 2
    assert (row["status"], row["retries"]) == ("passed", 1)
    assert row["total_ms"] >= 300  # the executor slept at least the vendor's hint
    assert _gap_s(server, 0) >= 0.3


async def test_retry_after_seconds_reset_time_and_5xx_are_retried(
        tmp_path: Path, host: PluginHost) -> None:
    # X-RateLimit-Reset: the Unix time the limit lifts (the trace's clock is perf_counter)
    reset_at, reset_at_perf = time.time() + 0.5, time.perf_counter() + 0.5
    faults = (Fault.http_error(503, message="service unavailable",
                               headers={"Retry-After": "0.2"}),
              Fault.rate_limited({"X-RateLimit-Reset": f"{reset_at:.3f}"}),
              Fault.http_error(500, message="internal server error"),
              Fault.http_error(499, message="request cancelled"))
    async with fake(*faults) as server:
        (row,) = await run(tmp_path, host, [_entry(server)], max_retries=4)
    assert server.requests == 5
    assert (row["status"], row["retries"]) == ("passed", 4)
    assert _gap_s(server, 0) >= 0.2
    assert server.trace[2].received >= reset_at_perf - 0.01  # waited until the reset time


@pytest.mark.parametrize(("fault", "kind"), [
    (Fault.http_error(401, message="invalid api token " + KEY), "authentication"),
    (Fault.http_error(498, message="invalid token"), "authentication"),
    (Fault.http_error(400, message="invalid request: temperature must be positive"),
     "bad_request"),
    (Fault.http_error(400, message="too many tokens: max tokens must be less than or equal "
                                   "to 4096, the maximum output for this model"),
     "context_length"),
    (Fault.http_error(404, message="model not found"), "bad_request"),
    (Fault.http_error(402, message="Please add a payment method"), "rate_limited"),
    (Fault.http_error(429, message="You are using a Trial key, which is limited to 1000 API "
                                   "calls / month."), "rate_limited"),
    (Fault.malformed(), "malformed_response"),
])
async def test_errors_that_cannot_heal_are_tried_once(tmp_path: Path, host: PluginHost,
                                                      fault: Fault, kind: str) -> None:
    async with fake(fault) as server:
        (row,) = await run(tmp_path, host, [_entry(server)])
    assert server.requests == 1
    assert (row["status"], row["error_kind"], row["retries"]) == ("error", kind, 0)
    assert KEY not in row["error"]


async def test_retries_give_up_after_max_retries(tmp_path: Path, host: PluginHost) -> None:
    async with fake(*[Fault.http_error(503)] * 5) as server:
        (row,) = await run(tmp_path, host, [_entry(server, max_retries=2)])
    assert server.requests == 3
    assert (row["status"], row["error_kind"], row["retries"]) == ("error", "transient", 2)


async def test_streaming_ttft_is_the_first_text_and_itl_comes_from_usage(
        tmp_path: Path, host: PluginHost) -> None:
    # message-start and content-start go out at once; the first text 60 ms later. 16
    # tokens in chunks of 4, 40 ms apart: 3 gaps = 120 ms between the first and the last
    # token, 8 ms per token over the 15 token gaps (40 ms if chunks were counted).
    async with fake(output_tokens=16, tokens_per_chunk=4, ttft_ms=60, itl_ms=40) as server:
        (row,) = await run(tmp_path, host, [_entry(server, stream=True)])
    assert row["status"] == "passed"
    assert (row["output_tokens"], row["tokens_estimated"]) == (16, False)
    assert 120 / 15 <= row["itl_ms"] < 40
    truth = server.trace[0]
    assert truth.ttft_s is not None
    assert row["ttft_ms"] >= truth.ttft_s * 1000 >= 60


async def test_truncated_stream_and_failed_generation_are_retried(
        tmp_path: Path, host: PluginHost) -> None:
    faults = (Fault.truncated(after_chunks=2),
              Fault.stream_error(after_chunks=1, message="internal error"))
    async with fake(*faults, output_tokens=4) as server:
        (row,) = await run(tmp_path, host, [_entry(server, stream=True)])
    assert server.requests == 3
    assert (row["status"], row["retries"]) == ("passed", 2)
    assert row["response"] == "Hello from the fake"  # no text from the failed attempts


async def test_the_key_appears_in_no_error_log_or_artifact(
        tmp_path: Path, host: PluginHost, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    leaky = Fault.http_error(401, message=f"invalid api token {KEY}")
    stream_leak = Fault.stream_error(message=f"too many tokens for key {KEY}")
    async with fake(leaky, stream_leak) as server:
        rows = await run(tmp_path, host, [
            _entry(server), _entry(server, id="cohere:command-fake-2", stream=True)])
    assert {r["error_kind"] for r in rows} == {"authentication", "context_length"}
    assert all("***" in r["error"] for r in rows)
    captured = capsys.readouterr()
    assert KEY not in caplog.text + captured.out + captured.err
    assert_secret_absent(tmp_path, KEY)
