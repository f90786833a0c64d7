"""Gemini JSON: fleetbench's request → the body; the vendor's answers → records.

A ``GenerateContentResponse`` is the same object whether it is a whole answer or one chunk
of a stream, so one reader (:func:`read_payload`) serves both: text is the
concatenation of ``candidates[0].content.parts[].text`` (thought summaries left out),
``finishReason`` and ``promptFeedback.blockReason`` give the finish, ``usageMetadata`` the
usage (cumulative in streams: the last one wins).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from fleetbench.errors import BadRequestError, MalformedResponseError
from fleetbench.records import GenerationSettings, ProviderResponse, StreamChunk, Usage

from ._options import CONTROL_PARAMS, REQUEST_FIELDS, camel, owned_field_error

__all__ = [
    "Piece",
    "StreamReader",
    "build_body",
    "normalise_finish",
    "parse_response",
    "read_payload",
    "usage_from",
]

VENDOR = "gemini"

_FILTERED = ("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII",
             "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION")  # fmt: skip
_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    **dict.fromkeys(_FILTERED, "content_filter"),
    "MALFORMED_FUNCTION_CALL": "error",
    "UNEXPECTED_TOOL_CALL": "error",
    "TOO_MANY_TOOL_CALLS": "error",
}


def normalise_finish(value: Any) -> str | None:
    """A ``finishReason`` as ``stop|length|content_filter|error|other`` (``LANGUAGE``,
    ``OTHER`` and values this plugin does not know are ``other``)."""
    if value is None or value == "":
        return None
    return _FINISH.get(value, "other") if isinstance(value, str) else "other"


def build_body(prompt: str, settings: GenerationSettings) -> dict[str, Any]:
    """The JSON body of one ``generateContent`` call (the model is in the URL).

    ``settings.params`` go, in camelCase, to the top level (``safetySettings``, ``tools``,
    ``toolConfig``, ``cachedContent``) or into ``generationConfig`` (everything else,
    ``generation_config`` merged in); the plugin's own options are left out.

    :raises BadRequestError: a dataset's ``params`` sets a field the plugin owns.
    """
    body: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": prompt}]}]}
    if settings.system:
        body["systemInstruction"] = {"parts": [{"text": settings.system}]}
    config: dict[str, Any] = {}
    for key, value in settings.params.items():
        if key in CONTROL_PARAMS:
            continue
        _check_owned(key)
        name = camel(key)
        if name in REQUEST_FIELDS:
            body[name] = value
        elif name == "generationConfig":
            if not isinstance(value, Mapping):
                raise BadRequestError("param 'generation_config' must be a mapping")
            for inner, inner_value in value.items():
                _check_owned(inner)
                config[camel(inner)] = inner_value
        else:
            config[name] = value
    if settings.temperature is not None:
        config["temperature"] = settings.temperature
    if settings.top_p is not None:
        config["topP"] = settings.top_p
    if settings.max_tokens is not None:
        config["maxOutputTokens"] = settings.max_tokens
    if settings.stop:
        config["stopSequences"] = list(settings.stop)
    if config:
        body["generationConfig"] = config
    return body


def _check_owned(key: str) -> None:
    problem = owned_field_error(key)
    if problem:
        raise BadRequestError(f"{problem}; remove it from params")


def usage_from(data: Any) -> Usage | None:
    """``usageMetadata`` → :class:`Usage`, or ``None`` without a ``promptTokenCount``.

    Input counts the prompt and any tool-use prompt; output counts the answer and the
    thinking tokens (``thoughtsTokenCount``, billed as output but never streamed as text);
    ``cachedContentTokenCount`` is the cached part of the input.
    """
    if not isinstance(data, dict):
        return None
    prompt = data.get("promptTokenCount")
    if not isinstance(prompt, int):
        return None

    def count(name: str) -> int:
        value = data.get(name)
        return value if isinstance(value, int) else 0

    return Usage(prompt + count("toolUsePromptTokenCount"),
                 count("candidatesTokenCount") + count("thoughtsTokenCount"),
                 count("cachedContentTokenCount"))  # fmt: skip


class Piece(NamedTuple):
    """What one ``GenerateContentResponse`` says."""

    text: str
    finish: str | None
    usage: Usage | None
    model: str | None
    response_id: str | None
    has_answer: bool
    """It held candidates or a prompt-block verdict (not just usage)."""


def read_payload(payload: Any) -> Piece:
    """Read one ``GenerateContentResponse`` (a whole answer or a stream chunk).

    A prompt blocked by ``promptFeedback.blockReason`` reads as no text with finish
    ``content_filter``; a candidate without ``content`` (stopped by a safety filter, or by
    ``MAX_TOKENS`` while thinking) as no text.

    :raises MalformedResponseError: not an object, or candidates of the wrong shape.
    """
    if not isinstance(payload, dict):
        raise MalformedResponseError(f"{VENDOR}: the answer is not a JSON object")
    text, finish = "", None
    candidates = payload.get("candidates")
    has_answer = bool(candidates)
    if candidates:
        if not isinstance(candidates, list) or not isinstance(candidates[0], dict):
            raise MalformedResponseError(f"{VENDOR}: candidates[0] is not an object")
        candidate = candidates[0]
        text = _text(candidate.get("content"))
        finish = normalise_finish(candidate.get("finishReason"))
    feedback = payload.get("promptFeedback")
    if isinstance(feedback, dict) and feedback.get("blockReason"):
        has_answer, finish = True, "content_filter"
    model, response_id = payload.get("modelVersion"), payload.get("responseId")
    return Piece(text, finish, usage_from(payload.get("usageMetadata")),
                 model if isinstance(model, str) and model else None,
                 response_id if isinstance(response_id, str) and response_id else None,
                 has_answer)  # fmt: skip


def _text(content: Any) -> str:
    if content is None:
        return ""
    parts = content.get("parts", []) if isinstance(content, dict) else None
    if not isinstance(parts, list):
        raise MalformedResponseError(f"{VENDOR}: candidates[0].content has no parts list")
    texts = []
    for part in parts:
        if not isinstance(part, dict):
            raise MalformedResponseError(f"{VENDOR}: a part of candidates[0] is not an object")
        value = part.get("text")
        if isinstance(value, str) and not part.get("thought"):
            texts.append(value)
    return "".join(texts)


def parse_response(payload: Any) -> ProviderResponse:
    """A whole ``GenerateContentResponse`` → :class:`ProviderResponse`.

    :raises MalformedResponseError: neither candidates nor a prompt-block verdict.
    """
    piece = read_payload(payload)
    if not piece.has_answer:
        raise MalformedResponseError(f"{VENDOR}: the answer has no candidates")
    return ProviderResponse(text=piece.text, usage=piece.usage, finish_reason=piece.finish,
                            model=piece.model, response_id=piece.response_id)  # fmt: skip


class StreamReader:
    """Folds the chunks of one stream: each chunk's text is returned as it comes; the last
    finish, usage, model and id are kept for :meth:`final`.

    Gemini ends a stream by closing the body, so the only sign of a complete stream is a
    ``finishReason`` (or a prompt-block verdict): :attr:`finished` tells whether one came.
    """

    __slots__ = ("chunks", "finish", "model", "response_id", "usage")

    def __init__(self) -> None:
        self.chunks = 0
        self.finish: str | None = None
        self.model: str | None = None
        self.response_id: str | None = None
        self.usage: Usage | None = None

    def add(self, payload: Any) -> str:
        """Fold one chunk in; return its text (possibly empty).

        :raises MalformedResponseError: a chunk that is not a ``GenerateContentResponse``.
        """
        if not isinstance(payload, dict):
            raise MalformedResponseError(
                f"{VENDOR}: stream chunk {self.chunks + 1} is not a JSON object")
        piece = read_payload(payload)
        if not piece.has_answer and piece.usage is None:
            raise MalformedResponseError(
                f"{VENDOR}: stream chunk {self.chunks + 1} has no candidates, prompt "
                "feedback or usage")  # fmt: skip
        self.chunks += 1
        self.finish = piece.finish or self.finish
        self.usage = piece.usage or self.usage
        self.model = piece.model or self.model
        self.response_id = piece.response_id or self.response_id
        return piece.text

    @property
    def finished(self) -> bool:
        return self.finish is not None

    def final(self) -> StreamChunk:
        return StreamChunk(usage=self.usage, finish_reason=self.finish, model=self.model,
                           response_id=self.response_id)  # fmt: skip
