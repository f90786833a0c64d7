"""Pure pieces of the plugin: SSE decoding, retry hints, error bodies, request bodies,
option validation. No network."""

from __future__ import annotations

import email.utils

import pytest
from fleetbench_openai._errors import (
    error_from_payload,
    error_from_response,
    retry_after_s,
)
from fleetbench_openai._options import Options
from fleetbench_openai._wire import build_body, normalise_finish, parse_completion
from openai_support import KEY, config

from fleetbench.errors import (
    AuthenticationError,
    BadRequestError,
    ContextLengthError,
    MalformedResponseError,
    RateLimitedError,
    TransientProviderError,
)
from fleetbench.plugin import ProviderConfig
from fleetbench.providerkit import SSEDecoder, parse_duration
from fleetbench.records import GenerationSettings


def test_sse_decoder_handles_split_lines_crlf_comments_and_named_events() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"a"') == []
    assert decoder.feed(b':1}\r\n\r\n: keep-alive\n\nevent: x\ndata:[DONE]\n') == [
        ("", b'{"a":1}')]
    assert decoder.feed(b"\n") == [("x", b"[DONE]")]
    assert decoder.feed(b"data: one\ndata: two\n\nid: 3\nretry: 9\n\n") == [("", b"one\ntwo")]
    assert decoder.feed(b"data: last\n") == []
    assert decoder.close() == [("", b"last")]  # complete lines at EOF still count


def test_sse_decoder_drops_a_partial_line_at_eof() -> None:
    decoder = SSEDecoder()
    decoder.feed(b'data: {"cut')
    assert decoder.close() == []


@pytest.mark.parametrize(("text", "seconds"), [
    ("12ms", 0.012), ("1.5s", 1.5), ("6m0s", 360.0), ("1h2m3s", 3723.0), ("2", 2.0),
    ("", None), ("soon", None), ("5x", None), ("-1", None),
])
def test_parse_duration(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_retry_after_prefers_ms_then_seconds_then_date_then_resets() -> None:
    assert retry_after_s({"retry-after-ms": "300", "retry-after": "7"}) == pytest.approx(0.3)
    assert retry_after_s({"retry-after": "7"}) == 7.0
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 12, usegmt=True)
    assert retry_after_s({"retry-after": date}, now=now) == pytest.approx(12.0)
    past = email.utils.formatdate(now - 60, usegmt=True)
    assert retry_after_s({"retry-after": past}, now=now) == 0.0
    resets = {"x-ratelimit-reset-requests": "2s", "x-ratelimit-reset-tokens": "6m0s"}
    assert retry_after_s(resets) == 360.0  # unknown which binds: the longer one
    binding = {**resets, "x-ratelimit-remaining-requests": "0",
               "x-ratelimit-remaining-tokens": "1000"}
    assert retry_after_s(binding) == 2.0  # the exhausted limit decides
    assert retry_after_s({"retry-after": "garbage"}) is None
    assert retry_after_s({}) is None


@pytest.mark.parametrize(("status", "body", "kind", "retryable"), [
    (401, b'{"error":{"message":"bad key","type":"invalid_request_error",'
          b'"code":"invalid_api_key"}}', AuthenticationError, False),
    (403, b'{"error":{"message":"region"}}', AuthenticationError, False),
    (400, b'{"error":{"message":"bad","type":"invalid_request_error"}}', BadRequestError, False),
    (400, b'{"error":{"message":"This model\'s maximum context length is 8 tokens",'
          b'"code":"context_length_exceeded"}}', ContextLengthError, False),
    (500, b'{"error":{"code":500,"type":"exceed_context_size_error","message":"n_ctx"}}',
     ContextLengthError, False),  # llama.cpp
    (400, b'{"object":"error","message":"This model\'s maximum context length is 4096",'
          b'"type":"BadRequestError","param":null,"code":400}', ContextLengthError, False),
    (404, b'{"error":{"message":"The model does not exist","code":"model_not_found"}}',
     BadRequestError, False),
    (404, b'{"detail":"Not Found"}', BadRequestError, False),  # Mistral
    (422, b'{"message":"unprocessable"}', BadRequestError, False),
    (429, b'{"error":{"message":"slow down","code":"rate_limit_exceeded"}}',
     RateLimitedError, True),
    (429, b'{"error":{"message":"quota","type":"insufficient_quota",'
          b'"code":"insufficient_quota"}}', RateLimitedError, False),
    (408, b"timeout", TransientProviderError, True),
    (409, b"", TransientProviderError, True),
    (500, b"<html>oops</html>", TransientProviderError, True),
    (503, b'{"error":"overloaded"}', TransientProviderError, True),
    (529, b'{"error":{"message":"overloaded"}}', TransientProviderError, True),
])
def test_http_errors_map_to_fleetbench_classes(status: int, body: bytes, kind: type,
                                               retryable: bool) -> None:
    error = error_from_response("openai", status, body, {}, secret=KEY)
    assert type(error) is kind
    assert error.retryable is retryable
    assert error.status_code == status
    assert error.message.startswith(f"openai: HTTP {status}")


