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
* :func:`check_sampling_params`, :func:`extra_headers`, :func:`int_param`: validate the
  manifest ``params`` every vendor shares (sampling settings, extra request headers,
  integer options such as ``max_connections``); :func:`request_params`: the ``params``
  that pass through into a request body.
* :func:`http_timeout`: the timeout of one vendor call (connecting capped at 10 s).
* :func:`error_body`, :func:`quota_exhausted`, :func:`rate_limit_reset`: the scaffolding of
  error classification (an error body of any shape, a 429 that waiting cannot lift, the
  reset time of the exhausted one of several rate limits).
* :func:`sse_text_chunks`, :func:`answer_chunks`: the loop of a streamed answer (SSE events
  folded into text chunks, up to the vendor's end event, the rest of the body drained),
  and a whole answer as stream chunks, for servers that answer a stream request with JSON.
"""

from __future__ import annotations

import datetime
import email.utils
import re
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Iterator, Mapping
from typing import Any, overload

import httpx
import orjson

from fleetbench.errors import BadRequestError, MalformedResponseError, RateLimitedError
from fleetbench.records import ProviderResponse, StreamChunk

__all__ = [
    "CONNECT_TIMEOUT_S",
    "MAX_MESSAGE_CHARS",
    "SSEDecoder",
    "answer_chunks",
    "check_sampling_params",
    "clip",
    "error_body",
    "extra_headers",
    "http_timeout",
    "int_param",
    "load_json",
    "parse_duration",
    "parse_retry_after",
    "quota_exhausted",
    "rate_limit_reset",
    "redact",
    "request_params",
    "retry_after_headers",
    "seconds_until",
    "sse_text_chunks",
]

MAX_MESSAGE_CHARS = 300
"""Vendor messages are cut to this length: enough to diagnose, never a whole HTML page."""
CONNECT_TIMEOUT_S = 10.0
"""Connecting to a vendor may take at most this long (less when the call's timeout is
shorter): a dead host fails fast, while a slow answer keeps the call's whole timeout."""

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
    int_param(params, "max_tokens")
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


@overload
def int_param(params: Mapping[str, Any], name: str, *, minimum: int = 1,
              default: None = None) -> int | None: ...
@overload
def int_param(params: Mapping[str, Any], name: str, *, minimum: int = 1,
              default: int) -> int: ...
def int_param(params: Mapping[str, Any], name: str, *, minimum: int = 1,
              default: int | None = None) -> int | None:  # fmt: skip
    """The integer option ``params[name]``, ``default`` when it is absent. Without a
    default, an explicit ``null`` also means absent (``None``); with one, it is refused.

    :raises ValueError: ``"param 'name' must be an integer >= minimum"`` (``true`` and
        ``2.0`` are not integers here).
    """
    value = params.get(name, default)
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"param {name!r} must be an integer >= {minimum}")
    return value


def request_params(params: Mapping[str, Any], *, control: Collection[str],
                   owned: Collection[str]) -> dict[str, Any]:  # fmt: skip
    """The ``params`` that pass through into a request body untouched: all but the
    plugin's own options (``control``), which steer the plugin and are never sent.

    :param owned: body fields the plugin sets itself (``model``, ``messages`` …).
    :raises BadRequestError: ``params`` (a dataset's, which no validator saw) sets one.
    """
    body: dict[str, Any] = {}
    for key, value in params.items():
        if key in control:
            continue
        if key in owned:
            raise BadRequestError(f"param {key!r} is set by the plugin; remove it from params")
        body[key] = value
    return body


def http_timeout(timeout_s: float) -> httpx.Timeout:
    """The httpx timeout of one vendor call: ``timeout_s`` to read, write or wait for a
    pooled connection, connecting capped at :data:`CONNECT_TIMEOUT_S`."""
    return httpx.Timeout(timeout_s, connect=min(timeout_s, CONNECT_TIMEOUT_S))


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


