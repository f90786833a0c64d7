"""Google Gemini ``generateContent`` / ``streamGenerateContent`` for the fake vendor server.

* ``POST /v1beta/models/{model}:generateContent`` (``/v1/`` too), and
  ``…:streamGenerateContent?alt=sse``: the method in the path says whether to stream, the
  model is in the path, not the body. Without ``alt=sse`` the real API streams one JSON array;
  the fake refuses that with a 400 rather than imitate it;
* auth ``x-goog-api-key: <key>`` or the ``?key=<key>`` query; a wrong key is a 400
  ``INVALID_ARGUMENT`` with an ``ErrorInfo`` reason ``API_KEY_INVALID``, as Google answers;
* request bodies are checked like the real API checks them: unknown fields (top level or in
  ``generationConfig``, camelCase or snake_case) are a 400, so a client sending a field at the
  wrong level finds out here;
* answers: ``candidates[0].content.parts[].text``, ``finishReason`` (``STOP``,
  ``MAX_TOKENS``), ``usageMetadata``, ``modelVersion``, ``responseId``;
* streaming: ``data:``-only events, each a whole ``GenerateContentResponse`` with the new text;
  then one last chunk with an empty text part, the ``finishReason`` and the complete
  ``usageMetadata`` (the real API repeats cumulative usage on every chunk; the fake's content
  chunks are cached across requests, so they carry none). No terminator: the body just ends,
  so a truncated stream is one whose last chunk never came. A mid-stream failure is a
  ``data: {"error": {...}}`` event;
* errors: ``{"error": {"code", "message", "status", "details"}}``. A fault's ``error_type`` is
  the ``status`` (default: Google's for the HTTP status), its ``code`` goes into ``details``:
  for a 429 a ``QuotaFailure`` violation with that ``quotaId`` (e.g.
  ``GenerateRequestsPerDayPerProjectPerModel``), otherwise an ``ErrorInfo`` with that
  ``reason``. Gemini gives retry hints in the body: a fault's ``retry-after`` header becomes a
  ``RetryInfo`` detail with ``retryDelay`` ``"<seconds>s"`` (and is not sent as a header).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from fleetbench.testing._wire import ChatCall, Reply, WireError, WireFormat, prompt_chars, sse

__all__ = ["GeminiWire"]

_CHAT_PATH = re.compile(
    r"^/(v1|v1beta|v1alpha)/models/([^/:]+):(generateContent|streamGenerateContent)$")
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
           404: "NOT_FOUND", 409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED",
           500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}  # fmt: skip
_FINISH = {"stop": "STOP", "length": "MAX_TOKENS"}
_TYPE_PREFIX = "type.googleapis.com/google.rpc."
_REQUEST_FIELDS = frozenset({
    "model", "contents", "systemInstruction", "generationConfig", "safetySettings", "tools",
    "toolConfig", "cachedContent",
})  # fmt: skip
_CONFIG_FIELDS = frozenset({
    "stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema",
    "responseModalities", "candidateCount", "maxOutputTokens", "temperature", "topP", "topK",
    "seed", "presencePenalty", "frequencyPenalty", "responseLogprobs", "logprobs",
    "enableEnhancedCivicAnswers", "speechConfig", "thinkingConfig", "imageConfig",
    "mediaResolution",
})  # fmt: skip


def _camel(name: str) -> str:
    """A protobuf JSON field name as written in either spelling, in its lowerCamelCase one."""
    return re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), name)


def _field(fields: Mapping[str, Any], name: str) -> Any:
    """A field by its camelCase name, or its snake_case one (protobuf JSON takes both)."""
    value = fields.get(name)
    return value if value is not None else fields.get(re.sub(r"([A-Z])", r"_\1", name).lower())


def _unknown(fields: Mapping[str, Any], known: frozenset[str], where: str) -> WireError | None:
    for name in fields:
        if _camel(name) not in known:
            return WireError(400, f'Invalid JSON payload received. Unknown name "{name}"'
                                  f"{where}: Cannot find field.")  # fmt: skip
    return None


def _check_body(body: Any) -> WireError | None:
    """Why Gemini would reject ``body`` (a ``GenerateContentRequest``), if it would."""
    if not isinstance(body, dict):
        return WireError(400, "Invalid JSON payload received.")
    problem = _unknown(body, _REQUEST_FIELDS, "")
    if problem is not None:
        return problem
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents or not all(
            isinstance(c, dict) and isinstance(c.get("parts"), list) for c in contents):
        return WireError(400, "* GenerateContentRequest.contents: contents is not specified")
    config = _field(body, "generationConfig")
    if config is None:
        return None
    if not isinstance(config, dict):
        return WireError(400, "Invalid value at 'generation_config'")
    return _unknown(config, _CONFIG_FIELDS, " at 'generation_config'")


class GeminiWire(WireFormat):
    """Gemini's REST wire format (the ``generativelanguage`` API)."""

    name = "gemini"
    base_path = ""
    api_key_hint = "x-goog-api-key: <key> (or ?key=<key>)"

    def is_chat(self, method: str, path: str) -> bool:
        return method == "POST" and _CHAT_PATH.match(path) is not None

    def authorized(self, request: web.BaseRequest, api_key: str) -> bool:
        return (request.headers.get("x-goog-api-key") == api_key
                or request.query.get("key") == api_key)  # fmt: skip

    def parse(self, request: web.BaseRequest, body: Any) -> ChatCall | WireError:
        match = _CHAT_PATH.match(request.path)
        assert match is not None  # is_chat said so
        stream = match.group(3) == "streamGenerateContent"
        if stream and request.query.get("alt") != "sse":
            return WireError(400, "this fake server streams only with ?alt=sse (without it "
                                  "Gemini answers one JSON array)")  # fmt: skip
        problem = _check_body(body)
        if problem is not None:
            return problem
        config = _field(body, "generationConfig") or {}
        cap = _field(config, "maxOutputTokens")
        text = [body.get("contents"), _field(body, "systemInstruction")]
        return ChatCall(
            stream=stream,
            model=unquote(match.group(2)),
            prompt_tokens=max(1, prompt_chars(text) // 4),
            max_tokens=cap if isinstance(cap, int) and cap >= 0 else None,
        )

    def unauthorized(self) -> WireError:
        return WireError(400, "API key not valid. Please pass a valid API key.",
                         "INVALID_ARGUMENT", "API_KEY_INVALID")  # fmt: skip

    def not_found(self, path: str) -> WireError:
        return WireError(404, f"Requested entity was not found: {path}", "NOT_FOUND")

    def _error(self, status: int, message: str, error_type: str | None, code: str | None,
               retry_delay: str | None = None) -> dict[str, Any]:  # fmt: skip
        details: list[dict[str, Any]] = []
        if code and status == 429:
            details.append({"@type": _TYPE_PREFIX + "QuotaFailure", "violations": [
                {"quotaMetric": "generativelanguage.googleapis.com/generate_content_requests",
                 "quotaId": code}]})  # fmt: skip
        elif code:
            details.append({"@type": _TYPE_PREFIX + "ErrorInfo", "reason": code,
                            "domain": "googleapis.com",
                            "metadata": {"service": "generativelanguage.googleapis.com"}})
        if retry_delay:
            details.append({"@type": _TYPE_PREFIX + "RetryInfo", "retryDelay": retry_delay})
        error: dict[str, Any] = {"code": status, "message": message,
                                 "status": error_type or _STATUS.get(status, "UNKNOWN")}
        if details:
            error["details"] = details
        return {"error": error}

    def error_body(self, status: int, message: str, error_type: str | None,
                   code: str | None) -> bytes:
        return json.dumps(self._error(status, message, error_type, code)).encode()

    def refusal(self, status: int, message: str, error_type: str | None, code: str | None,
                headers: Mapping[str, str]) -> tuple[bytes, dict[str, str]]:
        """Moves a ``retry-after`` header (seconds) into the body's ``RetryInfo``."""
        kept = {k: v for k, v in headers.items() if k.lower() != "retry-after"}
        delay = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
        body = self._error(status, message, error_type, code,
                           retry_delay=f"{delay}s" if delay is not None else None)
        return json.dumps(body).encode(), kept

    def _usage(self, reply: Reply) -> dict[str, Any]:
        return {"promptTokenCount": reply.prompt_tokens,
                "candidatesTokenCount": reply.completion_tokens,
                "totalTokenCount": reply.prompt_tokens + reply.completion_tokens,
                "promptTokensDetails": [{"modality": "TEXT",
                                         "tokenCount": reply.prompt_tokens}]}  # fmt: skip

    def _response(self, reply_id: str, model: str, text: str, finish: str | None = None,
                  usage: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
        candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}}
        if finish:
            candidate["finishReason"] = finish
        candidate["index"] = 0
        payload: dict[str, Any] = {"candidates": [candidate]}
        if usage:
            payload["usageMetadata"] = usage
        payload["modelVersion"] = model
        payload["responseId"] = reply_id
        return payload

    def completion(self, reply: Reply) -> bytes:
        payload = self._response(reply.reply_id, reply.model, reply.text,
                                 _FINISH[reply.finish_reason], self._usage(reply))  # fmt: skip
        return json.dumps(payload, separators=(",", ":")).encode()

    def stream_chunk(self, reply_id: str, model: str, text: str, first: bool) -> bytes:
        return sse(self._response(reply_id, model, text))

    def stream_tail(self, reply: Reply, call: ChatCall) -> bytes:
        return sse(self._response(reply.reply_id, reply.model, "",
                                  _FINISH[reply.finish_reason], self._usage(reply)))  # fmt: skip

    def stream_error(self, status: int, message: str, error_type: str | None,
                     code: str | None) -> bytes:
        return sse(self._error(status, message, error_type, code))

    def malformed_event(self) -> bytes:
        return b'data: {"candidates":[{"content":{"parts":[{"text":\n\n'
