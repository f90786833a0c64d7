"""The ``cohere`` provider: Cohere's v2 Chat API over the core's client.

A provider only translates and classifies: the executor owns retries, timeouts and the
timing of every chunk, so :meth:`CohereProvider.stream` yields each text delta the moment
its SSE event is parsed (``message-start`` and ``content-start`` come first and carry no
text, so they yield nothing and cannot pass for the first token) and raises a
:mod:`fleetbench.errors` class for every failure: an HTTP status, a ``message-end`` that
reports a failed generation, an event that is not JSON, a body that ends without
``message-end``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from fleetbench.errors import MalformedResponseError, ProviderError, TransientProviderError
from fleetbench.plugin import Provider, ProviderConfig
from fleetbench.providerkit import clip, http_timeout, load_json, sse_text_chunks
from fleetbench.records import ProviderRequest, ProviderResponse, StreamChunk, Usage

from ._errors import VENDOR, error_from_generation, error_from_response
from ._options import DEFAULT_BASE_URL, Options
from ._wire import FAILED_FINISHES, build_body, normalise_finish, parse_chat, usage_from

__all__ = ["CohereProvider", "chat_url"]

_TEXT_EVENTS = frozenset({"content-start", "content-delta"})


def chat_url(base_url: str | None) -> str:
    """``{base_url}/v2/chat``. ``base_url`` is the host, as Cohere's SDKs take it; a base
    that already ends in ``/v2`` (some clients configure it so) is not doubled, and a
    trailing ``/v1`` (an old v1 configuration) is replaced."""
    base = (base_url or DEFAULT_BASE_URL).rstrip("/")
    path = urlsplit(base).path
    if path.endswith(("/v1", "/v2")):
        base = base[: -len("/v1")]
    return f"{base}/v2/chat"


class CohereProvider(Provider):
    """Cohere's v2 Chat API: ``POST {base_url}/v2/chat`` with ``Authorization: Bearer``.

    ``base_url`` defaults to ``https://api.cohere.com``; any server speaking the v2 Chat
    API (a private Cohere deployment, vLLM's ``/cohere`` routes) works the same way.
    """

    supports_streaming = True

    def __init__(self, config: ProviderConfig, http: httpx.AsyncClient) -> None:
        super().__init__(config, http)
        self.options = Options.from_config(config)
        self._secret = config.api_key.reveal() if config.api_key is not None else None
        self._url = chat_url(config.base_url)
        auth = {"Authorization": f"Bearer {self._secret}"} if self._secret else {}
        self._headers = {"Content-Type": "application/json", **self.options.headers, **auth}
        self._timeout = http_timeout(config.timeout_s)

    def _content(self, request: ProviderRequest, *, stream: bool) -> bytes:
        return orjson.dumps(build_body(self.config.model, request.prompt, request.settings,
                                       stream=stream))  # fmt: skip

    def _http_error(self, status: int, body: bytes, headers: httpx.Headers) -> ProviderError:
        return error_from_response(status, body, headers, secret=self._secret)

    def _json(self, data: bytes, what: str) -> Any:
        return load_json(data, vendor=VENDOR, what=what, secret=self._secret)

    async def generate(self, request: ProviderRequest) -> ProviderResponse:
        """One non-streamed chat call."""
        response = await self.http.post(self._url, content=self._content(request, stream=False),
                                        headers=self._headers, timeout=self._timeout)
        if not 200 <= response.status_code < 300:
            raise self._http_error(response.status_code, response.content, response.headers)
        return parse_chat(self._json(response.content, "the answer"),
                          source=self.options.usage_from, secret=self._secret)

    async def stream(self, request: ProviderRequest) -> AsyncIterator[StreamChunk]:
        """One streamed chat call: a chunk per non-empty text delta, then one with the usage
        (from ``message-end``), the finish reason and the message id."""
        async with self.http.stream(
            "POST", self._url, content=self._content(request, stream=True),
            headers=self._headers, timeout=self._timeout,
        ) as response:  # fmt: skip
            status = response.status_code
            if not 200 <= status < 300:
                raise self._http_error(status, await response.aread(), response.headers)
            content_type = response.headers.get("content-type", "")
            if "event-stream" not in content_type:
                snippet = clip((await response.aread())[:80].decode("utf-8", "replace"),
                               self._secret, 80)  # fmt: skip
                raise MalformedResponseError(f"{VENDOR}: a streamed answer is not an event "
                                             f"stream ({content_type!r}): {snippet!r}")
            state = _StreamState(self.options.usage_from)
            async for chunk in sse_text_chunks(
                response, lambda name, data: self._event(name, data, state),
                ended=lambda: state.ended,
            ):  # fmt: skip
                yield chunk
            if not state.ended:
                raise TransientProviderError(
                    f"{VENDOR}: truncated stream: the body ended without message-end after "
                    f"{state.events} event(s)"
                )
            yield state.final()

    def _event(self, name: str, data: bytes, state: _StreamState) -> str | None:
        """Fold one SSE event into ``state``; return its text, if any.

        Events are told apart by their JSON ``type`` (the SSE event name when it has none).
        Tool, citation and debug events, and any type not known yet, are skipped.
        """
        state.events += 1
        event = self._json(data, "a stream event")
        if not isinstance(event, dict):
            raise MalformedResponseError(f"{VENDOR}: a stream event is not a JSON object")
        kind = event.get("type") or name
        if kind in _TEXT_EVENTS:
            text = _path(event, "delta", "message", "content", "text")
            return text if isinstance(text, str) else None
        if kind == "message-start":
            if isinstance(event.get("id"), str):
                state.response_id = event["id"]
        elif kind == "message-end":
            delta = event.get("delta")
            delta = delta if isinstance(delta, dict) else {}
            finish = delta.get("finish_reason")
            if finish in FAILED_FINISHES or delta.get("error"):
                raise error_from_generation(finish or "ERROR", delta.get("error"),
                                            secret=self._secret)  # fmt: skip
            state.finish = normalise_finish(finish)
            state.usage = usage_from(delta.get("usage"), state.usage_source)
            state.ended = True
        elif kind in ("", "error") and "message" in event:  # an error object, not an event
            raise error_from_generation("ERROR", event.get("message"), secret=self._secret)
        return None

    def max_connections(self) -> int | None:
        """The manifest's ``max_connections`` param, if set."""
        return self.options.max_connections


def _path(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


class _StreamState:
    """What a stream has told so far."""

    __slots__ = ("ended", "events", "finish", "response_id", "usage", "usage_source")

    def __init__(self, usage_source: str) -> None:
        self.usage_source = usage_source
        self.ended = False
        """``message-end`` was read."""
        self.events = 0
        self.finish: str | None = None
        self.response_id: str | None = None
        self.usage: Usage | None = None

    def final(self) -> StreamChunk:
        return StreamChunk(usage=self.usage, finish_reason=self.finish,
                           response_id=self.response_id)  # fmt: skip
