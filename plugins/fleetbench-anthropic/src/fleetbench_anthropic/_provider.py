"""The ``anthropic`` provider: the Messages API over the core's client.

A provider only translates and classifies: the executor owns retries, timeouts and the
timing of every chunk, so :meth:`AnthropicProvider.stream` yields each text delta the
moment its event is parsed, and nothing before the first one (``message_start``, the
block start and pings arrive before any token; yielding them would stamp TTFT too early).
Every failure raises a :mod:`fleetbench.errors` class: an HTTP error status, an ``error``
event inside a 200 stream, JSON that does not parse, a body that ends without
``message_stop``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator

import httpx
import orjson

from fleetbench.errors import TransientProviderError
from fleetbench.plugin import Provider, ProviderConfig
from fleetbench.providerkit import SSEDecoder, load_json
from fleetbench.records import ProviderRequest, ProviderResponse, StreamChunk

from ._errors import error_from_payload, error_from_response
from ._options import ANTHROPIC_DEFAULT_BASE_URL, Options
from ._wire import StreamState, build_body, parse_message

__all__ = ["AnthropicProvider"]

CONNECT_TIMEOUT_S = 10.0
_VENDOR = "anthropic"


class AnthropicProvider(Provider):
    """Anthropic's Messages API: ``POST {base_url}/v1/messages`` with ``x-api-key`` and
    ``anthropic-version``; ``base_url`` (the host) defaults to ``https://api.anthropic.com``.
    """

    supports_streaming = True

    def __init__(self, config: ProviderConfig, http: httpx.AsyncClient) -> None:
        super().__init__(config, http)
        self.options = Options.from_config(config)
        self._secret = config.api_key.reveal() if config.api_key is not None else None
        base = (config.base_url or ANTHROPIC_DEFAULT_BASE_URL).rstrip("/")
        self._url = f"{base}/v1/messages"
        self._headers = {"content-type": "application/json", **self.options.headers}
        if self._secret:
            self._headers["x-api-key"] = self._secret
        self._timeout = httpx.Timeout(config.timeout_s,
                                      connect=min(config.timeout_s, CONNECT_TIMEOUT_S))

    def _content(self, request: ProviderRequest, *, stream: bool) -> bytes:
        return orjson.dumps(build_body(self.config.model, request.prompt, request.settings,
                                       stream=stream,
                                       default_max_tokens=self.options.default_max_tokens))

    async def generate(self, request: ProviderRequest) -> ProviderResponse:
        """One non-streaming message."""
        response = await self.http.post(self._url, content=self._content(request, stream=False),
                                        headers=self._headers, timeout=self._timeout)
        if not 200 <= response.status_code < 300:
            raise error_from_response(response.status_code, response.content, response.headers,
                                      secret=self._secret)
        return self._whole(response.content)

    def _whole(self, body: bytes) -> ProviderResponse:
        """A whole JSON answer: a message, or an error object sent with a 2xx status."""
        payload = load_json(body, vendor=_VENDOR, what="the answer", secret=self._secret)
        if isinstance(payload, dict) and payload.get("type") == "error":
            raise error_from_payload(payload, secret=self._secret)
        return parse_message(payload)

    async def stream(self, request: ProviderRequest) -> AsyncIterator[StreamChunk]:
        """One streamed message: a chunk per non-empty text delta, then one with the usage,
        stop reason, model and id."""
        async with self.http.stream(
            "POST", self._url, content=self._content(request, stream=True),
            headers=self._headers, timeout=self._timeout,
        ) as response:  # fmt: skip
            if not 200 <= response.status_code < 300:
                raise error_from_response(response.status_code, await response.aread(),
                                          response.headers, secret=self._secret)
            if "event-stream" not in response.headers.get("content-type", ""):
                whole = self._whole(await response.aread())  # a gateway that answered JSON
                if whole.text:
                    yield StreamChunk(text=whole.text)
                yield StreamChunk(usage=whole.usage, finish_reason=whole.finish_reason,
                                  model=whole.model, response_id=whole.response_id)
                return
            decoder = SSEDecoder()
            state = StreamState(secret=self._secret)
            async for raw in response.aiter_bytes():
                if state.finished():
                    continue  # read to the end, so the connection goes back to the pool
                for chunk in self._fold(state, decoder.feed(raw)):
                    yield chunk
            for chunk in self._fold(state, decoder.close()):
                yield chunk
            if not state.finished():
                raise TransientProviderError(
                    f"anthropic: truncated stream: the body ended without message_stop after "
                    f"{state.events} event(s)"
                )
            yield state.final()

    def _fold(self, state: StreamState,
              events: Iterable[tuple[str, bytes]]) -> Iterator[StreamChunk]:  # fmt: skip
        """Feed decoded events to ``state`` up to ``message_stop``, yielding each text chunk
        as it is parsed (lazily: an error event raises after the text before it)."""
        for event, data in events:
            if state.finished():
                return
            payload = load_json(data, vendor=_VENDOR, what=f"a stream event ({event or '?'})",
                                secret=self._secret)
            text = state.feed(payload, event)
            if text:
                yield StreamChunk(text=text)

    def max_connections(self) -> int | None:
        """The manifest's ``max_connections`` param, if set."""
        return self.options.max_connections
