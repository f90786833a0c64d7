"""Fake vendor servers: real HTTP on 127.0.0.1 in each vendor's wire format, with timing
knobs, injected faults and a trace of the server's own truth.

What every vendor shares lives here; what differs lives in a :class:`~._wire.WireFormat`
(``_openai``, ``_anthropic``, ``_cohere``, ``_gemini``).

* Non-streaming: one JSON body after ``latency_ms``.
* Streaming: headers and the vendor's opening events at once, the first content chunk after
  ``ttft_ms``, then one chunk every ``itl_ms`` carrying ``tokens_per_chunk`` tokens, then
  the closing events (finish reason, usage, terminator).

Why it exists: to tell how much of a measured latency is the vendor's and how much is the
client's, the server records its own *truth* for every request (:class:`TraceEntry`): when
the request's first bytes reached the server, when the first and last tokens were written and
when the last byte was written. Clients tag requests with the :data:`REQUEST_ID_HEADER` header
so their measurements can be matched with the trace.

Clock: every timestamp is ``time.perf_counter()``, which on Linux is
``clock_gettime(CLOCK_MONOTONIC)``: one system-wide clock, comparable with the client's
``time.perf_counter()`` in this process and in another process on the same host
(:class:`~._process.FakeVendorProcess` refuses to compare across processes where that is
not so).

It is deliberately light (aiohttp's low-level server, no router, no access log, cached
stream chunks), so it is not the bottleneck of a benchmark; run it in its own process
(:mod:`._process`, ``fleetbench mock-server``) to measure a client's CPU alone.

Control endpoints, used across processes: ``GET /_fakevendor/trace`` -> ``{"clock",
"requests", "in_flight", "max_in_flight", "cpu_s", "trace": [...]}`` and
``POST /_fakevendor/reset``.

Faults (:class:`Fault`): ``FakeVendorConfig.faults`` is a script applied to the first
requests in order (request ``n`` gets ``faults[n-1]``, counted from the last reset); after
the script, ``fault_rate`` injects faults drawn from ``fault_mix`` on a schedule that
depends only on ``seed`` and the request number, so a run is repeatable.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from types import TracebackType
from typing import Any, Self

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from fleetbench.testing._vendors import wire_format
from fleetbench.testing._wire import ChatCall, Reply, WireError, WireFormat

__all__ = [
    "CONTROL_PREFIX",
    "REQUEST_ID_HEADER",
    "CapturedRequest",
    "FakeVendorConfig",
    "FakeVendorServer",
    "FakeVendorService",
    "Fault",
    "TraceEntry",
    "clock_description",
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
_ID_SLOT = "@@fake-reply-id@@"
"""Stands for the reply id in cached stream chunks; replaced per request."""
_PIECES = re.compile(r"\s*\S+|\s+")


def clock_description() -> str:
    """Which clock the trace timestamps come from (for run metadata and sanity checks)."""
    return f"time.perf_counter: {time.get_clock_info('perf_counter').implementation}"


def clock_is_system_wide() -> bool:
    """Whether the trace's clock is comparable across processes on this host."""
    return "CLOCK_MONOTONIC" in time.get_clock_info("perf_counter").implementation


