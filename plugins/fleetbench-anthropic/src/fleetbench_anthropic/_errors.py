"""Vendor error answers → fleetbench's :mod:`fleetbench.errors` classes.

Anthropic reports failures as ``{"type": "error", "error": {"type", "message"},
"request_id"}``, with an HTTP status, or as an ``error`` event inside a 200 stream (how
overload shows up mid-generation). The error ``type`` decides the class, the HTTP status
when the type is unknown; context overflow has no type of its own and is recognised by its
message. Retry hints: ``retry-after-ms``, then ``Retry-After``, then (429 only) the
``anthropic-ratelimit-*-reset`` timestamps of the exhausted limits. An
``x-should-retry`` header, which Anthropic's SDKs obey, overrides the class's verdict.
Every message is scrubbed of the API key before it leaves this module.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from fleetbench.errors import (
    AuthenticationError,
    BadRequestError,
    ContextLengthError,
    ProviderError,
    RateLimitedError,
    TransientProviderError,
)
from fleetbench.providerkit import (
    clip,
    error_body,
    quota_exhausted,
    rate_limit_reset,
    retry_after_headers,
    seconds_until,
)

__all__ = ["error_from_payload", "error_from_response", "retry_after_s"]

_LIMITS = ("requests", "tokens", "input-tokens", "output-tokens")
_CONTEXT_TEXT = re.compile(
    r"prompt is too long|exceed context limit|context window|context length", re.IGNORECASE
)
_SPEND_CAPS = frozenset({"enforced_spend_limit_reached"})
_AUTH_TYPES = frozenset({"authentication_error", "permission_error", "billing_error"})
_TRANSIENT_TYPES = frozenset({"api_error", "overloaded_error", "timeout_error",
                              "conflict_error"})  # fmt: skip
_TYPE_OF_STATUS = {400: "invalid_request_error", 401: "authentication_error",
                   402: "billing_error", 403: "permission_error", 404: "not_found_error",
                   409: "conflict_error", 413: "request_too_large", 429: "rate_limit_error",
                   500: "api_error", 504: "timeout_error", 529: "overloaded_error"}  # fmt: skip
_KNOWN_TYPES = frozenset(_TYPE_OF_STATUS.values())


def retry_after_s(headers: Mapping[str, str], *, status: int | None,
                  now: float | None = None) -> float | None:  # fmt: skip
    """The vendor's hint of how long to wait, in seconds, or ``None`` when it gave none.

    ``retry-after-ms`` and ``Retry-After`` first. A 429 without them falls back to the
    ``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-reset`` times (RFC
    3339): of the limits whose remaining count is 0, the latest; when none says 0, the
    latest of all. Other statuses never wait on reset times: those headers come on every
    answer and say nothing about an overload.
    """
    hint = retry_after_headers(headers, now=now)
    if hint is not None or status != 429:
        return hint
    return rate_limit_reset(headers, _LIMITS, reset="anthropic-ratelimit-{}-reset",
                            remaining="anthropic-ratelimit-{}-remaining",
                            parse=lambda value: seconds_until(value, now=now))  # fmt: skip


def _describe(payload: Any) -> tuple[str, str | None, str | None]:
    """``(message, type, details.error_code)`` of an error body of any shape."""
    if not isinstance(payload, dict):
        return ("no error message", None, None)
    error = payload.get("error")
    if isinstance(error, str):
        return (error, None, None)
    source = error if isinstance(error, dict) else payload
    message = source.get("message")
    etype = source.get("type")
    details = source.get("details")
    code = details.get("error_code") if isinstance(details, dict) else None
    text = message if isinstance(message, str) else (
        orjson.dumps(message).decode() if message is not None else "no error message")
    return (text, etype if isinstance(etype, str) and etype != "error" else None,
            code if isinstance(code, str) else None)


def error_from_response(status: int, body: bytes, headers: Mapping[str, str], *,
                        secret: str | None) -> ProviderError:  # fmt: skip
    """The error for a non-2xx HTTP answer."""
    message, etype, code = _describe(error_body(body))
    error = _classify(status, message, etype, code, retry_after_s(headers, status=status),
                      secret)
    should = headers.get("x-should-retry", "").strip().lower()
    if should in ("true", "false"):
        error.retryable = should == "true"
    return error


def error_from_payload(payload: Any, *, secret: str | None) -> ProviderError:
    """The error for an error object sent with HTTP 200: an ``error`` stream event, or a
    whole body from a gateway that answers errors that way."""
    message, etype, code = _describe(payload)
    return _classify(None, message, etype, code, None, secret)


def _classify(status: int | None, message: str, etype: str | None, code: str | None,
              retry_after: float | None, secret: str | None) -> ProviderError:  # fmt: skip
    kind = etype if etype in _KNOWN_TYPES else _TYPE_OF_STATUS.get(status or 0)
    where = f"HTTP {status}" if status else "error in stream"
    text = f"anthropic: {where} {etype or kind or 'error'}: {clip(message, secret)}"
    if kind == "request_too_large" or (
        kind in (None, "invalid_request_error") and _CONTEXT_TEXT.search(message)
    ):
        return ContextLengthError(text, status_code=status)
    if kind == "rate_limit_error":
        if code in _SPEND_CAPS and retry_after is None:
            # The account's spend cap: waiting for a rate window cannot lift it.
            return quota_exhausted(text, "spend limit", status_code=status)
        return RateLimitedError(text, status_code=status, retry_after_s=retry_after)
    if kind in _AUTH_TYPES:
        return AuthenticationError(text, status_code=status)
    if kind == "not_found_error":
        return BadRequestError(text + " (unknown model or path?)", status_code=status)
    if kind in _TRANSIENT_TYPES or (kind is None and (status is None or status == 408
                                                      or status >= 500)):
        return TransientProviderError(text, status_code=status, retry_after_s=retry_after)
    return BadRequestError(text, status_code=status)  # invalid_request_error, other 4xx
