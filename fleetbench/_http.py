"""The HTTP client the core hands to provider plugins (DESIGN §7).

Provider plugins program against httpx's API (an ``httpx.AsyncClient``), but the connection
pool and HTTP/1.1 parser underneath are aiohttp's, through ``httpx-aiohttp``'s
``AiohttpTransport``. Why: on this kind of machine one plain httpx pool (httpcore + h11) at 64
concurrent requests is CPU-bound far below what the vendor could serve, while aiohttp costs a
fraction of the CPU per request. A benchmark client must never be the bottleneck, nor fold its
own queueing into the vendor's latency; ``bench/bench_http.py`` measures both against a raw
aiohttp loop in the same run.

What we change relative to ``AiohttpTransport`` 0.2.0, and why (each is tested in
``tests/test_http.py``):

* **Exception mapping.** Upstream maps every ``aiohttp.ClientConnectionError`` to
  ``httpx.ConnectTimeout``: *connection refused* and *server disconnected* surface as
  timeouts, and ``aiohttp.ClientResponseError`` (a malformed response) escapes unmapped.
  Retry and error classification depend on the type, so :func:`httpx_error_type` maps each
  aiohttp error to what httpx's own transport would raise, when sending and while the body is
  streamed, with the ``request`` attached.
* **Timeouts.** httpx has separate ``pool`` and ``connect`` timeouts; aiohttp has one
  ``connect`` budget covering the pool wait *and* the connection setup, which upstream fills
  with the pool timeout alone. We give it ``pool + connect`` and bound the socket connect by
  ``connect``. ``read`` is the maximum gap between two received chunks, as in httpx. aiohttp
  has no write timeout, so ``write`` is not enforced (request bodies are small). A pool wait
  that runs out is reported as ``httpx.ConnectTimeout``: aiohttp cannot tell it from a slow
  connect, and both mean the request was never sent.
* **CPU per request.** The request path is our own (no nested context managers, cached
  ``aiohttp.ClientTimeout`` and ``yarl.URL`` objects, headers handed over as a ready
  ``CIMultiDict``, one generator layer for the body), and so is most of the client's
  (:class:`_FleetAsyncClient`): requests built from a cached merge of the headers, httpx's
  auth, redirect and event-hook layers skipped when they have nothing to do, a whole body
  read by the transport rather than through httpx's four async generators, no wrapper
  generator around a streamed body, cookies parsed only from responses that set one, a
  TLS context built once per process. Every shortcut falls back to httpx's own code when
  a call uses what it skips, and ``tests/test_http.py`` checks the requests against
  httpx's own. Together with the transport, about 1.5x the CPU per request of a raw
  aiohttp loop against the fake vendor (``bench/bench_http.py``: 0.25-0.27 ms vs
  0.16-0.18). Note that httpx logs one INFO record per request on the ``httpx`` logger:
  keep that logger at WARNING during runs, or logging costs more than the transport.
* **Timing.** Connections note when bytes arrive and requests when they leave
  (:class:`WireTimes`), so the executor times a request wire to wire, whatever the event
  loop's own delay in resuming the code that sends and reads it.
* **Session settings.** One ``aiohttp.TCPConnector`` sized by ``max_connections`` (no
  per-host cap), idle keep-alive of :data:`KEEPALIVE_EXPIRY_S`, no aiohttp cookie jar (httpx
  keeps the cookies), no automatic decompression (httpx decodes ``Content-Encoding``), no
  total timeout, and ``trust_env=False`` on both layers: **proxies from ``HTTP(S)_PROXY`` /
  ``ALL_PROXY`` and ``SSL_CERT_FILE`` are ignored**, so a stray environment variable cannot
  route benchmark traffic through a proxy and distort the timings. TLS verification uses
  certifi's bundle, as httpx does by default. HTTP/1.1 only (aiohttp has no HTTP/2).

Streaming: ``client.stream(...)`` returns as soon as the response headers arrive, and
``aiter_bytes()`` / ``aiter_lines()`` yield whatever the socket has delivered
(``StreamReader.readany()``), never waiting to fill a buffer, which is what TTFT needs.

Lifetime: the aiohttp session is created lazily on the first request, inside the running
event loop, and is bound to it. Use one client per event loop and close it
(``await client.aclose()`` or ``async with``) before the loop ends, otherwise aiohttp warns
about an unclosed session.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Coroutine
from contextvars import ContextVar
from importlib import metadata
from typing import Any, NoReturn, cast

import aiohttp
import httpx
import yarl
from aiohttp import hdrs
from aiohttp.client_proto import ResponseHandler
from httpx._client import BoundAsyncStream, ClientState
from httpx_aiohttp import AiohttpTransport
from multidict import CIMultiDict

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_S",
    "KEEPALIVE_EXPIRY_S",
    "FleetAiohttpTransport",
    "WireTimes",
    "create_http_client",
    "httpx_error_type",
    "track_wire_times",
    "transport_name",
]

KEEPALIVE_EXPIRY_S = 15.0
"""Idle keep-alive connections are closed after this long (aiohttp's own default; shorter
than the idle timeout of common servers, so a reused connection is rarely already closed)."""

DEFAULT_CONNECT_TIMEOUT_S = 10.0
"""Upper bound on establishing a connection, whatever the overall ``timeout_s``."""

_CACHE_SIZE = 1024  # parsed URLs kept per client/transport; cleared wholesale when full
_HTTPX_LOG = logging.getLogger("httpx")  # httpx logs one INFO record per request here


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:  # pragma: no cover - vendored or frozen installs
        return "unknown"


def transport_name() -> str:
    """The transport under the shared client, for run metadata.

    For example ``"httpx 0.28.1 over httpx-aiohttp 0.2.0 (aiohttp 3.14.5)"``.
    """
    return (
        f"httpx {httpx.__version__} over httpx-aiohttp {_version('httpx-aiohttp')} "
        f"(aiohttp {aiohttp.__version__})"
    )


# Ordered most specific first; the first ``isinstance`` match wins.
_ERROR_MAP: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    (aiohttp.ClientProxyConnectionError, httpx.ProxyError),
    (aiohttp.ClientHttpProxyError, httpx.ProxyError),
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),  # pool wait or socket connect
    (aiohttp.SocketTimeoutError, httpx.ReadTimeout),  # gap between reads > read timeout
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientConnectorError, httpx.ConnectError),  # refused, DNS, TLS handshake
    (aiohttp.ServerFingerprintMismatch, httpx.ConnectError),
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),  # closed before a response
    (aiohttp.ClientPayloadError, httpx.RemoteProtocolError),  # body cut short, bad chunking
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),  # malformed status or headers
    (aiohttp.ClientOSError, httpx.ReadError),  # reset or broken pipe on an open connection
    (aiohttp.ClientConnectionError, httpx.ReadError),
    (aiohttp.NonHttpUrlClientError, httpx.UnsupportedProtocol),
    (aiohttp.InvalidURL, httpx.LocalProtocolError),
    (asyncio.TimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientError, httpx.TransportError),
)


def httpx_error_type(exc: BaseException) -> type[httpx.TransportError] | None:
    """The httpx exception type for an aiohttp-level error, ``None`` if it is not one."""
    for source, target in _ERROR_MAP:
        if isinstance(exc, source):
            return target
    return None


def _raise_mapped(exc: Exception, request: httpx.Request) -> NoReturn:
    """Raise the httpx error for an aiohttp-level ``exc`` (``exc`` itself if none maps)."""
    target = httpx_error_type(exc)
    if target is None:
        raise exc
    raise target(str(exc) or type(exc).__name__, request=request) from exc


class WireTimes:
    """When the current attempt's request left and its response ended, seen by the transport.

    The executor stamps "sent" itself, but between its stamp and the socket there is the
    plugin, httpx, aiohttp and (on Python 3.11) one more event-loop pass before aiohttp writes
    the body from a new task; under load that is milliseconds of the client's own delay that
    would be counted as the vendor's latency. The transport records the moment the request
    bytes are handed to the socket (``sent``) and the moment the response body's last bytes
    reached this process (``body_end``: the event loop handed them to the connection, before
    the reading coroutine resumed and the plugin parsed them), in the object
    :func:`track_wire_times` put in the calling task's context, so latency is measured wire
    to wire and the client's delay goes to ``queue_ms``.
    """

    __slots__ = ("body_end", "connection", "sent")

    def __init__(self) -> None:
        self.sent: float | None = None
        self.body_end: float | None = None
        self.connection: ResponseHandler | None = None
        """The connection the latest request went out on (it notes when bytes arrive)."""

    def last_arrival(self) -> float | None:
        """When bytes last reached this process on the latest request's connection since
        that request was sent (``None``: unknown). Read it as soon as a read returns: it
        tells when what was read arrived, however long the reader took to resume."""
        arrived: float | None = getattr(self.connection, "data_at", None)
        if arrived is None or self.sent is None or arrived < self.sent:
            return None
        return arrived


_WIRE_TIMES: ContextVar[WireTimes | None] = ContextVar("fleetbench_wire_times", default=None)


def track_wire_times() -> WireTimes:
    """Start recording wire times for requests made from the current task from now on."""
    times = WireTimes()
    _WIRE_TIMES.set(times)
    return times


def _stamp_body_end() -> None:
    """Record the end of the body, called as soon as the read of its end returns."""
    times = _WIRE_TIMES.get()
    if times is not None:
        times.body_end = times.last_arrival() or time.perf_counter()


class _ArrivalStampingHandler(ResponseHandler):
    """aiohttp's connection protocol, noting when bytes last arrived on the connection.

    The event loop hands received bytes to ``data_received`` as soon as the socket is
    readable; the coroutine reading the response resumes only after the loop has run
    every other callback that was ready (under load, milliseconds of the client's own
    delay). A body's end is therefore taken from here, not from when the read returned.
    A connection carries one request at a time (no pipelining), so the last bytes before
    a read completes are that response's.
    """

    data_at: float | None = None

    def data_received(self, data: bytes) -> None:
        if data:  # aiohttp also calls it with nothing when the server closes
            self.data_at = time.perf_counter()
        super().data_received(data)


class _StampingConnector(aiohttp.TCPConnector):
    """A ``TCPConnector`` whose connections are :class:`_ArrivalStampingHandler`.

    aiohttp has no public hook for the protocol class: it builds connections from the
    connector's ``_factory`` (``tests/test_http.py`` checks that this still takes)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._factory = cast("functools.partial[ResponseHandler]",
                             functools.partial(_ArrivalStampingHandler, loop=self._loop))


