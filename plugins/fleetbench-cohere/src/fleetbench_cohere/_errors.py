"""Cohere's error answers → fleetbench's :mod:`fleetbench.errors` classes.

Cohere reports a failed call with an HTTP status and a flat ``{"id", "message"}`` body; a
generation that fails after a 200 ends with ``finish_reason`` ``ERROR`` (the message in
``error``) or ``TIMEOUT``. The status decides the class (the statuses of Cohere's API
definition: 400, 401, 402, 403, 404, 422, 429, 498, 499, 500, 501, 503, 504); the message
refines it: ``too many tokens…`` is a context overflow, and a trial key's *monthly* call
limit is a 429 that waiting cannot lift. Retry hints are those the official SDK honours:
``retry-after-ms``, ``Retry-After``, then ``X-RateLimit-Reset`` (a Unix time in seconds).
Every message is scrubbed of the API key before it leaves this module.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

import orjson

from fleetbench.errors import (
    AuthenticationError,
    BadRequestError,
    ContextLengthError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitedError,
    TransientProviderError,
)
from fleetbench.providerkit import clip, error_body, quota_exhausted, retry_after_headers

__all__ = ["VENDOR", "error_from_generation", "error_from_response", "retry_after_s"]

VENDOR = "cohere"
"""The provider name every message starts with."""
_CONTEXT = re.compile(r"too many tokens|context length|context window", re.IGNORECASE)
_RATE = re.compile(r"rate limit|too many requests|calls? ?/ ?minute|per minute", re.IGNORECASE)
_MONTHLY = re.compile(r"/ ?month|per month|monthly", re.IGNORECASE)
_AUTH_STATUSES = frozenset({401, 403, 498})  # 498: Cohere's "invalid token"
_RETRYABLE_STATUSES = frozenset({408, 409, 499})  # 499: the request was cancelled upstream
_EPOCH_FLOOR = 1_000_000_000.0
"""An ``X-RateLimit-Reset`` below this is not a Unix time (2001-09-09): ignored."""


def retry_after_s(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """The vendor's hint of how long to wait, in seconds, or ``None`` when it gave none.

    ``retry-after-ms`` wins over ``Retry-After`` (seconds or an HTTP date), which wins over
    ``X-RateLimit-Reset`` (the Unix time when the limit resets). ``headers`` must be
    case-insensitive (httpx's) or lower-case.
    """
    hint = retry_after_headers(headers, now=now)
    if hint is not None:
        return hint
    reset = headers.get("x-ratelimit-reset")
    try:
        when = float(reset) if reset else 0.0
    except ValueError:
        return None
    if when < _EPOCH_FLOOR:
        return None
    return max(0.0, when - (time.time() if now is None else now))


def _message(body: bytes) -> str:
    """The ``message`` of an error body; the raw text when it is not Cohere's JSON."""
    payload = error_body(body)
    if isinstance(payload, dict):
        message = payload.get("message")
        if isinstance(message, str) and message:
            return message
    return orjson.dumps(payload).decode()


def error_from_response(status: int, body: bytes, headers: Mapping[str, str], *,
                        secret: str | None) -> ProviderError:  # fmt: skip
    """The error for a non-2xx HTTP answer."""
    message = clip(_message(body), secret)
    text = f"{VENDOR}: HTTP {status}: {message}"
    hint = retry_after_s(headers)
    if status in _AUTH_STATUSES:
        return AuthenticationError(text, status_code=status)
    if status == 402:
        return quota_exhausted(text, "billing", status_code=status)
    if status == 429:
        if _MONTHLY.search(message):
            return quota_exhausted(text, "monthly limit", status_code=status)
        return RateLimitedError(text, status_code=status, retry_after_s=hint)
    if status in (400, 413, 422) and _CONTEXT.search(message):
        return ContextLengthError(text, status_code=status)
    if status == 404:
        return BadRequestError(text + " (unknown model or path?)", status_code=status)
    if status in _RETRYABLE_STATUSES or (status >= 500 and status != 501):
        return TransientProviderError(text, status_code=status, retry_after_s=hint)
    return BadRequestError(text, status_code=status)


def error_from_generation(finish_reason: Any, message: Any, *,
                          secret: str | None) -> ProviderError:  # fmt: skip
    """The error for a generation that failed after HTTP 200: ``finish_reason`` ``ERROR``
    (or an error object in a stream) with its ``message``, or ``TIMEOUT``. Classified by
    the message: a context overflow or a rate limit, else a transient failure."""
    detail = clip(message, secret) if isinstance(message, str) and message else "no message"
    text = f"{VENDOR}: generation failed ({finish_reason}): {detail}"
    if finish_reason == "TIMEOUT":
        return ProviderTimeoutError(text)
    if _CONTEXT.search(detail):
        return ContextLengthError(text)
    if _RATE.search(detail):
        return RateLimitedError(text)
    return TransientProviderError(text)
