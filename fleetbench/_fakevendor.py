"""A minimal, fast fake OpenAI-compatible vendor for benchmarks and tests.

It speaks the OpenAI Chat Completions wire format at ``POST /v1/chat/completions``:

* non-streaming: one JSON body with ``choices`` and ``usage``, after ``latency_ms``;
* streaming (``"stream": true``): Server-Sent Events, the first content chunk after
  ``ttft_ms``, then one chunk every ``itl_ms`` carrying ``tokens_per_chunk`` tokens, a final
  chunk with ``finish_reason``, an optional usage chunk (``stream_options.include_usage``)
  and ``data: [DONE]``.

Why it exists: to tell how much of a measured latency is the vendor's and how much is the
client's, the server records its own *truth* for every request (:class:`TraceEntry`): when the
handler received the request, when the first and last tokens were written and when the last
byte was written. Clients tag requests with the :data:`REQUEST_ID_HEADER` header so their
measurements can be matched with the trace.

Clock: every timestamp is ``time.perf_counter()``. On Linux CPython implements it with
``clock_gettime(CLOCK_MONOTONIC)`` (see ``time.get_clock_info("perf_counter")``), which is one
system-wide clock, so the values are directly comparable with ``time.perf_counter()`` in the
client both in the same process and in another process on the same host
(:func:`clock_description` reports the implementation; :class:`FakeOpenAIServerProcess`
refuses to compare across processes on a platform where that is not the case).

It is deliberately light: the low-level aiohttp server (no router, no middleware), no access
log, no per-request logging, and pre-encoded SSE chunks, so that it is not the bottleneck of
the benchmark that uses it (run it in a separate process for client CPU measurements, see
:class:`FakeOpenAIServerProcess` and :func:`main`).

Control endpoints (not part of the OpenAI API), used across processes:

* ``GET /_fakevendor/trace`` -> ``{"clock", "requests", "in_flight", "max_in_flight",
  "cpu_s", "trace": [...]}`` (``cpu_s`` is the server process's ``time.process_time()``, so a
  benchmark can report the server's CPU apart from the client's);
* ``POST /_fakevendor/reset`` -> clears the trace and the counters.

Fault injection (for provider plugin tests): ``FakeOpenAIConfig.faults`` is a script of
:class:`Fault` s applied to the first requests in order (request ``n`` gets ``faults[n-1]``,
counted from the last reset; later requests succeed): an HTTP error with the vendor's error
envelope and headers (429 with ``retry-after-ms`` / ``Retry-After``, 500, 503 …), a malformed
JSON body or SSE event, a stream that ends without ``[DONE]``, an error object inside a 200
stream, or a connection closed mid-response. ``api_key`` makes the server demand a key
(``Authorization: Bearer`` or Azure's ``api-key``) and answer 401 otherwise. Azure-style paths
(``/openai/deployments/{name}/chat/completions?api-version=…`` and ``/openai/v1/…``) are
served too, and ``capture=True`` records each request's path, query, headers and body.

Besides the knobs it counts requests in flight (``max_in_flight`` checks a client's
concurrency limit from the outside) and offers :meth:`FakeOpenAIServer.wait_for_requests`
so tests can wait for "the server has the request" without polling.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import selectors
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from types import TracebackType
from typing import Any, Self

from aiohttp import web

__all__ = [
    "CONTROL_PREFIX",
    "REQUEST_ID_HEADER",
    "CapturedRequest",
    "FakeOpenAIConfig",
    "FakeOpenAIServer",
    "FakeOpenAIServerProcess",
    "FakeOpenAIService",
    "Fault",
    "TraceEntry",
    "clock_description",
    "main",
]

REQUEST_ID_HEADER = "X-Fleetbench-Request-Id"
"""Request header whose value the server copies into :attr:`TraceEntry.request_id`."""

CONTROL_PREFIX = "/_fakevendor"
"""Path prefix of the control endpoints (trace, reset)."""

CLIENT_CLOSED_REQUEST = 499
"""Trace status when the client disconnected before the response was complete (nginx's code)."""

READY_PREFIX = "FAKEVENDOR_READY "
"""Line :func:`main` prints on stdout, followed by the base URL, once it accepts requests."""

_WORDS = ("Hello", " from", " the", " fake", " vendor", ",", " one", " token", " at", " a", " time")


def clock_description() -> str:
    """Which clock the trace timestamps come from (for run metadata and sanity checks)."""
    return f"time.perf_counter: {time.get_clock_info('perf_counter').implementation}"


def _clock_is_system_wide() -> bool:
    return "CLOCK_MONOTONIC" in time.get_clock_info("perf_counter").implementation


FAULT_KINDS = ("http_error", "malformed", "truncate", "stream_error", "disconnect")


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected failure, applied to one request (see :attr:`FakeOpenAIConfig.faults`).

    Kinds:

    * ``http_error``: answer ``status`` with ``{"error": {"message", "type", "param", "code"}}``
      and ``headers`` (e.g. ``{"retry-after-ms": "300"}``), streaming or not;
    * ``malformed``: a 200 whose JSON body (or, streaming, the event after ``after_chunks``
      content chunks) is not valid JSON;
    * ``truncate``: streaming, end the body cleanly after ``after_chunks`` content chunks
      without ``[DONE]``; non-streaming, close the connection half-way through the body;
    * ``stream_error``: streaming, after ``after_chunks`` content chunks send
      ``data: {"error": {…}}`` (the vendor failing mid-generation) and end the body;
    * ``disconnect``: close the connection without answering.

    Use the constructors (:meth:`http_error`, :meth:`rate_limited` …) rather than the fields.
    """

    kind: str
    status: int = 500
    error_type: str = "server_error"
    code: str | None = None
    message: str = "injected fault"
    headers: tuple[tuple[str, str], ...] = ()
    after_chunks: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {', '.join(FAULT_KINDS)}")
        if self.after_chunks < 0:
            raise ValueError("after_chunks must be >= 0")

    @classmethod
    def http_error(
        cls,
        status: int,
        *,
        error_type: str = "server_error",
        code: str | None = None,
        message: str = "injected fault",
        headers: Mapping[str, str] | None = None,
    ) -> Fault:
        """An HTTP error answer with OpenAI's error envelope."""
        return cls("http_error", status, error_type, code, message,
                   tuple((headers or {}).items()))  # fmt: skip

    @classmethod
    def rate_limited(cls, headers: Mapping[str, str] | None = None) -> Fault:
        """A 429 ``rate_limit_exceeded`` with the given retry hint headers."""
        return cls.http_error(429, error_type="requests", code="rate_limit_exceeded",
                              message="Rate limit reached for requests", headers=headers)

    @classmethod
    def malformed(cls, *, after_chunks: int = 0) -> Fault:
        """A 200 whose body (or streamed event) is not JSON."""
        return cls("malformed", 200, after_chunks=after_chunks)

    @classmethod
    def truncated(cls, *, after_chunks: int = 0) -> Fault:
        """A response that ends early (streaming: no ``[DONE]``)."""
        return cls("truncate", 200, after_chunks=after_chunks)

    @classmethod
    def stream_error(
        cls,
        *,
        after_chunks: int = 0,
        error_type: str = "server_error",
        code: str | None = None,
        message: str = "injected fault",
    ) -> Fault:
        """An error object inside a 200 stream."""
        return cls("stream_error", 200, error_type, code, message, after_chunks=after_chunks)

    @classmethod
    def disconnect(cls) -> Fault:
        """The connection closes before any answer."""
        return cls("disconnect", 0)

    def error_body(self) -> bytes:
        """The OpenAI error envelope this fault sends."""
        error = {"message": self.message, "type": self.error_type, "param": None,
                 "code": self.code}  # fmt: skip
        return json.dumps({"error": error}).encode()


@dataclass(frozen=True, slots=True)
class CapturedRequest:
    """One chat request as received, recorded when the server runs with ``capture=True``."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    """Header names lower-cased."""
    body: Any


@dataclass(frozen=True, slots=True)
class FakeOpenAIConfig:
    """Behaviour knobs of the fake vendor (all durations in milliseconds).

    ``output_tokens`` is capped per request by ``max_tokens``/``max_completion_tokens`` when
    the request sets them, like a real vendor.
    """

    latency_ms: float = 0.0
    """Non-streaming: delay between receiving the request and writing the response."""
    ttft_ms: float = 0.0
    """Streaming: delay before the first content chunk (headers are sent immediately)."""
    itl_ms: float = 0.0
    """Streaming: delay between consecutive content chunks."""
    output_tokens: int = 16
    tokens_per_chunk: int = 1
    model: str = "fake-gpt"
    faults: tuple[Fault, ...] = field(default=())
    """Request ``n`` (1-based, since the last reset) gets ``faults[n-1]``; later ones succeed."""
    api_key: str | None = None
    """When set, requests need ``Authorization: Bearer <key>`` or ``api-key: <key>``."""

    def __post_init__(self) -> None:
        if min(self.latency_ms, self.ttft_ms, self.itl_ms) < 0:
            raise ValueError("fake vendor delays must be >= 0")
        if self.output_tokens < 0 or self.tokens_per_chunk < 1:
            raise ValueError("output_tokens must be >= 0 and tokens_per_chunk >= 1")


@dataclass(slots=True)
class TraceEntry:
    """What the server itself observed for one request (``time.perf_counter()`` seconds).

    The entry is appended when the request arrives, so in-flight requests are visible with
    the later timestamps still ``None``.
    """

    request_id: str | None
    stream: bool
    received: float
    """The handler started (request line and headers parsed)."""
    first_token: float | None = None
    """The first content chunk was handed to the socket (non-streaming: the whole response)."""
    last_token: float | None = None
    """The last content chunk was handed to the socket (``None`` until then)."""
    last_byte: float | None = None
    """The end of the response (``[DONE]`` and the terminating chunk) was handed to the socket.

    Write timestamps are taken immediately before the write call that sends the bytes, and kept
    only if it succeeded."""
    status: int = 200
    completion_tokens: int = 0

    @property
    def latency_s(self) -> float | None:
        """Server-side latency: received -> last byte written."""
        return None if self.last_byte is None else self.last_byte - self.received

    @property
    def ttft_s(self) -> float | None:
        """Server-side time to first token: received -> first token written."""
        return None if self.first_token is None else self.first_token - self.received

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TraceEntry:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


def _error(
    status: int, message: str, error_type: str = "invalid_request_error", code: str | None = None
) -> web.Response:
    body = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    return web.Response(status=status, body=json.dumps(body), content_type="application/json")


def _prompt_tokens(messages: Any) -> int:
    """A deterministic, cheap stand-in for a tokenizer: about four characters per token."""
    chars = 0
    if isinstance(messages, list):
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                chars += len(content)
            elif isinstance(content, list):
                for part in content:
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        chars += len(part["text"])
    return max(1, chars // 4)


def _token_text(start: int, count: int) -> str:
    return "".join(_WORDS[i % len(_WORDS)] for i in range(start, start + count))


class _StreamTemplate:
    """Pre-encoded SSE chunk tails for one (model, tokens, tokens_per_chunk) layout.

    Only the completion id differs between requests, so each chunk is ``head + id + tail``.
    """

    __slots__ = ("chunk_tails", "chunk_tokens", "finish_tail")

    def __init__(self, model: str, created: int, tokens: int, per_chunk: int) -> None:
        self.chunk_tokens: list[int] = []
        self.chunk_tails: list[bytes] = []
        for index, start in enumerate(range(0, tokens, per_chunk)):
            count = min(per_chunk, tokens - start)
            delta: dict[str, str] = {"content": _token_text(start, count)}
            if index == 0:
                delta = {"role": "assistant", **delta}
            self.chunk_tokens.append(count)
            self.chunk_tails.append(_tail(model, created, delta, None))
        self.finish_tail = _tail(model, created, {}, "stop")


def _tail(model: str, created: int, delta: dict[str, str], finish: str | None) -> bytes:
    rest = {
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b'",' + json.dumps(rest, separators=(",", ":"))[1:].encode() + b"\n\n"


_CHUNK_HEAD = b'data: {"id":"'


class FakeOpenAIService:
    """The request handling and the recorded state, independent of how it is served.

    :class:`FakeOpenAIServer` serves it in the current event loop; :func:`main` serves it in
    its own process. ``config`` may be replaced between requests (e.g. by a test).
    """

    def __init__(self, config: FakeOpenAIConfig | None = None, *, capture: bool = False) -> None:
        self.config = config or FakeOpenAIConfig()
        self.capture = capture
        """Record every chat request in :attr:`captured` (off for benchmarks: it costs CPU)."""
        self.captured: list[CapturedRequest] = []
        self.requests = 0
        """Chat completion requests received (including rejected ones)."""
        self.in_flight = 0
        """Chat completion requests whose response is not complete yet."""
        self.max_in_flight = 0
        """The highest ``in_flight`` seen (e.g. to check a client's concurrency limit)."""
        self.trace: list[TraceEntry] = []
        self._created = int(time.time())
        self._templates: dict[tuple[str, int, int], _StreamTemplate] = {}
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def reset(self) -> None:
        """Forget the trace and the counters (requests in flight stay counted)."""
        self.requests = 0
        self.max_in_flight = self.in_flight
        self.trace = []
        self.captured = []

    async def wait_for_requests(self, count: int) -> None:
        """Return once ``count`` chat requests have arrived (an event for tests, no polling)."""
        if self.requests >= count:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((count, waiter))
        await waiter

    def _wake_waiters(self) -> None:
        pending = []
        for count, waiter in self._waiters:
            if self.requests < count:
                pending.append((count, waiter))
            elif not waiter.done():
                waiter.set_result(None)
        self._waiters = pending

    def snapshot(self) -> dict[str, Any]:
        """The state as JSON-able data (what ``GET /_fakevendor/trace`` returns)."""
        return {
            "clock": clock_description(),
            "requests": self.requests,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "cpu_s": time.process_time(),
            "trace": [entry.to_dict() for entry in self.trace],
        }

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Entry point for aiohttp's low-level server."""
        received = time.perf_counter()
        path = request.path
        if (path == "/v1/chat/completions" or _is_azure_chat(path)) and request.method == "POST":
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                return await self._chat(request, received)
            finally:
                self.in_flight -= 1
        if path.startswith(CONTROL_PREFIX):
            return self._control(request, path[len(CONTROL_PREFIX) :])
        return _error(404, f"Unknown path {path}", "not_found")

    def _control(self, request: web.BaseRequest, sub: str) -> web.StreamResponse:
        if sub == "/trace" and request.method == "GET":
            return web.json_response(self.snapshot())
        if sub == "/reset" and request.method == "POST":
            self.reset()
            return web.json_response({"ok": True})
        return _error(404, f"Unknown control path {sub}", "not_found")

    async def _chat(self, request: web.BaseRequest, received: float) -> web.StreamResponse:
        config = self.config
        entry = TraceEntry(request.headers.get(REQUEST_ID_HEADER), False, received)
        self.requests += 1
        self.trace.append(entry)
        if self._waiters:
            self._wake_waiters()
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if self.capture:
            self.captured.append(CapturedRequest(
                request.method, request.path, dict(request.query),
                {k.lower(): v for k, v in request.headers.items()}, body))  # fmt: skip
        if request.path.startswith("/openai/deployments/") and not request.query.get(
            "api-version"
        ):
            entry.status = 404
            return _error(404, "Resource not found: api-version is missing", "not_found")
        if config.api_key is not None and not _authorized(request, config.api_key):
            entry.status = 401
            return _error(401, "Incorrect API key provided.", "invalid_request_error",
                          code="invalid_api_key")  # fmt: skip
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            entry.status = 400
            return _error(400, "Invalid request body: 'messages' must be a list")
        fault = config.faults[self.requests - 1] if self.requests <= len(config.faults) else None
        if fault is not None and fault.kind in ("http_error", "disconnect"):
            return await self._refuse(request, entry, fault)
        tokens = config.output_tokens
        cap = body.get("max_completion_tokens", body.get("max_tokens"))
        if isinstance(cap, int) and cap >= 0:
            tokens = min(tokens, cap)
        entry.completion_tokens = tokens
        usage = {
            "prompt_tokens": (prompt := _prompt_tokens(body["messages"])),
            "completion_tokens": tokens,
            "total_tokens": prompt + tokens,
        }
        completion_id = f"chatcmpl-fake-{self.requests}"
        if body.get("stream"):
            entry.stream = True
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
            return await self._stream(request, entry, config, completion_id, usage, include_usage,
                                      fault)

        if config.latency_ms:
            await asyncio.sleep(config.latency_ms / 1000)
        if fault is not None:
            return await self._faulty_body(request, entry, fault)
        payload = {
            "id": completion_id,
            "object": "chat.completion",
            "created": self._created,
            "model": config.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": _token_text(0, tokens)},
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }
        response = web.Response(
            body=json.dumps(payload, separators=(",", ":")).encode(),
            content_type="application/json",
        )
        try:
            await response.prepare(request)  # buffers the headers; write_eof() sends it all
            written = time.perf_counter()
            await response.write_eof()
        except ConnectionResetError:  # the client went away (e.g. it timed out)
            entry.status = CLIENT_CLOSED_REQUEST
            return response
        entry.first_token = entry.last_token = entry.last_byte = written
        return response

    async def _stream(
        self,
        request: web.BaseRequest,
        entry: TraceEntry,
        config: FakeOpenAIConfig,
        completion_id: str,
        usage: dict[str, int],
        include_usage: bool,
        fault: Fault | None = None,
    ) -> web.StreamResponse:
        key = (config.model, entry.completion_tokens, config.tokens_per_chunk)
        template = self._templates.get(key)
        if template is None:
            template = _StreamTemplate(config.model, self._created, *key[1:])
            self._templates[key] = template
        cid = completion_id.encode()
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        try:
            await response.prepare(request)  # headers go out now, as with real vendors
            if fault is None:
                await self._write_stream(
                    response, entry, config, template, cid, usage, include_usage
                )
            else:
                await self._write_faulty_stream(response, entry, config, template, cid, fault)
        except ConnectionResetError:  # the client went away (e.g. it timed out)
            entry.status = CLIENT_CLOSED_REQUEST
        return response

    async def _write_stream(
        self,
        response: web.StreamResponse,
        entry: TraceEntry,
        config: FakeOpenAIConfig,
        template: _StreamTemplate,
        cid: bytes,
        usage: dict[str, int],
        include_usage: bool,
    ) -> None:
        if config.ttft_ms:
            await asyncio.sleep(config.ttft_ms / 1000)
        itl = config.itl_ms / 1000
        written = 0.0
        for index, tail in enumerate(template.chunk_tails):
            if index and itl:
                await asyncio.sleep(itl)
            # Stamped just before the write: aiohttp hands the bytes to the socket inside the
            # call, and a stamp taken after it could be late if this process is descheduled.
            written = time.perf_counter()
            await response.write(_CHUNK_HEAD + cid + tail)
            if index == 0:
                entry.first_token = written
        if template.chunk_tails:
            entry.last_token = written
        end = [_CHUNK_HEAD + cid + template.finish_tail]
        if include_usage:
            final = {
                "id": cid.decode(),
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": config.model,
                "choices": [],
                "usage": usage,
            }
            end.append(b"data: " + json.dumps(final, separators=(",", ":")).encode() + b"\n\n")
        end.append(b"data: [DONE]\n\n")
        written = time.perf_counter()
        await response.write_eof(b"".join(end))  # the tail and the terminating chunk
        entry.last_byte = written


    async def _refuse(
        self, request: web.BaseRequest, entry: TraceEntry, fault: Fault
    ) -> web.StreamResponse:
        """An HTTP error answer, or a connection closed without one."""
        if fault.kind == "disconnect":
            entry.status = 0
            _close_connection(request)
            return web.Response()  # never sent: the transport is gone
        entry.status = fault.status
        written = time.perf_counter()
        response = web.Response(status=fault.status, body=fault.error_body(),
                                content_type="application/json", headers=dict(fault.headers))
        entry.last_byte = written
        return response

    async def _faulty_body(
        self, request: web.BaseRequest, entry: TraceEntry, fault: Fault
    ) -> web.StreamResponse:
        """A non-streaming 200 that is malformed or cut short."""
        partial = b'{"id":"chatcmpl-fake","object":"chat.completion","choices":[{"ind'
        if fault.kind != "truncate":  # malformed (stream-only kinds degrade to this)
            return web.Response(body=partial, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = len(partial) * 4
        try:
            await response.prepare(request)
            await response.write(partial)
        except ConnectionResetError:
            entry.status = CLIENT_CLOSED_REQUEST
            return response
        entry.status = 0
        _close_connection(request)
        return response

    async def _write_faulty_stream(
        self,
        response: web.StreamResponse,
        entry: TraceEntry,
        config: FakeOpenAIConfig,
        template: _StreamTemplate,
        cid: bytes,
        fault: Fault,
    ) -> None:
        """``after_chunks`` content chunks, then the fault instead of the normal ending."""
        if config.ttft_ms:
            await asyncio.sleep(config.ttft_ms / 1000)
        for index, tail in enumerate(template.chunk_tails[: fault.after_chunks]):
            if index and config.itl_ms:
                await asyncio.sleep(config.itl_ms / 1000)
            written = time.perf_counter()
            await response.write(_CHUNK_HEAD + cid + tail)
            if index == 0:
                entry.first_token = written
            entry.last_token = written
        if fault.kind == "malformed":
            end = b'data: {"id":"' + cid + b'","choices":[{"delta":{"content":\n\ndata: [DONE]\n\n'
        elif fault.kind == "stream_error":
            end = b"data: " + fault.error_body() + b"\n\n"
        else:  # truncate: a clean end of the body, but no [DONE]
            end = b""
        entry.status = 0 if fault.kind == "truncate" else 200
        written = time.perf_counter()
        await response.write_eof(end)
        entry.last_byte = written


def _is_azure_chat(path: str) -> bool:
    """Azure OpenAI's chat paths: classic deployments (``api-version`` query) and v1."""
    if path == "/openai/v1/chat/completions":
        return True
    return path.startswith("/openai/deployments/") and path.endswith("/chat/completions")


def _authorized(request: web.BaseRequest, key: str) -> bool:
    headers = request.headers
    return headers.get("Authorization") == f"Bearer {key}" or headers.get("api-key") == key


def _close_connection(request: web.BaseRequest) -> None:
    transport = request.transport
    if transport is not None:
        transport.close()


class FakeOpenAIServer:
    """Serve a :class:`FakeOpenAIService` on 127.0.0.1 in the running event loop.

    ``async with FakeOpenAIServer(latency_ms=50) as server:`` then point an OpenAI client at
    ``server.base_url``; ``server.requests`` and ``server.trace`` tell what the server saw.
    ``port=0`` picks a free port.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        latency_ms: float = 0.0,
        ttft_ms: float = 0.0,
        itl_ms: float = 0.0,
        output_tokens: int = 16,
        tokens_per_chunk: int = 1,
        model: str = "fake-gpt",
        config: FakeOpenAIConfig | None = None,
        backlog: int = 4096,
        shutdown_timeout_s: float = 0.5,
        capture: bool = False,
    ) -> None:
        self.service = FakeOpenAIService(
            config
            or FakeOpenAIConfig(
                latency_ms=latency_ms,
                ttft_ms=ttft_ms,
                itl_ms=itl_ms,
                output_tokens=output_tokens,
                tokens_per_chunk=tokens_per_chunk,
                model=model,
            ),
            capture=capture,
        )
        self._host = host
        self._port = port
        self._backlog = backlog
        self._shutdown_timeout_s = shutdown_timeout_s
        self._runner: web.ServerRunner | None = None

    @property
    def config(self) -> FakeOpenAIConfig:
        return self.service.config

    @config.setter
    def config(self, value: FakeOpenAIConfig) -> None:
        self.service.config = value

    def configure(self, **changes: Any) -> None:
        """Change knobs for subsequent requests, e.g. ``server.configure(latency_ms=0)``."""
        self.service.config = replace(self.service.config, **changes)

    @property
    def requests(self) -> int:
        """Number of chat completion requests received (including rejected ones)."""
        return self.service.requests

    @property
    def in_flight(self) -> int:
        return self.service.in_flight

    @property
    def max_in_flight(self) -> int:
        return self.service.max_in_flight

    async def wait_for_requests(self, count: int) -> None:
        """Return once ``count`` chat requests have arrived."""
        await self.service.wait_for_requests(count)

    @property
    def trace(self) -> list[TraceEntry]:
        return self.service.trace

    @property
    def captured(self) -> list[CapturedRequest]:
        """The requests received, when created with ``capture=True``."""
        return self.service.captured

    @property
    def port(self) -> int:
        if self._runner is None:
            raise RuntimeError("the server is not running")
        address = self._runner.addresses[0]
        return int(address[1])

    @property
    def base_url(self) -> str:
        """OpenAI-style base URL, ``http://127.0.0.1:PORT/v1``."""
        return f"http://{self._host}:{self.port}/v1"

    async def start(self) -> None:
        # access_log=None: no per-request logging (it would cost CPU on the hot path).
        server = web.Server(self.service.handle, access_log=None)
        runner = web.ServerRunner(server, shutdown_timeout=self._shutdown_timeout_s)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port, backlog=self._backlog)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner

    async def stop(self) -> None:
        """Stop serving; requests still in flight are cancelled after the shutdown timeout."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class FakeOpenAIServerProcess:
    """Run the fake vendor in a child process (``python -m fleetbench._fakevendor``).

    For benchmarks that must measure the client's CPU apart from the server's. A synchronous
    context manager; the control calls (:meth:`fetch`, :meth:`reset`) use blocking stdlib HTTP
    and are meant for between measurement phases, not for the hot path.
    """

    def __init__(
        self,
        config: FakeOpenAIConfig | None = None,
        *,
        port: int = 0,
        startup_timeout_s: float = 15.0,
    ) -> None:
        self.config = config or FakeOpenAIConfig()
        self._port = port
        self._startup_timeout_s = startup_timeout_s
        self._proc: subprocess.Popen[str] | None = None
        self.base_url = ""

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("the server process is not running")
        return self._proc.pid

    def start(self) -> None:
        if not _clock_is_system_wide():  # pragma: no cover - Linux is the supported platform
            raise RuntimeError(f"{clock_description()} is not comparable across processes")
        c = self.config
        argv = [
            sys.executable, "-m", "fleetbench._fakevendor", "--port", str(self._port),
            "--latency-ms", str(c.latency_ms), "--ttft-ms", str(c.ttft_ms),
            "--itl-ms", str(c.itl_ms), "--output-tokens", str(c.output_tokens),
            "--tokens-per-chunk", str(c.tokens_per_chunk), "--model", c.model,
        ]  # fmt: skip
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        self._proc = proc
        assert proc.stdout is not None
        deadline = time.monotonic() + self._startup_timeout_s
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    self.stop()
                    raise TimeoutError("the fake vendor process did not start in time")
                line = proc.stdout.readline()
                if not line:
                    self.stop()
                    raise RuntimeError(f"the fake vendor process exited ({proc.poll()})")
                if line.startswith(READY_PREFIX):
                    self.base_url = line[len(READY_PREFIX) :].strip()
                    return

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:  # pragma: no cover - defensive
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def _control_url(self, sub: str) -> str:
        return self.base_url.removesuffix("/v1") + CONTROL_PREFIX + sub

    def fetch(self) -> dict[str, Any]:
        """The server's snapshot; ``trace`` entries are converted to :class:`TraceEntry`."""
        with urllib.request.urlopen(self._control_url("/trace"), timeout=30) as response:
            data: dict[str, Any] = json.loads(response.read())
        data["trace"] = [TraceEntry.from_dict(item) for item in data["trace"]]
        return data

    def reset(self) -> None:
        request = urllib.request.Request(self._control_url("/reset"), method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


async def _serve(server: FakeOpenAIServer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        print(READY_PREFIX + server.base_url, flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the fake vendor from the command line until SIGTERM/SIGINT.

    ``python -m fleetbench._fakevendor --port 0 --latency-ms 50`` prints
    ``FAKEVENDOR_READY http://127.0.0.1:PORT/v1`` on stdout once it accepts requests.
    Trace timestamps are ``time.perf_counter()`` = ``CLOCK_MONOTONIC`` on Linux, comparable
    with the client's ``time.perf_counter()`` on the same host.
    """
    parser = argparse.ArgumentParser(
        prog="python -m fleetbench._fakevendor", description=main.__doc__
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--ttft-ms", type=float, default=0.0)
    parser.add_argument("--itl-ms", type=float, default=0.0)
    parser.add_argument("--output-tokens", type=int, default=16)
    parser.add_argument("--tokens-per-chunk", type=int, default=1)
    parser.add_argument("--model", default="fake-gpt")
    args = parser.parse_args(argv)
    config = FakeOpenAIConfig(
        latency_ms=args.latency_ms,
        ttft_ms=args.ttft_ms,
        itl_ms=args.itl_ms,
        output_tokens=args.output_tokens,
        tokens_per_chunk=args.tokens_per_chunk,
        model=args.model,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(FakeOpenAIServer(args.port, host=args.host, config=config)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
