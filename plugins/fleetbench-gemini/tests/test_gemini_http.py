"""The provider against the fake Gemini over real loopback HTTP (no mocks)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web
from fleetbench_gemini import GeminiProvider
from gemini_support import KEY, MODEL, config, fake

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
from fleetbench.records import GenerationSettings, ProviderRequest, StreamChunk
from fleetbench.testing import Fault, ProviderContract, local_server

SETTINGS = GenerationSettings(temperature=0.0, max_tokens=8, system="Be terse.",
                              stop=("END",), params={"seed": 3, "top_k": 2})


def request(stream: bool = False, settings: GenerationSettings = SETTINGS) -> ProviderRequest:
    return ProviderRequest(model=MODEL, prompt="Say hello", settings=settings, stream=stream,
                           test_key=f"repo/chat/gemini:{MODEL}/t0", expected="SECRET-EXPECTED")


async def collect(provider: GeminiProvider, req: ProviderRequest) -> list[StreamChunk]:
    return [chunk async for chunk in provider.stream(req)]


def _contract(http: httpx.AsyncClient) -> ProviderContract:
    """The plugin under the provider contract's checks, with the test's client."""
    return ProviderContract("gemini", lambda url: GeminiProvider(config(url), http))


async def test_generate_sends_the_request_and_reads_the_answer(
        http: httpx.AsyncClient) -> None:
    async with fake(output_tokens=5, capture=True) as server:
        provider = GeminiProvider(config(server.base_url, headers={"x-trace": "t1"}), http)
        response = await provider.generate(request())
    assert response.text == "Hello from the fake vendor"
    assert response.usage is not None
    assert (response.usage.output_tokens, response.usage.estimated) == (5, False)
    assert response.usage.input_tokens > 0
    assert (response.finish_reason, response.model, response.response_id) == \
        ("stop", MODEL, "fake-1")
    sent = server.captured[0]
    assert (sent.path, sent.query) == (f"/v1beta/models/{MODEL}:generateContent", {})
    assert sent.headers["x-goog-api-key"] == KEY
    assert sent.headers["x-trace"] == "t1"
    assert sent.body == {
        "contents": [{"role": "user", "parts": [{"text": "Say hello"}]}],
        "systemInstruction": {"parts": [{"text": "Be terse."}]},
        "generationConfig": {"seed": 3, "topK": 2, "temperature": 0.0, "maxOutputTokens": 8,
                             "stopSequences": ["END"]},
    }  # never `expected`, never the key


async def test_streaming_yields_each_chunk_and_usage_at_the_end(
        http: httpx.AsyncClient) -> None:
    async with fake(output_tokens=12, tokens_per_chunk=4, ttft_ms=5, itl_ms=5,
                    capture=True) as server:
        provider = GeminiProvider(config(server.base_url + "/", api_version="v1"), http)
        chunks = await collect(provider, request(stream=True, settings=GenerationSettings()))
    texts = [c.text for c in chunks if c.text]
    assert len(texts) == 3  # 12 tokens in chunks of 4: three texts, yielded one by one
    assert "".join(texts) == "Hello from the fake vendor, one token at a timeHello"
    final = chunks[-1]
    assert final.usage is not None
    assert final.usage.output_tokens == 12
    assert (final.finish_reason, final.model, final.response_id) == ("stop", MODEL, "fake-1")
    sent = server.captured[0]
    assert (sent.path, sent.query) == (f"/v1/models/{MODEL}:streamGenerateContent",
                                       {"alt": "sse"})
    assert "key" not in sent.query  # the key travels in the header only
    assert "generationConfig" not in sent.body


async def test_the_output_cap_reads_as_length(http: httpx.AsyncClient) -> None:
    async with fake(output_tokens=20) as server:
        provider = GeminiProvider(config(server.base_url), http)
        response = await provider.generate(request())
        chunks = await collect(provider, request(stream=True))
    assert (response.finish_reason, response.usage and response.usage.output_tokens) == \
        ("length", 8)
    assert chunks[-1].finish_reason == "length"


API_KEY_INVALID = Fault.http_error(400, error_type="INVALID_ARGUMENT", code="API_KEY_INVALID",
                                   message="API key not valid: " + KEY)


@pytest.mark.parametrize(("fault", "kind", "text"), [
    (API_KEY_INVALID, AuthenticationError, "INVALID_ARGUMENT"),
    (Fault.http_error(403, message="Permission denied"), AuthenticationError,
     "PERMISSION_DENIED"),
    (Fault.http_error(400, message="The input token count (99) exceeds the maximum number of "
                                   "tokens allowed (8)."), ContextLengthError, "input token"),
    (Fault.http_error(400, error_type="FAILED_PRECONDITION",
                      message="User location is not supported"), BadRequestError,
     "FAILED_PRECONDITION"),
    (Fault.http_error(404, message="models/x is not found"), BadRequestError, "unknown model"),
    (Fault.rate_limited({"retry-after": "0.3"}), RateLimitedError, "RESOURCE_EXHAUSTED"),
    (Fault.http_error(503, message="The model is overloaded"), TransientProviderError,
     "UNAVAILABLE"),
    (Fault.http_error(504, message="Deadline expired"), TransientProviderError,
     "DEADLINE_EXCEEDED"),
    (Fault.malformed(), MalformedResponseError, "not valid JSON"),
    (Fault.stream_error(message="Internal error encountered."), TransientProviderError,
     "Internal error encountered."),
])
@pytest.mark.parametrize("stream", [False, True])
async def test_failures_raise_the_matching_error(http: httpx.AsyncClient, fault: Fault,
                                                 kind: type[ProviderError], text: str,
                                                 stream: bool) -> None:
    hint = 0.3 if kind is RateLimitedError else None  # from the body's RetryInfo
    await _contract(http).expect_failure(fault, kind, text, stream=stream, retry_after_s=hint,
                                         secret=KEY, api_key=KEY)


async def test_errors_mid_stream_and_truncation_after_some_text(
        http: httpx.AsyncClient) -> None:
    seen = await _contract(http).expect_stream_failures([
        (Fault.stream_error(after_chunks=2, status=429, message="slow down"), RateLimitedError,
         "slow down"),
        (Fault.truncated(after_chunks=2), TransientProviderError,
         "truncated stream.*after 2 chunk"),
        (Fault.truncated(), TransientProviderError, "truncated stream.*after 0 chunk"),
        (Fault.malformed(after_chunks=1), MalformedResponseError,
         "a stream event is not valid JSON"),
    ], output_tokens=6, api_key=KEY)
    assert seen == ["Hello", " from", "Hello", " from", "Hello"]  # texts before the failure


async def test_without_a_key_the_vendor_refuses_and_nothing_is_sent(
        http: httpx.AsyncClient) -> None:
    async with fake(capture=True) as server:
        provider = GeminiProvider(ProviderConfig("gemini", "models/" + MODEL, server.base_url),
                                  http)
        with pytest.raises(AuthenticationError, match="HTTP 400 INVALID_ARGUMENT"):
            await provider.generate(request())
    sent = server.captured[0]
    assert "x-goog-api-key" not in sent.headers
    assert sent.path == f"/v1beta/models/{MODEL}:generateContent"  # `models/` not doubled


@pytest.fixture
async def json_array_server() -> AsyncIterator[str]:
    """A server that ignores ``alt=sse`` and streams one JSON array, as Gemini does
    without it (e.g. behind a proxy that drops the query)."""
    chunks = [{"candidates": [{"content": {"parts": [{"text": "Hi"}], "role": "model"}}]},
              {"candidates": [{"content": {"parts": [{"text": " there"}], "role": "model"},
                               "finishReason": "STOP"}],
               "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2}}]

    async def handle(_: web.Request) -> web.Response:
        return web.json_response(chunks)

    app = web.Application()
    app.router.add_post(f"/v1beta/models/{MODEL}:streamGenerateContent", handle)
    async with local_server(app) as url:
        yield url


async def test_a_json_array_stream_is_read_too(http: httpx.AsyncClient,
                                               json_array_server: str) -> None:
    provider = GeminiProvider(config(json_array_server), http)
    chunks = await collect(provider, request(stream=True))
    assert [c.text for c in chunks] == ["Hi", " there", ""]
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.output_tokens == 2
