"""Pure pieces of the plugin: retry hints, error classes, request bodies, answers, option
validation, URLs. No network."""

from __future__ import annotations

import email.utils
from typing import Any

import pytest
from cohere_support import KEY, config
from fleetbench_cohere._errors import error_from_generation, error_from_response, retry_after_s
from fleetbench_cohere._options import Options
from fleetbench_cohere._provider import chat_url
from fleetbench_cohere._wire import build_body, normalise_finish, parse_chat, usage_from

from fleetbench._plugins import PluginHost
from fleetbench.errors import (
    AuthenticationError,
    BadRequestError,
    ContextLengthError,
    MalformedResponseError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitedError,
    TransientProviderError,
)
from fleetbench.plugin import ProviderConfig
from fleetbench.records import GenerationSettings

NOW = 1_700_000_000.0


def test_retry_after_prefers_ms_then_seconds_or_date_then_the_reset_time() -> None:
    assert retry_after_s({"retry-after-ms": "300", "retry-after": "7"}) == pytest.approx(0.3)
    assert retry_after_s({"retry-after": "7", "x-ratelimit-reset": str(NOW + 60)},
                         now=NOW) == 7.0  # fmt: skip
    date = email.utils.formatdate(NOW + 12, usegmt=True)
    assert retry_after_s({"retry-after": date}, now=NOW) == pytest.approx(12.0)
    assert retry_after_s({"x-ratelimit-reset": str(int(NOW) + 30)}, now=NOW) == 30.0
    assert retry_after_s({"x-ratelimit-reset": str(NOW - 5)}, now=NOW) == 0.0  # already past
    assert retry_after_s({"x-ratelimit-reset": "30"}, now=NOW) is None  # not a Unix time
    assert retry_after_s({"x-ratelimit-reset": "soon"}) is None
    assert retry_after_s({"retry-after": "garbage"}) is None
    assert retry_after_s({}) is None


@pytest.mark.parametrize(("status", "body", "kind", "retryable"), [
    (400, b'{"id":"e1","message":"invalid request: temperature must be positive"}',
     BadRequestError, False),
    (400, b'{"message":"too many tokens: total number of tokens in the prompt cannot exceed '
          b'4081 - received 4292."}', ContextLengthError, False),
    (400, b'{"message":"too many tokens: max tokens must be less than or equal to 4096"}',
     ContextLengthError, False),
    (422, b'{"message":"unprocessable entity"}', BadRequestError, False),
    (401, b'{"message":"invalid api token"}', AuthenticationError, False),
    (403, b'{"message":"forbidden"}', AuthenticationError, False),
    (498, b'{"message":"invalid token"}', AuthenticationError, False),
    (402, b'{"message":"Please add a payment method"}', RateLimitedError, False),
    (404, b'{"message":"model \'command-nope\' not found"}', BadRequestError, False),
    (429, b'{"message":"You are past the per minute request limit, please wait and try '
          b'again later."}', RateLimitedError, True),
    (429, b'{"message":"You are using a Trial key, which is limited to 1000 API calls / '
          b'month."}', RateLimitedError, False),
    (408, b"", TransientProviderError, True),
    (409, b'{"message":"conflict"}', TransientProviderError, True),
    (499, b'{"message":"request cancelled"}', TransientProviderError, True),
    (500, b'{"message":"internal server error"}', TransientProviderError, True),
    (501, b'{"message":"not implemented"}', BadRequestError, False),
    (502, b"<html>Bad Gateway</html>", TransientProviderError, True),
    (503, b'{"message":"service unavailable"}', TransientProviderError, True),
    (504, b'{"message":"gateway timeout"}', TransientProviderError, True),
])
def test_http_errors_map_to_fleetbench_classes(status: int, body: bytes,
                                               kind: type[ProviderError],
                                               retryable: bool) -> None:  # fmt: skip
    error = error_from_response(status, body, {}, secret=KEY)
    assert type(error) is kind
    assert error.retryable is retryable
    assert error.status_code == status
    assert error.message.startswith(f"cohere: HTTP {status}: ")


def test_http_error_messages_keep_the_vendor_text_and_the_hint() -> None:
    error = error_from_response(503, b"<html>Bad Gateway</html>", {"retry-after": "2"},
                                secret=KEY)  # fmt: skip
    assert "<html>Bad Gateway</html>" in error.message
    assert error.retry_after_s == 2.0
    limited = error_from_response(429, b'{"message":"slow down"}',
                                  {"retry-after-ms": "250"}, secret=KEY)  # fmt: skip
    assert limited.retry_after_s == pytest.approx(0.25)
    assert "slow down" in limited.message
    odd = error_from_response(400, b'{"detail":"no message field"}', {}, secret=KEY)
    assert "no message field" in odd.message  # an unexpected body is shown, not dropped


