"""Helpers for HTTP provider plugins: what every vendor adapter needs and none should
write again.

* :class:`SSEDecoder`: an incremental Server-Sent Events decoder (bytes in, events out) for
  streaming APIs; it follows the parts of the format LLM vendors use: ``data:`` and
  ``event:`` fields (one optional space after the colon), events ended by a blank line,
  comment lines (leading ``:``) and unknown fields ignored, ``\\n`` or ``\\r\\n`` line ends.
* :func:`parse_retry_after`, :func:`parse_duration`: retry hints (``Retry-After`` seconds or
  HTTP dates; ``12ms`` / ``6m0s`` reset durations).
* :func:`redact`: scrub an API key out of a vendor message before it goes anywhere.
"""

from __future__ import annotations

import email.utils
import re
import time

__all__ = ["SSEDecoder", "parse_duration", "parse_retry_after", "redact"]

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
