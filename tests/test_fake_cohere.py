"""The fake Cohere's wire format itself, spoken to with plain HTTP: bodies, streamed events,
error bodies, faults, auth, request checks and the seeded fault schedule."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from fleetbench._http import create_http_client
from fleetbench.providerkit import SSEDecoder
from fleetbench.testing import FakeVendorServer, Fault
from fleetbench.testing._cohere import TEMPLATE_TOKENS

KEY = "co-fake-key"
BODY = {"model": "command-a-03-2025",
        "messages": [{"role": "system", "content": "Be terse."},
                     {"role": "user", "content": "Hello, fake Cohere! How are you?"}]}
HEADERS = {"Authorization": f"Bearer {KEY}"}
PROMPT_TOKENS = len("Be terse.Hello, fake Cohere! How are you?") // 4


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with create_http_client() as shared:
        yield shared


def chat_url(server: FakeVendorServer) -> str:
    return server.base_url + "/v2/chat"


def events(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    """``(event name, JSON)`` of each SSE event; the name must equal the JSON ``type``."""
    decoder = SSEDecoder()
    parsed = [(name, json.loads(data)) for name, data in [*decoder.feed(body), *decoder.close()]]
    assert all(name == data["type"] for name, data in parsed), parsed
    return parsed


async def test_chat_answers_in_cohere_shape(client: httpx.AsyncClient) -> None:
    async with FakeVendorServer("cohere", api_key=KEY, output_tokens=4) as server:
        assert server.base_url == server.url  # clients add /v2/chat themselves
        answer = await client.post(chat_url(server), json=BODY, headers=HEADERS)
        capped = await client.post(chat_url(server), json={**BODY, "max_tokens": 2},
                                   headers=HEADERS)  # fmt: skip
    assert answer.status_code == 200
    assert answer.json() == {
        "id": "fake-1", "finish_reason": "COMPLETE",
        "message": {"role": "assistant",
                    "content": [{"type": "text", "text": "Hello from the fake"}]},
        "usage": {"billed_units": {"input_tokens": PROMPT_TOKENS, "output_tokens": 4},
                  "tokens": {"input_tokens": PROMPT_TOKENS + TEMPLATE_TOKENS,
                             "output_tokens": 4}},
    }  # no model echo, like the real API
    payload = capped.json()
    assert payload["finish_reason"] == "MAX_TOKENS"
    assert payload["message"]["content"][0]["text"] == "Hello from"
    assert payload["usage"]["billed_units"]["output_tokens"] == 2


async def test_stream_is_named_events_from_message_start_to_message_end(
        client: httpx.AsyncClient) -> None:
    async with FakeVendorServer("cohere", api_key=KEY, output_tokens=5,
                                tokens_per_chunk=2) as server:  # fmt: skip
        answer = await client.post(chat_url(server), json={**BODY, "stream": True},
                                   headers=HEADERS)  # fmt: skip
    assert answer.headers["content-type"] == "text/event-stream"
    parsed = events(answer.content)
    assert [name for name, _ in parsed] == ["message-start", "content-start",
                                            *["content-delta"] * 3, "content-end",
                                            "message-end"]  # fmt: skip
    start, content = parsed[0][1], parsed[1][1]
    assert (start["id"], start["delta"]["message"]["role"]) == ("fake-1", "assistant")
    assert content["delta"]["message"]["content"] == {"type": "text", "text": ""}
    texts = [data["delta"]["message"]["content"]["text"] for name, data in parsed
             if name == "content-delta"]  # fmt: skip
    assert texts == ["Hello from", " the fake", " vendor"]
    assert parsed[-1][1]["delta"] == {
        "finish_reason": "COMPLETE",
        "usage": {"billed_units": {"input_tokens": PROMPT_TOKENS, "output_tokens": 5},
                  "tokens": {"input_tokens": PROMPT_TOKENS + TEMPLATE_TOKENS,
                             "output_tokens": 5}}}


async def test_the_opening_events_precede_the_first_token(client: httpx.AsyncClient) -> None:
    # message-start and content-start are written with the headers; the first text only
    # after TTFT: when they arrive, the server has not written a token yet.
    async with FakeVendorServer("cohere", ttft_ms=300, output_tokens=2) as server, \
            client.stream("POST", chat_url(server), json={**BODY, "stream": True}) as answer:
        decoder, opening = SSEDecoder(), []
        async for raw in answer.aiter_bytes():
            opening += decoder.feed(raw)
            if len(opening) >= 2:
                break
        assert [name for name, _ in opening[:2]] == ["message-start", "content-start"]
        assert server.trace[0].first_token is None


async def test_auth_is_a_bearer_key_and_errors_are_flat_messages(
        client: httpx.AsyncClient) -> None:
    async with FakeVendorServer("cohere", api_key=KEY) as server:
        missing = await client.post(chat_url(server), json=BODY)
        wrong = await client.post(chat_url(server), json=BODY,
                                  headers={"Authorization": "Bearer nope"})  # fmt: skip
        lower = await client.post(chat_url(server), json=BODY,
                                  headers={"Authorization": f"bearer {KEY}"})  # fmt: skip
        elsewhere = await client.post(server.url + "/v1/chat", json=BODY, headers=HEADERS)
    assert (missing.status_code, wrong.status_code) == (401, 401)
    assert missing.json() == {"id": "fake-error-401", "message": "invalid api token"}
    assert lower.status_code == 200  # the scheme is case-insensitive, as with the real API
    assert elsewhere.status_code == 404
    assert elsewhere.json()["message"] == "/v1/chat not found"
    assert server.requests == 3  # the unknown path is not a chat request


@pytest.mark.parametrize(("body", "message"), [
    ("not json", "must be a JSON object"),
    ({"messages": BODY["messages"]}, "model must be specified"),
    ({"model": "m", "messages": []}, "messages must not be empty"),
    ({**BODY, "top_p": 0.5}, "parameter top_p is not a valid field"),
    ({**BODY, "stop": ["x"]}, "parameter stop is not a valid field"),
    ({**BODY, "max_completion_tokens": 5}, "parameter max_completion_tokens is not"),
    ({**BODY, "p": 1.0}, "p must be between 0.01 and 0.99"),
    ({**BODY, "stop_sequences": list("abcdef")}, "at most 5 strings"),
])
async def test_requests_cohere_would_refuse_are_400s(client: httpx.AsyncClient, body: Any,
                                                     message: str) -> None:
    async with FakeVendorServer("cohere") as server:
        content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        answer = await client.post(chat_url(server), content=content)
    assert answer.status_code == 400
    assert message in answer.json()["message"]


async def test_http_faults_keep_their_headers_and_cohere_body(
        client: httpx.AsyncClient) -> None:
    faults = (Fault.rate_limited({"retry-after": "2"}), Fault.http_error(503, message="down"))
    async with FakeVendorServer("cohere", faults=faults) as server:
        limited = await client.post(chat_url(server), json=BODY)
        down = await client.post(chat_url(server), json={**BODY, "stream": True})
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "2")
    assert limited.json() == {"id": "fake-error-429",
                              "message": "Rate limit reached for requests"}
    assert (down.status_code, down.json()["message"]) == (503, "down")


async def test_stream_faults_failed_generation_malformed_event_and_truncation(
        client: httpx.AsyncClient) -> None:
    faults = (Fault.stream_error(after_chunks=1, message="internal error"),
              Fault.malformed(after_chunks=1), Fault.truncated(after_chunks=2))
    async with FakeVendorServer("cohere", faults=faults, output_tokens=4) as server:
        failed, malformed, truncated = [
            (await client.post(chat_url(server), json={**BODY, "stream": True})).content
            for _ in faults]
    *_, end = events(failed)
    assert end == ("message-end", {"type": "message-end",
                                   "delta": {"finish_reason": "ERROR",
                                             "error": "internal error"}})
    with pytest.raises(json.JSONDecodeError):
        events(malformed)
    names = [name for name, _ in events(truncated)]
    assert names == ["message-start", "content-start", "content-delta", "content-delta"]


async def test_the_seeded_fault_schedule_repeats(client: httpx.AsyncClient) -> None:
    mix = (Fault.http_error(500), Fault.rate_limited())
    async with FakeVendorServer("cohere", fault_rate=0.5, fault_mix=mix, seed=11) as server:
        runs = []
        for _ in range(2):
            server.reset()
            runs.append([(await client.post(chat_url(server), json=BODY)).status_code
                         for _ in range(24)])  # fmt: skip
    assert runs[0] == runs[1]
    assert set(runs[0]) == {200, 429, 500}