class _StampedRequest(aiohttp.ClientRequest):
    """Notes the connection a request goes out on and when aiohttp starts writing it:
    a request with a body goes out with its headers from a writer task (``write_bytes``,
    on Python 3.11 a loop pass later); one without is written at once (``send``)."""

    async def send(self, conn: aiohttp.connector.Connection) -> aiohttp.ClientResponse:
        times = _WIRE_TIMES.get()
        if times is not None:
            times.connection = conn.protocol
            times.sent = time.perf_counter()  # superseded by write_bytes, if it runs
        return await super().send(conn)

    async def write_bytes(self, *args: Any, **kwargs: Any) -> None:
        times = _WIRE_TIMES.get()  # the writer task inherits the requesting task's context
        if times is not None:
            times.sent = time.perf_counter()
        await super().write_bytes(*args, **kwargs)


class _AiohttpBody(httpx.AsyncByteStream):
    """The response body: yields what aiohttp has buffered as soon as anything arrives.

    Bound to its ``httpx.Response`` by the client (:meth:`bind`), it also sets the
    response's ``elapsed`` on close, as httpx's own wrapper stream would: one async
    generator less per chunk.
    """

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request
        self._bound: tuple[httpx.Response, float] | None = None

    def bind(self, response: httpx.Response, start: float) -> None:
        """Set ``response.elapsed`` (since ``start``, a ``perf_counter`` time) on close."""
        self._bound = (response, start)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._response.content
        try:
            while chunk := await content.readany():
                yield chunk
            _stamp_body_end()
        except Exception as exc:
            _raise_mapped(exc, self._request)

    async def aclose(self) -> None:
        if self._bound is not None:
            # The response holds this stream: drop the reference back to it, or every
            # streamed response is a reference cycle left to the garbage collector (whose
            # pauses, ~35 objects a request, then stall the event loop for milliseconds).
            (response, start), self._bound = self._bound, None
            response.elapsed = datetime.timedelta(seconds=time.perf_counter() - start)
        # Returns the connection to the pool when the body was read to the end; closes it
        # otherwise (a half-read connection cannot be reused).
        self._response.release()
        try:
            await self._response.wait_for_close()
        except Exception as exc:  # pragma: no cover - the request writer failed late
            _raise_mapped(exc, self._request)


