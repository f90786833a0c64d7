"""OpenAI Chat Completions (and Azure OpenAI's paths) for the fake vendor server.

* ``POST /v1/chat/completions``; Azure: ``/openai/deployments/{name}/chat/completions``
  (``api-version`` query required) and ``/openai/v1/chat/completions``;
* auth ``Authorization: Bearer <key>`` or Azure's ``api-key: <key>``;
* streaming: ``data:``-only events, ``chat.completion.chunk`` objects, the first one with
  ``role``; a finish chunk; a usage chunk with ``choices: []`` when
  ``stream_options.include_usage`` is set; ``data: [DONE]``; a mid-stream failure is a
  ``data: {"error": {...}}`` event;
* errors: ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from fleetbench.testing._wire import ChatCall, Reply, WireError, WireFormat, prompt_chars, sse

__all__ = ["OpenAIWire"]

_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_denied",
          404: "not_found", 429: "requests"}  # fmt: skip
_CODES = {401: "invalid_api_key", 429: "rate_limit_exceeded"}
_FINISH = {"stop": "stop", "length": "length"}


def _is_azure_chat(path: str) -> bool:
    if path == "/openai/v1/chat/completions":
        return True
    return path.startswith("/openai/deployments/") and path.endswith("/chat/completions")


class OpenAIWire(WireFormat):
    """OpenAI's wire format; OpenAI-compatible servers (vLLM, llama.cpp …) speak it too."""

    name = "openai"
    base_path = "/v1"
    api_key_hint = "Authorization: Bearer <key> (Azure: api-key: <key>)"

    def __init__(self) -> None:
        self._created = int(time.time())

    def is_chat(self, method: str, path: str) -> bool:
        return method == "POST" and (path == "/v1/chat/completions" or _is_azure_chat(path))

    def authorized(self, request: web.BaseRequest, api_key: str) -> bool:
        headers = request.headers
        return (headers.get("Authorization") == f"Bearer {api_key}"
                or headers.get("api-key") == api_key)  # fmt: skip

    def parse(self, request: web.BaseRequest, body: Any) -> ChatCall | WireError:
        if request.path.startswith("/openai/deployments/") and not request.query.get(
            "api-version"
        ):
            return WireError(404, "Resource not found: api-version is missing", "not_found")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return WireError(400, "Invalid request body: 'messages' must be a list")
        cap = body.get("max_completion_tokens", body.get("max_tokens"))
        options = body.get("stream_options")
        model = body.get("model")
        return ChatCall(
            stream=bool(body.get("stream")),
            model=model if isinstance(model, str) else None,
            prompt_tokens=max(1, prompt_chars(body["messages"]) // 4),
            max_tokens=cap if isinstance(cap, int) and cap >= 0 else None,
            include_usage=isinstance(options, dict) and bool(options.get("include_usage")),
        )

    def unauthorized(self) -> WireError:
        return WireError(401, "Incorrect API key provided.", "invalid_request_error",
                         "invalid_api_key")  # fmt: skip

    def not_found(self, path: str) -> WireError:
        return WireError(404, f"Unknown path {path}", "not_found")

    def _error(self, status: int, message: str, error_type: str | None,
               code: str | None) -> dict[str, Any]:
        kind = error_type or _TYPES.get(status, "server_error")
        return {"error": {"message": message, "type": kind, "param": None,
                          "code": code if error_type else code or _CODES.get(status)}}

    def error_body(self, status: int, message: str, error_type: str | None,
                   code: str | None) -> bytes:
        return json.dumps(self._error(status, message, error_type, code)).encode()

    def completion(self, reply: Reply) -> bytes:
        payload = {
            "id": "chatcmpl-" + reply.reply_id,
            "object": "chat.completion",
            "created": self._created,
            "model": reply.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text},
                         "finish_reason": _FINISH[reply.finish_reason]}],
            "usage": self._usage(reply),
        }  # fmt: skip
        return json.dumps(payload, separators=(",", ":")).encode()

    def _usage(self, reply: Reply) -> dict[str, int]:
        return {"prompt_tokens": reply.prompt_tokens,
                "completion_tokens": reply.completion_tokens,
                "total_tokens": reply.prompt_tokens + reply.completion_tokens}  # fmt: skip

    def _chunk(self, reply_id: str, model: str, choices: list[Any],
               **extra: Any) -> dict[str, Any]:  # fmt: skip
        return {"id": "chatcmpl-" + reply_id, "object": "chat.completion.chunk",
                "created": self._created, "model": model, "choices": choices, **extra}

    def stream_chunk(self, reply_id: str, model: str, text: str, first: bool) -> bytes:
        delta = {"role": "assistant", "content": text} if first else {"content": text}
        choice = {"index": 0, "delta": delta, "finish_reason": None}
        return sse(self._chunk(reply_id, model, [choice]))

    def stream_tail(self, reply: Reply, call: ChatCall) -> bytes:
        finish = [{"index": 0, "delta": {}, "finish_reason": _FINISH[reply.finish_reason]}]
        rid, model = reply.reply_id, reply.model
        events = [sse(self._chunk(rid, model, finish))]
        if call.include_usage:
            events.append(sse(self._chunk(rid, model, [], usage=self._usage(reply))))
        events.append(b"data: [DONE]\n\n")
        return b"".join(events)

    def stream_error(self, status: int, message: str, error_type: str | None,
                     code: str | None) -> bytes:
        return sse(self._error(status, message, error_type, code))