def test_error_messages_never_contain_the_key_and_stay_short() -> None:
    body = ('{"message":"invalid api token: ' + KEY + "x" * 1000 + '"}').encode()
    error = error_from_response(401, body, {}, secret=KEY)
    assert KEY not in error.message
    assert "***" in error.message
    assert len(error.message) < 400
    failed = error_from_generation("ERROR", f"echo {KEY}", secret=KEY)
    assert KEY not in failed.message


@pytest.mark.parametrize(("finish", "message", "kind"), [
    ("ERROR", "internal error during generation", TransientProviderError),
    ("ERROR", None, TransientProviderError),
    ("ERROR", "too many tokens: size limit exceeded by 11326 tokens", ContextLengthError),
    ("ERROR", "rate limit exceeded, please slow down", RateLimitedError),
    ("TIMEOUT", None, ProviderTimeoutError),
])
def test_failed_generations_map_to_classes(finish: str, message: str | None,
                                           kind: type[ProviderError]) -> None:
    error = error_from_generation(finish, message, secret=KEY)
    assert type(error) is kind
    assert error.message.startswith(f"cohere: generation failed ({finish}): ")
    assert (message or "no message") in error.message


def test_body_has_system_then_user_settings_in_cohere_form_and_passthrough_params() -> None:
    settings = GenerationSettings(
        temperature=0.2, max_tokens=64, top_p=0.9, stop=("END",), system="Be terse.",
        params={"seed": 7, "k": 40, "safety_mode": "OFF", "usage_from": "tokens",
                "client_name": "bench", "headers": {"X-A": "b"}, "max_connections": 4})
    assert build_body("command-a", "Hi", settings, stream=False) == {
        "model": "command-a",
        "messages": [{"role": "system", "content": "Be terse."},
                     {"role": "user", "content": "Hi"}],
        "temperature": 0.2, "p": 0.9, "stop_sequences": ["END"], "max_tokens": 64,
        "seed": 7, "k": 40, "safety_mode": "OFF",
    }  # the plugin's own options are never sent
    assert build_body("m", "Hi", GenerationSettings(), stream=True) == {
        "model": "m", "messages": [{"role": "user", "content": "Hi"}], "stream": True}


@pytest.mark.parametrize(("top_p", "sent"), [(1.0, 0.99), (0.0, 0.01), (0.5, 0.5)])
def test_top_p_is_clamped_into_cohere_range(top_p: float, sent: float) -> None:
    assert build_body("m", "Hi", GenerationSettings(top_p=top_p), stream=False)["p"] == sent


@pytest.mark.parametrize(("settings", "message"), [
    (GenerationSettings(params={"model": "x"}), "'model' is set by the plugin"),
    (GenerationSettings(params={"stream": True}), "'stream' is set by the plugin"),
    (GenerationSettings(params={"p": 0.5}), "set 'top_p' instead"),
    (GenerationSettings(params={"stop_sequences": ["x"]}), "set 'stop' instead"),
    (GenerationSettings(stop=tuple("abcdef")), "at most 5 stop sequences"),
])
def test_bodies_cohere_would_refuse_are_bad_requests(settings: GenerationSettings,
                                                     message: str) -> None:
    with pytest.raises(BadRequestError, match=message):
        build_body("m", "Hi", settings, stream=False)


USAGE = {"billed_units": {"input_tokens": 8, "output_tokens": 2},
         "tokens": {"input_tokens": 70, "output_tokens": 3}}


def test_usage_comes_from_the_chosen_block_else_the_other() -> None:
    billed, processed = usage_from(USAGE, "billed_units"), usage_from(USAGE, "tokens")
    assert billed is not None
    assert processed is not None
    assert (billed.input_tokens, billed.output_tokens) == (8, 2)
    assert (processed.input_tokens, processed.output_tokens) == (70, 3)
    only_tokens = usage_from({"tokens": {"input_tokens": 5.0, "output_tokens": 1}},
                             "billed_units")  # fmt: skip
    assert only_tokens is not None
    assert (only_tokens.input_tokens, only_tokens.output_tokens) == (5, 1)
    assert usage_from({"billed_units": {"input_tokens": 5}}, "billed_units") is None
    assert usage_from(None, "tokens") is None


