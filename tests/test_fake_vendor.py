"""The fake vendor framework itself (vendor-neutral parts, exercised through the OpenAI wire
format): the seeded fault schedule, the fixed-answer knob, config round trips, the child
process and ``fleetbench mock-server``. Each vendor's wire format has its own test module."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import httpx
import pytest

from fleetbench.testing import (
    VENDORS,
    FakeVendorConfig,
    FakeVendorProcess,
    FakeVendorServer,
    Fault,
    assert_secret_absent,
    run_fleet,
)

CHAT = {"model": "m", "messages": [{"role": "user", "content": "What is the capital of France?"}]}


def test_every_documented_vendor_has_a_wire_format() -> None:
    assert set(VENDORS) == {"openai", "anthropic", "cohere", "gemini"}
    with pytest.raises(ValueError, match="unknown vendor 'mistral'; known: openai"):
        FakeVendorServer("mistral")


def test_seeded_schedule_is_deterministic_and_follows_the_rate() -> None:
    mix = (Fault.http_error(500), Fault.rate_limited())
    config = FakeVendorConfig(fault_rate=0.3, fault_mix=mix, seed=7)
    first = [config.fault_for(n) for n in range(1, 2001)]
    again = [FakeVendorConfig(fault_rate=0.3, fault_mix=mix, seed=7).fault_for(n)
             for n in range(1, 2001)]
    other = [FakeVendorConfig(fault_rate=0.3, fault_mix=mix, seed=8).fault_for(n)
             for n in range(1, 2001)]
    assert first == again
    assert first != other
    share = sum(f is not None for f in first) / len(first)
    assert 0.25 < share < 0.35
    assert {f.status for f in first if f is not None} == {500, 429}


def test_scripted_faults_come_first_then_the_schedule() -> None:
    script = (Fault.disconnect(), Fault.http_error(503))
    config = FakeVendorConfig(faults=script, fault_rate=1.0, fault_mix=(Fault.http_error(500),))
    assert [config.fault_for(n) for n in (1, 2, 3)] == [*script, Fault.http_error(500)]


@pytest.mark.parametrize(("changes", "message"), [
    ({"fault_rate": 0.5}, "fault_rate needs a fault_mix"),
    ({"fault_rate": 1.5, "fault_mix": (Fault.http_error(500),)}, "between 0 and 1"),
    ({"latency_ms": -1}, "delays must be >= 0"),
    ({"tokens_per_chunk": 0}, "tokens_per_chunk >= 1"),
])
def test_bad_knobs_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FakeVendorConfig(**changes)


def test_config_round_trips_through_json() -> None:
    config = FakeVendorConfig(latency_ms=5, answer="x y", seed=3, fault_rate=0.1,
                              fault_mix=(Fault.rate_limited({"retry-after": "2"}),),
                              faults=(Fault.truncated(after_chunks=2),))
    assert FakeVendorConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


async def test_fixed_answer_is_capped_by_the_request_and_streamed_in_chunks() -> None:
    async with FakeVendorServer(answer="one two three four five", tokens_per_chunk=2) as fake, \
            httpx.AsyncClient() as client:  # fmt: skip
        url = fake.base_url + "/chat/completions"
        whole = (await client.post(url, json=CHAT)).json()
        capped = (await client.post(url, json={**CHAT, "max_tokens": 2})).json()
        stream = await client.post(url, json={**CHAT, "stream": True})
    assert whole["choices"][0]["message"]["content"] == "one two three four five"
    assert whole["usage"]["completion_tokens"] == 5
    assert capped["choices"][0] == {"index": 0, "finish_reason": "length",
                                    "message": {"role": "assistant", "content": "one two"}}
    deltas = [json.loads(line[6:])["choices"][0]["delta"].get("content")
              for line in stream.text.splitlines()
              if line.startswith("data: {") and '"content"' in line]
    assert deltas == ["one two", " three four", " five"]
    assert [entry.completion_tokens for entry in fake.trace] == [5, 2, 5]


async def test_faults_follow_the_schedule_at_the_server() -> None:
    mix = (Fault.http_error(500),)
    config = FakeVendorConfig(fault_rate=0.5, fault_mix=mix, seed=11)
    expected = [500 if config.fault_for(n) else 200 for n in range(1, 21)]
    async with FakeVendorServer(config=config) as fake, httpx.AsyncClient() as client:
        seen = [(await client.post(fake.base_url + "/chat/completions", json=CHAT)).status_code
                for _ in range(20)]
    assert seen == expected
    assert {500, 200} <= set(seen)


async def test_received_is_when_the_first_bytes_arrived_not_when_a_handler_started() -> None:
    """The loop is busy at the start of every pass (a task blocking, then yielding): aiohttp
    starts the handler passes after the bytes arrived, so with no latency the server's own
    delay shows as latency when ``received`` is the arrival, as it must (the client is not
    to blame for it)."""
    block_s = 0.025
    body = json.dumps(CHAT).encode()
    async with FakeVendorServer(latency_ms=0) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body), body))  # fmt: skip
        for _ in range(6):  # a handle scheduled in the previous pass runs before any read
            await asyncio.sleep(0)
            time.sleep(block_s)  # noqa: ASYNC251 - blocking the loop on purpose
        status_line = await reader.readline()
        writer.close()
        await writer.wait_closed()
    assert status_line.startswith(b"HTTP/1.1 200")
    (entry,) = server.trace
    assert entry.latency_s is not None
    assert entry.latency_s >= block_s * 0.9


def test_process_serves_the_configured_vendor_and_answer() -> None:
    with FakeVendorProcess(FakeVendorConfig(answer="Paris."), vendor="openai") as fake:
        response = httpx.post(fake.base_url + "/chat/completions", json=CHAT, timeout=10)
        snapshot = fake.fetch()
    assert response.json()["choices"][0]["message"]["content"] == "Paris."
    assert snapshot["vendor"] == "openai"
    assert snapshot["requests"] == 1


def _post(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            status: int = answer.status
    except urllib.error.HTTPError as error:
        status = error.code
    return status


def test_mock_server_command_serves_faults_on_its_seeded_schedule(tmp_path: Any) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("sk-mock\n")
    argv = [sys.executable, "-m", "fleetbench", "mock-server", "--vendor", "openai",
            "--fault-rate", "0.5", "--fault", "500", "--seed", "5",
            "--api-key-file", str(key_file)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the server listens (or exits)
        assert "base_url: http://127.0.0.1:" in line, line
        base_url = line.rsplit(" ", 1)[1].strip()
        url = base_url + "/chat/completions"
        assert _post(url, CHAT) == 401  # the key is demanded
        auth = {"Authorization": "Bearer sk-mock"}
        seen = [_post(url, CHAT, auth) for _ in range(10)]
        mix = (Fault.http_error(500),)
        schedule = FakeVendorConfig(fault_rate=0.5, fault_mix=mix, seed=5)
        assert seen == [500 if schedule.fault_for(n) else 200 for n in range(2, 12)]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0


async def test_run_fleet_drives_a_provider_through_the_engine(tmp_path: Any) -> None:
    key = "sk-run-fleet-SECRET"
    faults = (Fault.rate_limited({"retry-after-ms": "10"}),)
    async with FakeVendorServer(answer="Hello there", faults=faults, api_key=key) as fake:
        run = await run_fleet(
            tmp_path, [{"id": "openai:fake", "base_url": fake.base_url, "api_key_env": "K"}],
            prompts=("Say hello", "Greet me"), env={"K": key})
    assert run.status == "completed"
    assert [row["status"] for row in run.rows] == ["passed", "passed"]
    assert sum(row["retries"] for row in run.rows) == 1  # the 429, retried
    assert fake.requests == 3
    assert run.summary.fleet.total == 2
    assert_secret_absent(tmp_path, key)
    with pytest.raises(AssertionError, match="contains the secret"):
        assert_secret_absent(tmp_path, "Hello there")  # the answers are stored
