"""The shared HTTP client (httpx API over aiohttp) against real loopback servers, no mocks.

Most tests talk to the fake OpenAI vendor; the failure modes it cannot produce (a server that
hangs up, a malformed or truncated response, cookies) use tiny asyncio/aiohttp servers.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import gzip
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web

from fleetbench._http import (
    FleetAiohttpTransport,
    _ArrivalStampingHandler,
    _StampingConnector,
    create_http_client,
    httpx_error_type,
    track_wire_times,
    transport_name,
)
from fleetbench.testing import (
    REQUEST_ID_HEADER,
    FakeVendorConfig,
    FakeVendorProcess,
    FakeVendorServer,
    local_server,
)

MESSAGES = [{"role": "user", "content": "Hello, fake vendor! How are you today?"}]
CHAT = {"model": "fake-gpt", "messages": MESSAGES}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with create_http_client() as shared:
        yield shared


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _raw_server(handler: RawHandler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/"


async def _read_request(reader: asyncio.StreamReader) -> None:
    await reader.readuntil(b"\r\n\r\n")


# --- the happy path -------------------------------------------------------------------------


async def test_non_streaming_chat_completion(client: httpx.AsyncClient) -> None:
    async with FakeVendorServer(latency_ms=5, output_tokens=5) as server:
        response = await client.post(
            f"{server.base_url}/chat/completions",
            json={**CHAT, "max_tokens": 3},
            headers={REQUEST_ID_HEADER: "req-1"},
        )
    assert response.status_code == 200
    assert response.http_version == "HTTP/1.1"
    assert response.reason_phrase == "OK"
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Hello from the"}
    assert body["choices"][0]["finish_reason"] == "length"  # capped by max_tokens
    assert body["usage"] == {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}
    assert server.requests == 1
    [entry] = server.trace
    assert entry.request_id == "req-1"
    assert not entry.stream
    assert entry.status == 200
    assert entry.completion_tokens == 3
    assert entry.latency_s is not None
    assert entry.latency_s >= 0.005


async def test_streaming_lines_arrive_as_the_server_writes_them(
    client: httpx.AsyncClient,
) -> None:
    config = FakeVendorConfig(ttft_ms=20, itl_ms=40, output_tokens=4, tokens_per_chunk=1)
    async with FakeVendorServer(config=config) as server:
        payload = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
        seen: list[tuple[float, str]] = []
        async with client.stream(
            "POST", f"{server.base_url}/chat/completions", json=payload
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream"
            async for line in response.aiter_lines():
                if line:
                    seen.append((time.perf_counter(), line))
                if len(seen) == 1:
                    # Still inside the stream: the server has not written the last token yet.
                    assert server.trace[0].last_token is None
        [entry] = server.trace

    assert entry.stream
    assert entry.first_token is not None
    assert entry.last_token is not None
    first_seen = seen[0][0]
    assert entry.first_token <= first_seen < entry.last_token
    chunks = [json.loads(line.removeprefix("data: ")) for _, line in seen[:-1]]
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert content == "Hello from the fake"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 4
    assert seen[-1][1] == "data: [DONE]"
    # The four content chunks were seen spread over ~3 x itl, not in one go at the end.
    content_times = [t for t, _ in seen[:4]]
    assert content_times[-1] - content_times[0] >= 0.06


async def test_aiter_bytes_yields_the_first_chunk_before_the_last_is_written(
    client: httpx.AsyncClient,
) -> None:
    async with FakeVendorServer(ttft_ms=10, itl_ms=30, output_tokens=3) as server:
        async with client.stream(
            "POST", f"{server.base_url}/chat/completions", json={**CHAT, "stream": True}
        ) as response:
            arrivals = []
            async for chunk in response.aiter_bytes():
                arrivals.append((time.perf_counter(), chunk))
        [entry] = server.trace
    assert entry.last_token is not None
    assert arrivals[0][0] < entry.last_token
    assert arrivals[0][1].startswith(b"data: ")
    assert len(arrivals) >= 3
    assert b"".join(chunk for _, chunk in arrivals).endswith(b"data: [DONE]\n\n")


async def test_200_concurrent_requests_all_succeed(client: httpx.AsyncClient) -> None:
    async with FakeVendorServer(latency_ms=20) as server:
        url = f"{server.base_url}/chat/completions"

        async def one(i: int) -> int:
            response = await client.post(url, json=CHAT, headers={REQUEST_ID_HEADER: f"r{i}"})
            response.raise_for_status()
            return int(response.json()["usage"]["completion_tokens"])

        tokens = await asyncio.gather(*(one(i) for i in range(200)))
        assert tokens == [16] * 200
        assert server.requests == 200
        assert sorted(e.request_id or "" for e in server.trace) == sorted(
            f"r{i}" for i in range(200)
        )
        assert all(e.last_byte is not None and e.status == 200 for e in server.trace)


async def test_streaming_request_body_is_sent(client: httpx.AsyncClient) -> None:
    async def body() -> AsyncIterator[bytes]:
        text = json.dumps(CHAT).encode()
        for start in range(0, len(text), 7):
            yield text[start : start + 7]

    async with FakeVendorServer() as server:
        response = await client.post(f"{server.base_url}/chat/completions", content=body())
    assert response.status_code == 200
    assert response.json()["usage"]["prompt_tokens"] == 9


async def test_error_status_is_a_response_not_an_exception(client: httpx.AsyncClient) -> None:
    async with FakeVendorServer() as server:
        bad = await client.post(f"{server.base_url}/chat/completions", content=b"{not json")
        missing = await client.get(f"{server.base_url}/nope")
    assert bad.status_code == 400
    assert "Invalid request body" in bad.json()["error"]["message"]
    assert missing.status_code == 404
    assert server.requests == 1
    assert server.trace[0].status == 400


# --- errors map to httpx exceptions ----------------------------------------------------------


async def test_read_timeout_maps_to_httpx_read_timeout() -> None:
    async with (
        FakeVendorServer(latency_ms=2000) as server,
        create_http_client(timeout_s=0.2) as client,
    ):
        started = time.perf_counter()
        with pytest.raises(httpx.ReadTimeout) as caught:
            await client.post(f"{server.base_url}/chat/completions", json=CHAT)
        assert time.perf_counter() - started < 1.5
    assert isinstance(caught.value, httpx.TimeoutException)
    assert caught.value.request.url.path == "/v1/chat/completions"
    assert isinstance(caught.value.__cause__, aiohttp.SocketTimeoutError)


async def test_read_timeout_while_streaming_maps_to_httpx_read_timeout(
    client: httpx.AsyncClient,
) -> None:
    async with (
        FakeVendorServer(ttft_ms=10, itl_ms=2000, output_tokens=2) as server,
        client.stream(
            "POST",
            f"{server.base_url}/chat/completions",
            json={**CHAT, "stream": True},
            timeout=httpx.Timeout(5.0, read=0.2),
        ) as response,
    ):
        lines = response.aiter_lines()
        assert (await anext(lines)).startswith("data: ")
        with pytest.raises(httpx.ReadTimeout):
            async for _ in lines:
                pass


async def test_pool_wait_is_bounded_and_maps_to_a_timeout() -> None:
    async with (
        FakeVendorServer(latency_ms=1500) as server,
        create_http_client(max_connections=1) as client,
    ):
        url = f"{server.base_url}/chat/completions"
        slow = asyncio.create_task(client.post(url, json=CHAT))
        await server.wait_for_requests(1)  # the only connection is now busy
        with pytest.raises(httpx.TimeoutException) as caught:
            await client.post(url, json=CHAT, timeout=httpx.Timeout(5.0, pool=0.1, connect=0.1))
        assert isinstance(caught.value, httpx.ConnectTimeout)
        assert (await slow).status_code == 200
        assert server.requests == 1  # the timed-out request never reached the server


async def test_connection_refused_maps_to_connect_error(client: httpx.AsyncClient) -> None:
    with pytest.raises(httpx.ConnectError) as caught:
        await client.get(f"http://127.0.0.1:{_free_port()}/v1/models")
    assert not isinstance(caught.value, httpx.TimeoutException)  # upstream said ConnectTimeout
    assert isinstance(caught.value.__cause__, aiohttp.ClientConnectorError)
    assert caught.value.request.method == "GET"


async def test_server_hanging_up_maps_to_remote_protocol_error(
    client: httpx.AsyncClient,
) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.close()

    server, url = await _raw_server(hang_up)
    async with server:
        with pytest.raises(httpx.RemoteProtocolError) as caught:
            await client.post(url, json=CHAT)
    assert isinstance(caught.value.__cause__, aiohttp.ServerDisconnectedError)


async def test_malformed_response_maps_to_remote_protocol_error(
    client: httpx.AsyncClient,
) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"this is not HTTP\r\n\r\n")
        await writer.drain()
        writer.close()

    server, url = await _raw_server(garbage)
    async with server:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(url)


async def test_truncated_body_maps_to_remote_protocol_error(client: httpx.AsyncClient) -> None:
    async def truncated(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        await writer.drain()
        writer.close()

    server, url = await _raw_server(truncated)
    async with server:
        with pytest.raises(httpx.RemoteProtocolError) as caught:
            await client.get(url)
    assert isinstance(caught.value.__cause__, aiohttp.ClientPayloadError)
    assert caught.value.request.url == url


# --- wire times: the client's own delays are not the vendor's ------------------------------

BLOCK_S = 0.05


async def test_sent_is_when_the_request_left_not_when_it_was_asked_for(
    client: httpx.AsyncClient,
) -> None:
    """The loop is busy (a blocking callback) between the call and the socket write: that
    delay is the client's, so ``sent`` comes after it."""
    async with FakeVendorServer(latency_ms=0) as server:
        times = track_wire_times()
        asked = time.perf_counter()
        asyncio.get_running_loop().call_soon(time.sleep, BLOCK_S)
        response = await client.post(f"{server.base_url}/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert times.sent is not None
    assert times.body_end is not None
    assert times.sent - asked >= BLOCK_S
    assert times.sent < times.body_end


async def test_a_request_without_a_body_is_stamped_too(client: httpx.AsyncClient) -> None:
    async with FakeVendorServer(latency_ms=0) as server:
        times = track_wire_times()
        asked = time.perf_counter()
        response = await client.get(f"{server.url}/_fakevendor/trace")
    assert response.status_code == 200
    assert times.sent is not None
    assert times.body_end is not None
    assert asked < times.sent < times.body_end


@pytest.mark.parametrize("streamed", [False, True])
async def test_body_end_is_when_the_bytes_arrived_not_when_the_reader_resumed(
    client: httpx.AsyncClient, streamed: bool
) -> None:
    """The server, in this event loop, answers and then blocks the loop at the start of
    every pass for a while (a busy client): whichever pass the answer's bytes reach the
    client's connection in, the reading coroutine resumes only in a later one, after a
    block. The body's end is the arrival, at least one block before the read returns."""
    body = b'{"ok": true}'
    block_s = 0.025

    async def answer_then_block(reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter) -> None:  # fmt: skip
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
        for _ in range(8):  # a handle scheduled in the previous pass runs before any read
            await asyncio.sleep(0)
            time.sleep(block_s)  # noqa: ASYNC251 - blocking the loop on purpose
        writer.close()

    server, url = await _raw_server(answer_then_block)
    async with server:
        times = track_wire_times()
        if streamed:
            async with client.stream("POST", url, json=CHAT) as response:
                assert await response.aread() == body
        else:
            response = await client.post(url, json=CHAT)
            assert response.content == body
        returned = time.perf_counter()
    assert times.sent is not None
    assert times.body_end is not None
    assert times.sent < times.body_end
    assert returned - times.body_end >= block_s * 0.9


async def test_a_streamed_chunk_is_timed_by_its_arrival(client: httpx.AsyncClient) -> None:
    """As above, for the first chunk of a streamed body: ``last_arrival()`` read when the
    chunk is handed over tells when it arrived, at least one block before."""
    block_s = 0.025
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 22\r\n\r\n"

    async def first_chunk_then_block(reader: asyncio.StreamReader,
                                     writer: asyncio.StreamWriter) -> None:  # fmt: skip
        await _read_request(reader)
        writer.write(head + b"data: first\n\n")
        for _ in range(8):
            await asyncio.sleep(0)
            time.sleep(block_s)  # noqa: ASYNC251 - blocking the loop on purpose
        writer.write(b"data: 2\n\n")
        await writer.drain()
        writer.close()

    server, url = await _raw_server(first_chunk_then_block)
    async with server:
        times = track_wire_times()
        async with client.stream("POST", url, json=CHAT) as response:
            chunks = response.aiter_bytes()
            assert await anext(chunks) == b"data: first\n\n"
            handed_over = time.perf_counter()
            arrived = times.last_arrival()
            assert [chunk async for chunk in chunks] == [b"data: 2\n\n"]
    assert arrived is not None
    assert times.sent is not None
    assert times.sent < arrived <= handed_over - block_s * 0.9


async def test_requests_leave_no_reference_cycles(client: httpx.AsyncClient) -> None:
    """Every cycle a request leaves is work for the garbage collector, whose pauses stall
    the event loop (and every timing in flight) for milliseconds under load."""
    async with FakeVendorServer(latency_ms=0, output_tokens=4) as server:
        url = f"{server.base_url}/chat/completions"

        async def one() -> None:
            (await client.post(url, json=CHAT)).json()
            async with client.stream("POST", url, json={**CHAT, "stream": True}) as response:
                async for _ in response.aiter_lines():
                    pass

        await one()  # the connection and the pool exist from now on
        gc.collect()
        gc.disable()
        try:
            for _ in range(20):
                await one()
            left = gc.collect()
        finally:
            gc.enable()
    assert left < 20, f"{left} objects in reference cycles after 40 requests"


def test_connections_stamp_when_bytes_arrive() -> None:
    """aiohttp builds connections from its connector's private ``_factory``: if that ever
    stops being used, arrival times silently fall back to "when the read returned"."""

    async def check() -> None:
        async with create_http_client() as shared, FakeVendorServer(latency_ms=0) as server:
            await shared.post(f"{server.base_url}/chat/completions", json=CHAT)
            transport = shared._transport
            assert isinstance(transport, FleetAiohttpTransport)
            session = transport._session
            assert session is not None
            connector = session.connector
            assert isinstance(connector, _StampingConnector)
            assert isinstance(connector._factory(), _ArrivalStampingHandler)

    asyncio.run(check())


def test_error_type_table_prefers_the_most_specific_mapping() -> None:
    key: Any = None  # aiohttp only formats it in messages
    refused = aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "refused"))
    assert httpx_error_type(refused) is httpx.ConnectError
    assert httpx_error_type(aiohttp.ConnectionTimeoutError()) is httpx.ConnectTimeout
    assert httpx_error_type(aiohttp.SocketTimeoutError()) is httpx.ReadTimeout
    assert httpx_error_type(aiohttp.ServerDisconnectedError()) is httpx.RemoteProtocolError
    assert httpx_error_type(aiohttp.ClientOSError()) is httpx.ReadError
    assert httpx_error_type(ValueError("not ours")) is None