FAULT_KINDS = ("http_error", "malformed", "truncate", "stream_error", "disconnect")


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected failure, applied to one request.

    Kinds:

    * ``http_error``: answer ``status`` with the vendor's error envelope and ``headers``
      (e.g. ``{"retry-after-ms": "300"}``), streaming or not;
    * ``malformed``: a 200 whose JSON body (or, streaming, the event after ``after_chunks``
      content chunks) is not valid JSON;
    * ``truncate``: streaming, end the body cleanly after ``after_chunks`` content chunks
      without the vendor's closing events; non-streaming, close the connection half-way
      through the body;
    * ``stream_error``: streaming, after ``after_chunks`` content chunks send the vendor's
      mid-stream error event and end the body;
    * ``disconnect``: close the connection without answering.

    ``error_type`` and ``code`` ``None`` mean the vendor's usual ones for ``status``. Use the
    constructors (:meth:`http_error`, :meth:`rate_limited` …) rather than the fields.
    """

    kind: str
    status: int = 500
    error_type: str | None = None
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
        error_type: str | None = None,
        code: str | None = None,
        message: str = "injected fault",
        headers: Mapping[str, str] | None = None,
    ) -> Fault:
        """An HTTP error answer with the vendor's error envelope."""
        return cls("http_error", status, error_type, code, message,
                   tuple((headers or {}).items()))  # fmt: skip

    @classmethod
    def rate_limited(cls, headers: Mapping[str, str] | None = None) -> Fault:
        """A 429 with the given retry hint headers."""
        return cls.http_error(429, message="Rate limit reached for requests", headers=headers)

    @classmethod
    def malformed(cls, *, after_chunks: int = 0) -> Fault:
        """A 200 whose body (or streamed event) is not JSON."""
        return cls("malformed", 200, after_chunks=after_chunks)

    @classmethod
    def truncated(cls, *, after_chunks: int = 0) -> Fault:
        """A response that ends early (streaming: without the closing events)."""
        return cls("truncate", 200, after_chunks=after_chunks)

    @classmethod
    def stream_error(
        cls,
        *,
        after_chunks: int = 0,
        status: int = 500,
        error_type: str | None = None,
        code: str | None = None,
        message: str = "injected fault",
    ) -> Fault:
        """An error event inside a 200 stream; ``status`` picks the vendor's error type."""
        return cls("stream_error", status, error_type, code, message, after_chunks=after_chunks)

    @classmethod
    def disconnect(cls) -> Fault:
        """The connection closes before any answer."""
        return cls("disconnect", 0)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fault:
        values = dict(data)
        values["headers"] = tuple(tuple(pair) for pair in values.get("headers", ()))
        return cls(**values)


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
class FakeVendorConfig:
    """Behaviour knobs of a fake vendor (all durations in milliseconds).

    ``output_tokens`` is capped per request by the request's own output cap (``max_tokens``
    and its vendor equivalents), like a real vendor.
    """

    latency_ms: float = 0.0
    """Non-streaming: delay between receiving the request and writing the response."""
    ttft_ms: float = 0.0
    """Streaming: delay before the first content chunk (headers are sent immediately)."""
    itl_ms: float = 0.0
    """Streaming: delay between consecutive content chunks."""
    output_tokens: int = 16
    """Tokens of the generated answer (ignored when ``answer`` is set)."""
    tokens_per_chunk: int = 1
    model: str = "fake-model"
    """The model name the answers report."""
    answer: str | None = None
    """A fixed answer text (one token per word); by default a repeating filler text."""
    faults: tuple[Fault, ...] = field(default=())
    """Request ``n`` (1-based, since the last reset) gets ``faults[n-1]``."""
    fault_rate: float = 0.0
    """After the script, the share of requests that get a fault from ``fault_mix``."""
    fault_mix: tuple[Fault, ...] = field(default=())
    seed: int = 0
    """Seeds the fault schedule: the same seed gives the same faults to the same requests."""
    api_key: str | None = None
    """When set, requests must carry this key the vendor's way, else 401."""

    def __post_init__(self) -> None:
        if min(self.latency_ms, self.ttft_ms, self.itl_ms) < 0:
            raise ValueError("fake vendor delays must be >= 0")
        if self.output_tokens < 0 or self.tokens_per_chunk < 1:
            raise ValueError("output_tokens must be >= 0 and tokens_per_chunk >= 1")
        if not 0.0 <= self.fault_rate <= 1.0:
            raise ValueError("fault_rate must be between 0 and 1")
        if self.fault_rate and not self.fault_mix:
            raise ValueError("fault_rate needs a fault_mix to draw faults from")

    def fault_for(self, number: int) -> Fault | None:
        """The fault request ``number`` (1-based) gets, if any: deterministic in ``seed``."""
        if number <= len(self.faults):
            return self.faults[number - 1]
        if not self.fault_rate:
            return None
        draw = random.Random(f"{self.seed}:{number}")
        return draw.choice(self.fault_mix) if draw.random() < self.fault_rate else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FakeVendorConfig:
        values = dict(data)
        for name in ("faults", "fault_mix"):
            values[name] = tuple(Fault.from_dict(item) for item in values.get(name, ()))
        return cls(**values)