@functools.cache
def _certifi_context() -> ssl.SSLContext:
    """The TLS context every transport verifies with: what httpx builds by default
    (certifi's bundle), built once per process (loading the bundle costs ~15 ms of CPU,
    a run's worth of requests for the server that starts many runs)."""
    return httpx.create_ssl_context(verify=True, trust_env=False)


class FleetAiohttpTransport(AiohttpTransport):
    """``AiohttpTransport`` with our session settings, timeout budget and exception mapping.

    Only the session factory, the ``ssl_context`` and ``proxy`` handling of the base class are
    used; :meth:`handle_async_request` is our own (see the module docstring for why).
    """

    def __init__(
        self,
        *,
        max_connections: int = 1024,
        keepalive_expiry: float = KEEPALIVE_EXPIRY_S,
        proxy: httpx.Proxy | None = None,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be >= 1")
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[float | None, ...], aiohttp.ClientTimeout] = {}
        self._urls: dict[str, yarl.URL] = {}
        super().__init__(
            verify=_certifi_context(),
            trust_env=False,
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=keepalive_expiry,
            ),
            proxy=proxy,
            client=self._new_session,
        )

    @property
    def max_connections(self) -> int:
        return self._max_connections

    def _new_session(self) -> aiohttp.ClientSession:
        """Create the session; called on the first request, inside the running event loop."""
        connector = _StampingConnector(
            limit=self._max_connections,
            limit_per_host=0,
            keepalive_timeout=self._keepalive_expiry,
            ssl=self.ssl_context,
        )
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            request_class=_StampedRequest,
            auto_decompress=False,
            trust_env=False,
            timeout=aiohttp.ClientTimeout(total=None),
        )

    def _timeout(self, request: httpx.Request) -> aiohttp.ClientTimeout:
        spec: dict[str, float | None] = request.extensions.get("timeout") or {}
        key = (spec.get("connect"), spec.get("read"), spec.get("pool"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            connect, read, pool = key
            timeout = aiohttp.ClientTimeout(
                total=None,
                connect=None if pool is None or connect is None else pool + connect,
                sock_connect=connect,
                sock_read=read,
            )
            if len(self._timeouts) >= _CACHE_SIZE:
                self._timeouts.clear()
            self._timeouts[key] = timeout
        return timeout

    def _url(self, request: httpx.Request) -> yarl.URL:
        text = str(request.url)
        url = self._urls.get(text)
        if url is None:
            # httpx has already percent-encoded the URL: tell yarl not to encode it again.
            # Credentials in it went into an Authorization header (httpx's auth); aiohttp
            # would refuse both, and httpx's own transport does not send them either.
            url = yarl.URL(text, encoded=True).with_user(None)
            if len(self._urls) >= _CACHE_SIZE:
                self._urls.clear()
            self._urls[text] = url
        return url

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await self._start(request)
        except Exception as exc:
            _raise_mapped(exc, request)
        return self._response(request, response, _AiohttpBody(response, request))

    async def handle_buffered_request(self, request: httpx.Request) -> httpx.Response:
        """Like :meth:`handle_async_request`, but the body is read to its end first (the
        connection is back in the pool on return): for callers that read the whole body
        anyway (see ``_FleetAsyncClient.send``). A body without ``Content-Encoding`` comes
        back read and closed, as ``Response.read()`` would leave it, without the chain of
        generators that costs; any other is left in an ``httpx.ByteStream`` to decode."""
        try:
            response = await self._start(request)
        except Exception as exc:
            _raise_mapped(exc, request)
        try:
            body = await response.read()
            _stamp_body_end()
            await response.wait_for_close()
        except Exception as exc:
            response.close()
            _raise_mapped(exc, request)
        answer = self._response(request, response, httpx.ByteStream(body))
        if hdrs.CONTENT_ENCODING not in response.headers:
            # What read() sets for an identity-encoded body (tests/test_http.py compares).
            answer._content = body
            answer._num_bytes_downloaded = len(body)
            answer.is_stream_consumed = answer.is_closed = True
        return answer

    def _start(self, request: httpx.Request) -> Awaitable[aiohttp.ClientResponse]:
        """Start sending ``request``: awaiting the result returns once the response's status
        and headers arrived. (Not a coroutine itself: one coroutine frame less to resume at
        every step of every request; the callers map the errors.)"""
        session = self._session
        if session is None:
            session = self._session = self._new_session()
        encoding = request.headers.encoding  # decoded as httpx's multi_items() does
        headers = CIMultiDict(
            [
                (key.lower().decode(encoding), value.decode(encoding))
                for key, value in request.headers.raw
            ]
        )
        data: Any
        try:
            data = request.content or None
        except httpx.RequestNotRead:  # a streaming request body: aiohttp chunks it itself
            data = request.stream
            headers.popall("transfer-encoding", None)
        options: dict[str, Any] = {}  # only what is set: every keyword costs on each call
        if (hostname := request.extensions.get("sni_hostname")) is not None:
            options["server_hostname"] = hostname
        if (proxy := self.proxy) is not None:
            options["proxy"] = str(proxy.url)
            options["proxy_headers"] = proxy.headers
            if proxy.auth:
                options["proxy_auth"] = aiohttp.BasicAuth(*proxy.auth)
        return session.request(request.method, self._url(request), headers=headers, data=data,
                               allow_redirects=False, timeout=self._timeout(request),
                               **options)  # fmt: skip

    @staticmethod
    def _response(
        request: httpx.Request, response: aiohttp.ClientResponse, stream: httpx.AsyncByteStream
    ) -> httpx.Response:
        extensions = {"http_version": b"HTTP/1.1"}  # one dict per response: it is mutable
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode("latin-1", "replace")
        raw_headers = response.raw_headers
        answer = httpx.Response(
            status_code=response.status,
            headers=raw_headers,
            stream=stream,
            request=request,
            extensions=extensions,
        )
        if all(key.isascii() and value.isascii() for key, value in raw_headers):
            answer.headers.encoding = "ascii"  # what httpx would find, header by header
        return answer

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


class _SetCookieAwareCookies(httpx.Cookies):
    """httpx's cookie store, minus the cost of parsing responses that set no cookie.

    ``httpx.Cookies.extract_cookies`` wraps every response and request in urllib adapters
    before finding out there is nothing to store; here that happens only when there is a
    ``Set-Cookie`` header.
    """

    def extract_cookies(self, response: httpx.Response) -> None:
        names = response.headers.keys()  # lower-cased, one pass over the headers
        if "set-cookie" in names or "set-cookie2" in names:
            super().extract_cookies(response)


class _FleetAsyncClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` with a cheaper path for the requests providers make.

    Behaviour is httpx's; only the per-request CPU differs (see the module docstring):

    * :meth:`build_request` caches parsed URLs, and for the common call (absolute URL,
      ``bytes`` content, a ``dict`` of headers or none, no params, files, form data or
      cookies) merges the client's and the call's headers once per distinct set and
      copies the result, adding ``Host`` and ``Content-Length`` exactly where httpx does.
      Anything else goes through httpx's own ``build_request``.
    * :meth:`send` skips httpx's auth and redirect machinery when it has nothing to do
      (no auth, no credentials in the URL, redirects not followed, no event hooks): one
      transport call, the redirect target still set as ``response.next_request``.
    * Cookies are only parsed from responses that set one.
    """

    def __init__(self, **kwargs: Any) -> None:
        cookies = kwargs.pop("cookies", None)
        super().__init__(**kwargs)
        self._fleet_cookies = _SetCookieAwareCookies(cookies)
        self._fleet_urls: dict[str, httpx.URL] = {}
        self._fleet_headers: dict[tuple[Any, ...], httpx.Headers] = {}

    @property
    def cookies(self) -> httpx.Cookies:
        return self._fleet_cookies

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        self._fleet_cookies = _SetCookieAwareCookies(cookies)

    def _parsed(self, url: str) -> httpx.URL:
        parsed = self._fleet_urls.get(url)
        if parsed is None:
            parsed = httpx.URL(url)  # immutable, so safe to share between requests
            if len(self._fleet_urls) >= _CACHE_SIZE:
                self._fleet_urls.clear()
            self._fleet_urls[url] = parsed
        return parsed

    def build_request(
        self,
        method: str,
        url: httpx.URL | str,
        *,
        content: Any = None,
        headers: Any = None,
        timeout: Any = httpx.USE_CLIENT_DEFAULT,
        extensions: Any = None,
        **rest: Any,
    ) -> httpx.Request:
        if isinstance(url, str):
            url = self._parsed(url)
        if (
            type(content) is bytes
            and content
            and (headers is None or type(headers) is dict)
            and not any(value is not None for value in rest.values())
            and url.is_absolute_url
            and not self.params
            and not self._fleet_cookies
        ):
            prepared, encoding = self._prepared_headers(method, url, headers, content)
            request = httpx.Request(method, url, headers=prepared,
                                    stream=httpx.ByteStream(content),
                                    extensions=self._extensions(timeout, extensions))  # fmt: skip
            request.headers.encoding = encoding  # known: spare the transport finding it out
            # What read() sets for bytes content (``request.content`` works), minus its
            # isinstance check against ``typing.Iterable`` (slow): the stream is ours.
            request._content = content
            return request
        return super().build_request(
            method, url, content=content, headers=headers, timeout=timeout,
            extensions=extensions, **rest,
        )  # fmt: skip

    def _prepared_headers(
        self, method: str, url: httpx.URL, headers: dict[str, str] | None, content: bytes
    ) -> tuple[httpx.Headers, str]:
        """The headers httpx gives a request with this non-empty ``content`` (the client's
        merged with the call's, ``Host`` first unless set, ``Content-Length`` last unless
        set) and their encoding. Cached by their inputs (the client's headers may change,
        the body's length does): never hand the cached object itself to a caller that could
        change it (``httpx.Request`` copies the headers it is given)."""
        key = (
            method,
            url.netloc,
            tuple(self.headers.raw),
            None if headers is None else tuple(headers.items()),
            len(content),
        )
        prepared = self._fleet_headers.get(key)
        if prepared is None:
            prepared = httpx.Headers(self.headers)
            prepared.update(headers)
            if "host" not in prepared and url.host:
                prepared = httpx.Headers([(b"Host", url.netloc), *prepared.raw])
            if "content-length" not in prepared:
                prepared["Content-Length"] = str(len(content))
            if len(self._fleet_headers) >= _CACHE_SIZE:
                self._fleet_headers.clear()
            self._fleet_headers[key] = prepared
        return prepared, prepared.encoding

    def _extensions(self, timeout: Any, extensions: Any) -> dict[str, Any]:
        extensions = {} if extensions is None else extensions
        if "timeout" in extensions:
            return dict(extensions)
        if isinstance(timeout, httpx.Timeout):
            spec = timeout
        elif timeout is httpx.USE_CLIENT_DEFAULT:
            spec = self.timeout
        else:
            spec = httpx.Timeout(timeout)
        return {**extensions, "timeout": spec.as_dict()}

    def request(  # returns the coroutine, not a coroutine awaiting it: one frame less
        self,
        method: str,
        url: httpx.URL | str,
        *,
        cookies: Any = None,
        auth: Any = httpx.USE_CLIENT_DEFAULT,
        follow_redirects: Any = httpx.USE_CLIENT_DEFAULT,
        **build: Any,
    ) -> Coroutine[Any, Any, httpx.Response]:
        if cookies is not None:  # httpx warns that per-request cookies are deprecated
            return super().request(method, url, cookies=cookies, auth=auth,
                                   follow_redirects=follow_redirects, **build)  # fmt: skip
        request = self.build_request(method, url, **build)
        return self.send(request, auth=auth, follow_redirects=follow_redirects)

    def post(  # as request()
        self, url: httpx.URL | str, **options: Any
    ) -> Coroutine[Any, Any, httpx.Response]:
        return self.request("POST", url, **options)

    def send(  # as request()
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: Any = httpx.USE_CLIENT_DEFAULT,
        follow_redirects: Any = httpx.USE_CLIENT_DEFAULT,
    ) -> Coroutine[Any, Any, httpx.Response]:
        if not self._direct(request, auth, follow_redirects):
            return super().send(request, stream=stream, auth=auth,
                                follow_redirects=follow_redirects)  # fmt: skip
        return self._transmit(request, buffered=not stream, direct=True)

    async def _send_single_request(self, request: httpx.Request) -> httpx.Response:
        return await self._transmit(request, buffered=False)

    async def _transmit(
        self, request: httpx.Request, *, buffered: bool, direct: bool = False
    ) -> httpx.Response:
        """httpx's ``_send_single_request``, minus a context manager per request and the
        log record's arguments when the ``httpx`` logger would drop the record anyway.
        With ``buffered`` (and our transport) the body is read, decoded and closed before
        it returns: what ``aread()`` would do, without its async generators. ``direct``:
        what ``send`` adds when no auth or redirect layer is involved (see :meth:`_direct`):
        the closed-client check, the pool timeout, the history, ``next_request`` and, for a
        non-streamed response, its body read."""
        if direct:
            if self.is_closed:
                raise RuntimeError("Cannot send a request, as the client has been closed.")
            self._state = ClientState.OPENED
            self._set_timeout(request)
        transport = self._transport_for_url(request.url)
        start = time.perf_counter()
        if not isinstance(request.stream, httpx.AsyncByteStream):
            raise RuntimeError("Attempted to send an sync request with an AsyncClient instance.")
        read = False
        try:
            if buffered and isinstance(transport, FleetAiohttpTransport):
                read = True
                response = await transport.handle_buffered_request(request)
            else:
                response = await transport.handle_async_request(request)
        except httpx.RequestError as exc:
            exc.request = request
            raise
        response.request = request
        stream = response.stream
        if isinstance(stream, _AiohttpBody):
            stream.bind(response, start)
        elif not read:
            assert isinstance(stream, httpx.AsyncByteStream)  # as httpx asserts
            response.stream = BoundAsyncStream(stream, response=response, start=start)
        self.cookies.extract_cookies(response)
        response.default_encoding = self._default_encoding
        if _HTTPX_LOG.isEnabledFor(logging.INFO):
            _HTTPX_LOG.info('HTTP Request: %s %s "%s %d %s"', request.method, request.url,
                            response.http_version, response.status_code,
                            response.reason_phrase)  # fmt: skip
        try:
            if read:
                if not response.is_closed:  # an encoded body: decode it, as aread() would
                    response.read()
                response.elapsed = datetime.timedelta(seconds=time.perf_counter() - start)
            if direct:
                response.history = []
                if response.has_redirect_location:  # not followed: say where it points
                    response.next_request = self._build_redirect_request(request, response)
                if buffered and not read:  # another transport: read as httpx's send would
                    await response.aread()
        except BaseException:
            await response.aclose()
            raise
        return response

    def _direct(self, request: httpx.Request, auth: Any, follow_redirects: Any) -> bool:
        """Whether httpx's auth and redirect layers would do nothing for this request."""
        if follow_redirects is httpx.USE_CLIENT_DEFAULT:
            follow_redirects = self.follow_redirects
        hooks = self._event_hooks
        return (
            not follow_redirects
            and (auth is None or (auth is httpx.USE_CLIENT_DEFAULT and self.auth is None))
            and not request.url.userinfo
            and not hooks["request"]
            and not hooks["response"]
            and self.max_redirects >= 0
        )


def create_http_client(
    *, max_connections: int = 1024, timeout_s: float = 60.0
) -> httpx.AsyncClient:
    """The shared client handed to provider plugins: httpx's API over an aiohttp transport.

    ``max_connections`` caps open connections across all hosts (the executor's concurrency
    limits are the real throttle; this is a safety net). ``timeout_s`` is httpx's read, write
    and pool timeout; connecting is bounded by ``min(timeout_s, DEFAULT_CONNECT_TIMEOUT_S)``.
    Plugins may still pass ``timeout=`` per request. Environment proxies are not used.
    The caller owns the client and must ``await client.aclose()`` in the same event loop.
    """
    if timeout_s <= 0:
        raise ValueError("timeout_s must be > 0")
    return _FleetAsyncClient(
        transport=FleetAiohttpTransport(max_connections=max_connections),
        timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, DEFAULT_CONNECT_TIMEOUT_S)),
        trust_env=False,
        follow_redirects=False,
    )
