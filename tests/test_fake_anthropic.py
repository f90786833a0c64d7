"""The fake vendor's Anthropic wire format: shapes of bodies, events and errors, request
validation, auth, faults and the seeded schedule, over real loopback HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from fleetbench.providerkit import SSEDecoder
from fleetbench.testing import FakeVendorConfig, FakeVendorServer, Fault

VERSION = {"anthropic-version": "2023-06-01"}
BODY = {"model": "claude-x", "max_tokens": 64, "system": "Be terse.",
        "messages": [{"role": "user", "content": "What is the capital of France?"}]}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as http:
        yield http


async def _post(client: httpx.AsyncClient, fake: FakeVendorServer, body: Any = None, *,
                headers: dict[str, str] | None = None, **extra: Any) -> httpx.Response:
    return await client.post(fake.base_url + "/v1/messages", json={**BODY, **extra}
                             if body is None else body,
                             headers=VERSION if headers is None else headers)  # fmt: skip


def _events(text: str) -> list[tuple[str, Any]]:
    """(event name, data) pairs; data is the raw text when it is not JSON."""
    decoder = SSEDecoder()
    pairs = decoder.feed(text.encode()) + decoder.close()
    out: list[tuple[str, Any]] = []
    for name, data in pairs:
        try:
            out.append((name, json.loads(data)))
        except ValueError:
            out.append((name, data.decode()))
    return out


async def test_a_message_has_text_blocks_usage_and_a_request_id(
        client: httpx.AsyncClient) -> None:
    async with FakeVendorServer("anthropic", answer="Paris is the capital.") as fake:
        whole = await _post(client, fake)
        capped = await _post(client, fake, max_tokens=2)
        assert fake.base_url == fake.url  # clients add /v1/messages themselves
    assert whole.status_code == 200
    assert whole.headers["request-id"].startswith("req_")
    assert whole.json() == {
        "id": "msg_fake-1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "text", "text": "Paris is the capital."}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 9, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0, "output_tokens": 4},
    }  # (30 prompt + 9 system characters) / 4 = 9 input tokens
    assert (capped.json()["content"], capped.json()["stop_reason"]) == \
        ([{"type": "text", "text": "Paris is"}], "max_tokens")


async def test_an_empty_answer_has_no_content_blocks(client: httpx.AsyncClient) -> None:
    async with FakeVendorServer("anthropic", output_tokens=0) as fake:
        answer = (await _post(client, fake)).json()
    assert (answer["content"], answer["usage"]["output_tokens"]) == ([], 0)


async def test_a_stream_has_the_vendors_event_sequence(client: httpx.AsyncClient) -> None:
    async with FakeVendorServer("anthropic", output_tokens=5, tokens_per_chunk=2) as fake:
        response = await _post(client, fake, stream=True)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = _events(response.text)
    assert [name for name, _ in events] == [
        "message_start", "content_block_start", "ping", "content_block_delta",
        "content_block_delta", "content_block_delta", "content_block_stop", "message_delta",
        "message_stop"]
    assert all(data["type"] == name for name, data in events)
    start = events[0][1]["message"]
    assert (start["id"], start["model"], start["content"], start["stop_reason"]) == \
        ("msg_fake-1", "claude-x", [], None)
    assert start["usage"]["input_tokens"] == 9
    assert start["usage"]["output_tokens"] == 1  # a placeholder, as the vendor sends
    assert events[1][1]["content_block"] == {"type": "text", "text": ""}
    deltas = [data["delta"] for name, data in events if name == "content_block_delta"]
    assert deltas == [{"type": "text_delta", "text": t}
                      for t in ("Hello from", " the fake", " vendor")]
    assert events[-2][1] == {"type": "message_delta", "usage": {"output_tokens": 5},
                             "delta": {"stop_reason": "end_turn", "stop_sequence": None}}


async def test_the_opening_events_go_out_before_ttft_elapses(
        client: httpx.AsyncClient) -> None:
    async with FakeVendorServer("anthropic", ttft_ms=2000) as fake:
        url = fake.base_url + "/v1/messages"
        async with client.stream("POST", url, json={**BODY, "stream": True},
                                 headers=VERSION) as response:  # fmt: skip
            decoder, names = SSEDecoder(), []
            async for raw in response.aiter_bytes():
                names += [name for name, _ in decoder.feed(raw)]
                if len(names) >= 3:
                    break
            assert names == ["message_start", "content_block_start", "ping"]
            assert fake.trace[0].first_token is None  # no token written yet


@pytest.mark.parametrize(("change", "headers", "message"), [
    ({}, {}, "anthropic-version: header is required"),
    ({"max_tokens": None}, VERSION, "max_tokens: Field required"),
    ({"model": None}, VERSION, "model: Field required"),
    ({"messages": []}, VERSION, "messages: Field required"),
    ({"messages": [{"role": "system", "content": "x"}]}, VERSION,
     "messages.0.role: Unexpected role 'system'"),
    ({"stop_sequences": "END"}, VERSION, "stop_sequences"),
])
async def test_requests_the_vendor_would_refuse_get_400(
        client: httpx.AsyncClient, change: dict[str, Any], headers: dict[str, str],
        message: str) -> None:
    body = {k: v for k, v in {**BODY, **change}.items() if v is not None}
    async with FakeVendorServer("anthropic") as fake:
        response = await _post(client, fake, body, headers=headers)
        not_json = await client.post(fake.base_url + "/v1/messages", content=b"{",
                                     headers=VERSION)
    assert response.status_code == 400
    error = response.json()
    assert (error["type"], error["error"]["type"]) == ("error", "invalid_request_error")
    assert error["error"]["message"].startswith(message)
    assert not_json.status_code == 400


async def test_the_key_must_come_as_x_api_key(client: httpx.AsyncClient) -> None:
    async with FakeVendorServer("anthropic", api_key="sk-ant-fake") as fake:
        missing = await _post(client, fake)
        bearer = await _post(client, fake, headers={**VERSION,
                                                    "Authorization": "Bearer sk-ant-fake"})
        good = await _post(client, fake, headers={**VERSION, "x-api-key": "sk-ant-fake"})
    assert [missing.status_code, bearer.status_code, good.status_code] == [401, 401, 200]
    assert missing.json()["error"] == {"type": "authentication_error",
                                       "message": "invalid x-api-key"}


async def test_unknown_paths_get_the_vendors_404(client: httpx.AsyncClient) -> None:
    async with FakeVendorServer("anthropic") as fake:
        response = await client.post(fake.url + "/v1/chat/completions", json=BODY)
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"
    assert fake.requests == 0  # not a chat request


@pytest.mark.parametrize(("status", "error_type"), [
    (400, "invalid_request_error"), (401, "authentication_error"), (402, "billing_error"),
    (403, "permission_error"), (404, "not_found_error"), (413, "request_too_large"),
    (429, "rate_limit_error"), (500, "api_error"), (503, "api_error"),
    (504, "timeout_error"), (529, "overloaded_error"), (418, "invalid_request_error"),
])
async def test_injected_http_errors_use_the_vendors_types(
        client: httpx.AsyncClient, status: int, error_type: str) -> None:
    async with FakeVendorServer("anthropic", faults=(Fault.http_error(status),)) as fake:
        response = await _post(client, fake)
    assert response.status_code == status
    body = response.json()
    assert body["type"] == "error"
    assert body["error"] == {"type": error_type, "message": "injected fault"}
    assert body["request_id"].startswith("req_")


async def test_rate_limit_headers_and_the_spend_cap_code_reach_the_client(
        client: httpx.AsyncClient) -> None:
    hints = {"retry-after": "3", "anthropic-ratelimit-requests-remaining": "0",
             "anthropic-ratelimit-requests-reset": "2030-01-01T00:00:03Z"}
    faults = (Fault.rate_limited(hints),
              Fault.http_error(429, code="enforced_spend_limit_reached", message="cap"))
    async with FakeVendorServer("anthropic", faults=faults) as fake:
        limited = await _post(client, fake)
        capped = await _post(client, fake)
    assert {k: limited.headers[k] for k in hints} == hints
    assert capped.json()["error"] == {"type": "rate_limit_error", "message": "cap",
                                      "details": {"error_code": "enforced_spend_limit_reached"}}


async def test_stream_faults_keep_the_opening_events(client: httpx.AsyncClient) -> None:
    faults = (Fault.stream_error(after_chunks=1, status=529, message="Overloaded"),
              Fault.malformed(after_chunks=2), Fault.truncated(after_chunks=1))
    async with FakeVendorServer("anthropic", faults=faults) as fake:
        overloaded, malformed, truncated = [
            _events((await _post(client, fake, stream=True)).text) for _ in faults]
    assert [n for n, _ in overloaded] == ["message_start", "content_block_start", "ping",
                                          "content_block_delta", "error"]
    assert overloaded[-1][1]["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    assert malformed[-1][0] == "content_block_delta"
    assert isinstance(malformed[-1][1], str)  # its data is not JSON
    assert [n for n, _ in truncated][-1] == "content_block_delta"  # no message_stop


async def test_the_seeded_schedule_is_served_the_same_way_twice(
        client: httpx.AsyncClient) -> None:
    mix = (Fault.http_error(529), Fault.rate_limited({"retry-after": "1"}))
    config = FakeVendorConfig(fault_rate=0.4, fault_mix=mix, seed=3)
    expected = [f.status if (f := config.fault_for(n)) else 200 for n in range(1, 31)]
    async with FakeVendorServer("anthropic", config=config) as fake:
        first = [(await _post(client, fake)).status_code for _ in range(30)]
        fake.reset()
        again = [(await _post(client, fake)).status_code for _ in range(30)]
    assert first == again == expected
    assert {200, 429, 529} <= set(first)
