"""The ``gemini`` provider: ``generateContent`` and ``streamGenerateContent`` over the
core's client.

A provider only translates and classifies: the executor owns retries, timeouts and the
timing of every chunk, so :meth:`GeminiProvider.stream` yields each chunk's text the moment
its SSE event is parsed and raises a :mod:`fleetbench.errors` class for every failure (an
HTTP status, an error object inside a 200 stream, malformed JSON, a truncated stream).

Truncation: a Gemini stream has no terminator; the body simply ends after the chunk that
carries ``finishReason``. So a body that ends before any chunk carried a ``finishReason``
(or a prompt-block verdict) is taken as cut short and raised as a retryable
:class:`TransientProviderError` ("truncated stream"), never returned as a short answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from fleetbench.errors import TransientProviderError
from fleetbench.plugin import Provider, ProviderConfig
from fleetbench.providerkit import http_timeout, load_json, sse_text_chunks
from fleetbench.records import ProviderRequest, ProviderResponse, StreamChunk

from ._errors import error_from_payload, error_from_response
from ._options import GEMINI_DEFAULT_BASE_URL, Options
from ._wire import VENDOR, StreamReader, build_body, parse_response

__all__ = ["GeminiProvider"]


class GeminiProvider(Provider):
    """Google Gemini through the Generative Language API.

    ``POST {base_url}/{api_version}/models/{model}:generateContent`` (streaming:
    ``:streamGenerateContent?alt=sse``) with the key in the ``x-goog-api-key`` header, never
    in the URL; ``base_url`` defaults to ``https://generativelanguage.googleapis.com``.
    """

    supports_streaming = True

    def __init__(self, config: ProviderConfig, http: httpx.AsyncClient) -> None:
        super().__init__(config, http)
        self.options = Options.from_config(config)
        self._secret = config.api_key.reveal() if config.api_key is not None else None
        base = (config.base_url or GEMINI_DEFAULT_BASE_URL).rstrip("/")
        model = quote(config.model.removeprefix("models/"), safe="")
        prefix = f"{base}/{self.options.api_version}/models/{model}"
        self._generate_url = prefix + ":generateContent"
        self._stream_url = prefix + ":streamGenerateContent?alt=sse"
        self._headers = {"Content-Type": "application/json", **self.options.headers}
        if self._secret:
            self._headers["x-goog-api-key"] = self._secret
        self._timeout = http_timeout(config.timeout_s)

    def _content(self, request: ProviderRequest) -> bytes:
        return orjson.dumps(build_body(request.prompt, request.settings))

    async def generate(self, request: ProviderRequest) -> ProviderResponse:
        """One ``generateContent`` call."""
        response = await self.http.post(self._generate_url, content=self._content(request),
                                        headers=self._headers, timeout=self._timeout)
        if not 200 <= response.status_code < 300:
            raise error_from_response(response.status_code, response.content,
                                      response.headers, secret=self._secret)  # fmt: skip
        payload = self._json(response.content, "the answer")
        if isinstance(payload, dict) and "error" in payload:
            raise error_from_payload(payload, secret=self._secret)
        return parse_response(payload)

    async def stream(self, request: ProviderRequest) -> AsyncIterator[StreamChunk]:
        """One ``streamGenerateContent?alt=sse`` call: a chunk per non-empty text, then one
        with the last usage, the finish reason, the model version and the response id."""
        async with self.http.stream(
            "POST", self._stream_url, content=self._content(request), headers=self._headers,
            timeout=self._timeout,
        ) as response:  # fmt: skip
            status = response.status_code
            if not 200 <= status < 300:
                raise error_from_response(status, await response.aread(), response.headers,
                                          secret=self._secret)  # fmt: skip
            reader = StreamReader()

            def fold(_: str, data: bytes) -> str:  # Gemini names none of its events
                return self._fold(self._json(data, "a stream event"), reader)

            if "event-stream" in response.headers.get("content-type", ""):
                async for chunk in sse_text_chunks(response, fold):
                    yield chunk
            else:
                # Not SSE (a proxy that dropped ``alt=sse``): one JSON array of chunks, or
                # a single answer or error object.
                payload = self._json(await response.aread(), "the answer")
                for item in payload if isinstance(payload, list) else [payload]:
                    text = self._fold(item, reader)
                    if text:
                        yield StreamChunk(text=text)
            if not reader.finished:
                raise TransientProviderError(
                    f"{VENDOR}: truncated stream: the body ended after {reader.chunks} "
                    "chunk(s) without a finishReason"
                )
            yield reader.final()

    def _fold(self, payload: Any, reader: StreamReader) -> str:
        if isinstance(payload, dict) and "error" in payload:
            raise error_from_payload(payload, secret=self._secret)
        return reader.add(payload)

    def _json(self, data: bytes, what: str) -> Any:
        return load_json(data, vendor=VENDOR, what=what, secret=self._secret)

    def max_connections(self) -> int | None:
        """The manifest's ``max_connections`` param, if set."""
        return self.options.max_connections

