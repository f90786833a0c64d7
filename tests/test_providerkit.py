"""fleetbench.providerkit: the helpers every vendor plugin shares. Pure, no network."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from fleetbench.errors import BadRequestError, MalformedResponseError, TransientProviderError
from fleetbench.providerkit import (
    CONNECT_TIMEOUT_S,
    answer_chunks,
    check_sampling_params,
    clip,
    error_body,
    extra_headers,
    http_timeout,
    int_param,
    load_json,
    parse_duration,
    quota_exhausted,
    rate_limit_reset,
    request_params,
    retry_after_headers,
    seconds_until,
    sse_text_chunks,
)
from fleetbench.records import ProviderResponse, StreamChunk, Usage

SECRET = "sk-very-secret-key"


def test_clip_redacts_before_cutting() -> None:
    assert clip("short", SECRET) == "short"
    text = "x" * 295 + SECRET + "tail"
    clipped = clip(text, SECRET)
    assert SECRET[:5] not in clipped  # no prefix of the key survives the cut
    assert clipped == "x" * 295 + "***" + "ta…"
    assert clip("abc", None, limit=2) == "ab…"


def test_load_json_parses_or_names_vendor_and_what() -> None:
    assert load_json(b'{"a": [1]}', vendor="v", what="the answer", secret=None) == {"a": [1]}
    with pytest.raises(MalformedResponseError) as caught:
        load_json(b"<html>" + SECRET.encode() + b"</html>", vendor="acme",
                  what="a stream event", secret=SECRET)
    message = caught.value.message
    assert message.startswith("acme: a stream event is not valid JSON: '<html>***")
    assert SECRET not in message


@pytest.mark.parametrize(("params", "name"), [
    ({"temperature": 2.5}, "temperature"),
    ({"temperature": True}, "temperature"),
    ({"top_p": "high"}, "top_p"),
    ({"top_p": 1.1}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 1.5}, "max_tokens"),
    ({"stop": [1]}, "stop"),
    ({"system": ["a"]}, "system"),
])
def test_check_sampling_params_names_the_bad_one(params: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=f"param '{name}'"):
        check_sampling_params(params)


def test_check_sampling_params_accepts_good_values_and_a_vendor_range() -> None:
    check_sampling_params({"temperature": 2, "top_p": 0.5, "max_tokens": 3, "stop": "END",
                           "system": "s", "seed": 1})
    check_sampling_params({"stop": ["a", "b"]})
    with pytest.raises(ValueError, match="from 0 to 1"):
        check_sampling_params({"temperature": 1.5}, temperature_max=1.0)


def test_extra_headers() -> None:
    assert extra_headers(None, forbidden=()) == {}
    assert extra_headers({"X-Trace": "1"}, forbidden=("x-api-key",)) == {"X-Trace": "1"}
    with pytest.raises(ValueError, match="may not set 'X-Api-Key'"):
        extra_headers({"X-Api-Key": "k"}, forbidden=("x-api-key",))
    with pytest.raises(ValueError, match="map header names to strings"):
        extra_headers({"X-Count": 3}, forbidden=())


def test_retry_after_headers_prefer_milliseconds_then_seconds_or_a_date() -> None:
    now = 1_800_000_000.0
    assert retry_after_headers({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_headers({"retry-after-ms": "soon", "retry-after": "9"}) == 9.0
    assert retry_after_headers({"retry-after": "Fri, 15 Jan 2027 08:00:30 GMT"},
                               now=now) == pytest.approx(30.0)
    assert retry_after_headers({"retry-after": "-1"}) is None
    assert retry_after_headers({}) is None


@pytest.mark.parametrize(("text", "seconds"), [
    ("2027-01-15T08:00:30Z", 30.0),
    ("2027-01-15T08:00:01.500000+00:00", 1.5),
    ("2027-01-15T09:00:05+01:00", 5.0),
    ("2027-01-15T07:59:00Z", 0.0),  # already past: no wait
    ("2027-01-15T08:00:30", None),  # no time zone: ambiguous
    ("in 30 seconds", None),
])
def test_seconds_until_an_rfc3339_timestamp(text: str, seconds: float | None) -> None:
    now = 1_800_000_000.0  # 2027-01-15T08:00:00Z
    result = seconds_until(text, now=now)
    assert result == (pytest.approx(seconds) if seconds is not None else None)


def test_int_param_defaults_and_refusals() -> None:
    assert int_param({}, "max_connections") is None
    assert int_param({"max_connections": None}, "max_connections") is None  # null: unset
    assert int_param({"max_connections": 4}, "max_connections") == 4
    assert int_param({}, "default_max_tokens", default=4096) == 4096
    assert int_param({"top_k": 0}, "top_k", minimum=0) == 0
    for value in (0, True, 2.0, "3"):
        with pytest.raises(ValueError, match=r"param 'max_connections' must be an integer >= 1"):
            int_param({"max_connections": value}, "max_connections")
    with pytest.raises(ValueError, match="'default_max_tokens'"):  # null is not the default
        int_param({"default_max_tokens": None}, "default_max_tokens", default=4096)


def test_request_params_drop_options_and_refuse_owned_fields() -> None:
    params = {"seed": 7, "api_version": "x", "response_format": {"type": "json_object"}}
    assert request_params(params, control={"api_version"}, owned={"model"}) == {
        "seed": 7, "response_format": {"type": "json_object"}}
    with pytest.raises(BadRequestError, match="param 'model' is set by the plugin"):
        request_params({"model": "other"}, control=(), owned={"model"})


def test_http_timeout_caps_only_the_connect_phase() -> None:
    slow = http_timeout(120.0)
    assert (slow.connect, slow.read, slow.write, slow.pool) == (CONNECT_TIMEOUT_S, 120, 120, 120)
    assert http_timeout(2.0).connect == 2.0


def test_error_body_reads_json_or_wraps_text() -> None:
    assert error_body(b'{"error": {"message": "bad"}}') == {"error": {"message": "bad"}}
    assert error_body(b"<html>502 Bad Gateway</html>\n") == {
        "message": "<html>502 Bad Gateway</html>"}
    assert error_body(b" ") == {"message": "empty body"}


def test_quota_exhausted_is_a_rate_limit_that_is_not_retried() -> None:
    error = quota_exhausted("acme: HTTP 429: quota", "daily quota exhausted", status_code=429)
    assert (error.kind, error.retryable, error.status_code) == ("rate_limited", False, 429)
    assert error.message == "acme: HTTP 429: quota (daily quota exhausted: not retried)"
    assert error.retry_after_s is None


def test_rate_limit_reset_waits_for_the_exhausted_limit() -> None:
    def wait(headers: dict[str, str]) -> float | None:
        return rate_limit_reset(headers, ("requests", "tokens"), reset="reset-{}",
                                remaining="remaining-{}", parse=parse_duration)

    resets = {"reset-requests": "2s", "reset-tokens": "6m0s"}
    assert wait(resets) == 360.0  # unknown which binds: the later one
    assert wait({**resets, "remaining-requests": " 0", "remaining-tokens": "1000"}) == 2.0
    assert wait({**resets, "remaining-requests": "5", "remaining-tokens": "9"}) == 360.0
    assert wait({"reset-requests": "soon", "reset-tokens": "1.5s"}) == 1.5  # invalid: skipped
    assert wait({"remaining-tokens": "0"}) is None
    now = 1_800_000_000.0  # 2027-01-15T08:00:00Z; RFC 3339 resets, as Anthropic sends them
    stamped = rate_limit_reset({"r-tokens": "2027-01-15T08:00:30Z"}, ["tokens"], reset="r-{}",
                               remaining="left-{}", parse=lambda v: seconds_until(v, now=now))
    assert stamped == pytest.approx(30.0)


def test_answer_chunks_give_the_text_then_the_closing_chunk() -> None:
    usage = Usage(3, 2)
    answer = ProviderResponse("Hi", usage=usage, finish_reason="stop", model="m",
                              response_id="r1")
    assert answer_chunks(answer) == [
        StreamChunk(text="Hi"),
        StreamChunk(usage=usage, finish_reason="stop", model="m", response_id="r1")]
    assert answer_chunks(ProviderResponse("")) == [StreamChunk()]


class _Body(httpx.AsyncByteStream):
    """A response body arriving in the given pieces; records how far it was read."""

    def __init__(self, *pieces: bytes) -> None:
        self.pieces = pieces
        self.read = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            self.read += 1
            yield piece


class _Folder:
    """Folds ``data: <text>`` events; ``event: end`` ends the stream, ``data: !`` fails."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bytes]] = []

    def fold(self, event: str, data: bytes) -> str:
        self.seen.append((event, data))
        if data == b"!":
            raise TransientProviderError("boom")
        return "" if event else data.decode()

    def ended(self) -> bool:
        return bool(self.seen) and self.seen[-1][0] == "end"