# --- the cheaper request path: httpx's behaviour, less CPU -------------------------------------


@pytest.fixture
async def echo_url() -> AsyncIterator[str]:
    """A server answering ``/echo`` with the request it got (method, path, headers in
    order, body), ``/moved`` with a redirect to ``/echo`` and ``/gzip`` with a gzipped
    JSON body."""

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        if request.path == "/moved":
            return web.Response(status=302, headers={"Location": "/echo"})
        if request.path == "/gzip":
            body = gzip.compress(json.dumps({"zipped": True}).encode())
            return web.Response(body=body, headers={"Content-Encoding": "gzip",
                                                    "Content-Type": "application/json"})
        return web.json_response({
            "method": request.method, "path": request.path_qs,
            "headers": [[k.decode(), v.decode()] for k, v in request.raw_headers],
            "body": (await request.read()).decode(),
        })

    async with local_server(handler) as url:
        yield url


def _built(request: httpx.Request) -> tuple[Any, ...]:
    return (request.method, str(request.url), request.headers.raw, request.headers.encoding,
            request.content, request.extensions)


async def test_requests_are_built_exactly_as_httpx_builds_them() -> None:
    url = "http://127.0.0.1:9/v1/chat/completions"
    calls: list[dict[str, Any]] = [
        {"content": b'{"a": 1}', "headers": {"Content-Type": "application/json",
                                             "Authorization": "Bearer sk-x"}},
        {"content": b"x"},
        {"content": b"xy", "headers": {"Host": "vendor.test", "content-length": "2"}},
        {"content": b"x", "headers": {"X-Name": "Zoë".encode()}},  # not ASCII: UTF-8
        {"content": b"x", "timeout": 5.0},
        {"content": b"x", "timeout": httpx.Timeout(1.0, connect=2.0)},
        {"content": b"x", "extensions": {"sni_hostname": "vendor.test"}},
        {"content": b"x", "extensions": {"timeout": {"connect": 1.0, "read": 2.0,
                                                     "write": None, "pool": None}}},
        {"content": b""},  # httpx's own path: no Content-Length but "0", first
        {"json": {"a": 1}},
    ]
    async with create_http_client() as client:
        for _ in range(2):  # the second time from the header cache
            for call in calls:
                ours = client.build_request("POST", url, **call)
                theirs = httpx.AsyncClient.build_request(client, "POST", url, **call)
                assert _built(ours) == _built(theirs), call
        with pytest.raises(UnicodeEncodeError):  # a str header must be ASCII, as in httpx
            client.build_request("POST", url, content=b"x", headers={"X-Name": "Zoë"})
        client.headers["X-Client"] = "changed"  # the client's headers are part of the key
        ours = client.build_request("POST", url, content=b"x")
        assert ours.headers["x-client"] == "changed"
        assert _built(ours) == _built(
            httpx.AsyncClient.build_request(client, "POST", url, content=b"x"))