def rate_limit_reset(
    headers: Mapping[str, str],
    limits: Iterable[str],
    *,
    reset: str,
    remaining: str,
    parse: Callable[[str], float | None],
) -> float | None:
    """Seconds until the rate limit that binds resets, from a pair of headers per limit.

    Of the ``limits`` (e.g. ``requests``, ``tokens``), those whose remaining count is 0
    are the ones that bind: the latest of their resets; when none says 0 (or the counts
    are missing), the latest reset of all, to be safe. ``None`` when no reset is valid.

    :param reset: the name of a limit's reset header, ``{}`` standing for the limit
        (``x-ratelimit-reset-{}``); ``remaining`` likewise for its remaining count.
    :param parse: a reset header's value → seconds from now (``None``: not valid), e.g.
        :func:`parse_duration` or :func:`seconds_until`.
    """
    binding: list[float] = []
    other: list[float] = []
    for limit in limits:
        value = headers.get(reset.format(limit))
        seconds = parse(value) if value else None
        if seconds is None:
            continue
        left = headers.get(remaining.format(limit))
        (binding if left is not None and left.strip() == "0" else other).append(seconds)
    chosen = binding or other
    return max(chosen) if chosen else None


def error_body(body: bytes) -> Any:
    """An error answer's body, parsed: its JSON, or, for a body that is not JSON (an edge
    proxy's HTML page, nothing at all), ``{"message": its text or "empty body"}``, the shape
    vendors use, so that one reader of error bodies serves both."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return {"message": body.decode("utf-8", "replace").strip() or "empty body"}


def quota_exhausted(message: str, reason: str, *, status_code: int | None) -> RateLimitedError:
    """A rate-limit error that waiting cannot lift within a run (an exhausted quota, a spend
    cap, billing): reported as ``rate_limited``, but not retried. Its message is
    ``"{message} ({reason}: not retried)"``."""
    error = RateLimitedError(f"{message} ({reason}: not retried)", status_code=status_code)
    error.retryable = False
    return error


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


def answer_chunks(answer: ProviderResponse) -> list[StreamChunk]:
    """A whole answer as the chunks of a stream: its text (when there is any), then the
    closing chunk (usage, finish reason, model, id). For servers that answer a streaming
    request with one JSON body."""
    closing = StreamChunk(usage=answer.usage, finish_reason=answer.finish_reason,
                          model=answer.model, response_id=answer.response_id)  # fmt: skip
    return [StreamChunk(text=answer.text), closing] if answer.text else [closing]


async def sse_text_chunks(
    response: httpx.Response,
    fold: Callable[[str, bytes], str | None],
    *,
    ended: Callable[[], bool] | None = None,
) -> AsyncIterator[StreamChunk]:
    """The text chunks of an SSE body, each yielded as soon as its event is complete.

    ``fold(event, data)`` gets every event (its name, ``""`` when unnamed, and its data),
    folds it into the caller's state, and returns its answer text (``""`` or ``None``
    when it has none); an error event should raise. Texts before a failing event are
    yielded first. Once ``ended()`` (the vendor's end event was folded), later events are
    not decoded, but the body is still read to its end so that the connection goes back
    to the pool. Without ``ended``, the end of the body ends the stream.

    The caller owns ``response`` and what follows: telling a complete stream from a
    truncated one, and its closing chunk (usage, finish reason).
    """
    decoder = SSEDecoder()
    done = ended or _never
    async for raw in response.aiter_bytes():
        if not done():
            for chunk in _fold_events(decoder.feed(raw), fold, done):
                yield chunk
    for chunk in _fold_events(decoder.close(), fold, done):
        yield chunk


def _fold_events(events: list[tuple[str, bytes]], fold: Callable[[str, bytes], str | None],
                 ended: Callable[[], bool]) -> Iterator[StreamChunk]:  # fmt: skip
    for event, data in events:
        if ended():
            return
        text = fold(event, data)
        if text:
            yield StreamChunk(text=text)


def _never() -> bool:
    return False
