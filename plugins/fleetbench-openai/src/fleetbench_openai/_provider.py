"""The ``openai`` and ``azure-openai`` providers: Chat Completions over the core's client.

A provider only translates and classifies: the executor owns retries, timeouts and the
timing of every chunk, so :meth:`OpenAIProvider.stream` yields each text delta the moment
its SSE event is parsed and raises a :mod:`fleetbench.errors` class for every failure
(HTTP status, an error inside a 200 stream, malformed JSON, a body that ends without
``[DONE]``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import orjson

from fleetbench.errors import MalformedResponseError, ProviderError, TransientProviderError
from fleetbench.plugin import Provider, ProviderConfig
from fleetbench.providerkit import answer_chunks, http_timeout, load_json, sse_text_chunks
from fleetbench.records import ProviderRequest, ProviderResponse, StreamChunk

from ._errors import error_from_payload, error_from_response
from ._options import OPENAI_DEFAULT_BASE_URL, Options
from ._wire import build_body, normalise_finish, parse_completion, usage_from

__all__ = ["AzureOpenAIProvider", "OpenAIProvider"]

_DONE = b"[DONE]"


class OpenAIProvider(Provider):
    """OpenAI Chat Completions, and any server speaking it (vLLM, llama.cpp, Ollama …).

    ``POST {base_url}/chat/completions`` with ``Authorization: Bearer <key>``;
    ``base_url`` defaults to ``https://api.openai.com/v1``.
    """

    supports_streaming = True
    vendor = "openai"
    azure = False

    def __init__(self, config: ProviderConfig, http: httpx.AsyncClient) -> None:
        super().__init__(config, http)
        self.options = Options.from_config(config, azure=self.azure)
        self._secret = config.api_key.reveal() if config.api_key is not None else None
        self._url = self._chat_url()
        self._body_model: str | None = config.model
        self._headers = {"Content-Type": "application/json", **self.options.headers,
                         **self._auth_headers()}  # fmt: skip
        self._timeout = http_timeout(config.timeout_s)
        self._stream_usage = self.options.include_usage
        """Cleared when the server rejected ``stream_options`` once (old servers)."""

    # ----------------------------------------------------------------- per vendor

    def _chat_url(self) -> str:
        base = (self.config.base_url or OPENAI_DEFAULT_BASE_URL).rstrip("/")
        return f"{base}/chat/completions"

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._secret}"} if self._secret else {}

    # ------------------------------------------------------------------ requests

    def _content(self, request: ProviderRequest, *, stream: bool, usage: bool) -> bytes:
        body = build_body(
            self._body_model,
            request.prompt,
            request.settings,
            stream=stream,
            max_tokens_field=self.options.max_tokens_field,
            include_usage=usage,
        )
        return orjson.dumps(body)

    async def generate(self, request: ProviderRequest) -> ProviderResponse:
        """One non-streaming chat completion."""
        content = self._content(request, stream=False, usage=False)
        response = await self.http.post(
            self._url, content=content, headers=self._headers, timeout=self._timeout
        )
        if not 200 <= response.status_code < 300:
            raise self._http_error(response.status_code, response.content, response.headers)
        payload = self._json(response.content, "the answer")
        if isinstance(payload, dict) and ("error" in payload or payload.get("object") == "error"):
            raise error_from_payload(self.vendor, payload, secret=self._secret,
                                     status=response.status_code)  # fmt: skip
        return parse_completion(self.vendor, payload)

    async def stream(self, request: ProviderRequest) -> AsyncIterator[StreamChunk]:
        """One streamed chat completion: a chunk per text delta, then one with the usage,
        finish reason, model and id. ``stream_options.include_usage`` is sent unless
        disabled; a server that rejects it is asked again without (usage then estimated)."""
        while True:
            usage = self._stream_usage
            content = self._content(request, stream=True, usage=usage)
            async with self.http.stream(
                "POST", self._url, content=content, headers=self._headers,
                timeout=self._timeout,
            ) as response:  # fmt: skip
                status = response.status_code
                if not 200 <= status < 300:
                    error = self._http_error(status, await response.aread(), response.headers)
                    if usage and status in (400, 422) and "stream_options" in error.message:
                        self._stream_usage = False
                        continue
                    raise error
                if "event-stream" not in response.headers.get("content-type", ""):
                    for chunk in await self._whole_answer(response):
                        yield chunk
                    return
                # The events are read here rather than in a helper generator: one async
                # generator less for every chunk of every stream.
                state = _StreamState()

                def fold(_: str, data: bytes, state: _StreamState = state) -> str | None:
                    return self._event(data, state)

                async for chunk in sse_text_chunks(response, fold, ended=state.finished):
                    yield chunk
                if not state.finished():
                    raise TransientProviderError(
                        f"{self.vendor}: truncated stream: the body ended without [DONE] "
                        f"after {state.events} event(s)"
                    )
                yield state.final()
                return

    async def _whole_answer(self, response: httpx.Response) -> list[StreamChunk]:
        """The chunks of a server that answered a streaming request with the whole
        completion (or an error) as JSON, not SSE."""
        payload = self._json(await response.aread(), "the answer")
        if isinstance(payload, dict) and "error" in payload:
            raise error_from_payload(self.vendor, payload, secret=self._secret)
        return answer_chunks(parse_completion(self.vendor, payload))

    def _event(self, data: bytes, state: _StreamState) -> str | None:
        """Fold one SSE ``data`` payload into ``state``; return its text delta, if any."""
        if data == _DONE:
            state.done = True
            return None
        state.events += 1
        chunk = self._json(data, "a stream event")
        if not isinstance(chunk, dict):
            raise MalformedResponseError(f"{self.vendor}: a stream event is not a JSON object")
        if "error" in chunk or chunk.get("object") == "error":
            raise error_from_payload(self.vendor, chunk, secret=self._secret)
        if state.model is None and chunk.get("model"):
            state.model = str(chunk["model"])
        if state.response_id is None and chunk.get("id"):
            state.response_id = str(chunk["id"])
        usage = chunk.get("usage")
        if usage is not None:  # keep the last non-null usage, wherever it comes
            state.usage = usage_from(usage) or state.usage
        choices = chunk.get("choices")
        if not choices or not isinstance(choices, list):
            return None  # the usage chunk, or Azure's prompt-filter chunk
        choice = choices[0]
        if not isinstance(choice, dict):
            raise MalformedResponseError(f"{self.vendor}: choices[0] is not an object")
        finish = choice.get("finish_reason")
        if finish:
            state.finish = normalise_finish(finish)
        delta = choice.get("delta")
        if isinstance(delta, dict):
            text = delta.get("content")
            if isinstance(text, str):
                return text
        return None

    # -------------------------------------------------------------------- errors

    def _json(self, data: bytes, what: str) -> Any:
        return load_json(data, vendor=self.vendor, what=what, secret=self._secret)

    def _http_error(
        self, status: int, body: bytes, headers: Mapping[str, str]
    ) -> ProviderError:
        return error_from_response(self.vendor, status, body, headers, secret=self._secret)

    def max_connections(self) -> int | None:
        """The manifest's ``max_connections`` param, if set."""
        return self.options.max_connections


