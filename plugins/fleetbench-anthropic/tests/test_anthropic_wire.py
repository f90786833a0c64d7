"""Pure pieces of the plugin: request bodies, answers, the stream fold, errors and retry
hints, option validation. No network."""

from __future__ import annotations

import email.utils
from typing import Any

import pytest
from anthropic_support import KEY, config
from fleetbench_anthropic._errors import error_from_payload, error_from_response, retry_after_s
from fleetbench_anthropic._options import Options
from fleetbench_anthropic._wire import StreamState, build_body, normalise_stop, parse_message

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
from fleetbench.records import GenerationSettings, Usage

NOW = 1_800_000_000.0
"""A fixed "now" (2027-01-15T08:00:00Z) for the reset timestamps."""


def _at(seconds: float) -> str:
    return email.utils.formatdate(NOW + seconds, usegmt=True)


def _rfc3339(seconds: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(NOW + seconds, UTC).isoformat().replace("+00:00", "Z")


# ------------------------------------------------------------------------------ bodies


def test_body_puts_system_top_level_and_stop_in_stop_sequences() -> None:
    settings = GenerationSettings(
        temperature=0.2, max_tokens=64, top_p=0.9, stop=("END", "\n\n"), system="Be terse.",
        params={"top_k": 5, "metadata": {"user_id": "u1"}, "beta": "x", "headers": {},
                "anthropic_version": "2023-06-01", "default_max_tokens": 9})
    body = build_body("claude-x", "Hi", settings, stream=False, default_max_tokens=4096)
    assert body == {
        "model": "claude-x", "max_tokens": 64, "system": "Be terse.",
        "messages": [{"role": "user", "content": "Hi"}],
        "temperature": 0.2, "top_p": 0.9, "stop_sequences": ["END", "\n\n"],
        "top_k": 5, "metadata": {"user_id": "u1"},
    }  # never a system role, never the plugin's own options


def test_body_always_has_max_tokens_and_marks_streams() -> None:
    body = build_body("claude-x", "Hi", GenerationSettings(), stream=True,
                      default_max_tokens=4096)
    assert body == {"model": "claude-x", "max_tokens": 4096,
                    "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    for field in ("model", "messages", "stream", "stop_sequences"):
        with pytest.raises(BadRequestError, match=repr(field)):
            build_body("m", "Hi", GenerationSettings(params={field: "x"}), stream=False,
                       default_max_tokens=1)


# ----------------------------------------------------------------------------- answers


def test_message_text_joins_text_blocks_and_usage_adds_cache_counts() -> None:
    response = parse_message({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "text", "text": "Hello"},
                    {"type": "tool_use", "id": "t", "name": "f", "input": {}},
                    {"type": "text", "text": " world"}],
        "stop_reason": "stop_sequence", "stop_sequence": "END",
        "usage": {"input_tokens": 10, "cache_creation_input_tokens": 20,
                  "cache_read_input_tokens": 30, "output_tokens": 7}})
    assert (response.text, response.finish_reason, response.model, response.response_id) == \
        ("Hello world", "stop", "claude-x", "msg_1")
    assert response.usage == Usage(60, 7, 30)  # the prompt is all three; reads are cached


def test_an_empty_end_turn_is_an_empty_answer() -> None:
    response = parse_message({"content": [], "stop_reason": "end_turn",
                              "usage": {"input_tokens": 3, "output_tokens": 0}})
    assert (response.text, response.finish_reason, response.usage) == ("", "stop", Usage(3, 0))


@pytest.mark.parametrize("payload", [
    [], {"content": "Hello"}, {"content": ["Hello"]}, {"content": [{"type": "text"}]},
])
def test_unreadable_answers_are_malformed(payload: Any) -> None:
    with pytest.raises(MalformedResponseError):
        parse_message(payload)


def test_stop_reasons_are_normalised() -> None:
    reasons = ["end_turn", "stop_sequence", "max_tokens", "model_context_window_exceeded",
               "tool_use", "refusal", "pause_turn", "brand_new", None]
    assert [normalise_stop(r) for r in reasons] == [
        "stop", "stop", "length", "length", "tool_calls", "content_filter", "other", "other",
        None]


# ------------------------------------------------------------------------------ stream


