"""fleetbench.providerkit: the helpers every vendor plugin shares. Pure, no network."""

from __future__ import annotations

from typing import Any

import pytest

from fleetbench.errors import MalformedResponseError
from fleetbench.providerkit import (
    check_sampling_params,
    clip,
    extra_headers,
    load_json,
    retry_after_headers,
    seconds_until,
)

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