class AzureOpenAIProvider(OpenAIProvider):
    """Azure OpenAI: ``base_url`` is the resource endpoint, the model is the deployment.

    Classic URLs are ``{base_url}/openai/deployments/{model}/chat/completions?api-version=``
    (``api_version`` param, default 2024-10-21); a ``base_url`` ending in ``/openai/v1``
    selects the v1 API (no ``api-version``, the deployment sent as ``model``). The key goes
    in the ``api-key`` header.
    """

    vendor = "azure-openai"
    azure = True

    def __init__(self, config: ProviderConfig, http: httpx.AsyncClient) -> None:
        super().__init__(config, http)
        if not self._v1:
            self._body_model = None  # the deployment in the path selects the model

    @property
    def _v1(self) -> bool:
        path = urlsplit(self.config.base_url or "").path.rstrip("/")
        return path.endswith("/openai/v1")

    def _chat_url(self) -> str:
        base = (self.config.base_url or "").rstrip("/")
        if self._v1:
            return f"{base}/chat/completions"
        deployment = quote(self.config.model, safe="")
        version = quote(self.options.api_version, safe="")
        return f"{base}/openai/deployments/{deployment}/chat/completions?api-version={version}"

    def _auth_headers(self) -> dict[str, str]:
        return {"api-key": self._secret} if self._secret else {}


class _StreamState:
    """What a stream has told so far."""

    __slots__ = ("done", "events", "finish", "model", "response_id", "usage")

    def __init__(self) -> None:
        self.done = False
        self.events = 0
        self.finish: str | None = None
        self.model: str | None = None
        self.response_id: str | None = None
        self.usage: Any = None

    def finished(self) -> bool:
        """``[DONE]`` was read (a method, so type checkers do not pin the flag)."""
        return self.done

    def final(self) -> StreamChunk:
        return StreamChunk(usage=self.usage, finish_reason=self.finish, model=self.model,
                           response_id=self.response_id)  # fmt: skip
