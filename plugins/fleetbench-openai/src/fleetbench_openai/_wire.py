"""Chat Completions JSON: fleetbench's request → the body; the vendor's answer → records."""

from __future__ import annotations

from typing import Any

from fleetbench.errors import MalformedResponseError
from fleetbench.providerkit import request_params
from fleetbench.records import GenerationSettings, ProviderResponse, Usage

from ._options import CONTROL_PARAMS, RESERVED_FIELDS

__all__ = ["build_body", "normalise_finish", "parse_completion", "usage_from"]

_FINISH = {
    "stop": "stop",
    "eos": "stop",  # llama.cpp (older builds)
    "end_turn": "stop",
    "stop_sequence": "stop",
    "length": "length",
    "max_tokens": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",  # the legacy name
    "error": "error",  # Mistral streams
}


def normalise_finish(value: Any) -> str | None:
    """A vendor ``finish_reason`` as ``stop|length|content_filter|tool_calls|error|other``."""
    if value is None or value == "":
        return None
    return _FINISH.get(value, "other") if isinstance(value, str) else "other"


def build_body(
    model: str | None,
    prompt: str,
    settings: GenerationSettings,
    *,
    stream: bool,
    max_tokens_field: str,
    include_usage: bool,
) -> dict[str, Any]:
    """The JSON body of one chat request. ``model`` is ``None`` when the URL names it
    (Azure deployments). ``settings.params`` pass through, minus the plugin's options.

    :raises BadRequestError: a dataset's ``params`` sets a field the plugin owns.
    """
    messages: list[dict[str, str]] = []
    if settings.system:
        messages.append({"role": "system", "content": settings.system})
    messages.append({"role": "user", "content": prompt})
    body: dict[str, Any] = {"model": model} if model is not None else {}
    body["messages"] = messages
    if settings.temperature is not None:
        body["temperature"] = settings.temperature
    if settings.top_p is not None:
        body["top_p"] = settings.top_p
    if settings.stop:
        body["stop"] = list(settings.stop)
    if settings.max_tokens is not None:
        body[max_tokens_field] = settings.max_tokens
    body.update(request_params(settings.params, control=CONTROL_PARAMS, owned=RESERVED_FIELDS))
    if stream:
        body["stream"] = True
        if include_usage:
            options = body.get("stream_options")
            body["stream_options"] = {**options, "include_usage": True} \
                if isinstance(options, dict) else {"include_usage": True}
    else:
        body.pop("stream_options", None)  # only valid with stream: true
    return body


def usage_from(data: Any) -> Usage | None:
    """``usage`` → :class:`Usage` (cached tokens from ``prompt_tokens_details``)."""
    if not isinstance(data, dict):
        return None
    prompt = data.get("prompt_tokens")
    completion = data.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    details = data.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return Usage(prompt, completion, cached if isinstance(cached, int) else 0)


def parse_completion(vendor: str, payload: Any) -> ProviderResponse:
    """A ``chat.completion`` object → :class:`ProviderResponse`.

    :raises MalformedResponseError: no ``choices`` or no message in them.
    """
    if not isinstance(payload, dict):
        raise MalformedResponseError(f"{vendor}: the answer is not a JSON object")
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedResponseError(f"{vendor}: the answer has no choices")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise MalformedResponseError(f"{vendor}: choices[0] has no message")
    content = message.get("content")  # null when the turn is only tool calls
    if content is not None and not isinstance(content, str):
        raise MalformedResponseError(f"{vendor}: choices[0].message.content is not a string")
    model = payload.get("model")
    response_id = payload.get("id")
    return ProviderResponse(
        text=content or "",
        usage=usage_from(payload.get("usage")),
        finish_reason=normalise_finish(choice.get("finish_reason")),
        model=model if isinstance(model, str) and model else None,
        response_id=response_id if isinstance(response_id, str) and response_id else None,
    )