def test_chat_answers_are_parsed_and_finish_reasons_normalised() -> None:
    response = parse_chat({
        "id": "c1", "finish_reason": "MAX_TOKENS",
        "message": {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "Hel"},
            {"type": "text", "text": "lo"}]},
        "usage": USAGE}, source="billed_units", secret=KEY)
    assert (response.text, response.finish_reason, response.response_id, response.model) == \
        ("Hello", "length", "c1", None)
    assert response.usage is not None
    assert response.usage.input_tokens == 8
    assert parse_chat({"finish_reason": "TOOL_CALL", "message": {"role": "assistant"}},
                      source="tokens", secret=KEY).text == ""  # fmt: skip
    assert [normalise_finish(v) for v in ("COMPLETE", "STOP_SEQUENCE", "MAX_TOKENS",
                                          "TOOL_CALL", "ERROR", "NEW_REASON", None)] == \
        ["stop", "stop", "length", "tool_calls", "error", "other", None]


@pytest.mark.parametrize(("payload", "kind", "text"), [
    ([], MalformedResponseError, "not a JSON object"),
    ({"finish_reason": "COMPLETE"}, MalformedResponseError, "no message object"),
    ({"message": {"content": "ok"}, "finish_reason": "COMPLETE"}, None, "ok"),
    ({"message": {"content": {"text": "x"}}}, MalformedResponseError, "not a list"),
    ({"message": {"content": ["x"]}}, MalformedResponseError, "not an object"),
    ({"finish_reason": "ERROR", "error": "boom", "message": {"content": []}},
     TransientProviderError, "boom"),
    ({"finish_reason": "TIMEOUT", "message": {"content": []}}, ProviderTimeoutError,
     "TIMEOUT"),
])
def test_answers_that_are_not_chats_or_that_failed_raise(
        payload: Any, kind: type[ProviderError] | None, text: str) -> None:
    if kind is None:
        assert parse_chat(payload, source="tokens", secret=KEY).text == text
        return
    with pytest.raises(kind, match=text):
        parse_chat(payload, source="tokens", secret=KEY)


@pytest.mark.parametrize(("params", "message"), [
    ({"usage_from": "both"}, "usage_from"),
    ({"headers": {"Authorization": "Bearer x"}}, "headers"),
    ({"headers": ["x"]}, "headers"),
    ({"client_name": ""}, "client_name"),
    ({"max_connections": 0}, "max_connections"),
    ({"temperature": -1}, "temperature"),
    ({"top_p": 2}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"stop": list("abcdef")}, "at most 5"),
    ({"model": "other"}, "model"),
    ({"messages": []}, "messages"),
    ({"stream": True}, "stream"),
    ({"p": 0.5}, "top_p"),
    ({"stop_sequences": ["x"]}, "stop"),
])
def test_validate_names_the_bad_param(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Options.from_config(ProviderConfig("cohere", "m", params=params))


def test_options_defaults_and_client_name_header() -> None:
    options = Options.from_config(config(None, client_name=" bench ", headers={"X-A": "b"},
                                         max_connections=3))  # fmt: skip
    assert options.headers == {"X-A": "b", "X-Client-Name": "bench"}
    assert (options.usage_from, options.max_connections) == ("billed_units", 3)


@pytest.mark.parametrize(("base_url", "url"), [
    (None, "https://api.cohere.com/v2/chat"),
    ("https://api.cohere.com/", "https://api.cohere.com/v2/chat"),
    ("https://api.cohere.com/v2", "https://api.cohere.com/v2/chat"),
    ("https://api.cohere.com/v2/", "https://api.cohere.com/v2/chat"),
    ("https://api.cohere.com/v1", "https://api.cohere.com/v2/chat"),
    ("http://127.0.0.1:8000/cohere", "http://127.0.0.1:8000/cohere/v2/chat"),
])
def test_chat_url_adds_the_path_once(base_url: str | None, url: str) -> None:
    assert chat_url(base_url) == url


def test_the_entry_point_registers_the_provider(host: PluginHost) -> None:
    spec = host.providers["cohere"]
    info = next(i for i in host.infos() if i.name == "cohere")
    assert info.distribution == "fleetbench-cohere"
    assert spec.default_api_key_env == "CO_API_KEY"
    assert spec.validate is not None
    with pytest.raises(ValueError, match="usage_from"):
        spec.validate(ProviderConfig("cohere", "m", params={"usage_from": "x"}))