@dataclass(slots=True)
class TraceEntry:
    """What the server itself observed for one request (``time.perf_counter()`` seconds).

    The entry is appended when the request arrives, so in-flight requests are visible with
    the later timestamps still ``None``.
    """

    request_id: str | None
    stream: bool
    received: float
    """The request's first bytes were handed to the server's connection (before parsing, and
    before the event-loop passes aiohttp takes to start a handler: under load those are the
    server's own delay, not the client's)."""
    first_token: float | None = None
    """The first content chunk was handed to the socket (non-streaming: the whole response)."""
    last_token: float | None = None
    """The last content chunk was handed to the socket (``None`` until then)."""
    last_byte: float | None = None
    """The end of the response was handed to the socket.

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


def _answer_pieces(config: FakeVendorConfig) -> list[str]:
    if config.answer is not None:
        return _PIECES.findall(config.answer)
    return [_WORDS[i % len(_WORDS)] for i in range(config.output_tokens)]


def _close_connection(request: web.BaseRequest) -> None:
    transport = request.transport
    if transport is not None:
        transport.close()


class FakeVendorService:
    """The request handling and the recorded state, independent of how it is served.

    :class:`FakeVendorServer` serves it in the current event loop; :func:`main` serves it in
    its own process. ``config`` may be replaced between requests (e.g. by a test).
    """

    def __init__(self, wire: WireFormat, config: FakeVendorConfig | None = None, *,
                 capture: bool = False) -> None:  # fmt: skip
        self.wire = wire
        self.config = config or FakeVendorConfig()
        self.capture = capture
        """Record every chat request in :attr:`captured` (off for benchmarks: it costs CPU)."""
        self.captured: list[CapturedRequest] = []
        self.requests = 0
        """Chat requests received (including rejected ones)."""
        self.in_flight = 0
        """Chat requests whose response is not complete yet."""
        self.max_in_flight = 0
        """The highest ``in_flight`` seen (e.g. to check a client's concurrency limit)."""
        self.trace: list[TraceEntry] = []
        self._chunks: dict[tuple[Any, ...], list[bytes]] = {}
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
            "vendor": self.wire.name,
            "requests": self.requests,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "cpu_s": time.process_time(),
            "trace": [entry.to_dict() for entry in self.trace],
        }

    def _reject(self, error: WireError) -> web.Response:
        body = self.wire.error_body(error.status, error.message, error.error_type, error.code)
        return web.Response(status=error.status, body=body, content_type="application/json",
                            headers=self.wire.headers())  # fmt: skip

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Entry point for aiohttp's low-level server."""
        protocol = request.protocol
        assert isinstance(protocol, _StampingHandler)  # FakeVendorServer's connections
        received = protocol.first_bytes or time.perf_counter()
        try:
            return await self._route(request, received)
        finally:
            protocol.first_bytes = None  # what arrives next starts the next request

    async def _route(self, request: web.BaseRequest, received: float) -> web.StreamResponse:
        path = request.path
        if self.wire.is_chat(request.method, path):
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                return await self._chat(request, received)
            finally:
                self.in_flight -= 1
        if path.startswith(CONTROL_PREFIX):
            return self._control(request, path[len(CONTROL_PREFIX) :])
        return self._reject(self.wire.not_found(path))

    def _control(self, request: web.BaseRequest, sub: str) -> web.StreamResponse:
        if sub == "/trace" and request.method == "GET":
            return web.json_response(self.snapshot())
        if sub == "/reset" and request.method == "POST":
            self.reset()
            return web.json_response({"ok": True})
        return self._reject(self.wire.not_found(CONTROL_PREFIX + sub))

    async def _chat(self, request: web.BaseRequest, received: float) -> web.StreamResponse:
        config = self.config
        entry = TraceEntry(request.headers.get(REQUEST_ID_HEADER), False, received)
        self.requests += 1
        number = self.requests
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
        call: ChatCall | WireError
        if config.api_key is not None and not self.wire.authorized(request, config.api_key):
            call = self.wire.unauthorized()
        else:
            call = self.wire.parse(request, body)
        if isinstance(call, WireError):
            entry.status = call.status
            return self._reject(call)
        entry.stream = call.stream
        fault = config.fault_for(number)
        if fault is not None and fault.kind in ("http_error", "disconnect"):
            return self._refuse(request, entry, fault)
        pieces = _answer_pieces(config)
        finish = "stop"
        if call.max_tokens is not None and call.max_tokens < len(pieces):
            pieces, finish = pieces[: call.max_tokens], "length"
        entry.completion_tokens = len(pieces)
        reply = Reply(f"fake-{number}", call.model or config.model, "".join(pieces),
                      call.prompt_tokens, len(pieces), finish)  # fmt: skip
        if call.stream:
            return await self._stream(request, entry, call, reply, pieces, fault)
        if config.latency_ms:
            await asyncio.sleep(config.latency_ms / 1000)
        if fault is not None:
            return await self._faulty_body(request, entry, fault)
        response = web.Response(body=self.wire.completion(reply), content_type="application/json",
                                headers=self.wire.headers())  # fmt: skip
        try:
            await response.prepare(request)  # buffers the headers; write_eof() sends it all
            written = time.perf_counter()
            await response.write_eof()
        except ConnectionResetError:  # the client went away (e.g. it timed out)
            entry.status = CLIENT_CLOSED_REQUEST
            return response
        entry.first_token = entry.last_token = entry.last_byte = written
        return response

    def _stream_chunks(self, model: str, pieces: list[str]) -> list[bytes]:
        """The content events for an answer, cached by layout (they carry no request data)."""
        per_chunk = self.config.tokens_per_chunk
        key = (model, per_chunk, *pieces)
        chunks = self._chunks.get(key)
        if chunks is None:
            texts = ["".join(pieces[i : i + per_chunk]) for i in range(0, len(pieces), per_chunk)]
            chunks = [self.wire.stream_chunk(_ID_SLOT, model, text, i == 0)
                      for i, text in enumerate(texts)]
            if len(self._chunks) > 1024:  # answers vary (e.g. a test changing knobs): bound it
                self._chunks.clear()
            self._chunks[key] = chunks
        return chunks

    async def _stream(
        self,
        request: web.BaseRequest,
        entry: TraceEntry,
        call: ChatCall,
        reply: Reply,
        pieces: list[str],
        fault: Fault | None,
    ) -> web.StreamResponse:
        config = self.config
        chunks = self._stream_chunks(reply.model, pieces)
        headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                   **self.wire.headers()}  # fmt: skip
        response = web.StreamResponse(headers=headers)
        if fault is not None:
            chunks = chunks[: fault.after_chunks]
        try:
            await response.prepare(request)  # headers go out now, as with real vendors
            head = self.wire.stream_head(reply)
            if head:
                await response.write(head)
            if config.ttft_ms:
                await asyncio.sleep(config.ttft_ms / 1000)
            itl = config.itl_ms / 1000
            written = 0.0
            slot, reply_id = _ID_SLOT.encode(), reply.reply_id.encode()
            for index, chunk in enumerate(chunks):
                if index and itl:
                    await asyncio.sleep(itl)
                # Stamped just before the write: aiohttp hands the bytes to the socket inside
                # the call; a stamp taken after it could be late if this process is descheduled.
                written = time.perf_counter()
                await response.write(chunk.replace(slot, reply_id))
                if index == 0:
                    entry.first_token = written
            if chunks:
                entry.last_token = written
            end = self._stream_end(call, reply, fault)
            entry.status = 0 if fault is not None and fault.kind == "truncate" else 200
            written = time.perf_counter()
            await response.write_eof(end)
            entry.last_byte = written
        except ConnectionResetError:  # the client went away (e.g. it timed out)
            entry.status = CLIENT_CLOSED_REQUEST
        return response

    def _stream_end(self, call: ChatCall, reply: Reply, fault: Fault | None) -> bytes:
        if fault is None:
            return self.wire.stream_tail(reply, call)
        if fault.kind == "malformed":
            return self.wire.malformed_event()
        if fault.kind == "stream_error":
            return self.wire.stream_error(fault.status, fault.message, fault.error_type,
                                          fault.code)  # fmt: skip
        return b""  # truncate: a clean end of the body, but no closing events

    def _refuse(self, request: web.BaseRequest, entry: TraceEntry,
                fault: Fault) -> web.StreamResponse:  # fmt: skip
        """An HTTP error answer, or a connection closed without one."""
        if fault.kind == "disconnect":
            entry.status = 0
            _close_connection(request)
            return web.Response()  # never sent: the transport is gone
        entry.status = fault.status
        entry.last_byte = time.perf_counter()
        body, headers = self.wire.refusal(fault.status, fault.message, fault.error_type,
                                          fault.code, dict(fault.headers))  # fmt: skip
        return web.Response(status=fault.status, body=body, content_type="application/json",
                            headers={**self.wire.headers(), **headers})  # fmt: skip

    async def _faulty_body(
        self, request: web.BaseRequest, entry: TraceEntry, fault: Fault
    ) -> web.StreamResponse:
        """A non-streaming 200 that is malformed or cut short."""
        partial = b'{"id":"fake","object":"chat","choices":[{"ind'
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