def test_error_messages_never_contain_the_key_and_stay_short() -> None:
    body = ('{"error":{"message":"Incorrect API key provided: ' + KEY + "x" * 1000 + '"}}')
    error = error_from_response("openai", 401, body.encode(), {}, secret=KEY)
    assert KEY not in error.message
    assert "***" in error.message
    assert len(error.message) < 400


@pytest.mark.parametrize(("payload", "kind"), [
    ({"error": {"message": "Overloaded", "type": "server_error"}}, TransientProviderError),
    ({"error": {"message": "slow", "type": "requests", "code": "rate_limit_exceeded"}},
     RateLimitedError),
    ({"error": {"message": "no", "type": "invalid_request_error"}}, BadRequestError),
    ({"error": {"message": "the request exceeds the available context size",
                "type": "exceed_context_size_error", "code": 400}}, ContextLengthError),
    ({"error": {"message": "boom", "code": 500}}, TransientProviderError),
])
def test_errors_inside_a_stream_map_to_classes(payload: object, kind: type) -> None:
    assert type(error_from_payload("openai", payload, secret=KEY)) is kind


def test_body_has_system_then_user_settings_and_passthrough_params_only() -> None:
    settings = GenerationSettings(
        temperature=0.2, max_tokens=64, top_p=0.9, stop=("END",), system="Be terse.",
        params={"seed": 7, "presence_penalty": 0.5, "max_tokens_field": "max_tokens",
                "api_version": "x", "stream_options": {"include_usage": False}})
    body = build_body("gpt", "Hi", settings, stream=False,
                      max_tokens_field="max_completion_tokens", include_usage=True)
    assert body == {
        "model": "gpt",
        "messages": [{"role": "system", "content": "Be terse."},
                     {"role": "user", "content": "Hi"}],
        "temperature": 0.2, "top_p": 0.9, "stop": ["END"], "max_completion_tokens": 64,
        "seed": 7, "presence_penalty": 0.5,
    }
    streamed = build_body(None, "Hi", GenerationSettings(), stream=True,
                          max_tokens_field="max_tokens", include_usage=True)
    assert streamed == {"messages": [{"role": "user", "content": "Hi"}], "stream": True,
                        "stream_options": {"include_usage": True}}
    with pytest.raises(BadRequestError, match="'model'"):
        build_body("m", "Hi", GenerationSettings(params={"model": "x"}), stream=False,
                   max_tokens_field="max_tokens", include_usage=True)


def test_completion_parsing_and_finish_normalisation() -> None:
    response = parse_completion("openai", {
        "id": "c1", "model": "gpt-x", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": None},
             "finish_reason": "function_call"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5,
                  "prompt_tokens_details": {"cached_tokens": 4}}})
    assert (response.text, response.finish_reason, response.model, response.response_id) == \
        ("", "tool_calls", "gpt-x", "c1")
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens,
            response.usage.cached_input_tokens) == (12, 5, 4)
    assert [normalise_finish(v) for v in ("stop", "length", "content_filter", "error",
                                          "weird", None)] == \
        ["stop", "length", "content_filter", "error", "other", None]
    with pytest.raises(MalformedResponseError, match="no choices"):
        parse_completion("openai", {"choices": []})


@pytest.mark.parametrize(("params", "azure", "message"), [
    ({"max_tokens_field": "tokens"}, False, "max_tokens_field"),
    ({"include_usage": "yes"}, False, "include_usage"),
    ({"api_version": "2024-10-21"}, False, "api_version"),
    ({"api_version": ""}, True, "api_version"),
    ({"organization": "org"}, True, "organization"),
    ({"headers": {"Authorization": "x"}}, False, "headers"),
    ({"headers": ["x"]}, False, "headers"),
    ({"max_connections": 0}, False, "max_connections"),
    ({"temperature": 3}, False, "temperature"),
    ({"top_p": "high"}, False, "top_p"),
    ({"max_tokens": 0}, False, "max_tokens"),
    ({"stop": [1]}, False, "stop"),
    ({"model": "other"}, False, "model"),
    ({"stream": True}, False, "stream"),
])
def test_validate_names_the_bad_param(params: dict[str, object], azure: bool,
                                      message: str) -> None:
    base = "https://res.openai.azure.com" if azure else None
    with pytest.raises(ValueError, match=message):
        Options.from_config(ProviderConfig("openai", "m", base, params=params), azure=azure)


def test_max_tokens_field_defaults_per_server() -> None:
    def field(base_url: str | None, azure: bool = False) -> str:
        return Options.from_config(config(base_url), azure=azure).max_tokens_field

    assert field(None) == "max_completion_tokens"
    assert field("https://api.openai.com/v1") == "max_completion_tokens"
    assert field("http://localhost:8080/v1") == "max_tokens"  # llama.cpp, vLLM, Ollama …
    assert field("https://res.openai.azure.com", azure=True) == "max_completion_tokens"
    with pytest.raises(ValueError, match="base_url"):
        Options.from_config(config(None), azure=True)
