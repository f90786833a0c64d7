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
  ``CIMultiDict``, one generator layer for the body), and the client skips httpx's
  cookie-extraction machinery for responses without ``Set-Cookie`` (it cost ~0.04 ms of
  ~0.33 ms CPU per request here; cookies that *are* set still work) and caches parsed URLs.
  Together: ~0.33 -> ~0.25 ms CPU per request against the fake vendor (raw aiohttp ~0.14).
  Note that httpx logs one INFO record per request on the ``httpx`` logger: keep that logger
  at WARNING during runs, or logging costs more than the transport.
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
import time
from collections.abc import AsyncIterator
from contextvars import ContextVar
from importlib import metadata
from typing import Any

import aiohttp
import httpx
import yarl
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


def _mapped(exc: Exception, request: httpx.Request) -> httpx.TransportError | None:
    target = httpx_error_type(exc)
    if target is None:
        return None
    return target(str(exc) or type(exc).__name__, request=request)


class WireTimes:
    """When the current attempt's request left and its response ended, seen by the transport.

    The executor stamps "sent" itself, but between its stamp and the socket there is the
    plugin, httpx, aiohttp and (on Python 3.11) one more event-loop pass before aiohttp writes
    the body from a new task; under load that is milliseconds of the client's own delay that
    would be counted as the vendor's latency. The transport records the moment the request
    bytes are handed to the socket (``sent``) and the moment the response body ended
    (``body_end``, before the plugin parses it), in the object :func:`track_wire_times` put in
    the calling task's context, so latency is measured wire to wire and the client's delay
    goes to ``queue_ms``.
    """

    __slots__ = ("body_end", "sent")

    def __init__(self) -> None:
        self.sent: float | None = None
        self.body_end: float | None = None


_WIRE_TIMES: ContextVar[WireTimes | None] = ContextVar("fleetbench_wire_times", default=None)


def track_wire_times() -> WireTimes:
    """Start recording wire times for requests made from the current task from now on."""
    times = WireTimes()
    _WIRE_TIMES.set(times)
    return times


class _StampedRequest(aiohttp.ClientRequest):
    """Notes when aiohttp starts writing the request (headers and body go out together)."""

    async def write_bytes(self, *args: Any, **kwargs: Any) -> None:
        times = _WIRE_TIMES.get()  # the writer task inherits the requesting task's context
        if times is not None:
            times.sent = time.perf_counter()
        await super().write_bytes(*args, **kwargs)


class _AiohttpBody(httpx.AsyncByteStream):
    """The response body: yields what aiohttp has buffered as soon as anything arrives."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._response.content
        try:
            while chunk := await content.readany():
                yield chunk
            times = _WIRE_TIMES.get()
            if times is not None:
                times.body_end = time.perf_counter()
        except Exception as exc:
            mapped = _mapped(exc, self._request)
            if mapped is None:
                raise
            raise mapped from exc

    async def aclose(self) -> None:
        # Returns the connection to the pool when the body was read to the end; closes it
        # otherwise (a half-read connection cannot be reused).
        self._response.release()
        try:
            await self._response.wait_for_close()
        except Exception as exc:  # pragma: no cover - the request writer failed late
            mapped = _mapped(exc, self._request)
            if mapped is None:
                raise
            raise mapped from exc


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
            verify=True,
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
        connector = aiohttp.TCPConnector(
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
            url = yarl.URL(text, encoded=True)
            if len(self._urls) >= _CACHE_SIZE:
                self._urls.clear()
            self._urls[text] = url
        return url

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session
        if session is None:
            session = self._session = self._new_session()
        headers = CIMultiDict(request.headers.multi_items())
        data: Any
        try:
            data = request.content or None
        except httpx.RequestNotRead:  # a streaming request body: aiohttp chunks it itself
            data = request.stream
            headers.popall("transfer-encoding", None)
        proxy = self.proxy
        try:
            response = await session.request(
                request.method,
                self._url(request),
                headers=headers,
                data=data,
                allow_redirects=False,
                timeout=self._timeout(request),
                server_hostname=request.extensions.get("sni_hostname"),
                proxy=None if proxy is None else str(proxy.url),
                proxy_auth=None
                if proxy is None or not proxy.auth
                else aiohttp.BasicAuth(*proxy.auth),
                proxy_headers=None if proxy is None else proxy.headers,
            )
        except Exception as exc:
            mapped = _mapped(exc, request)
            if mapped is None:
                raise
            raise mapped from exc
        extensions = {"http_version": b"HTTP/1.1"}  # one dict per response: it is mutable
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode("latin-1", "replace")
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_AiohttpBody(response, request),
            request=request,
            extensions=extensions,
        )

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
    """An ``httpx.AsyncClient`` with cheaper cookie handling and cached URL parsing.

    Behaviour is httpx's; only the per-request CPU differs (see the module docstring).
    """

    def __init__(self, **kwargs: Any) -> None:
        cookies = kwargs.pop("cookies", None)
        super().__init__(**kwargs)
        self._fleet_cookies = _SetCookieAwareCookies(cookies)
        self._fleet_urls: dict[str, httpx.URL] = {}

    @property
    def cookies(self) -> httpx.Cookies:
        return self._fleet_cookies

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        self._fleet_cookies = _SetCookieAwareCookies(cookies)

    def build_request(self, method: str, url: httpx.URL | str, **kwargs: Any) -> httpx.Request:
        if isinstance(url, str):
            parsed = self._fleet_urls.get(url)
            if parsed is None:
                parsed = httpx.URL(url)  # immutable, so safe to share between requests
                if len(self._fleet_urls) >= _CACHE_SIZE:
                    self._fleet_urls.clear()
                self._fleet_urls[url] = parsed
            url = parsed
        return super().build_request(method, url, **kwargs)


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