class _StampingHandler(RequestHandler):
    """aiohttp's connection handler, noting when a request's first bytes arrive.

    A client does not pipeline: it sends a connection's next request only after the previous
    response ended, so the first bytes after a request was handled start the next one (chat
    handlers always read the whole body, so no stray bytes of one request follow it).
    """

    __slots__ = ("first_bytes",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.first_bytes: float | None = None

    def data_received(self, data: bytes) -> None:
        if self.first_bytes is None:
            self.first_bytes = time.perf_counter()
        super().data_received(data)


class _StampingServer(web.Server):
    """aiohttp's low-level server with :class:`_StampingHandler` connections."""

    def __call__(self) -> RequestHandler:
        return _StampingHandler(self, loop=self._loop, **self._kwargs)


class FakeVendorServer:
    """Serve a fake vendor on 127.0.0.1 in the running event loop.

    ``async with FakeVendorServer("anthropic", latency_ms=50) as server:`` then point a client
    at ``server.base_url``; ``server.requests`` and ``server.trace`` tell what the server saw.
    Knob keywords (``latency_ms=…``) build a :class:`FakeVendorConfig`; or pass ``config``.
    ``port=0`` picks a free port.
    """

    def __init__(
        self,
        vendor: str = "openai",
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        config: FakeVendorConfig | None = None,
        capture: bool = False,
        backlog: int = 4096,
        shutdown_timeout_s: float = 0.5,
        **knobs: Any,
    ) -> None:
        if config is not None and knobs:
            raise TypeError("pass either config or knob keywords, not both")
        self.service = FakeVendorService(
            wire_format(vendor), config or FakeVendorConfig(**knobs), capture=capture
        )
        self._host = host
        self._port = port
        self._backlog = backlog
        self._shutdown_timeout_s = shutdown_timeout_s
        self._runner: web.ServerRunner | None = None

    @property
    def config(self) -> FakeVendorConfig:
        return self.service.config

    @config.setter
    def config(self, value: FakeVendorConfig) -> None:
        self.service.config = value

    def configure(self, **changes: Any) -> None:
        """Change knobs for subsequent requests, e.g. ``server.configure(latency_ms=0)``."""
        self.service.config = replace(self.service.config, **changes)

    @property
    def requests(self) -> int:
        """Number of chat requests received (including rejected ones)."""
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

    def reset(self) -> None:
        self.service.reset()

    @property
    def port(self) -> int:
        if self._runner is None:
            raise RuntimeError("the server is not running")
        address = self._runner.addresses[0]
        return int(address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no path)."""
        return f"http://{self._host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The base URL a client of this vendor is configured with (OpenAI: ``…/v1``)."""
        return self.url + self.service.wire.base_path

    async def start(self) -> None:
        # access_log=None: no per-request logging (it would cost CPU on the hot path).
        server = _StampingServer(self.service.handle, access_log=None)
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
