"""The provider against the fake Anthropic over real loopback HTTP (no mocks)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from aiohttp import web
from anthropic_support import KEY, MODEL, config, fake
from fleetbench_anthropic import AnthropicProvider

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
from fleetbench.records import GenerationSettings, ProviderRequest, StreamChunk, Usage
from fleetbench.testing import Fault, ProviderContract, local_server

SETTINGS = GenerationSettings(temperature=0.0, max_tokens=8, system="Be terse.",
                              stop=("END",), params={"top_k": 3})


def request(stream: bool = False, settings: GenerationSettings = SETTINGS) -> ProviderRequest:
    return ProviderRequest(model=MODEL, prompt="Say hello", settings=settings, stream=stream,
                           test_key=f"repo/chat/anthropic:{MODEL}/t0",
                           expected="SECRET-EXPECTED")


async def collect(provider: AnthropicProvider, req: ProviderRequest) -> list[StreamChunk]:
    return [chunk async for chunk in provider.stream(req)]


def _contract(http: httpx.AsyncClient) -> ProviderContract:
    """The plugin under the provider contract's checks, with the test's client."""
    return ProviderContract("anthropic", lambda url: AnthropicProvider(config(url), http))


async def test_generate_sends_the_messages_request_and_reads_the_answer(
        http: httpx.AsyncClient) -> None:
    async with fake(output_tokens=5, capture=True) as server:
        provider = AnthropicProvider(config(server.base_url, beta="prompt-caching-2024-07-31"),
                                     http)
        response = await provider.generate(request())
    assert response.text == "Hello from the fake vendor"
    assert response.usage is not None
    assert (response.usage.output_tokens, response.usage.cached_input_tokens) == (5, 0)
    assert response.usage.input_tokens > 0
    assert (response.finish_reason, response.model, response.response_id) == \
        ("stop", MODEL, "msg_fake-1")
    sent = server.captured[0]
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert "authorization" not in sent.headers
    assert sent.body == {
        "model": MODEL, "max_tokens": 8, "system": "Be terse.",
        "messages": [{"role": "user", "content": "Say hello"}],
        "temperature": 0.0, "stop_sequences": ["END"], "top_k": 3,
    }  # never `expected`, never the plugin's own options


async def test_the_output_cap_is_reported_as_length(http: httpx.AsyncClient) -> None:
    async with fake(output_tokens=20) as server:
        provider = AnthropicProvider(config(server.base_url), http)
        response = await provider.generate(request())
    assert (response.text, response.finish_reason) == ("Hello from the fake vendor, one token",
                                                       "length")
    assert response.usage is not None
    assert response.usage.output_tokens == 8


async def test_streaming_yields_each_delta_then_usage_from_message_delta(
        http: httpx.AsyncClient) -> None:
    async with fake(output_tokens=12, tokens_per_chunk=4, itl_ms=5, capture=True) as server:
        provider = AnthropicProvider(config(server.base_url), http)
        chunks = await collect(provider, request(stream=True, settings=GenerationSettings()))
    texts = [c.text for c in chunks[:-1]]
    assert texts == ["Hello from the fake", " vendor, one token", " at a timeHello"]
    final = chunks[-1]
    assert final.text == ""
    assert final.usage is not None
    assert final.usage.output_tokens == 12  # the cumulative count, not the placeholder 1
    assert final.usage.input_tokens > 0  # from message_start
    assert (final.finish_reason, final.model, final.response_id) == \
        ("stop", MODEL, "msg_fake-1")
    body = server.captured[0].body
    assert (body["stream"], body["max_tokens"]) == (True, 4096)  # the API requires a cap


async def test_nothing_is_yielded_before_the_first_token_is_written(
        http: httpx.AsyncClient) -> None:
    # The fake writes message_start, content_block_start and a ping at once, then waits
    # ttft_ms before the first text delta: a plugin that yielded anything for those events
    # would have the executor stamp TTFT about ttft_ms too early.
    async with fake(output_tokens=3, ttft_ms=200) as server:
        provider = AnthropicProvider(config(server.base_url), http)
        seen = [(chunk.text, server.trace[0].first_token is not None)
                async for chunk in provider.stream(request(stream=True))]
    assert seen[0] == ("Hello", True)  # the first chunk: text, and the token on the wire


@pytest.mark.parametrize(("fault", "kind", "text"), [
    (Fault.http_error(401, message="invalid x-api-key"), AuthenticationError,
     "HTTP 401 authentication_error"),
    (Fault.http_error(403, message="no access to this model"), AuthenticationError,
     "permission_error"),
    (Fault.http_error(400, message="prompt is too long: 207791 tokens > 200000 maximum"),
     ContextLengthError, "invalid_request_error: prompt is too long"),
    (Fault.http_error(400, message="temperature: must be <= 1"), BadRequestError,
     "temperature"),
    (Fault.http_error(404, message="model: claude-nope"), BadRequestError, "not_found_error"),
    (Fault.http_error(413, message="Request exceeds the maximum allowed number of bytes"),
     ContextLengthError, "request_too_large"),
    (Fault.rate_limited({"retry-after": "1"}), RateLimitedError, "rate_limit_error"),
    (Fault.http_error(500, message="Internal server error"), TransientProviderError,
     "api_error"),
    (Fault.http_error(529, message="Overloaded"), TransientProviderError, "overloaded_error"),
    (Fault.malformed(), MalformedResponseError, "not valid JSON"),
    (Fault.stream_error(status=529, message="Overloaded"), TransientProviderError,
     "error in stream overloaded_error: Overloaded"),
])
@pytest.mark.parametrize("stream", [False, True])
async def test_failures_raise_the_matching_error(http: httpx.AsyncClient, fault: Fault,
                                                 kind: type[ProviderError], text: str,
                                                 stream: bool) -> None:
    hint = 1.0 if kind is RateLimitedError else None
    await _contract(http).expect_failure(fault, kind, text, stream=stream, retry_after_s=hint,
                                         secret=KEY, api_key=KEY)


async def test_a_429_without_retry_after_waits_for_the_exhausted_limit(
        http: httpx.AsyncClient) -> None:
    reset = (datetime.now(UTC) + timedelta(seconds=30)).isoformat()
    later = (datetime.now(UTC) + timedelta(seconds=50)).isoformat()
    headers = {"anthropic-ratelimit-requests-remaining": "0",
               "anthropic-ratelimit-requests-reset": reset,
               "anthropic-ratelimit-tokens-remaining": "5000",
               "anthropic-ratelimit-tokens-reset": later}
    async with fake(Fault.rate_limited(headers)) as server:
        provider = AnthropicProvider(config(server.base_url), http)
        with pytest.raises(RateLimitedError) as caught:
            await provider.generate(request())
    assert caught.value.retry_after_s is not None
    assert 25 < caught.value.retry_after_s <= 30


async def test_errors_mid_stream_and_truncation_after_some_text(
        http: httpx.AsyncClient) -> None:
    seen = await _contract(http).expect_stream_failures([
        (Fault.stream_error(after_chunks=2, status=529, message="Overloaded"),
         TransientProviderError, "overloaded_error"),
        (Fault.stream_error(after_chunks=1, error_type="rate_limit_error", message="slow down"),
         RateLimitedError, "slow down"),
        (Fault.truncated(after_chunks=2), TransientProviderError,
         "truncated stream: the body ended without message_stop after 5 event"),
        (Fault.malformed(after_chunks=1), MalformedResponseError,
         r"a stream event \(content_block_delta\) is not valid JSON"),
    ], output_tokens=6, api_key=KEY)
    assert seen == ["Hello", " from", "Hello", "Hello", " from", "Hello"]


async def test_a_missing_key_is_an_authentication_error(http: httpx.AsyncClient) -> None:
    async with fake(capture=True) as server:
        provider = AnthropicProvider(ProviderConfig("anthropic", MODEL, server.base_url), http)
        with pytest.raises(AuthenticationError, match="HTTP 401 authentication_error"):
            await provider.generate(request())
    assert "x-api-key" not in server.captured[0].headers


@pytest.fixture
async def json_gateway() -> AsyncIterator[str]:
    """A gateway on loopback that answers a streaming request with whole JSON bodies:
    first an error object with HTTP 200, then a whole message."""
    answers = [{"type": "error", "error": {"type": "overloaded_error", "message": "busy"}},
               {"type": "message", "id": "msg_g", "model": MODEL, "stop_reason": "end_turn",
                "content": [{"type": "text", "text": "Hi"}],
                "usage": {"input_tokens": 3, "output_tokens": 1}}]

    async def handle(_: web.BaseRequest) -> web.StreamResponse:
        return web.json_response(answers.pop(0))

    async with local_server(handle) as url:
        yield url


async def test_a_json_answer_to_a_stream_request_is_read_whole(
        http: httpx.AsyncClient, json_gateway: str) -> None:
    provider = AnthropicProvider(config(json_gateway), http)
    with pytest.raises(TransientProviderError, match="error in stream overloaded_error: busy"):
        await collect(provider, request(stream=True))
    chunks = await collect(provider, request(stream=True))
    assert [c.text for c in chunks] == ["Hi", ""]
    assert (chunks[-1].usage, chunks[-1].response_id) == (Usage(3, 1), "msg_g")
