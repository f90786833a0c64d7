"""The providers against the fake vendor over real loopback HTTP (no mocks)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fleetbench_openai import AzureOpenAIProvider, OpenAIProvider
from openai_support import KEY, config

from fleetbench.errors import (
    AuthenticationError,
    BadRequestError,
    ContextLengthError,
    MalformedResponseError,
    ProviderError,
    RateLimitedError,
    TransientProviderError,
)
from fleetbench.records import GenerationSettings, ProviderRequest, StreamChunk
from fleetbench.testing import FakeVendorConfig, FakeVendorServer, Fault, ProviderContract

SETTINGS = GenerationSettings(temperature=0.0, max_tokens=8, system="Be terse.",
                              params={"seed": 3})


def request(stream: bool = False, settings: GenerationSettings = SETTINGS) -> ProviderRequest:
    return ProviderRequest(model="fake-gpt", prompt="Say hello", settings=settings,
                           stream=stream, test_key="repo/chat/openai:fake-gpt/t0",
                           expected="SECRET-EXPECTED")


def fake(*faults: Fault, **knobs: Any) -> FakeVendorServer:
    return FakeVendorServer(config=FakeVendorConfig(faults=faults, api_key=KEY, **knobs),
                            capture=True)


async def collect(provider: OpenAIProvider, req: ProviderRequest) -> list[StreamChunk]:
    return [chunk async for chunk in provider.stream(req)]


def _contract(http: httpx.AsyncClient) -> ProviderContract:
    """The plugin under the provider contract's checks, with the test's client."""
    return ProviderContract("openai", lambda url: OpenAIProvider(config(url), http))


async def test_generate_sends_the_chat_request_and_reads_the_answer(
        http: httpx.AsyncClient) -> None:
    async with fake(output_tokens=5) as server:
        provider = OpenAIProvider(config(server.base_url, max_tokens_field="max_completion_tokens",
                                         organization="org-1"), http)
        response = await provider.generate(request())
    assert response.text == "Hello from the fake vendor"
    assert response.usage is not None
    assert response.usage.output_tokens == 5
    assert response.usage.input_tokens > 0
    assert (response.finish_reason, response.model) == ("stop", "fake-gpt")
    assert response.response_id == "chatcmpl-fake-1"
    sent = server.captured[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["openai-organization"] == "org-1"
    assert sent.body == {
        "model": "fake-gpt",
        "messages": [{"role": "system", "content": "Be terse."},
                     {"role": "user", "content": "Say hello"}],
        "temperature": 0.0, "max_completion_tokens": 8, "seed": 3,
    }  # never `expected`, never the plugin's own options


async def test_streaming_yields_each_delta_and_usage_from_the_final_chunk(
        http: httpx.AsyncClient) -> None:
    async with fake(output_tokens=12, tokens_per_chunk=4, ttft_ms=5, itl_ms=5) as server:
        provider = OpenAIProvider(config(server.base_url), http)  # max_tokens for a custom URL
        chunks = await collect(provider, request(stream=True, settings=GenerationSettings()))
    texts = [c.text for c in chunks if c.text]
    assert len(texts) == 3  # 12 tokens in chunks of 4: three deltas, yielded one by one
    assert "".join(texts) == "Hello from the fake vendor, one token at a timeHello"
    final = chunks[-1]
    assert final.usage is not None
    assert final.usage.output_tokens == 12
    assert (final.finish_reason, final.model, final.response_id) == \
        ("stop", "fake-gpt", "chatcmpl-fake-1")
    body = server.captured[0].body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


async def test_a_server_rejecting_stream_options_is_asked_again_without(
        http: httpx.AsyncClient) -> None:
    rejected = Fault.http_error(400, error_type="invalid_request_error",
                                message="Unrecognized request argument: stream_options")
    async with fake(rejected, output_tokens=3) as server:
        provider = OpenAIProvider(config(server.base_url), http)
        chunks = await collect(provider, request(stream=True))
        again = await collect(provider, request(stream=True))
    assert "".join(c.text for c in chunks) == "Hello from the"
    assert chunks[-1].usage is None  # the executor estimates it
    assert [("stream_options" in c.body) for c in server.captured] == [True, False, False]
    assert again[-1].finish_reason == "stop"


@pytest.mark.parametrize(("fault", "kind", "text"), [
    (Fault.http_error(401, error_type="invalid_request_error", code="invalid_api_key",
                      message="Incorrect API key provided: " + KEY), AuthenticationError,
     "invalid_api_key"),
    (Fault.http_error(400, error_type="invalid_request_error", code="context_length_exceeded",
                      message="This model's maximum context length is 8 tokens"),
     ContextLengthError, "context_length_exceeded"),
    (Fault.http_error(404, error_type="invalid_request_error", code="model_not_found",
                      message="The model `nope` does not exist"), BadRequestError,
     "model_not_found"),
    (Fault.rate_limited({"retry-after-ms": "300"}), RateLimitedError, "rate_limit_exceeded"),
    (Fault.http_error(503, message="The engine is currently overloaded"),
     TransientProviderError, "overloaded"),
    (Fault.malformed(), MalformedResponseError, "not valid JSON"),
    (Fault.stream_error(message="server had an error"), TransientProviderError,
     "server had an error"),
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
        (Fault.stream_error(after_chunks=2, error_type="requests", code="rate_limit_exceeded",
                            message="slow down"), RateLimitedError, "slow down"),
        (Fault.truncated(after_chunks=2), TransientProviderError, "truncated stream"),
        (Fault.malformed(after_chunks=1), MalformedResponseError,
         "a stream event is not valid JSON"),
    ], output_tokens=6, api_key=KEY)
    assert seen == ["Hello", " from", "Hello", " from", "Hello"]  # deltas before the failure


async def test_azure_uses_the_deployment_url_api_version_and_api_key_header(
        http: httpx.AsyncClient) -> None:
    async with fake(output_tokens=3) as server:
        endpoint = server.base_url.removesuffix("/v1")
        classic = AzureOpenAIProvider(config(endpoint, provider="azure-openai",
                                             model="my deployment"), http)
        dated = AzureOpenAIProvider(config(endpoint + "/", provider="azure-openai",
                                           model="dep", api_version="2025-01-01-preview"), http)
        v1 = AzureOpenAIProvider(config(endpoint + "/openai/v1", provider="azure-openai",
                                        model="dep"), http)
        assert (await classic.generate(request())).text == "Hello from the"
        chunks = await collect(dated, request(stream=True))
        assert chunks[-1].usage is not None
        await v1.generate(request())
    first, second, third = server.captured
    assert (first.path, first.query) == (
        "/openai/deployments/my deployment/chat/completions", {"api-version": "2024-10-21"})
    assert first.headers["api-key"] == KEY
    assert "authorization" not in first.headers
    assert "model" not in first.body
    assert first.body["max_completion_tokens"] == 8
    assert second.query == {"api-version": "2025-01-01-preview"}
    assert (third.path, third.query, third.body["model"]) == \
        ("/openai/v1/chat/completions", {}, "dep")


async def test_a_missing_key_is_an_authentication_error(http: httpx.AsyncClient) -> None:
    from fleetbench.plugin import ProviderConfig

    async with fake() as server:
        provider = OpenAIProvider(ProviderConfig("openai", "fake-gpt", server.base_url), http)
        with pytest.raises(AuthenticationError, match="HTTP 401"):
            await provider.generate(request())
        assert "authorization" not in server.captured[0].headers
