"""Messages API JSON: fleetbench's request → the body; the vendor's answer → records.

Pure functions and a pure stream folder (:class:`StreamState`), so every shape the vendor
may send is tested without a network.
"""

from __future__ import annotations

from typing import Any

from fleetbench.errors import MalformedResponseError
from fleetbench.providerkit import request_params
from fleetbench.records import GenerationSettings, ProviderResponse, StreamChunk, Usage

from ._errors import error_from_payload
from ._options import CONTROL_PARAMS, RESERVED_FIELDS

__all__ = ["StreamState", "build_body", "normalise_stop", "parse_message", "usage_from"]

_STOP = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens",
                 "cache_read_input_tokens")  # fmt: skip


def normalise_stop(value: Any) -> str | None:
    """A ``stop_reason`` as ``stop|length|content_filter|tool_calls|other`` (``pause_turn``
    and reasons newer than this plugin are ``other``)."""
    if value is None or value == "":
        return None
    return _STOP.get(value, "other") if isinstance(value, str) else "other"


def build_body(model: str, prompt: str, settings: GenerationSettings, *, stream: bool,
               default_max_tokens: int) -> dict[str, Any]:  # fmt: skip
    """The JSON body of one Messages request: the system prompt is the top-level
    ``system`` field, stop strings are ``stop_sequences``, and ``max_tokens`` (required by
    the API) falls back to ``default_max_tokens``. ``settings.params`` pass through, minus
    the plugin's options.

    :raises BadRequestError: a dataset's ``params`` sets a field the plugin owns.
    """
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": settings.max_tokens if settings.max_tokens is not None
        else default_max_tokens,
        "messages": [{"role": "user", "content": prompt}],
    }
    if settings.system:
        body["system"] = settings.system
    if settings.temperature is not None:
        body["temperature"] = settings.temperature
    if settings.top_p is not None:
        body["top_p"] = settings.top_p
    if settings.stop:
        body["stop_sequences"] = list(settings.stop)
    body.update(request_params(settings.params, control=CONTROL_PARAMS, owned=RESERVED_FIELDS))
    if stream:
        body["stream"] = True
    return body


def usage_from(data: Any) -> Usage | None:
    """A ``usage`` object → :class:`Usage`. Anthropic's ``input_tokens`` counts only the
    uncached prompt; cache writes and reads are separate counts, so the prompt is their sum
    and the cache reads are its cached part."""
    if not isinstance(data, dict):
        return None
    counts = [data.get(name) for name in _USAGE_FIELDS]
    if not all(isinstance(c, int) for c in counts[:2]):
        return None
    fresh, output, written, read = (c if isinstance(c, int) else 0 for c in counts)
    return Usage(fresh + written + read, output, read)


def _text_of(content: Any) -> str:
    if not isinstance(content, list):
        raise MalformedResponseError("anthropic: the answer's content is not a list of blocks")
    parts = []
    for block in content:
        if not isinstance(block, dict):
            raise MalformedResponseError("anthropic: a content block is not an object")
        if block.get("type") == "text":  # tool_use, thinking … blocks carry no answer text
            text = block.get("text")
            if not isinstance(text, str):
                raise MalformedResponseError("anthropic: a text block has no text")
            parts.append(text)
    return "".join(parts)


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_message(payload: Any) -> ProviderResponse:
    """A ``message`` object → :class:`ProviderResponse` (text = its text blocks joined).

    :raises MalformedResponseError: not an object, or no list of content blocks.
    """
    if not isinstance(payload, dict):
        raise MalformedResponseError("anthropic: the answer is not a JSON object")
    return ProviderResponse(
        text=_text_of(payload.get("content")),
        usage=usage_from(payload.get("usage")),
        finish_reason=normalise_stop(payload.get("stop_reason")),
        model=_str_or_none(payload.get("model")),
        response_id=_str_or_none(payload.get("id")),
    )


class StreamState:
    """Folds a stream's events, one at a time, into its text deltas and final record.

    ``message_start`` gives the id, model and input usage; ``content_block_delta`` events
    of type ``text_delta`` carry the text; ``message_delta`` the stop reason and usage
    whose counts are cumulative (they replace, never add); ``message_stop`` ends it. Pings,
    block starts and stops and non-text deltas (thinking, tool input) carry no answer text;
    event types newer than this plugin are skipped, as the vendor's versioning policy asks.
    An ``error`` event (overload mid-generation) is raised as the matching error.
    """

    __slots__ = ("_secret", "_usage", "done", "events", "finish", "model", "response_id")

    def __init__(self, *, secret: str | None = None) -> None:
        self._secret = secret
        self.done = False
        self.events = 0
        self.finish: str | None = None
        self.model: str | None = None
        self.response_id: str | None = None
        self._usage: dict[str, int] = {}

    def feed(self, payload: Any, event: str = "") -> str:
        """Fold one event's parsed ``data`` (``event``: its SSE name, used when the data
        lacks a ``type``); return its answer text (often ``""``).

        :raises ProviderError: an ``error`` event, classified like an HTTP error.
        :raises MalformedResponseError: an event that is not an object, or a known event
            missing what defines it.
        """
        if not isinstance(payload, dict):
            raise MalformedResponseError("anthropic: a stream event is not a JSON object")
        self.events += 1
        kind = payload.get("type") or event
        if kind == "content_block_delta":
            delta = _member(payload, "delta", kind)
            if delta.get("type") != "text_delta":
                return ""
            text = delta.get("text")
            if not isinstance(text, str):
                raise MalformedResponseError("anthropic: a text_delta has no text")
            return text
        if kind == "message_start":
            message = _member(payload, "message", kind)
            self.model = _str_or_none(message.get("model"))
            self.response_id = _str_or_none(message.get("id"))
            self._merge_usage(message.get("usage"))
        elif kind == "content_block_start":
            block = _member(payload, "content_block", kind)
            text = block.get("text") if block.get("type") == "text" else None
            return text if isinstance(text, str) else ""  # normally empty
        elif kind == "message_delta":
            delta = _member(payload, "delta", kind)
            self.finish = normalise_stop(delta.get("stop_reason")) or self.finish
            self._merge_usage(payload.get("usage"))
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            raise error_from_payload(payload, secret=self._secret)
        return ""

    def _merge_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self._usage.update((k, v) for k, v in usage.items()
                               if k in _USAGE_FIELDS and isinstance(v, int))  # fmt: skip

    def finished(self) -> bool:
        """``message_stop`` was read (a method, so type checkers do not pin the flag)."""
        return self.done

    def final(self) -> StreamChunk:
        """The closing chunk: usage, stop reason, model and id."""
        return StreamChunk(usage=usage_from(self._usage), finish_reason=self.finish,
                           model=self.model, response_id=self.response_id)  # fmt: skip


def _member(payload: dict[str, Any], name: str, kind: str) -> dict[str, Any]:
    value = payload.get(name)
    if not isinstance(value, dict):
        raise MalformedResponseError(f"anthropic: a {kind} event has no {name} object")
    return value
