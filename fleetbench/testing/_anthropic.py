"""Anthropic's Messages API for the fake vendor server.

* ``POST /v1/messages`` (clients are configured with the host and add the path themselves);
* auth ``x-api-key: <key>``; the ``anthropic-version`` header is required, as with the real
  API; ``model``, ``max_tokens`` and ``messages`` are required and a ``system`` message role
  is refused (the system prompt is the top-level ``system`` field);
* answers: a ``message`` object whose ``content`` is a list of text blocks, ``stop_reason``
  ``end_turn`` or ``max_tokens`` and ``usage`` (``input_tokens``, the two cache counts,
  ``output_tokens``); every answer carries a ``request-id`` header;
* streaming: named events. ``message_start`` (with the input usage), ``content_block_start``
  and a ``ping`` go out with the headers, before TTFT elapses, so a client that stamps the
  first token on the first event rather than the first text delta is caught; then one
  ``content_block_delta``/``text_delta`` per chunk, ``content_block_stop``, ``message_delta``
  (stop reason, cumulative ``output_tokens``) and ``message_stop``; a mid-stream failure is
  an ``error`` event (``overloaded_error`` for 529);
* errors: ``{"type": "error", "error": {"type", "message"}, "request_id"}``; a fault's
  ``code`` becomes ``error.details.error_code`` (e.g. ``enforced_spend_limit_reached``).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from fleetbench.testing._wire import ChatCall, Reply, WireError, WireFormat, prompt_chars, sse

__all__ = ["AnthropicWire"]

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
          403: "permission_error", 404: "not_found_error", 409: "conflict_error",
          413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
          504: "timeout_error", 529: "overloaded_error"}  # fmt: skip
_STOP = {"stop": "end_turn", "length": "max_tokens"}


def _error_type(status: int) -> str:
    return _TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def _invalid(message: str) -> WireError:
    return WireError(400, message, "invalid_request_error")


def _check_body(body: Any) -> str | None:
    """Why the real API would refuse this body, or ``None``."""
    if not isinstance(body, dict):
        return "the request body is not a JSON object"
    if not isinstance(body.get("model"), str):
        return "model: Field required"
    cap = body.get("max_tokens")
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        return "max_tokens: Field required (an integer >= 1)"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: Field required (a non-empty list)"
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            return (f"messages.{index}.role: Unexpected role {role!r}: the Messages API takes "
                    "the system prompt in the top-level `system` field")
    stops = body.get("stop_sequences")
    if stops is not None and not (isinstance(stops, list)
                                  and all(isinstance(s, str) for s in stops)):
        return "stop_sequences: Input should be a list of strings"
    return None


class AnthropicWire(WireFormat):
    """Anthropic's Messages API wire format."""

    name = "anthropic"
    base_path = ""
    api_key_hint = "x-api-key: <key> (and anthropic-version: 2023-06-01)"

    def __init__(self) -> None:
        self._request_ids = itertools.count(1)

    def is_chat(self, method: str, path: str) -> bool:
        return method == "POST" and path == "/v1/messages"

    def authorized(self, request: web.BaseRequest, api_key: str) -> bool:
        return request.headers.get("x-api-key") == api_key

    def parse(self, request: web.BaseRequest, body: Any) -> ChatCall | WireError:
        if not request.headers.get("anthropic-version"):
            return _invalid("anthropic-version: header is required")
        problem = _check_body(body)
        if problem is not None:
            return _invalid(problem)
        chars = prompt_chars(body["messages"]) + prompt_chars(body.get("system"))
        return ChatCall(stream=body.get("stream") is True, prompt_tokens=max(1, chars // 4),
                        max_tokens=body["max_tokens"], model=body["model"])

    def unauthorized(self) -> WireError:
        return WireError(401, "invalid x-api-key", "authentication_error")

    def not_found(self, path: str) -> WireError:
        return WireError(404, f"Not found: {path}", "not_found_error")

    def _error(self, status: int, message: str, error_type: str | None,
               code: str | None) -> dict[str, Any]:  # fmt: skip
        error: dict[str, Any] = {"type": error_type or _error_type(status), "message": message}
        if code:
            error["details"] = {"error_code": code}
        return {"type": "error", "error": error, "request_id": "req_fake_error"}

    def error_body(self, status: int, message: str, error_type: str | None,
                   code: str | None) -> bytes:
        return json.dumps(self._error(status, message, error_type, code)).encode()

    def _usage(self, reply: Reply, output_tokens: int) -> dict[str, int]:
        return {"input_tokens": reply.prompt_tokens, "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0, "output_tokens": output_tokens}  # fmt: skip

    def _message(self, reply: Reply, *, whole: bool) -> dict[str, Any]:
        content = [{"type": "text", "text": reply.text}] if whole and reply.text else []
        return {"id": "msg_" + reply.reply_id, "type": "message", "role": "assistant",
                "model": reply.model, "content": content,
                "stop_reason": _STOP[reply.finish_reason] if whole else None,
                "stop_sequence": None,
                "usage": self._usage(reply, reply.completion_tokens if whole else 1)}  # fmt: skip

    def completion(self, reply: Reply) -> bytes:
        return json.dumps(self._message(reply, whole=True), separators=(",", ":")).encode()

    def stream_head(self, reply: Reply) -> bytes:
        block = {"type": "content_block_start", "index": 0,
                 "content_block": {"type": "text", "text": ""}}  # fmt: skip
        return b"".join((
            sse({"type": "message_start", "message": self._message(reply, whole=False)},
                "message_start"),
            sse(block, "content_block_start"),
            sse({"type": "ping"}, "ping"),
        ))  # fmt: skip

    def stream_chunk(self, reply_id: str, model: str, text: str, first: bool) -> bytes:
        delta = {"type": "content_block_delta", "index": 0,
                 "delta": {"type": "text_delta", "text": text}}  # fmt: skip
        return sse(delta, "content_block_delta")

    def stream_tail(self, reply: Reply, call: ChatCall) -> bytes:
        finish = {"type": "message_delta",
                  "delta": {"stop_reason": _STOP[reply.finish_reason], "stop_sequence": None},
                  "usage": {"output_tokens": reply.completion_tokens}}  # fmt: skip
        return b"".join((
            sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
            sse(finish, "message_delta"),
            sse({"type": "message_stop"}, "message_stop"),
        ))  # fmt: skip

    def stream_error(self, status: int, message: str, error_type: str | None,
                     code: str | None) -> bytes:
        return sse(self._error(status, message, error_type, code), "error")

    def malformed_event(self) -> bytes:
        return (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
                b'"delta":{"type":"text_delta","text":\n\n')

    def headers(self) -> Mapping[str, str]:
        return {"request-id": f"req_fake_{next(self._request_ids)}"}
