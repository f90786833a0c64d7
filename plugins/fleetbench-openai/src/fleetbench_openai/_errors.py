"""Vendor error answers → fleetbench's :mod:`fleetbench.errors` classes.

The OpenAI family reports failures in an ``{"error": {"message", "type", "param", "code"}}``
envelope, but compatible servers vary (``{"error": "text"}``, vLLM's top-level
``{"object": "error", …}``, ``{"message": …}``, ``{"detail": …}``), so bodies are read
leniently. The HTTP status decides the class first; the body refines it (context overflow,
exhausted quota). Retry hints come from ``retry-after-ms``, then ``Retry-After`` (seconds or
an HTTP date), then the ``x-ratelimit-reset-*`` durations. Every message is scrubbed of the
API key before it leaves this module.
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
    parse_duration,
    quota_exhausted,
    rate_limit_reset,
    retry_after_headers,
)

__all__ = ["error_from_payload", "error_from_response", "retry_after_s"]

_CONTEXT_CODES = frozenset({"context_length_exceeded", "exceed_context_size_error"})
_CONTEXT_TEXT = re.compile(
    r"maximum context length|context length|context window|context size|"
    r"too many tokens|prompt is too long",
    re.IGNORECASE,
)
_RATE_TYPES = frozenset({"rate_limit_exceeded", "rate_limit_error", "requests", "tokens"})
_AUTH_TYPES = frozenset(
    {"invalid_api_key", "authentication_error", "permission_error", "unauthorized"}
)
_BAD_TYPES = frozenset({"invalid_request_error", "BadRequestError", "not_found_error"})
_QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached"})
_RETRYABLE_STATUSES = frozenset({408, 409, 425, 429})


def retry_after_s(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """The vendor's hint of how long to wait, in seconds, or ``None`` when it gave none.

    ``retry-after-ms`` wins over ``Retry-After``, which wins over the reset headers. Of the
    ``x-ratelimit-reset-{requests,tokens}`` pair, the limits whose remaining count is 0 are
    the ones that bind; when that is unknown, the longer reset is used.
    """
    hint = retry_after_headers(headers, now=now)
    if hint is not None:
        return hint
    return rate_limit_reset(headers, ("requests", "tokens"), reset="x-ratelimit-reset-{}",
                            remaining="x-ratelimit-remaining-{}", parse=parse_duration)


def describe(payload: Any) -> tuple[str, str | None, str | None, int | None]:
    """``(message, type, code, status)`` from an error body of any of the known shapes."""
    if not isinstance(payload, dict):
        return (str(payload), None, None, None)
    error = payload.get("error")
    source: Mapping[str, Any] = payload
    if isinstance(error, dict):
        source = error
    elif isinstance(error, str):
        return (error, _str(payload.get("type")), _str(payload.get("code")), None)
    message = source.get("message") or source.get("detail") or payload.get("detail")
    code = source.get("code")
    status = code if isinstance(code, int) and 100 <= code <= 599 else None
    if status is None:
        raw_status = source.get("status")
        if isinstance(raw_status, int) and 100 <= raw_status <= 599:
            status = raw_status
    return (
        _text(message) if message is not None else "no error message",
        _str(source.get("type")),
        None if status is not None and code == status else _str(code),
        status,
    )


def _str(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    return str(value)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def error_from_response(
    vendor: str,
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    secret: str | None,
) -> ProviderError:
    """The error for a non-2xx HTTP answer."""
    message, etype, code, _ = describe(error_body(body))
    return _classify(vendor, status, message, etype, code, retry_after_s(headers), secret)


def error_from_payload(
    vendor: str, payload: Any, *, secret: str | None, status: int | None = None
) -> ProviderError:
    """The error for an error object the vendor sent with HTTP 200 (inside a stream, or as
    a whole body). Its own ``code``/``status``, when numeric, stands in for the HTTP status."""
    message, etype, code, own_status = describe(payload)
    return _classify(vendor, own_status or status, message, etype, code, None, secret)


def _classify(
    vendor: str,
    status: int | None,
    message: str,
    etype: str | None,
    code: str | None,
    retry_after: float | None,
    secret: str | None,
) -> ProviderError:
    label = " ".join(p for p in (f"HTTP {status}" if status else "error in stream",
                                 code or etype) if p)  # fmt: skip
    message = clip(message, secret)
    text = f"{vendor}: {label}: {message}"
    kinds = {k for k in (etype, code) if k}
    if kinds & _CONTEXT_CODES or (
        (status is None or status in (400, 413, 500)) and _CONTEXT_TEXT.search(message)
    ):
        return ContextLengthError(text, status_code=status)
    if kinds & _QUOTA_CODES:
        return quota_exhausted(text, "quota exhausted", status_code=status)
    if status in (401, 403) or (status is None and kinds & _AUTH_TYPES):
        return AuthenticationError(text, status_code=status)
    if status == 429 or (status is None and kinds & _RATE_TYPES):
        return RateLimitedError(text, status_code=status, retry_after_s=retry_after)
    if status == 404:
        return BadRequestError(text + " (unknown model, deployment or path?)", status_code=404)
    if status is None and kinds & _BAD_TYPES:
        return BadRequestError(text)
    if status is None or status in _RETRYABLE_STATUSES or status >= 500:
        return TransientProviderError(text, status_code=status, retry_after_s=retry_after)
    return BadRequestError(text, status_code=status)