async def _texts(body: _Body, folder: _Folder, *, use_end: bool = True) -> list[str]:
    response = httpx.Response(200, stream=body)
    chunks = sse_text_chunks(response, folder.fold, ended=folder.ended if use_end else None)
    return [chunk.text async for chunk in chunks]


async def test_sse_text_chunks_fold_events_split_across_reads_up_to_the_end_event() -> None:
    body = _Body(b"data: Hel", b"lo\n\ndata:\n\ndata: !", b"x\n\nevent: end\ndata: {}\n\n"
                 b"data: after\n\n", b"data: later\n\n")
    folder = _Folder()
    assert await _texts(body, folder) == ["Hello", "!x"]  # empty texts yield nothing
    assert folder.seen[-1] == ("end", b"{}")  # nothing folded after the end event
    assert body.read == 4  # but the body was read to its end (connection reusable)


async def test_sse_text_chunks_without_an_end_event_fold_all_and_flush_the_last() -> None:
    folder = _Folder()
    body = _Body(b"event: end\ndata: x\n\ndata: one\n\ndata: two\n")  # no blank line at EOF
    assert await _texts(body, folder, use_end=False) == ["one", "two"]


async def test_sse_text_chunks_yield_texts_before_a_failing_event() -> None:
    seen: list[str] = []
    response = httpx.Response(200, stream=_Body(b"data: a\n\ndata: !\n\ndata: b\n\n"))

    async def drain() -> None:
        async for chunk in sse_text_chunks(response, _Folder().fold):
            seen.append(chunk.text)

    with pytest.raises(TransientProviderError, match="boom"):
        await drain()
    assert seen == ["a"]
