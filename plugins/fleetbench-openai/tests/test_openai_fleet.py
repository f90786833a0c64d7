"""The plugin inside a real run: executor retries, timings and artifacts (no mocks)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from openai_support import KEY, run

from fleetbench._plugins import PluginHost
from fleetbench.testing import FakeVendorConfig, FakeVendorServer, Fault, assert_secret_absent


def _server(*faults: Fault, **knobs: Any) -> FakeVendorServer:
    return FakeVendorServer(config=FakeVendorConfig(faults=faults, api_key=KEY, **knobs))


def _entry(server: FakeVendorServer, **extra: Any) -> dict[str, Any]:
    return {"id": "openai:fake-gpt", "base_url": server.base_url, **extra}


async def test_a_429_with_retry_after_ms_is_waited_out_then_succeeds(
        tmp_path: Path, host: PluginHost) -> None:
    async with _server(Fault.rate_limited({"retry-after-ms": "300"})) as server:
        fleet = await run(tmp_path, host, [_entry(server)])
    (row,) = fleet.rows
    assert server.requests == 2
    assert (row["status"], row["retries"]) == ("passed", 1)
    assert row["total_ms"] >= 300  # the executor slept at least the vendor's hint
    gap = server.trace[1].received - server.trace[0].last_byte
    assert gap >= 0.3
    assert fleet.status == "completed"


async def test_retry_after_seconds_and_5xx_are_retried(tmp_path: Path,
                                                       host: PluginHost) -> None:
    faults = (Fault.http_error(503, message="overloaded", headers={"Retry-After": "0.2"}),
              Fault.http_error(500), Fault.http_error(529, message="overloaded"))
    async with _server(*faults) as server:
        (row,) = (await run(tmp_path, host, [_entry(server)])).rows
    assert server.requests == 4
    assert (row["status"], row["retries"]) == ("passed", 3)
    assert server.trace[1].received - server.trace[0].last_byte >= 0.2


@pytest.mark.parametrize(("fault", "kind"), [
    (Fault.http_error(401, error_type="invalid_request_error", code="invalid_api_key",
                      message="Incorrect API key provided: " + KEY), "authentication"),
    (Fault.http_error(400, error_type="invalid_request_error", message="bad temperature"),
     "bad_request"),
    (Fault.http_error(400, error_type="invalid_request_error",
                      code="context_length_exceeded", message="maximum context length"),
     "context_length"),
    (Fault.http_error(404, code="model_not_found", message="no such model"), "bad_request"),
    (Fault.http_error(429, code="insufficient_quota", error_type="insufficient_quota",
                      message="You exceeded your current quota"), "rate_limited"),
    (Fault.malformed(), "malformed_response"),
])
async def test_errors_that_cannot_heal_are_tried_once(tmp_path: Path, host: PluginHost,
                                                      fault: Fault, kind: str) -> None:
    async with _server(fault) as server:
        (row,) = (await run(tmp_path, host, [_entry(server)])).rows
    assert server.requests == 1
    assert (row["status"], row["error_kind"], row["retries"]) == ("error", kind, 0)
    assert KEY not in row["error"]


async def test_retries_give_up_after_max_retries(tmp_path: Path, host: PluginHost) -> None:
    faults = [Fault.http_error(500)] * 5
    async with _server(*faults) as server:
        (row,) = (await run(tmp_path, host, [_entry(server, max_retries=2)])).rows
    assert server.requests == 3
    assert (row["status"], row["error_kind"], row["retries"]) == ("error", "transient", 2)


async def test_streaming_itl_comes_from_usage_not_chunk_count(tmp_path: Path,
                                                              host: PluginHost) -> None:
    # 16 tokens in chunks of 4, 40 ms apart: 4 chunks, 3 gaps = 120 ms between the first
    # and the last token, which is 8 ms per token over the 15 token gaps.
    async with _server(output_tokens=16, tokens_per_chunk=4, ttft_ms=30,
                       itl_ms=40) as server:
        (row,) = (await run(tmp_path, host, [_entry(server, stream=True)])).rows
    assert row["status"] == "passed"
    assert row["output_tokens"] == 16
    assert not row["tokens_estimated"]
    assert 120 / 15 <= row["itl_ms"] < 40  # per token (usage), not per chunk
    assert row["ttft_ms"] >= 30
    truth = server.trace[0]
    assert truth.ttft_s is not None
    assert row["ttft_ms"] >= truth.ttft_s * 1000


async def test_truncated_stream_and_error_in_stream_are_retried(tmp_path: Path,
                                                                host: PluginHost) -> None:
    faults = (Fault.truncated(after_chunks=2), Fault.stream_error(after_chunks=1))
    async with _server(*faults, output_tokens=4) as server:
        (row,) = (await run(tmp_path, host, [_entry(server, stream=True)])).rows
    assert server.requests == 3
    assert (row["status"], row["retries"]) == ("passed", 2)
    assert row["response"] == "Hello from the fake"  # no text from failed attempts


async def test_the_key_appears_in_no_error_log_or_artifact(
        tmp_path: Path, host: PluginHost, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    leaky = Fault.http_error(401, message=f"key {KEY} is not valid")
    stream_leak = Fault.stream_error(message=f"echo {KEY}", code="invalid_api_key",
                                     error_type="authentication_error")
    async with _server(leaky, stream_leak) as server:
        rows = (await run(tmp_path, host, [
            _entry(server), _entry(server, id="openai:fake-2", stream=True)])).rows
    assert {r["error_kind"] for r in rows} == {"authentication"}
    assert all("***" in r["error"] for r in rows)
    captured = capsys.readouterr()
    assert KEY not in caplog.text + captured.out + captured.err
    assert_secret_absent(tmp_path, KEY)
