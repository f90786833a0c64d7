"""Pure pieces of the plugin: request bodies, answer and stream reading, error bodies and
retry hints, option validation. No network."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fleetbench_gemini._errors import error_from_payload, error_from_response
from fleetbench_gemini._options import Options
from fleetbench_gemini._wire import (
    StreamReader,
    build_body,
    normalise_finish,
    parse_response,
    usage_from,
)
from gemini_support import KEY, config

from fleetbench.errors import (
    AuthenticationError,
    BadRequestError,
    ContextLengthError,
    MalformedResponseError,
    RateLimitedError,
    TransientProviderError,
)
from fleetbench.plugin import ProviderConfig
from fleetbench.records import GenerationSettings, Usage

RPC = "type.googleapis.com/google.rpc."


def google_error(code: int, status: str, message: str, *details: dict[str, Any]) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = list(details)
    return json.dumps({"error": error}).encode()


def chunk(text: str | None, *, finish: str | None = None,
          usage: dict[str, int] | None = None) -> dict[str, Any]:  # fmt: skip
    candidate: dict[str, Any] = {"index": 0}
    if text is not None:
        candidate["content"] = {"parts": [{"text": text}], "role": "model"}
    if finish:
        candidate["finishReason"] = finish
    payload: dict[str, Any] = {"candidates": [candidate], "modelVersion": "gemini-2.5-flash",
                               "responseId": "r-1"}
    if usage:
        payload["usageMetadata"] = usage
    return payload


# --- requests -------------------------------------------------------------------------------


def test_body_has_contents_system_instruction_and_generation_config() -> None:
    settings = GenerationSettings(
        temperature=0.2, max_tokens=64, top_p=0.9, stop=("END",), system="Be terse.",
        params={"top_k": 40, "seed": 7, "thinking_config": {"thinking_budget": 0},
                "safety_settings": [{"category": "HARM_CATEGORY_HARASSMENT",
                                     "threshold": "BLOCK_NONE"}],
                "generation_config": {"candidate_count": 1, "responseMimeType": "text/plain"},
                "api_version": "v1", "headers": {"x-a": "b"}, "max_connections": 2})
    assert build_body("Hi", settings) == {
        "contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
        "systemInstruction": {"parts": [{"text": "Be terse."}]},
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
        "generationConfig": {
            "topK": 40, "seed": 7, "thinkingConfig": {"thinking_budget": 0},
            "candidateCount": 1, "responseMimeType": "text/plain",
            "temperature": 0.2, "topP": 0.9, "maxOutputTokens": 64, "stopSequences": ["END"],
        },
    }  # never the plugin's own options
    assert build_body("Hi", GenerationSettings()) == {
        "contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}


@pytest.mark.parametrize("params", [
    {"contents": []}, {"system_instruction": {}}, {"maxOutputTokens": 5},
    {"generation_config": {"stop_sequences": ["x"]}}, {"generation_config": "hot"},
])
def test_a_dataset_param_owned_by_the_plugin_is_a_bad_request(params: dict[str, Any]) -> None:
    with pytest.raises(BadRequestError, match="param"):
        build_body("Hi", GenerationSettings(params=params))


# --- answers --------------------------------------------------------------------------------


def test_usage_counts_tool_prompt_thoughts_and_cache() -> None:
    usage = usage_from({"promptTokenCount": 10, "candidatesTokenCount": 5,
                        "thoughtsTokenCount": 20, "toolUsePromptTokenCount": 3,
                        "cachedContentTokenCount": 4, "totalTokenCount": 38})
    assert usage == Usage(input_tokens=13, output_tokens=25, cached_input_tokens=4)
    assert usage_from({"promptTokenCount": 8, "totalTokenCount": 8}) == Usage(8, 0)
    assert usage_from({"candidatesTokenCount": 5}) is None
    assert usage_from(None) is None


def test_response_joins_text_parts_without_thoughts() -> None:
    payload = chunk(None, finish="STOP", usage={"promptTokenCount": 4,
                                                "candidatesTokenCount": 3})
    payload["candidates"][0]["content"] = {"role": "model", "parts": [
        {"text": "planning…", "thought": True}, {"text": "Hello"}, {"functionCall": {}},
        {"text": " there"}]}
    response = parse_response(payload)
    assert (response.text, response.finish_reason, response.model, response.response_id) == \
        ("Hello there", "stop", "gemini-2.5-flash", "r-1")
    assert response.usage == Usage(4, 3)


def test_filtered_answers_and_blocked_prompts_are_content_filter_stops() -> None:
    safety = parse_response(chunk(None, finish="SAFETY"))
    assert (safety.text, safety.finish_reason) == ("", "content_filter")
    blocked = parse_response({"promptFeedback": {"blockReason": "SAFETY"},
                              "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}})
    assert (blocked.text, blocked.finish_reason) == ("", "content_filter")
    assert blocked.usage == Usage(9, 0)
    thinking_cut = parse_response(chunk(None, finish="MAX_TOKENS"))  # content without parts
    assert (thinking_cut.text, thinking_cut.finish_reason) == ("", "length")


def test_finish_reasons_are_normalised() -> None:
    values = ["STOP", "MAX_TOKENS", "RECITATION", "PROHIBITED_CONTENT", "SPII",
              "MALFORMED_FUNCTION_CALL", "LANGUAGE", "OTHER", "SOMETHING_NEW", None, 3]
    assert [normalise_finish(v) for v in values] == [
        "stop", "length", "content_filter", "content_filter", "content_filter", "error",
        "other", "other", "other", None, "other"]


@pytest.mark.parametrize(("payload", "text"), [
    ([], "not a JSON object"),
    ({"candidates": []}, "no candidates"),
    ({"usageMetadata": {"promptTokenCount": 3}}, "no candidates"),
    ({"candidates": ["x"]}, "candidates[0] is not an object"),
    ({"candidates": [{"content": {"parts": "Hi"}}]}, "no parts list"),
    ({"candidates": [{"content": {"parts": ["Hi"]}}]}, "part of candidates[0]"),
])
def test_malformed_answers_are_named(payload: Any, text: str) -> None:
    with pytest.raises(MalformedResponseError, match=text.replace("[", r"\[").replace("]", r"\]")):
        parse_response(payload)


# --- streams --------------------------------------------------------------------------------


def test_stream_reader_keeps_the_last_cumulative_usage_and_the_finish() -> None:
    # As the real API streams a thinking model: usage on every chunk, cumulative.
    reader = StreamReader()
    texts = [
        reader.add(chunk("Hel", usage={"promptTokenCount": 4, "candidatesTokenCount": 1,
                                       "thoughtsTokenCount": 30})),
        reader.add(chunk("lo", usage={"promptTokenCount": 4, "candidatesTokenCount": 2,
                                      "thoughtsTokenCount": 30})),
        reader.add(chunk("!", finish="STOP", usage={"promptTokenCount": 4,
                                                     "candidatesTokenCount": 3,
                                                     "thoughtsTokenCount": 30})),
    ]
    assert texts == ["Hel", "lo", "!"]
    assert reader.finished
    final = reader.final()
    assert final.usage == Usage(4, 33)  # the last chunk's, never a sum
    assert (final.finish_reason, final.model, final.response_id, final.text) == \
        ("stop", "gemini-2.5-flash", "r-1", "")


def test_stream_reader_is_unfinished_until_a_finish_or_block_arrives() -> None:
    reader = StreamReader()
    reader.add(chunk("partial"))
    reader.add({"usageMetadata": {"promptTokenCount": 4}})  # usage alone is a valid chunk
    assert not reader.finished
    assert reader.chunks == 2
    blocked = StreamReader()
    blocked.add({"promptFeedback": {"blockReason": "OTHER"}})
    assert blocked.finished
    assert blocked.final().finish_reason == "content_filter"
    with pytest.raises(MalformedResponseError, match="stream chunk 1 has no candidates"):
        StreamReader().add({"modelVersion": "x"})
    with pytest.raises(MalformedResponseError, match="stream chunk 1 is not a JSON object"):
        StreamReader().add([{"candidates": []}])


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "body", "kind", "retryable"), [
    (400, google_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
                       {"@type": RPC + "ErrorInfo", "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com"}), AuthenticationError, False),
    (400, google_error(400, "INVALID_ARGUMENT", "API key expired. Please renew the API key."),
     AuthenticationError, False),
    (403, google_error(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers"),
     AuthenticationError, False),
    (401, google_error(401, "UNAUTHENTICATED", "no credentials"), AuthenticationError, False),
    (400, google_error(400, "INVALID_ARGUMENT", "* GenerateContentRequest.contents: empty"),
     BadRequestError, False),
    (400, google_error(400, "FAILED_PRECONDITION", "User location is not supported"),
     BadRequestError, False),
    (400, google_error(400, "INVALID_ARGUMENT", "The input token count (1200293) exceeds the "
                                                "maximum number of tokens allowed (1048576)."),
     ContextLengthError, False),
    (404, google_error(404, "NOT_FOUND", "models/nope is not found for API version v1beta"),
     BadRequestError, False),
    (429, google_error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted"),
     RateLimitedError, True),
    (429, google_error(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota",
                       {"@type": RPC + "QuotaFailure", "violations": [
                           {"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]},
                       {"@type": RPC + "RetryInfo", "retryDelay": "20s"}),
     RateLimitedError, False),
    (500, google_error(500, "INTERNAL", "An internal error has occurred"),
     TransientProviderError, True),
    (503, google_error(503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
     TransientProviderError, True),
    (504, google_error(504, "DEADLINE_EXCEEDED", "Deadline exceeded"),
     TransientProviderError, True),
    (502, b"<html>bad gateway</html>", TransientProviderError, True),
    (499, google_error(499, "CANCELLED", "cancelled"), TransientProviderError, True),
])
def test_http_errors_map_to_fleetbench_classes(status: int, body: bytes, kind: type,
                                               retryable: bool) -> None:
    error = error_from_response(status, body, {}, secret=KEY)
    assert type(error) is kind
    assert error.retryable is retryable
    assert error.status_code == status
    assert error.message.startswith(f"gemini: HTTP {status}")


def test_retry_delay_comes_from_the_body_then_a_retry_after_header() -> None:
    body = google_error(429, "RESOURCE_EXHAUSTED", "slow down",
                        {"@type": RPC + "QuotaFailure", "violations": [
                            {"quotaId": "GenerateRequestsPerMinutePerProjectPerModel"}]},
                        {"@type": RPC + "RetryInfo", "retryDelay": "47.174066935s"})
    assert error_from_response(429, body, {"retry-after": "3"},
                               secret=None).retry_after_s == pytest.approx(47.174066935)
    bare = google_error(429, "RESOURCE_EXHAUSTED", "slow down")
    assert error_from_response(429, bare, {"retry-after": "3"}, secret=None).retry_after_s == 3.0
    assert error_from_response(429, bare, {}, secret=None).retry_after_s is None
    unavailable = google_error(503, "UNAVAILABLE", "overloaded",
                               {"@type": RPC + "RetryInfo", "retryDelay": "2s"})
    assert error_from_response(503, unavailable, {}, secret=None).retry_after_s == 2.0


def test_error_messages_never_contain_the_key_and_stay_short() -> None:
    body = google_error(400, "INVALID_ARGUMENT", f"API key not valid: {KEY}" + "x" * 1000)
    error = error_from_response(400, body, {}, secret=KEY)
    assert isinstance(error, AuthenticationError)
    assert KEY not in error.message
    assert "***" in error.message
    assert len(error.message) < 400


@pytest.mark.parametrize(("payload", "kind"), [
    ({"error": {"code": 500, "message": "Internal error", "status": "INTERNAL"}},
     TransientProviderError),
    ({"error": {"message": "overloaded", "status": "UNAVAILABLE"}}, TransientProviderError),
    ({"error": {"code": 429, "message": "slow", "status": "RESOURCE_EXHAUSTED"}},
     RateLimitedError),
    ({"error": {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"}}, BadRequestError),
    ({"error": {"message": "The input token count (9) exceeds the maximum number of tokens "
                           "allowed (8)."}}, ContextLengthError),
    ([{"error": {"code": 403, "message": "denied", "status": "PERMISSION_DENIED"}}],
     AuthenticationError),  # a proxy's one-item array
    ({"error": "something broke"}, TransientProviderError),
])
def test_errors_inside_a_stream_map_to_classes(payload: object, kind: type) -> None:
    error = error_from_payload(payload, secret=KEY)
    assert type(error) is kind
    assert error.message.startswith("gemini: error in stream")


# --- options --------------------------------------------------------------------------------


@pytest.mark.parametrize(("params", "message"), [
    ({"api_version": "beta"}, "api_version"),
    ({"api_version": 1}, "api_version"),
    ({"headers": {"X-Goog-Api-Key": "x"}}, "headers"),
    ({"headers": ["x"]}, "headers"),
    ({"max_connections": 0}, "max_connections"),
    ({"temperature": 2.5}, "temperature"),
    ({"top_p": "high"}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"stop": [1]}, "stop"),
    ({"top_k": 0}, "top_k"),
    ({"topK": 1.5}, "top_k"),
    ({"generation_config": {"seed": "x"}}, "seed"),
    ({"generation_config": []}, "generation_config"),
    ({"generationConfig": {"maxOutputTokens": 3}}, "max_tokens"),
    ({"safety_settings": {"x": 1}}, "safety_settings"),
    ({"contents": []}, "contents"),
    ({"stopSequences": ["x"]}, "'stop'"),
    ({"model": "other"}, "model"),
    ({"key": "AIza"}, "api_key_env"),
])
def test_validate_names_the_bad_param(params: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Options.from_config(ProviderConfig("gemini", "m", params=params))


def test_valid_options() -> None:
    options = Options.from_config(config(None, api_version="v1", headers={"x-trace": "1"},
                                         max_connections=4, top_k=3, seed=1,
                                         thinking_config={"thinking_budget": 0}))
    assert (options.api_version, dict(options.headers), options.max_connections) == \
        ("v1", {"x-trace": "1"}, 4)
    assert Options.from_config(config(None)).api_version == "v1beta"
