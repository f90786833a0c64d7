"""Cohere's v2 Chat API for the fake vendor server.

* ``POST /v2/chat`` (clients are configured with the host and add the path themselves), the
  same URL streaming or not (``"stream": true`` in the body);
* auth ``Authorization: Bearer <key>`` (the scheme in any case, as the real API accepts);
* ``model`` and a non-empty ``messages`` list are required; OpenAI's names for sampling
  fields (``top_p``, ``stop``, ``max_completion_tokens``, ``n``) are refused as unknown
  fields, ``p`` must lie in 0.01…0.99 and ``stop_sequences`` hold at most 5 strings, so a
  client that sends the wrong dialect is caught;
* answers: ``{"id", "finish_reason", "message": {"role", "content": [{"type": "text",
  "text"}]}, "usage": {"billed_units", "tokens"}}``; ``finish_reason`` is ``COMPLETE`` or
  ``MAX_TOKENS``. No model echo, like the real API. ``usage.tokens.input_tokens`` counts
  :data:`TEMPLATE_TOKENS` more than ``billed_units`` (the prompt template Cohere adds and does
  not bill), so a client's choice between the two is visible;
* streaming: SSE events named after their JSON ``type``. ``message-start`` and
  ``content-start`` (with an empty text) go out with the headers, before TTFT elapses, so a
  client that stamps the first token on the first event rather than the first text delta is
  caught; then one ``content-delta`` per chunk, ``content-end`` and ``message-end`` with the
  finish reason and the usage (the only place a stream carries it). A mid-stream failure is
  a ``message-end`` with ``finish_reason: "ERROR"`` and the message in ``delta.error``;
* errors: a flat ``{"id", "message"}`` body.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from fleetbench.testing._wire import ChatCall, Reply, WireError, WireFormat, prompt_chars, sse

__all__ = ["TEMPLATE_TOKENS", "CohereWire"]

TEMPLATE_TOKENS = 5
"""Input tokens the fake adds to ``usage.tokens`` (processed) over ``usage.billed_units``."""

_FINISH = {"stop": "COMPLETE", "length": "MAX_TOKENS"}
_FOREIGN_FIELDS = ("top_p", "stop", "max_completion_tokens", "n")
"""Other vendors' field names a Cohere client must not send."""
_MAX_STOP_SEQUENCES = 5


def _check_body(body: Any) -> str | None:
    """Why the real API would refuse this body (its message), or ``None``."""
    if not isinstance(body, dict):
        return "invalid request: the request body must be a JSON object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "invalid request: model must be specified"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "invalid request: messages must not be empty"
    for name in _FOREIGN_FIELDS:
        if name in body:
            return f"invalid request: unknown field: parameter {name} is not a valid field"
    p = body.get("p")
    if p is not None and (isinstance(p, bool) or not isinstance(p, int | float)
                          or not 0.01 <= p <= 0.99):  # fmt: skip
        return "invalid request: p must be between 0.01 and 0.99"
    stops = body.get("stop_sequences")
    if stops is not None and not (isinstance(stops, list) and len(stops) <= _MAX_STOP_SEQUENCES
                                  and all(isinstance(s, str) for s in stops)):  # fmt: skip
        return "invalid request: stop_sequences must be a list of at most 5 strings"
    return None


def _usage(reply: Reply) -> dict[str, Any]:
    billed = {"input_tokens": reply.prompt_tokens, "output_tokens": reply.completion_tokens}
    tokens = {"input_tokens": reply.prompt_tokens + TEMPLATE_TOKENS,
              "output_tokens": reply.completion_tokens}  # fmt: skip
    return {"billed_units": billed, "tokens": tokens}


class CohereWire(WireFormat):
    """Cohere's v2 Chat wire format."""

    name = "cohere"
    base_path = ""
    api_key_hint = "Authorization: Bearer <key>"

    def is_chat(self, method: str, path: str) -> bool:
        return method == "POST" and path == "/v2/chat"

    def authorized(self, request: web.BaseRequest, api_key: str) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and token == api_key

    def parse(self, request: web.BaseRequest, body: Any) -> ChatCall | WireError:
        problem = _check_body(body)
        if problem is not None:
            return WireError(400, problem)
        cap = body.get("max_tokens")
        return ChatCall(
            stream=body.get("stream") is True,
            prompt_tokens=max(1, prompt_chars(body["messages"]) // 4),
            max_tokens=cap if isinstance(cap, int) and not isinstance(cap, bool) and cap >= 0
            else None,
            model=body["model"],
        )

    def unauthorized(self) -> WireError:
        return WireError(401, "invalid api token")

    def not_found(self, path: str) -> WireError:
        return WireError(404, f"{path} not found")

    def error_body(self, status: int, message: str, error_type: str | None,
                   code: str | None) -> bytes:
        return json.dumps({"id": f"fake-error-{status}", "message": message}).encode()

    def completion(self, reply: Reply) -> bytes:
        payload = {
            "id": reply.reply_id,
            "finish_reason": _FINISH[reply.finish_reason],
            "message": {"role": "assistant",
                        "content": [{"type": "text", "text": reply.text}]},
            "usage": _usage(reply),
        }  # fmt: skip
        return json.dumps(payload, separators=(",", ":")).encode()

    def stream_head(self, reply: Reply) -> bytes:
        start = {"id": reply.reply_id, "type": "message-start",
                 "delta": {"message": {"role": "assistant", "content": [], "tool_plan": "",
                                       "tool_calls": [], "citations": []}}}  # fmt: skip
        content = {"type": "content-start", "index": 0,
                   "delta": {"message": {"content": {"type": "text", "text": ""}}}}
        return sse(start, "message-start") + sse(content, "content-start")

    def stream_chunk(self, reply_id: str, model: str, text: str, first: bool) -> bytes:
        delta = {"type": "content-delta", "index": 0,
                 "delta": {"message": {"content": {"text": text}}}}
        return sse(delta, "content-delta")

    def stream_tail(self, reply: Reply, call: ChatCall) -> bytes:
        end = {"type": "message-end",
               "delta": {"finish_reason": _FINISH[reply.finish_reason], "usage": _usage(reply)}}
        return sse({"type": "content-end", "index": 0}, "content-end") + sse(end, "message-end")

    def stream_error(self, status: int, message: str, error_type: str | None,
                     code: str | None) -> bytes:
        end = {"type": "message-end", "delta": {"finish_reason": "ERROR", "error": message}}
        return sse(end, "message-end")

    def malformed_event(self) -> bytes:
        return b'event: content-delta\ndata: {"type":"content-delta","delta":{"message":\n\n'
