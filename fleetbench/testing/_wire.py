"""What differs between vendors, for the fake vendor servers: one :class:`WireFormat` each.

The server (:mod:`._fake`) owns everything vendors share: timing (latency, TTFT, ITL), the
trace, request counting, authentication checks, the fault schedule and the connection-level
faults. A wire format only turns requests into a :class:`ChatCall` and answers into bytes in
its vendor's shape: the JSON body, the streamed events, the error envelope.

Streams are written as ``stream_head`` (right after the headers, before TTFT elapses: e.g.
Anthropic's ``message_start``), one event per content chunk (``stream_chunk``; the server
caches these, so they may not depend on the request), then ``stream_tail`` (finish reason,
usage, the terminator).
"""

from __future__ import annotations

import abc
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

__all__ = ["ChatCall", "Reply", "WireError", "WireFormat", "prompt_chars", "sse"]


@dataclass(frozen=True, slots=True)
class ChatCall:
    """What the server needs to know of one valid chat request."""

    stream: bool
    prompt_tokens: int
    max_tokens: int | None = None
    """The request's output cap, if it set one."""
    model: str | None = None
    """The model the request named (answers echo it); ``None``: the configured model."""
    include_usage: bool = True
    """Streaming: whether the client asked for usage in the stream (OpenAI's
    ``stream_options.include_usage``; always true for vendors that send it anyway)."""


@dataclass(frozen=True, slots=True)
class WireError:
    """A request the vendor would reject: the server answers ``status`` with
    :meth:`WireFormat.error_body`."""

    status: int
    message: str
    error_type: str | None = None
    code: str | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """One answer being written."""

    reply_id: str
    model: str
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"
    """Vendor-neutral: ``stop`` or ``length`` (the output cap cut the answer)."""


def sse(data: Any, event: str | None = None) -> bytes:
    """One Server-Sent Event carrying ``data`` as compact JSON."""
    payload = json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


def prompt_chars(value: Any) -> int:
    """Characters of text anywhere in a request's message structure (strings under any key
    named ``content`` or ``text``, or list items), for the fake's token estimate."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(prompt_chars(item) for item in value)
    if isinstance(value, dict):
        return sum(prompt_chars(v) for k, v in value.items() if k in ("content", "text", "parts"))
    return 0


class WireFormat(abc.ABC):
    """One vendor's HTTP shape, as the fake vendor server speaks it."""

    name: str = ""
    """The vendor name used by ``--vendor`` and :data:`fleetbench.testing.VENDORS`."""
    base_path: str = ""
    """Appended to ``http://host:port`` to make the base URL a client of this vendor is
    configured with (OpenAI clients include ``/v1``; the others add their own prefix)."""
    api_key_hint: str = ""
    """How a client sends the key, for error messages and documentation."""

    @abc.abstractmethod
    def is_chat(self, method: str, path: str) -> bool:
        """Whether the request goes to a chat endpoint of this vendor."""

    @abc.abstractmethod
    def authorized(self, request: web.BaseRequest, api_key: str) -> bool:
        """Whether the request carries ``api_key`` the way this vendor expects it."""

    @abc.abstractmethod
    def parse(self, request: web.BaseRequest, body: Any) -> ChatCall | WireError:
        """Validate a chat request (``body`` is the parsed JSON, ``None`` if it was not
        JSON) and extract what the server needs, or say why the vendor would reject it."""

    @abc.abstractmethod
    def error_body(self, status: int, message: str, error_type: str | None,
                   code: str | None) -> bytes:
        """The vendor's error envelope; ``error_type`` ``None`` means the vendor's usual
        type for ``status``."""

    def refusal(self, status: int, message: str, error_type: str | None, code: str | None,
                headers: Mapping[str, str]) -> tuple[bytes, dict[str, str]]:
        """The body and extra headers of an injected HTTP error (``headers``: the fault's).
        Vendors whose retry hints live in the body (Gemini's ``RetryInfo``) move them there."""
        return self.error_body(status, message, error_type, code), dict(headers)

    def unauthorized(self) -> WireError:
        """The rejection of a request without the right key."""
        return WireError(401, "invalid api key")

    def not_found(self, path: str) -> WireError:
        return WireError(404, f"unknown path {path}")

    @abc.abstractmethod
    def completion(self, reply: Reply) -> bytes:
        """The non-streaming JSON body."""

    def stream_head(self, reply: Reply) -> bytes:
        """Events sent right after the headers, before the first content chunk."""
        return b""

    @abc.abstractmethod
    def stream_chunk(self, reply_id: str, model: str, text: str, first: bool) -> bytes:
        """The event carrying one content chunk. The server caches chunks, calling this with
        a placeholder ``reply_id`` that it replaces in the bytes per request."""

    @abc.abstractmethod
    def stream_tail(self, reply: Reply, call: ChatCall) -> bytes:
        """Events after the last content chunk: finish reason, usage, terminator."""

    @abc.abstractmethod
    def stream_error(self, status: int, message: str, error_type: str | None,
                     code: str | None) -> bytes:
        """An error event inside a 200 stream (the vendor failing mid-generation)."""

    def malformed_event(self) -> bytes:
        """An event whose data is not valid JSON."""
        return b'data: {"choices":[{"delta":{"content":\n\n'

    def headers(self) -> Mapping[str, str]:
        """Extra response headers on every answer (request ids and the like)."""
        return {}
