"""The fake Gemini's wire format itself, spoken to with plain HTTP: bodies, streamed events,
error envelopes, faults, auth, request checks and the seeded fault schedule."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from fleetbench._http import create_http_client
from fleetbench.testing import FakeVendorServer, Fault

KEY = "AIza-fake-key"
MODEL = "gemini-2.0-flash"
BODY = {"systemInstruction": {"parts": [{"text": "Be terse."}]},
        "contents": [{"role": "user", "parts": [{"text": "Hello, fake Gemini! How are you?"}]}],
        "generationConfig": {"maxOutputTokens": 4, "temperature": 0}}
HEADERS = {"x-goog-api-key": KEY}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with create_http_client() as shared:
        yield shared


def url(server: FakeVendorServer, method: str = "generateContent", model: str = MODEL) -> str:
    return f"{server.base_url}/v1beta/models/{model}:{method}"


def stream_url(server: FakeVendorServer) -> str:
    return url(server, "streamGenerateContent") + "?alt=sse"


def events(text: str) -> list[dict[str, Any]]:
    """The JSON of each ``data:`` event; fails on anything else (Gemini sends nothing else)."""
    blocks = [b for b in text.split("\n\n") if b]
    assert all(b.startswith("data: ") and "\n" not in b for b in blocks), blocks
    return [json.loads(b.removeprefix("data: ")) for b in blocks]


async def test_generate_content_answers_in_gemini_shape(client: httpx.AsyncClient) -> None:
    async with FakeVendorServer("gemini", api_key=KEY) as server:
        assert server.base_url == server.url  # clients add /v1beta themselves
        answer = await client.post(url(server), json=BODY, headers=HEADERS)
    assert answer.status_code == 200
    payload = answer.json()
    assert payload["candidates"] == [{"content": {"parts": [{"text": "Hello from the fake"}],
                                                  "role": "model"},
                                      "finishReason": "MAX_TOKENS", "index": 0}]
    usage = payload["usageMetadata"]
    assert usage["candidatesTokenCount"] == 4
    assert usage["promptTokenCount"] == len("Be terse.Hello, fake Gemini! How are you?") // 4
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + 4
    assert (payload["modelVersion"], payload["responseId"]) == (MODEL, "fake-1")


async def test_stream_is_data_events_ending_with_finish_and_usage_and_no_terminator(
        client: httpx.AsyncClient) -> None:
    async with FakeVendorServer("gemini", output_tokens=5, tokens_per_chunk=2) as server:
        answer = await client.post(stream_url(server), json={"contents": BODY["contents"]})
    assert answer.headers["content-type"] == "text/event-stream"
    chunks = events(answer.text)
    texts = [c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks]
    assert texts == ["Hello from", " the fake", " vendor", ""]
    assert all("finishReason" not in c["candidates"][0] for c in chunks[:-1])
    last = chunks[-1]
    assert last["candidates"][0]["finishReason"] == "STOP"
    assert last["usageMetadata"]["candidatesTokenCount"] == 5
    assert {c["responseId"] for c in chunks} == {"fake-1"}
    assert "[DONE]" not in answer.text


async def test_auth_by_header_or_query_and_google_errors(client: httpx.AsyncClient) -> None:
    async with FakeVendorServer("gemini", api_key=KEY) as server:
        by_query = await client.post(url(server) + f"?key={KEY}", json=BODY)
        wrong = await client.post(url(server), json=BODY, headers={"x-goog-api-key": "nope"})
        bearer = await client.post(url(server), json=BODY,
                                   headers={"Authorization": f"Bearer {KEY}"})
        unknown = await client.post(f"{server.url}/v1beta/models/{MODEL}:countTokens",
                                    json=BODY, headers=HEADERS)
    assert by_query.status_code == 200
    for refused in (wrong, bearer):
        assert refused.status_code == 400
        error = refused.json()["error"]
        assert (error["code"], error["status"]) == (400, "INVALID_ARGUMENT")
        assert error["message"].startswith("API key not valid")
        assert error["details"][0]["reason"] == "API_KEY_INVALID"
    assert unknown.status_code == 404
    assert unknown.json()["error"]["status"] == "NOT_FOUND"


@pytest.mark.parametrize(("body", "query", "message"), [
    ({**BODY, "max_tokens": 3}, "", 'Unknown name "max_tokens"'),
    ({**BODY, "generationConfig": {"max_tokens": 3}}, "",
     "Unknown name \"max_tokens\" at 'generation_config'"),
    ({"contents": []}, "", "contents is not specified"),
    ({"contents": [{"role": "user", "text": "Hi"}]}, "", "contents is not specified"),
    ({**BODY, "generationConfig": [1]}, "", "generation_config"),
    ("not json", "", "Invalid JSON payload"),
    (BODY, "?alt=json", "alt=sse"),
])
async def test_requests_gemini_would_reject_are_400s(client: httpx.AsyncClient, body: Any,
                                                     query: str, message: str) -> None:
    async with FakeVendorServer("gemini") as server:
        method = "streamGenerateContent" if query else "generateContent"
        answer = await client.post(url(server, method) + query, content=json.dumps(body))
    assert answer.status_code == 400
    assert message in answer.json()["error"]["message"]


async def test_snake_case_fields_are_accepted_like_protobuf_json(
        client: httpx.AsyncClient) -> None:
    body = {"contents": BODY["contents"], "system_instruction": {"parts": [{"text": "x"}]},
            "generation_config": {"max_output_tokens": 2, "top_k": 3}}
    async with FakeVendorServer("gemini", capture=True) as server:
        answer = await client.post(url(server, model="gemini%2Dx"), json=body)
    assert answer.json()["usageMetadata"]["candidatesTokenCount"] == 2
    assert answer.json()["modelVersion"] == "gemini-x"  # the model comes from the path
    assert server.captured[0].path == "/v1beta/models/gemini-x:generateContent"


async def test_rate_limit_retry_hint_moves_into_the_body(client: httpx.AsyncClient) -> None:
    faults = (Fault.rate_limited({"retry-after": "2", "x-other": "kept"}),
              Fault.http_error(429, code="GenerateRequestsPerDayPerProjectPerModel"),
              Fault.http_error(503, message="The model is overloaded."))
    async with FakeVendorServer("gemini", faults=faults) as server:
        limited, daily, overloaded = [await client.post(url(server), json=BODY)
                                      for _ in faults]
    assert "retry-after" not in limited.headers  # Gemini hints in the body, not a header
    assert limited.headers["x-other"] == "kept"
    error = limited.json()["error"]
    assert (error["code"], error["status"]) == (429, "RESOURCE_EXHAUSTED")
    assert error["details"] == [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                 "retryDelay": "2s"}]
    violation = daily.json()["error"]["details"][0]
    assert violation["@type"].endswith("QuotaFailure")
    assert violation["violations"][0]["quotaId"] == "GenerateRequestsPerDayPerProjectPerModel"
    assert overloaded.json() == {"error": {"code": 503, "message": "The model is overloaded.",
                                           "status": "UNAVAILABLE"}}


async def test_stream_faults_error_event_malformed_event_and_truncation(
        client: httpx.AsyncClient) -> None:
    faults = (Fault.stream_error(after_chunks=1, status=500, message="Internal error"),
              Fault.malformed(after_chunks=1), Fault.truncated(after_chunks=2))
    async with FakeVendorServer("gemini", output_tokens=4, faults=faults) as server:
        failed, malformed, truncated = [
            (await client.post(stream_url(server), json=BODY)).text for _ in faults]
    assert events(failed)[-1] == {"error": {"code": 500, "message": "Internal error",
                                            "status": "INTERNAL"}}
    last = malformed.split("\n\n")[-2]
    with pytest.raises(json.JSONDecodeError):
        json.loads(last.removeprefix("data: "))
    cut = events(truncated)
    assert len(cut) == 2
    assert all("finishReason" not in c["candidates"][0] and "usageMetadata" not in c
               for c in cut)  # nothing tells the client the answer is complete
    assert [e.status for e in server.trace] == [200, 200, 0]


async def test_the_seeded_fault_schedule_repeats(client: httpx.AsyncClient) -> None:
    mix = (Fault.http_error(503), Fault.rate_limited({"retry-after": "1"}))

    async def statuses(seed: int) -> list[int]:
        async with FakeVendorServer("gemini", fault_rate=0.5, fault_mix=mix,
                                    seed=seed) as server:
            return [(await client.post(url(server), json=BODY)).status_code
                    for _ in range(24)]

    first, again, other = await statuses(7), await statuses(7), await statuses(8)
    assert first == again
    assert first != other
    assert {200, 429, 503} <= set(first)
