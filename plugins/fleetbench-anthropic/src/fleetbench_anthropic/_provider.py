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

from collections.abc import AsyncIterator

import httpx
import orjson

from fleetbench.errors import TransientProviderError
from fleetbench.plugin import Provider, ProviderConfig
from fleetbench.providerkit import answer_chunks, http_timeout, load_json, sse_text_chunks
from fleetbench.records import ProviderRequest, ProviderResponse, StreamChunk

from ._errors import error_from_payload, error_from_response
from ._options import ANTHROPIC_DEFAULT_BASE_URL, Options
from ._wire import StreamState, build_body, parse_message

__all__ = ["AnthropicProvider"]

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
        self._timeout = http_timeout(config.timeout_s)

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
                # A gateway that answered with one whole JSON message.
                for chunk in answer_chunks(self._whole(await response.aread())):
                    yield chunk
                return
            state = StreamState(secret=self._secret)

            def fold(event: str, data: bytes) -> str:
                payload = load_json(data, vendor=_VENDOR, what=f"a stream event ({event or '?'})",
                                    secret=self._secret)  # fmt: skip
                return state.feed(payload, event)

            async for chunk in sse_text_chunks(response, fold, ended=state.finished):
                yield chunk
            if not state.finished():
                raise TransientProviderError(
                    f"anthropic: truncated stream: the body ended without message_stop after "
                    f"{state.events} event(s)"
                )
            yield state.final()

    def max_connections(self) -> int | None:
        """The manifest's ``max_connections`` param, if set."""
        return self.options.max_connections
