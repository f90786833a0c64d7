"""Helpers for HTTP provider plugins: what every vendor adapter needs and none should
write again.

* :class:`SSEDecoder`: an incremental Server-Sent Events decoder (bytes in, events out) for
  streaming APIs; it follows the parts of the format LLM vendors use: ``data:`` and
  ``event:`` fields (one optional space after the colon), events ended by a blank line,
  comment lines (leading ``:``) and unknown fields ignored, ``\\n`` or ``\\r\\n`` line ends.
* :func:`parse_retry_after`, :func:`parse_duration`: retry hints (``Retry-After`` seconds or
  HTTP dates; ``12ms`` / ``6m0s`` reset durations); :func:`retry_after_headers` (the
  ``retry-after-ms`` / ``Retry-After`` pair), :func:`seconds_until` (RFC 3339 reset times).
* :func:`redact`: scrub an API key out of a vendor message before it goes anywhere;
  :func:`clip`: redact and cut it to a log-friendly length.
* :func:`load_json`: parse a vendor's JSON or raise a clear ``MalformedResponseError``.
* :func:`check_sampling_params`, :func:`extra_headers`: validate the manifest ``params``
  every vendor shares (sampling settings, extra request headers).
"""

from __future__ import annotations

import datetime
import email.utils
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from fleetbench.errors import MalformedResponseError

__all__ = [
    "MAX_MESSAGE_CHARS",
    "SSEDecoder",
    "check_sampling_params",
    "clip",
    "extra_headers",
    "load_json",
    "parse_duration",
    "parse_retry_after",
    "redact",
    "retry_after_headers",
    "seconds_until",
]

MAX_MESSAGE_CHARS = 300
"""Vendor messages are cut to this length: enough to diagnose, never a whole HTML page."""

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")

class SSEDecoder:
    """Splits a byte stream into ``(event, data)`` pairs; ``event`` is ``""`` when unnamed."""

    __slots__ = ("_buffer", "_data", "_event")

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []
        self._event = b""

    def feed(self, chunk: bytes) -> list[tuple[str, bytes]]:
        """Add bytes; return the events they complete (often none, sometimes several)."""
        buffer = self._buffer + chunk if self._buffer else chunk
        events: list[tuple[str, bytes]] = []
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            line = buffer[start:end]
            start = end + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                self._dispatch(events)
                continue
            if line.startswith(b":"):
                continue  # a comment (keep-alive)
            name, _, value = line.partition(b":")
            if value.startswith(b" "):
                value = value[1:]
            if name == b"data":
                self._data.append(value)
            elif name == b"event":
                self._event = value
            # id, retry and unknown fields do not matter here
        self._buffer = buffer[start:]
        return events

    def close(self) -> list[tuple[str, bytes]]:
        """The body ended: return an event whose lines were complete but whose blank line
        never came (a lenient server's last ``data: [DONE]\\n``). A partial line is dropped."""
        events: list[tuple[str, bytes]] = []
        self._dispatch(events)
        self._buffer = b""
        return events

    def _dispatch(self, events: list[tuple[str, bytes]]) -> None:
        if self._data:
            data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
            events.append((self._event.decode("utf-8", "replace"), data))
        self._data = []
        self._event = b""


def redact(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` replaced by ``***``."""
    if secret and secret in text:
        return text.replace(secret, "***")
    return text


def clip(text: str, secret: str | None, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` redacted, then cut to ``limit`` characters (redacting first, so that no
    prefix of the key survives the cut)."""
    text = redact(text, secret)
    return text if len(text) <= limit else text[:limit] + "…"


def load_json(data: bytes, *, vendor: str, what: str, secret: str | None) -> Any:
    """``data`` parsed as JSON.

    :raises MalformedResponseError: ``"{vendor}: {what} is not valid JSON: '…'"`` with the
        first bytes of ``data`` (redacted), so a proxy's HTML page is recognisable.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        snippet = clip(data[:80].decode("utf-8", "replace"), secret, 80)
        raise MalformedResponseError(f"{vendor}: {what} is not valid JSON: {snippet!r}") from None


def check_sampling_params(params: Mapping[str, Any], *, temperature_max: float = 2.0) -> None:
    """Check the sampling settings a manifest's provider ``params`` may override
    (``temperature`` 0…``temperature_max``, ``top_p`` 0…1, ``max_tokens`` ≥ 1, ``stop`` a
    string or strings, ``system`` a string): the core lifts them out of ``params`` unchecked.

    :raises ValueError: naming the first bad param and what it accepts.
    """
    for name, high in (("temperature", temperature_max), ("top_p", 1.0)):
        value = params.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or not 0.0 <= value <= high):
            raise ValueError(f"param {name!r} must be a number from 0 to {high:g}")
    max_tokens = params.get("max_tokens")
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise ValueError("param 'max_tokens' must be an integer >= 1")
    stop = params.get("stop")
    if stop is not None and not isinstance(stop, str) and not (
        isinstance(stop, list) and all(isinstance(s, str) for s in stop)
    ):
        raise ValueError("param 'stop' must be a string or a list of strings")
    system = params.get("system")
    if system is not None and not isinstance(system, str):
        raise ValueError("param 'system' must be a string")


def extra_headers(value: Any, *, forbidden: Iterable[str]) -> dict[str, str]:
    """The manifest's ``headers`` param (``None``: none) as a dict.

    :param forbidden: header names (any case) the plugin sets itself, chiefly the one
        carrying the key, which must come from ``api_key_env`` and never from a manifest.
    :raises ValueError: not a mapping of strings, or a forbidden name.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError("param 'headers' must map header names to strings")
    banned = {name.lower() for name in forbidden}
    for name in value:
        if name.lower() in banned:
            raise ValueError(
                f"param 'headers' may not set {name!r}: the plugin sets it (the key comes "
                "from api_key_env)"
            )
    return dict(value)


def parse_duration(text: str) -> float | None:
    """Seconds in a reset duration as OpenAI-style vendors send it (``12ms``, ``1.5s``,
    ``6m0s``, ``1h2m3s``, or a bare number of seconds); ``None`` when it is not one."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return value if value >= 0 else None
    total, position = 0.0, 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            return None
        position = match.end()
        number = float(match.group(1))
        total += number * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[match.group(2)]
    return total if position and position == len(text) else None


def parse_retry_after(value: str, *, now: float | None = None) -> float | None:
    """Seconds in an HTTP ``Retry-After`` value: a number of seconds or an HTTP date
    (relative to ``now``, default the current time); ``None`` when it is neither."""
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # an HTTP date is GMT by definition
            return None
        return max(0.0, when.timestamp() - (time.time() if now is None else now))
    return seconds if seconds >= 0 else None


def retry_after_headers(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait according to the standard hint headers: ``retry-after-ms`` (sent by
    OpenAI and Anthropic, honoured by their SDKs) wins over ``Retry-After``; ``None`` when
    neither is there and valid. ``headers`` must be case-insensitive or lower-case."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            ms = float(value)
        except ValueError:
            ms = -1.0
        if ms >= 0:
            return ms / 1000
    value = headers.get("retry-after")
    return parse_retry_after(value, now=now) if value else None


def seconds_until(timestamp: str, *, now: float | None = None) -> float | None:
    """Seconds from ``now`` (default the current time) until an RFC 3339 timestamp such as
    ``2026-01-01T00:00:30Z``, never below 0; ``None`` when it is not one with a time zone."""
    try:
        when = datetime.datetime.fromisoformat(timestamp.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
