"""The provider against the fake Cohere over real loopback HTTP (no mocks)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp import web
from cohere_support import KEY, MODEL, config, fake, request
from fleetbench_cohere import CohereProvider

from fleetbench.errors import (
    AuthenticationError,
    BadRequestError,
    ContextLengthError,
    MalformedResponseError,
    ProviderError,
    RateLimitedError,
    TransientProviderError,
)
from fleetbench.plugin import ProviderConfig
from fleetbench.records import GenerationSettings, StreamChunk
from fleetbench.testing import Fault, ProviderContract, local_server
from fleetbench.testing._cohere import TEMPLATE_TOKENS

SETTINGS = GenerationSettings(temperature=0.0, max_tokens=8, top_p=1.0, stop=("END",),
                              system="Be terse.", params={"seed": 3})


async def collect(provider: CohereProvider, stream: bool = True) -> list[StreamChunk]:
    return [chunk async for chunk in provider.stream(request(stream=stream))]


def _contract(http: httpx.AsyncClient) -> ProviderContract:
    """The plugin under the provider contract's checks, with the test's client."""
    return ProviderContract("cohere", lambda url: CohereProvider(config(url), http))


async def test_generate_sends_the_chat_request_and_reads_the_answer(
        http: httpx.AsyncClient) -> None:
    async with fake(output_tokens=5, capture=True) as server:
        provider = CohereProvider(config(server.base_url, client_name="fleetbench-test"), http)
        response = await provider.generate(request(settings=SETTINGS))
    assert response.text == "Hello from the fake vendor"
    assert response.usage is not None
    assert response.usage.output_tokens == 5
    assert response.usage.input_tokens > 0
    assert (response.finish_reason, response.response_id) == ("stop", "fake-1")
    sent = server.captured[0]
    assert sent.path == "/v2/chat"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["x-client-name"] == "fleetbench-test"
    assert sent.body == {
        "model": MODEL,
        "messages": [{"role": "system", "content": "Be terse."},
                     {"role": "user", "content": "Say hello"}],
        "temperature": 0.0, "p": 0.99, "stop_sequences": ["END"], "max_tokens": 8, "seed": 3,
    }  # never `expected`, never the plugin's own options


async def test_usage_from_chooses_billed_or_processed_tokens(http: httpx.AsyncClient) -> None:
    async with fake(output_tokens=4) as server:
        billed = await CohereProvider(config(server.base_url), http).generate(request())
        processed = await CohereProvider(config(server.base_url, usage_from="tokens"),
                                         http).generate(request())  # fmt: skip
    assert billed.usage is not None
    assert processed.usage is not None
    assert processed.usage.input_tokens == billed.usage.input_tokens + TEMPLATE_TOKENS
    assert processed.usage.output_tokens == billed.usage.output_tokens == 4


async def test_streaming_yields_each_delta_then_usage_from_message_end(
        http: httpx.AsyncClient) -> None:
    async with fake(output_tokens=12, tokens_per_chunk=4, ttft_ms=5, itl_ms=5,
                    capture=True) as server:  # fmt: skip
        chunks = await collect(CohereProvider(config(server.base_url), http))
    texts = [c.text for c in chunks if c.text]
    assert len(texts) == 3  # 12 tokens in chunks of 4: three deltas, yielded one by one
    assert "".join(texts) == "Hello from the fake vendor, one token at a timeHello"
    final = chunks[-1]
    assert final.text == ""
    assert final.usage is not None
    assert final.usage.output_tokens == 12
    assert (final.finish_reason, final.response_id) == ("stop", "fake-1")
    assert server.captured[0].body["stream"] is True


async def test_the_first_token_is_the_first_text_delta_not_the_opening_events(
        http: httpx.AsyncClient) -> None:
    # The fake writes message-start and content-start (empty text) with the headers and
    # the first text 150 ms later: nothing may be yielded before that text.
    async with fake(output_tokens=3, ttft_ms=150, itl_ms=0) as server:
        provider = CohereProvider(config(server.base_url), http)
        arrivals: list[tuple[float, StreamChunk]] = []
        async for chunk in provider.stream(request(stream=True)):
            arrivals.append((time.perf_counter(), chunk))
    truth = server.trace[0]
    assert truth.first_token is not None
    first_at, first = arrivals[0]
    assert first.text == "Hello"  # the first chunk the executor sees carries text
    assert first_at >= truth.first_token  # …and it came after the server wrote that text
    assert first_at - truth.received >= 0.15


async def test_max_tokens_cut_is_reported_as_length(http: httpx.AsyncClient) -> None:
    async with fake(output_tokens=10) as server:
        provider = CohereProvider(config(server.base_url), http)
        settings = GenerationSettings(max_tokens=2)
        whole = await provider.generate(request(settings=settings))
        chunks = [c async for c in provider.stream(request(stream=True, settings=settings))]
    assert (whole.text, whole.finish_reason) == ("Hello from", "length")
    assert chunks[-1].finish_reason == "length"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.output_tokens == 2


@pytest.mark.parametrize(("fault", "kind", "text"), [
    (Fault.http_error(401, message="invalid api token " + KEY), AuthenticationError,
     "HTTP 401"),
    (Fault.http_error(498, message="invalid token"), AuthenticationError, "HTTP 498"),
    (Fault.http_error(400, message="too many tokens: total number of tokens in the prompt "
                                   "cannot exceed 4081 - received 4292."),
     ContextLengthError, "too many tokens"),
    (Fault.http_error(404, message="model 'nope' not found"), BadRequestError, "not found"),
    (Fault.rate_limited({"retry-after-ms": "300"}), RateLimitedError, "Rate limit"),
    (Fault.http_error(503, message="service unavailable"), TransientProviderError,
     "unavailable"),
    (Fault.malformed(), MalformedResponseError, "not valid JSON"),
    (Fault.stream_error(message="internal error"), TransientProviderError,
     "generation failed (ERROR): internal error"),
])
@pytest.mark.parametrize("stream", [False, True])
async def test_failures_raise_the_matching_error(http: httpx.AsyncClient, fault: Fault,
                                                 kind: type[ProviderError], text: str,
                                                 stream: bool) -> None:
    hint = 0.3 if kind is RateLimitedError else None
    await _contract(http).expect_failure(fault, kind, text, stream=stream, retry_after_s=hint,
                                         secret=KEY, api_key=KEY)


async def test_errors_mid_stream_and_truncation_after_some_text(
        http: httpx.AsyncClient) -> None:
    seen = await _contract(http).expect_stream_failures([
        (Fault.stream_error(after_chunks=2, message="rate limit exceeded"), RateLimitedError,
         "rate limit exceeded"),
        (Fault.truncated(after_chunks=2), TransientProviderError, "truncated stream"),
        (Fault.malformed(after_chunks=1), MalformedResponseError,
         "a stream event is not valid JSON"),
    ], output_tokens=6, api_key=KEY)
    assert seen == ["Hello", " from", "Hello", " from", "Hello"]  # deltas before the failure


async def test_a_missing_key_is_an_authentication_error(http: httpx.AsyncClient) -> None:
    async with fake(capture=True) as server:
        provider = CohereProvider(ProviderConfig("cohere", MODEL, server.base_url), http)
        with pytest.raises(AuthenticationError, match="HTTP 401: invalid api token"):
            await provider.generate(request())
    assert "authorization" not in server.captured[0].headers


async def test_a_base_url_ending_in_v2_is_not_doubled(http: httpx.AsyncClient) -> None:
    async with fake(output_tokens=2, capture=True) as server:
        provider = CohereProvider(config(server.base_url + "/v2/"), http)
        assert (await provider.generate(request())).text == "Hello from"
    assert server.captured[0].path == "/v2/chat"


# --- streams the fake does not produce, from a scripted server ------------------------------


@contextlib.asynccontextmanager
async def scripted(body: bytes, content_type: str = "text/event-stream") -> AsyncIterator[str]:
    """A server on 127.0.0.1 answering every ``POST /v2/chat`` with ``body``; yields its
    base URL."""

    async def chat(_: web.Request) -> web.Response:
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_post("/v2/chat", chat)
    async with local_server(app) as url:
        yield url


def sse(data: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


def delta(text: str | None = None, **content: Any) -> dict[str, Any]:
    if text is not None:
        content["text"] = text
    return {"type": "content-delta", "index": 0, "delta": {"message": {"content": content}}}


USAGE = {"billed_units": {"input_tokens": 8, "output_tokens": 2},
         "tokens": {"input_tokens": 70, "output_tokens": 2}}
END = {"type": "message-end", "delta": {"finish_reason": "STOP_SEQUENCE", "usage": USAGE}}


async def test_only_text_deltas_are_text_whatever_else_the_stream_carries(
        http: httpx.AsyncClient) -> None:
    body = b"".join([
        b": a comment\n\n",
        sse({"id": "m1", "type": "message-start", "delta": {"message": {"role": "assistant"}}}),
        sse({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": "I will"}}}),
        sse({"type": "content-start", "index": 0,
             "delta": {"message": {"content": {"type": "thinking", "thinking": ""}}}}),
        sse(delta(thinking="Let me think")),  # a reasoning model's thought: not answer text
        sse(delta("")),
        sse({"type": "citation-start", "index": 0, "delta": {"message": {"citations": {}}}}),
        sse({"type": "some-future-event", "delta": {}}),
        sse({"delta": {"message": {"content": {"text": "Hel"}}}}, "content-delta"),  # no type
        sse(delta("lo")),
        sse({"type": "content-end", "index": 0}),
        sse(END),
        sse(delta("after the end")),
    ])
    async with scripted(body) as base_url:
        chunks = await collect(CohereProvider(config(base_url), http))
    assert [c.text for c in chunks] == ["Hel", "lo", ""]  # the first chunk is the first text
    final = chunks[-1]
    assert (final.finish_reason, final.response_id) == ("stop", "m1")
    assert final.usage is not None
    assert (final.usage.input_tokens, final.usage.output_tokens) == (8, 2)


async def test_an_error_object_in_the_stream_is_raised_not_skipped(
        http: httpx.AsyncClient) -> None:
    body = sse({"id": "m1", "type": "message-start"}) + sse({"message": "internal error"})
    async with scripted(body) as base_url:
        with pytest.raises(TransientProviderError, match=r"failed \(ERROR\): internal error"):
            await collect(CohereProvider(config(base_url), http))


async def test_a_stream_answered_with_json_is_a_clear_error(http: httpx.AsyncClient) -> None:
    async with scripted(b'{"message":"use the stream endpoint"}', "application/json") as url:
        with pytest.raises(MalformedResponseError, match=r"not an event stream "
                           r"\('application/json'\).*use the stream endpoint"):
            await collect(CohereProvider(config(url), http))