def _events(*texts: str) -> list[dict[str, Any]]:
    head: list[dict[str, Any]] = [
        {"type": "message_start", "message": {
            "id": "msg_9", "model": "claude-x", "content": [],
            "usage": {"input_tokens": 12, "cache_read_input_tokens": 4, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "ping"},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "thinking_delta", "thinking": "let me see"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    ]
    deltas: list[dict[str, Any]] = [{"type": "content_block_delta", "index": 1,
               "delta": {"type": "text_delta", "text": t}} for t in texts]
    tail: list[dict[str, Any]] = [
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": None}, "usage": {"output_tokens": 5}},
        {"type": "a_future_event", "x": 1},
        {"type": "message_delta", "delta": {"stop_reason": "max_tokens"},
         "usage": {"output_tokens": 9, "input_tokens": None}},
        {"type": "message_stop"},
    ]
    return head + deltas + tail


def test_stream_fold_yields_only_text_and_keeps_the_last_cumulative_usage() -> None:
    state = StreamState()
    texts = [state.feed(event) for event in _events("Hel", "", "lo")]
    assert [t for t in texts if t] == ["Hel", "lo"]  # thinking, pings and starts: no text
    assert state.finished()
    final = state.final()
    assert final.usage == Usage(16, 9, 4)  # output 9, not 1 + 5 + 9; input from the start
    assert (final.finish_reason, final.model, final.response_id) == \
        ("length", "claude-x", "msg_9")


def test_stream_fold_reads_the_event_name_when_data_has_no_type() -> None:
    state = StreamState()
    assert state.feed({"delta": {"type": "text_delta", "text": "x"}},
                      "content_block_delta") == "x"
    state.feed({}, "message_stop")
    assert state.finished()


@pytest.mark.parametrize(("error", "kind"), [
    ({"type": "overloaded_error", "message": "Overloaded"}, TransientProviderError),
    ({"type": "api_error", "message": "Internal server error"}, TransientProviderError),
    ({"type": "rate_limit_error", "message": "slow down"}, RateLimitedError),
    ({"type": "invalid_request_error", "message": "bad"}, BadRequestError),
    ({"type": "invalid_request_error", "message": "prompt is too long: 207791 tokens > 200000"
      " maximum"}, ContextLengthError),
    ({"type": "authentication_error", "message": "no"}, AuthenticationError),
    ({"type": "something_new", "message": "?"}, TransientProviderError),
])
def test_an_error_event_raises_its_class(error: dict[str, str],
                                         kind: type[ProviderError]) -> None:
    state = StreamState(secret=KEY)
    state.feed(_events()[0])
    with pytest.raises(kind) as caught:
        state.feed({"type": "error", "error": error, "request_id": "req_1"})
    assert type(caught.value) is kind
    assert caught.value.message.startswith("anthropic: error in stream ")


@pytest.mark.parametrize("payload", [
    "text", [1], {"type": "content_block_delta"}, {"type": "message_start", "message": None},
    {"type": "content_block_delta", "delta": {"type": "text_delta"}},
])
def test_malformed_events_are_refused(payload: Any) -> None:
    with pytest.raises(MalformedResponseError):
        StreamState().feed(payload)


# ------------------------------------------------------------------------------ errors


def _body(etype: str, message: str = "m", **extra: Any) -> bytes:
    import json

    return json.dumps({"type": "error", "error": {"type": etype, "message": message, **extra},
                       "request_id": "req_1"}).encode()


@pytest.mark.parametrize(("status", "body", "kind", "retryable"), [
    (400, _body("invalid_request_error", "temperature: bad"), BadRequestError, False),
    (400, _body("invalid_request_error", "prompt is too long: 207791 tokens > 200000 maximum"),
     ContextLengthError, False),
    (400, _body("invalid_request_error", "input length and `max_tokens` exceed context limit: "
                "198000 + 8192 > 200000"), ContextLengthError, False),
    (401, _body("authentication_error", "invalid x-api-key"), AuthenticationError, False),
    (402, _body("billing_error"), AuthenticationError, False),
    (403, _body("permission_error"), AuthenticationError, False),
    (404, _body("not_found_error", "model: claude-nope"), BadRequestError, False),
    (409, _body("conflict_error"), TransientProviderError, True),
    (413, _body("request_too_large", "Request exceeds the maximum size"), ContextLengthError,
     False),
    (413, b"<html>413 Request Entity Too Large</html>", ContextLengthError, False),
    (429, _body("rate_limit_error"), RateLimitedError, True),
    (429, _body("rate_limit_error", details={"error_code": "enforced_spend_limit_reached"}),
     RateLimitedError, False),
    (500, _body("api_error"), TransientProviderError, True),
    (502, b"<html>Bad gateway</html>", TransientProviderError, True),
    (504, _body("timeout_error"), TransientProviderError, True),
    (529, _body("overloaded_error", "Overloaded"), TransientProviderError, True),
    (422, b"", BadRequestError, False),
])
def test_http_errors_map_to_fleetbench_classes(status: int, body: bytes, kind: type,
                                               retryable: bool) -> None:
    error = error_from_response(status, body, {}, secret=KEY)
    assert type(error) is kind
    assert error.retryable is retryable
    assert error.status_code == status
    assert error.message.startswith(f"anthropic: HTTP {status} ")


def test_x_should_retry_overrides_the_verdict() -> None:
    assert error_from_response(400, _body("invalid_request_error"), {"x-should-retry": "true"},
                               secret=None).retryable
    assert not error_from_response(529, _body("overloaded_error"),
                                   {"x-should-retry": "false"}, secret=None).retryable


def test_error_messages_never_contain_the_key_and_stay_short() -> None:
    error = error_from_response(401, _body("authentication_error",
                                           "bad key " + KEY + "x" * 1000), {}, secret=KEY)
    assert KEY not in error.message
    assert "***" in error.message
    assert len(error.message) < 400
    assert KEY not in error_from_payload({"error": {"message": KEY}}, secret=KEY).message


def test_retry_after_prefers_ms_then_seconds_or_date() -> None:
    both = {"retry-after-ms": "300", "retry-after": "7"}
    assert retry_after_s(both, status=429) == pytest.approx(0.3)
    assert retry_after_s({"retry-after": "7"}, status=529) == 7.0
    assert retry_after_s({"retry-after": _at(12)}, status=429, now=NOW) == pytest.approx(12.0)
    assert retry_after_s({"retry-after": "soon"}, status=429) is None
    assert retry_after_s({}, status=429) is None


def test_reset_timestamps_count_on_429_only_and_the_exhausted_limit_decides() -> None:
    resets = {"anthropic-ratelimit-requests-reset": _rfc3339(2),
              "anthropic-ratelimit-tokens-reset": _rfc3339(40),
              "anthropic-ratelimit-input-tokens-reset": _rfc3339(20),
              "anthropic-ratelimit-output-tokens-reset": "garbage"}
    assert retry_after_s(resets, status=429, now=NOW) == pytest.approx(40.0)  # the longer
    binding = {**resets, "anthropic-ratelimit-requests-remaining": "0",
               "anthropic-ratelimit-tokens-remaining": "9000"}
    assert retry_after_s(binding, status=429, now=NOW) == pytest.approx(2.0)
    past = {"anthropic-ratelimit-requests-reset": _rfc3339(-5)}
    assert retry_after_s(past, status=429, now=NOW) == 0.0
    assert retry_after_s(binding, status=529, now=NOW) is None  # not a rate limit
    assert retry_after_s({**binding, "retry-after": "1"}, status=429, now=NOW) == 1.0


# ----------------------------------------------------------------------------- options


@pytest.mark.parametrize(("params", "message"), [
    ({"temperature": 1.5}, "'temperature' must be a number from 0 to 1"),
    ({"top_p": "high"}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"stop": [1]}, "stop"),
    ({"top_k": -1}, "top_k"),
    ({"model": "other"}, "'model' is set by the plugin"),
    ({"stream": True}, "stream"),
    ({"stop_sequences": ["x"]}, "use 'stop'"),
    ({"anthropic_version": ""}, "anthropic_version"),
    ({"beta": ["a,b"]}, "beta"),
    ({"beta": []}, "beta"),
    ({"headers": {"X-Api-Key": "k"}}, "headers"),
    ({"headers": {"anthropic-version": "2020"}}, "headers"),
    ({"default_max_tokens": 0}, "default_max_tokens"),
    ({"max_connections": True}, "max_connections"),
])
def test_validate_names_the_bad_param(params: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Options.from_config(ProviderConfig("anthropic", "m", None, params=params))


@pytest.mark.parametrize("base_url", ["https://api.anthropic.com/v1",
                                      "http://proxy:8080/anthropic/v1/messages/"])
def test_a_base_url_with_the_api_path_is_refused(base_url: str) -> None:
    with pytest.raises(ValueError, match="give the host"):
        Options.from_config(config(base_url))


def test_options_build_the_headers() -> None:
    options = Options.from_config(config("http://proxy/anthropic", beta=["b-1", "b-2"],
                                         headers={"X-Team": "a"}, max_connections=8))
    assert options.headers == {"anthropic-version": "2023-06-01", "anthropic-beta": "b-1,b-2",
                               "X-Team": "a"}
    assert (options.default_max_tokens, options.max_connections) == (4096, 8)