async def test_redirects_are_reported_and_followed_only_when_asked(echo_url: str) -> None:
    async with create_http_client() as client:
        moved = await client.post(f"{echo_url}/moved", content=b"x")
        assert moved.status_code == 302
        assert moved.history == []
        assert moved.next_request is not None
        assert str(moved.next_request.url) == f"{echo_url}/echo"
        followed = await client.get(f"{echo_url}/moved", follow_redirects=True)
    assert followed.status_code == 200
    assert [r.status_code for r in followed.history] == [302]
    assert followed.json()["path"] == "/echo"


async def test_auth_credentials_in_the_url_and_event_hooks_still_apply(echo_url: str) -> None:
    seen: list[str] = []

    async def on_request(request: httpx.Request) -> None:
        seen.append(f"request {request.url.path}")

    async def on_response(response: httpx.Response) -> None:
        seen.append(f"response {response.status_code}")

    async with create_http_client() as client:
        with_auth = await client.post(f"{echo_url}/echo", content=b"x", auth=("ann", "pw"))
        in_url = await client.post(echo_url.replace("//", "//bob:pw@") + "/echo", content=b"x")
        client.event_hooks = {"request": [on_request], "response": [on_response]}
        hooked = await client.post(f"{echo_url}/echo", content=b"x")

    def authorization(response: httpx.Response) -> str | None:
        return dict((k.lower(), v) for k, v in response.json()["headers"]).get("authorization")

    assert authorization(with_auth) == "Basic " + base64.b64encode(b"ann:pw").decode()
    assert authorization(in_url) == "Basic " + base64.b64encode(b"bob:pw").decode()
    assert authorization(hooked) is None
    assert seen == ["request /echo", "response 200"]


