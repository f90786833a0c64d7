"""Gemini error answers → fleetbench's :mod:`fleetbench.errors` classes.

Google APIs answer ``{"error": {"code", "message", "status", "details"}}``: ``status`` is
the canonical gRPC code name (``INVALID_ARGUMENT``, ``RESOURCE_EXHAUSTED`` …) and
``details`` carry typed extras: ``ErrorInfo.reason`` (``API_KEY_INVALID``),
``QuotaFailure.violations[].quotaId`` and ``RetryInfo.retryDelay`` (``"37s"``), the
retry hint, which Gemini puts in the body rather than in a ``Retry-After`` header.

Decisions worth knowing:

* a bad or expired key is a **400** ``INVALID_ARGUMENT`` at Google, told apart by its
  ``API_KEY_INVALID`` reason (or its message): it is an :class:`AuthenticationError`;
* there is no context-overflow code: "The input token count (N) exceeds the maximum number
  of tokens allowed (M)" (400) is matched on its text;
* a 429 whose ``QuotaFailure`` names a per-day quota (``…PerDay…``) is not retried: waiting
  cannot lift it within a run;
* ``FAILED_PRECONDITION`` (free tier not offered in the region, billing) is a bad request.

Every message is scrubbed of the API key and clipped before it leaves this module.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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
    parse_retry_after,
    quota_exhausted,
)

__all__ = ["GoogleError", "describe", "error_from_payload", "error_from_response"]

VENDOR = "gemini"

_HTTP = {"INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400,
         "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "NOT_FOUND": 404,
         "ABORTED": 409, "ALREADY_EXISTS": 409, "RESOURCE_EXHAUSTED": 429, "CANCELLED": 499,
         "UNKNOWN": 500, "INTERNAL": 500, "UNAVAILABLE": 503,
         "DEADLINE_EXCEEDED": 504}  # fmt: skip
"""Canonical status names → the HTTP status Google maps them to (when ``code`` is missing)."""

_CONTEXT_TEXT = re.compile(
    r"input token count|exceeds the maximum number of tokens|context window|context length",
    re.IGNORECASE,
)
_KEY_TEXT = re.compile(r"API key (?:not valid|expired|not found)", re.IGNORECASE)
_KEY_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED"})


@dataclass(frozen=True, slots=True)
class GoogleError:
    """What a Google error body says."""

    message: str
    status: str | None = None
    code: int | None = None
    reasons: frozenset[str] = frozenset()
    quota_ids: tuple[str, ...] = ()
    retry_delay_s: float | None = None


def describe(payload: Any) -> GoogleError:
    """Read an error body leniently: ``{"error": {...}}`` (also wrapped in a one-item
    list, as some proxies send it), ``{"error": "text"}``, ``{"message": …}``, or text."""
    if isinstance(payload, list) and len(payload) == 1:
        payload = payload[0]
    if not isinstance(payload, dict):
        return GoogleError(str(payload) or "empty body")
    error = payload.get("error", payload)
    if not isinstance(error, dict):
        return GoogleError(str(error))
    message = error.get("message")
    status, code = error.get("status"), error.get("code")
    reasons: set[str] = set()
    quota_ids: list[str] = []
    retry_delay: float | None = None
    details = error.get("details")
    for detail in details if isinstance(details, list) else ():
        if not isinstance(detail, dict):
            continue
        kind = str(detail.get("@type", "")).rpartition(".")[2]
        if kind == "ErrorInfo" and isinstance(detail.get("reason"), str):
            reasons.add(detail["reason"])
        elif kind == "QuotaFailure" and isinstance(detail.get("violations"), list):
            quota_ids += [str(v.get("quotaId")) for v in detail["violations"]
                          if isinstance(v, dict) and v.get("quotaId")]  # fmt: skip
        elif kind == "RetryInfo" and isinstance(detail.get("retryDelay"), str):
            retry_delay = parse_duration(detail["retryDelay"])
    return GoogleError(
        message=message if isinstance(message, str) else "no error message",
        status=status if isinstance(status, str) else None,
        code=code if isinstance(code, int) and 100 <= code <= 599 else None,
        reasons=frozenset(reasons),
        quota_ids=tuple(quota_ids),
        retry_delay_s=retry_delay,
    )


def error_from_response(status: int, body: bytes, headers: Mapping[str, str], *,
                        secret: str | None) -> ProviderError:  # fmt: skip
    """The error for a non-2xx HTTP answer. The retry hint is the body's
    ``RetryInfo.retryDelay``, else a ``Retry-After`` header (a proxy's)."""
    error = describe(error_body(body))
    header = headers.get("retry-after")
    fallback = parse_retry_after(header) if header else None
    return _classify(status, error, fallback, secret, in_stream=False)


def error_from_payload(payload: Any, *, secret: str | None) -> ProviderError:
    """The error for an ``{"error": …}`` object sent with HTTP 200 (inside a stream, or as
    a whole body); its own ``code`` (or ``status`` name) stands in for the HTTP status."""
    error = describe(payload)
    status = error.code or _HTTP.get(error.status or "")
    return _classify(status, error, None, secret, in_stream=True)


def _classify(status: int | None, error: GoogleError, fallback_retry_s: float | None,
              secret: str | None, *, in_stream: bool) -> ProviderError:  # fmt: skip
    where = "error in stream" if in_stream else "HTTP"
    label = " ".join(str(p) for p in (where, status, error.status) if p)
    text = f"{VENDOR}: {label}: {clip(error.message, secret)}"
    retry_after = error.retry_delay_s if error.retry_delay_s is not None else fallback_retry_s
    if error.reasons & _KEY_REASONS or status in (401, 403) or (
        status == 400 and _KEY_TEXT.search(error.message)
    ):
        return AuthenticationError(text, status_code=status)
    if (status is None or status in (400, 500)) and _CONTEXT_TEXT.search(error.message):
        return ContextLengthError(text, status_code=status)
    if status == 429:
        daily = [q for q in error.quota_ids if "PerDay" in q]
        if daily:
            return quota_exhausted(text, f"daily quota {daily[0]} exhausted", status_code=429)
        return RateLimitedError(text, status_code=429, retry_after_s=retry_after)
    if status == 404:
        return BadRequestError(f"{text} (unknown model or API version?)", status_code=404)
    if status is None or status in (408, 409, 499) or status >= 500:
        return TransientProviderError(text, status_code=status, retry_after_s=retry_after)
    return BadRequestError(text, status_code=status)
