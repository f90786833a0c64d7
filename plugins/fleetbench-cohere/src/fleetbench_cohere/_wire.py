"""Cohere v2 Chat JSON: fleetbench's request → the body; the vendor's answer → records."""

from __future__ import annotations

from typing import Any

from fleetbench.errors import BadRequestError, MalformedResponseError
from fleetbench.providerkit import request_params
from fleetbench.records import GenerationSettings, ProviderResponse, Usage

from ._errors import VENDOR, error_from_generation
from ._options import CONTROL_PARAMS, MAX_STOP_SEQUENCES, RESERVED_FIELDS, check_request_fields

__all__ = ["FAILED_FINISHES", "P_MAX", "P_MIN", "build_body", "message_text", "normalise_finish",
           "parse_chat", "usage_from"]  # fmt: skip

P_MIN, P_MAX = 0.01, 0.99
"""Cohere's accepted range for ``p`` (top-p); ``top_p`` is clamped into it."""

_FINISH = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "MAX_TOKENS": "length",
    "TOOL_CALL": "tool_calls",
    "ERROR": "error",
}
FAILED_FINISHES = frozenset({"ERROR", "TIMEOUT"})
"""Finish reasons that mean the generation failed: raised as errors, never answers."""


def normalise_finish(value: Any) -> str | None:
    """A Cohere ``finish_reason`` as ``stop|length|content_filter|tool_calls|error|other``."""
    if value is None or value == "":
        return None
    return _FINISH.get(value, "other") if isinstance(value, str) else "other"


def build_body(model: str, prompt: str, settings: GenerationSettings, *,
               stream: bool) -> dict[str, Any]:  # fmt: skip
    """The JSON body of one ``/v2/chat`` request. ``settings.params`` pass through, minus the
    plugin's options. ``top_p`` is sent as ``p``, clamped into Cohere's 0.01…0.99 (so the
    common ``top_p: 1``, "no nucleus cut", becomes 0.99 rather than a 400).

    :raises BadRequestError: a dataset's ``params`` sets a field the plugin owns, or more
        stop sequences than Cohere accepts.
    """
    try:
        check_request_fields(settings.params)
    except ValueError as exc:
        raise BadRequestError(f"{VENDOR}: {exc}") from None
    messages: list[dict[str, str]] = []
    if settings.system:
        messages.append({"role": "system", "content": settings.system})
    messages.append({"role": "user", "content": prompt})
    body: dict[str, Any] = {"model": model, "messages": messages}
    if settings.temperature is not None:
        body["temperature"] = settings.temperature
    if settings.top_p is not None:
        body["p"] = min(max(settings.top_p, P_MIN), P_MAX)
    if settings.stop:
        if len(settings.stop) > MAX_STOP_SEQUENCES:
            raise BadRequestError(f"{VENDOR}: at most {MAX_STOP_SEQUENCES} stop sequences are "
                                  f"accepted; got {len(settings.stop)}")  # fmt: skip
        body["stop_sequences"] = list(settings.stop)
    if settings.max_tokens is not None:
        body["max_tokens"] = settings.max_tokens
    body.update(request_params(settings.params, control=CONTROL_PARAMS, owned=RESERVED_FIELDS))
    if stream:
        body["stream"] = True
    return body


def _count(counts: Any, name: str) -> int | None:
    value = counts.get(name) if isinstance(counts, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return int(value)


def usage_from(data: Any, source: str) -> Usage | None:
    """``usage`` → :class:`Usage`, read from ``source`` (``billed_units``: what is charged;
    ``tokens``: what the model processed, prompt template included), else from the other
    block. ``None`` when neither holds both counts."""
    if not isinstance(data, dict):
        return None
    other = "tokens" if source == "billed_units" else "billed_units"
    for block in (data.get(source), data.get(other)):
        prompt, output = _count(block, "input_tokens"), _count(block, "output_tokens")
        if prompt is not None and output is not None:
            return Usage(prompt, output)
    return None


def message_text(message: Any) -> str:
    """The text of an assistant ``message``: its ``text`` content items joined (thinking
    and other item types left out; no content at all is an empty answer).

    :raises MalformedResponseError: ``message`` or its content has the wrong shape.
    """
    if not isinstance(message, dict):
        raise MalformedResponseError(f"{VENDOR}: the answer has no message object")
    content = message.get("content")
    if content is None:
        return ""  # a turn of only tool calls
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise MalformedResponseError(f"{VENDOR}: message.content is not a list")
    parts = []
    for item in content:
        if not isinstance(item, dict):
            raise MalformedResponseError(f"{VENDOR}: a message.content item is not an object")
        text = item.get("text")
        if item.get("type", "text") == "text" and isinstance(text, str):
            parts.append(text)
    return "".join(parts)


def parse_chat(payload: Any, *, source: str, secret: str | None) -> ProviderResponse:
    """A non-streamed chat response → :class:`ProviderResponse`. Cohere echoes no model.

    :raises MalformedResponseError: not a chat response.
    :raises ProviderError: ``finish_reason`` ``ERROR``/``TIMEOUT``: the generation failed
        (its ``error`` text, if any, as in a stream's ``message-end``).
    """
    if not isinstance(payload, dict):
        raise MalformedResponseError(f"{VENDOR}: the answer is not a JSON object")
    finish = payload.get("finish_reason")
    if finish in FAILED_FINISHES:
        raise error_from_generation(finish, payload.get("error"), secret=secret)
    text = message_text(payload.get("message"))
    response_id = payload.get("id")
    return ProviderResponse(
        text=text,
        usage=usage_from(payload.get("usage"), source),
        finish_reason=normalise_finish(finish),
        response_id=response_id if isinstance(response_id, str) and response_id else None,
    )