async def test_the_wire_carries_httpx_headers_and_the_body(echo_url: str) -> None:
    async with create_http_client() as client:
        response = await client.post(f"{echo_url}/echo?x=1", content=b'{"q": 1}',
                                     headers={"Content-Type": "application/json"})
    sent = response.json()
    assert (sent["method"], sent["path"], sent["body"]) == ("POST", "/echo?x=1", '{"q": 1}')
    on_the_wire = [[name.lower(), value] for name, value in sent["headers"]]
    assert on_the_wire == [[k.lower(), v] for k, v in response.request.headers.multi_items()]
    assert ["content-length", "8"] in on_the_wire


async def test_a_whole_answer_is_left_as_httpx_reading_it_would_leave_it(echo_url: str) -> None:
    async with create_http_client() as client:
        fast = await client.post(f"{echo_url}/echo", content=b"same")
        async with client.stream("POST", f"{echo_url}/echo", content=b"same") as reference:
            await reference.aread()  # httpx's own generators
    for response in (fast, reference):
        with pytest.raises(httpx.StreamConsumed):
            [chunk async for chunk in response.aiter_raw()]
    assert fast.content == reference.content
    assert [c async for c in fast.aiter_bytes()] == [c async for c in reference.aiter_bytes()]
    state = ("is_closed", "is_stream_consumed", "num_bytes_downloaded", "encoding", "text",
             "status_code", "http_version", "reason_phrase", "charset_encoding")
    assert {name: getattr(fast, name) for name in state} == \
        {name: getattr(reference, name) for name in state}
    assert [k for k, _ in fast.headers.raw] == [k for k, _ in reference.headers.raw]
    assert fast.elapsed.total_seconds() > 0


