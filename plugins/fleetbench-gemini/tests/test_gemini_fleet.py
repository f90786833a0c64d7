"""The plugin inside a real run: executor retries, timings and artifacts (no mocks)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from gemini_support import KEY, MODEL, fake, run

from fleetbench._plugins import PluginHost
from fleetbench.testing import FakeVendorServer, Fault, assert_secret_absent


def _entry(server: FakeVendorServer, **extra: Any) -> dict[str, Any]:
    return {"id": f"gemini:{MODEL}", "base_url": server.base_url, **extra}


async def test_a_429_is_waited_out_for_its_retry_delay_then_succeeds(
        tmp_path: Path, host: PluginHost) -> None:
    async with fake(Fault.rate_limited({"retry-after": "0.3"})) as server:
        (row,) = await run(tmp_path, host, [_entry(server)])
    assert server.requests == 2
    assert (row["status"], row["retries"]) == ("passed", 1)
    assert row["total_ms"] >= 300  # the executor slept at least the body's RetryInfo delay
    refused = server.trace[0].last_byte
    assert refused is not None
    assert server.trace[1].received - refused >= 0.3


async def test_overloaded_internal_and_deadline_errors_are_retried(
        tmp_path: Path, host: PluginHost) -> None:
    faults = (Fault.http_error(503, message="The model is overloaded."),
              Fault.http_error(500, message="An internal error has occurred."),
              Fault.http_error(504, message="Deadline expired before operation could "
                                            "complete."))
    async with fake(*faults) as server:
        (row,) = await run(tmp_path, host, [_entry(server)])
    assert server.requests == 4
    assert (row["status"], row["retries"]) == ("passed", 3)


@pytest.mark.parametrize(("fault", "kind"), [
    (Fault.http_error(400, error_type="INVALID_ARGUMENT", code="API_KEY_INVALID",
                      message="API key not valid. Please pass a valid API key."),
     "authentication"),
    (Fault.http_error(403, message="Method doesn't allow unregistered callers"),
     "authentication"),
    (Fault.http_error(400, message="Invalid value at 'generation_config.temperature'"),
     "bad_request"),
    (Fault.http_error(400, error_type="FAILED_PRECONDITION",
                      message="User location is not supported for the API use."),
     "bad_request"),
    (Fault.http_error(400, message="The input token count (1200293) exceeds the maximum "
                                   "number of tokens allowed (1048576)."), "context_length"),
    (Fault.http_error(404, message="models/x is not found for API version v1beta"),
     "bad_request"),
    (Fault.http_error(429, code="GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                      message="You exceeded your current quota",
                      headers={"retry-after": "1"}), "rate_limited"),
    (Fault.malformed(), "malformed_response"),
])
async def test_errors_that_cannot_heal_are_tried_once(tmp_path: Path, host: PluginHost,
                                                      fault: Fault, kind: str) -> None:
    async with fake(fault) as server:
        (row,) = await run(tmp_path, host, [_entry(server)])
    assert server.requests == 1
    assert (row["status"], row["error_kind"], row["retries"]) == ("error", kind, 0)


async def test_retries_give_up_after_max_retries(tmp_path: Path, host: PluginHost) -> None:
    async with fake(*[Fault.http_error(503)] * 5) as server:
        (row,) = await run(tmp_path, host, [_entry(server, max_retries=2)])
    assert server.requests == 3
    assert (row["status"], row["error_kind"], row["retries"]) == ("error", "transient", 2)


async def test_streaming_itl_comes_from_usage_not_chunk_count(tmp_path: Path,
                                                              host: PluginHost) -> None:
    # 16 tokens in chunks of 4, 40 ms apart: 4 chunks, 3 gaps = 120 ms between the first
    # and the last token, which is 8 ms per token over the 15 token gaps.
    async with fake(output_tokens=16, tokens_per_chunk=4, ttft_ms=30, itl_ms=40) as server:
        (row,) = await run(tmp_path, host, [_entry(server, stream=True)])
    assert row["status"] == "passed"
    assert row["output_tokens"] == 16
    assert not row["tokens_estimated"]
    assert 120 / 15 <= row["itl_ms"] < 40  # per token (usage), not per chunk
    truth = server.trace[0]
    assert truth.ttft_s is not None
    assert row["ttft_ms"] >= truth.ttft_s * 1000 >= 30


async def test_truncated_streams_and_errors_in_streams_are_retried(
        tmp_path: Path, host: PluginHost) -> None:
    faults = (Fault.truncated(after_chunks=2),
              Fault.stream_error(after_chunks=1, status=503, message="overloaded"))
    async with fake(*faults, output_tokens=4) as server:
        (row,) = await run(tmp_path, host, [_entry(server, stream=True)])
    assert server.requests == 3
    assert (row["status"], row["retries"]) == ("passed", 2)
    assert row["response"] == "Hello from the fake"  # no text from the failed attempts


async def test_the_key_appears_in_no_error_log_or_artifact(
        tmp_path: Path, host: PluginHost, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    leaky = Fault.http_error(400, code="API_KEY_INVALID", message=f"API key {KEY} not valid")
    stream_leak = Fault.stream_error(status=403, message=f"key {KEY} may not call this")
    async with fake(leaky, stream_leak) as server:
        rows = await run(tmp_path, host, [_entry(server),
                                                _entry(server, id="gemini:gemini-2.5-pro",
                                                       stream=True)])
    assert {r["error_kind"] for r in rows} == {"authentication"}
    assert all("***" in r["error"] for r in rows)
    captured = capsys.readouterr()
    assert KEY not in caplog.text + captured.out + captured.err
    assert_secret_absent(tmp_path, KEY)
