"""The manifest ``params`` this plugin understands, checked once, before any request.

Three kinds of keys live in a provider entry's ``params``:

* **plugin options** steer the plugin and are never sent: ``api_version``, ``headers``,
  ``max_connections``;
* **request fields**: ``safety_settings``, ``tools``, ``tool_config``, ``cached_content``
  go to the top level of the body; ``generation_config`` (a mapping) is merged into the
  body's ``generationConfig``;
* everything else is a **generation setting** sent inside ``generationConfig`` (``top_k``,
  ``seed``, ``thinking_config``, ``response_mime_type`` …).

Keys may be written in snake_case or in Gemini's camelCase; they are sent in camelCase.
fleetbench's own sampling settings (``temperature``, ``top_p``, ``max_tokens``, ``stop``,
``system``) are checked here and sent in their wire form (``maxOutputTokens``,
``stopSequences``, ``systemInstruction`` …), so those wire names are refused in ``params``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fleetbench.plugin import ProviderConfig
from fleetbench.providerkit import check_sampling_params, extra_headers, int_param

__all__ = [
    "CONTROL_PARAMS",
    "DEFAULT_API_VERSION",
    "GEMINI_DEFAULT_BASE_URL",
    "REQUEST_FIELDS",
    "Options",
    "camel",
    "owned_field_error",
]

GEMINI_DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
DEFAULT_API_VERSION = "v1beta"
"""The surface the Google SDKs default to; ``v1`` lacks some newer fields."""

CONTROL_PARAMS = frozenset({"api_version", "headers", "max_connections"})
REQUEST_FIELDS = frozenset({"safetySettings", "tools", "toolConfig", "cachedContent"})
"""Top-level body fields a manifest may set (camelCase)."""

_OWNED = {
    "contents": "the prompt comes from the dataset",
    "systemInstruction": "set the 'system' setting instead",
    "model": "the model comes from the provider id",
    "stream": "stream comes from the manifest",
    "alt": "stream comes from the manifest",
    "key": "the key comes from api_key_env",
    "maxOutputTokens": "set 'max_tokens' instead",
    "stopSequences": "set 'stop' instead",
    "topP": "set 'top_p' instead",
}
"""Fields the plugin sets itself (camelCase), and what to use instead."""

_API_VERSION = re.compile(r"v\d+(?:alpha|beta)?\d*")
_FORBIDDEN_HEADERS = ("x-goog-api-key", "authorization", "content-type", "content-length")


def camel(name: str) -> str:
    """``top_k`` → ``topK``: a protobuf JSON field name in lowerCamelCase."""
    return re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), name)


def owned_field_error(name: str) -> str | None:
    """Why ``name`` (either spelling) may not be set in ``params``, or ``None`` if it may."""
    reason = _OWNED.get(camel(name))
    return f"param {name!r} is set by the plugin: {reason}" if reason else None


@dataclass(frozen=True, slots=True)
class Options:
    """The validated plugin options of one provider entry."""

    api_version: str
    headers: Mapping[str, str]
    max_connections: int | None

    @classmethod
    def from_config(cls, config: ProviderConfig) -> Options:
        """Check ``config.params``.

        :raises ValueError: naming the first offending param and what it accepts.
        """
        params = config.params
        check_sampling_params(params)  # Gemini's temperature range is 0…2 too
        for name in params:
            problem = owned_field_error(name)
            if problem:
                raise ValueError(problem)
        _check_generation(params)
        version = params.get("api_version", DEFAULT_API_VERSION)
        if not isinstance(version, str) or not _API_VERSION.fullmatch(version):
            raise ValueError("param 'api_version' must be an API surface such as v1beta or v1")
        cap = int_param(params, "max_connections")
        headers = extra_headers(params.get("headers"), forbidden=_FORBIDDEN_HEADERS)
        return cls(version, headers, cap)


def _check_generation(params: Mapping[str, Any]) -> None:
    """The generation fields worth catching before a run: wrong types Google would reject."""
    fields = {camel(k): v for k, v in params.items()}
    config = fields.get("generationConfig")
    if config is not None:
        if not isinstance(config, Mapping):
            raise ValueError("param 'generation_config' must be a mapping of generation fields")
        for name in config:
            problem = owned_field_error(name)
            if problem:
                raise ValueError(f"generation_config: {problem}")
        fields.update({camel(k): v for k, v in config.items()})
    top_k = fields.get("topK")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError("param 'top_k' must be an integer >= 1")
    seed = fields.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError("param 'seed' must be an integer")
    safety = fields.get("safetySettings")
    if safety is not None and not isinstance(safety, list):
        raise ValueError("param 'safety_settings' must be a list of {category, threshold}")