async def test_a_whole_answer_is_read_decoded_closed_and_timed(echo_url: str) -> None:
    async with create_http_client() as client:
        response = await client.get(f"{echo_url}/gzip")
        assert response.json() == {"zipped": True}
        assert response.headers["content-encoding"] == "gzip"
        assert response.is_stream_consumed
        assert response.is_closed
        assert response.num_bytes_downloaded == int(response.headers["content-length"])
        assert response.elapsed.total_seconds() > 0
        await response.aclose()  # closing again is harmless
        async with client.stream("GET", f"{echo_url}/gzip") as streamed:
            assert json.loads(await streamed.aread()) == {"zipped": True}
        assert streamed.is_closed
        assert streamed.elapsed.total_seconds() > 0
    with pytest.raises(RuntimeError, match="closed"):
        await client.get(f"{echo_url}/echo")


# --- client settings --------------------------------------------------------------------------


async def test_environment_proxies_are_ignored(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = f"http://127.0.0.1:{_free_port()}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, dead)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with FakeVendorServer() as server, create_http_client() as fresh:
        response = await fresh.post(f"{server.base_url}/chat/completions", json=CHAT)
    assert response.status_code == 200


async def test_cookies_set_by_the_server_are_kept(client: httpx.AsyncClient) -> None:
    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        response = web.json_response({"cookie": request.headers.get("Cookie")})
        if request.path == "/login":
            response.set_cookie("session", "abc123")
        return response

    async with local_server(handler) as base:
        assert (await client.get(f"{base}/before")).json() == {"cookie": None}
        await client.get(f"{base}/login")
        assert client.cookies["session"] == "abc123"
        assert (await client.get(f"{base}/after")).json() == {"cookie": "session=abc123"}


async def test_client_settings_and_transport_name() -> None:
    client = create_http_client(max_connections=8, timeout_s=30)
    try:
        assert isinstance(client, httpx.AsyncClient)
        assert client.timeout == httpx.Timeout(30, connect=10)
        assert not client.trust_env
        assert not client.follow_redirects
        transport = client._transport  # the one place we look inside httpx
        assert isinstance(transport, FleetAiohttpTransport)
        assert transport.max_connections == 8
    finally:
        await client.aclose()
    assert "aiohttp" in transport_name()
    assert "httpx" in transport_name()
    with pytest.raises(ValueError, match="timeout_s"):
        create_http_client(timeout_s=0)
    with pytest.raises(ValueError, match="max_connections"):
        create_http_client(max_connections=0)


async def test_connections_are_capped_and_reused() -> None:
    async with (
        FakeVendorServer(latency_ms=20) as server,
        create_http_client(max_connections=4) as capped,
    ):
        url = f"{server.base_url}/chat/completions"
        responses = await asyncio.gather(*(capped.post(url, json=CHAT) for _ in range(40)))
        assert all(r.status_code == 200 for r in responses)
        assert server.requests == 40
        assert server.max_in_flight == 4  # the cap, measured at the server
        transport = capped._transport
        assert isinstance(transport, FleetAiohttpTransport)
        session = transport._session
        assert session is not None
        assert session.connector is not None
        # aiohttp's idle pool (private, but the only witness of reuse): the 4 connections
        # that served all 40 requests are back in it, none was thrown away.
        [idle] = session.connector._conns.values()
        assert len(idle) == 4


# --- the fake vendor itself --------------------------------------------------------------------


async def test_fake_vendor_trace_reset_and_knobs(client: httpx.AsyncClient) -> None:
    async with FakeVendorServer(output_tokens=2) as server:
        url = f"{server.base_url}/chat/completions"
        await client.post(url, json=CHAT)
        server.configure(answer="Paris is the capital.")
        body = (await client.post(url, json=CHAT)).json()
        assert body["model"] == "fake-gpt"  # echoes the request's model, like a vendor
        assert body["choices"][0]["message"]["content"] == "Paris is the capital."
        assert body["usage"]["completion_tokens"] == 4  # one token per word
        snapshot = await client.get(server.url + "/_fakevendor/trace")
        data = snapshot.json()
        assert data["requests"] == 2
        assert len(data["trace"]) == 2
        assert "CLOCK_MONOTONIC" in data["clock"] or "perf_counter" in data["clock"]
        await client.post(server.url + "/_fakevendor/reset")
        assert server.requests == 0
        assert server.trace == []
    with pytest.raises(ValueError, match="tokens_per_chunk"):
        FakeVendorConfig(tokens_per_chunk=0)


def test_fake_vendor_in_a_subprocess_shares_the_clock() -> None:
    async def call(base_url: str) -> tuple[float, float]:
        async with create_http_client() as client:
            sent = time.perf_counter()
            response = await client.post(
                f"{base_url}/chat/completions", json=CHAT, headers={REQUEST_ID_HEADER: "x"}
            )
            response.raise_for_status()
            return sent, time.perf_counter()

    with FakeVendorProcess(FakeVendorConfig(latency_ms=30)) as server:
        sent, done = asyncio.run(call(server.base_url))
        snapshot = server.fetch()
    [entry] = snapshot["trace"]
    assert snapshot["requests"] == 1
    assert entry.request_id == "x"
    # The child's timestamps are on this process's perf_counter clock.
    assert entry.last_byte is not None
    assert sent <= entry.received < entry.last_byte <= done
    assert entry.last_byte - entry.received >= 0.03


async def test_explicit_proxy_is_used() -> None:
    request_lines: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_lines.append(head.split(b"\r\n", 1)[0])
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nproxied")
        await writer.drain()
        writer.close()

    server, proxy_url = await _raw_server(proxy)
    transport = FleetAiohttpTransport(proxy=httpx.Proxy(proxy_url))
    async with server, httpx.AsyncClient(transport=transport) as client:
        response = await client.get("http://vendor.invalid/v1/models")
    assert response.text == "proxied"
    assert request_lines == [b"GET http://vendor.invalid/v1/models HTTP/1.1"]
