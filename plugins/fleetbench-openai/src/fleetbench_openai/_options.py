"""The manifest ``params`` this plugin understands, checked once, before any request.

Two kinds of keys live in a provider entry's ``params``:

* **plugin options** (this module) steer the plugin and are never sent: ``api_version``,
  ``max_tokens_field``, ``include_usage``, ``organization``, ``project``, ``headers``,
  ``max_connections``;
* everything else is a **request field**: the sampling settings fleetbench knows
  (``temperature``, ``top_p``, ``max_tokens``, ``stop``, ``system``) are checked here and
  sent in their wire form; any other key (``seed``, ``presence_penalty``,
  ``response_format`` …) is passed through into the JSON body untouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fleetbench.plugin import ProviderConfig

__all__ = [
    "AZURE_DEFAULT_API_VERSION",
    "CONTROL_PARAMS",
    "OPENAI_DEFAULT_BASE_URL",
    "RESERVED_FIELDS",
    "Options",
]

OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
AZURE_DEFAULT_API_VERSION = "2024-10-21"
"""The latest GA data-plane version at the time of writing; it accepts
``max_completion_tokens`` and ``stream_options``."""

CONTROL_PARAMS = frozenset({
    "api_version", "max_tokens_field", "include_usage", "organization", "project", "headers",
    "max_connections",
})  # fmt: skip
RESERVED_FIELDS = frozenset({"model", "messages", "stream"})
"""Body fields the plugin owns; a ``params`` key with one of these names is an error."""

MAX_TOKENS_FIELDS = ("auto", "max_tokens", "max_completion_tokens")
_FORBIDDEN_HEADERS = frozenset({"authorization", "api-key", "content-type", "content-length"})


@dataclass(frozen=True, slots=True)
class Options:
    """The validated plugin options of one provider entry."""

    max_tokens_field: str
    """``max_tokens`` or ``max_completion_tokens`` (``auto`` already resolved)."""
    include_usage: bool
    api_version: str
    headers: Mapping[str, str]
    max_connections: int | None

    @classmethod
    def from_config(cls, config: ProviderConfig, *, azure: bool) -> Options:
        """Check ``config.params`` (and ``base_url`` for Azure).

        :raises ValueError: naming the first offending param and what it accepts.
        """
        params = config.params
        if azure and not config.base_url:
            raise ValueError(
                "azure-openai needs base_url: the resource endpoint, e.g. "
                "https://NAME.openai.azure.com"
            )
        _check_settings(params)
        reserved = sorted(RESERVED_FIELDS & set(params))
        if reserved:
            raise ValueError(
                f"param {reserved[0]!r} is set by the plugin (the model comes from the "
                "provider id, messages from the dataset, stream from the manifest)"
            )
        field = params.get("max_tokens_field", "auto")
        if field not in MAX_TOKENS_FIELDS:
            raise ValueError(
                f"param 'max_tokens_field' must be one of {', '.join(MAX_TOKENS_FIELDS)}"
            )
        if field == "auto":
            field = "max_completion_tokens" if azure or _is_openai(config.base_url) \
                else "max_tokens"
        include_usage = params.get("include_usage", True)
        if not isinstance(include_usage, bool):
            raise ValueError("param 'include_usage' must be true or false")
        api_version = params.get("api_version", AZURE_DEFAULT_API_VERSION)
        if "api_version" in params and not azure:
            raise ValueError("param 'api_version' applies to azure-openai only")
        if not isinstance(api_version, str) or not api_version.strip():
            raise ValueError("param 'api_version' must be a non-empty string, e.g. 2024-10-21")
        headers: dict[str, str] = {}
        for name in ("organization", "project"):
            value = params.get(name)
            if value is None:
                continue
            if azure:
                raise ValueError(f"param {name!r} applies to openai only")
            if not isinstance(value, str) or not value:
                raise ValueError(f"param {name!r} must be a non-empty string")
            headers[f"OpenAI-{name.title()}"] = value
        headers.update(_extra_headers(params.get("headers")))
        cap = params.get("max_connections")
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise ValueError("param 'max_connections' must be an integer >= 1")
        return cls(field, include_usage, api_version.strip(), headers, cap)


def _is_openai(base_url: str | None) -> bool:
    return base_url is None or urlsplit(base_url).hostname == "api.openai.com"


def _extra_headers(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError("param 'headers' must map header names to strings")
    for name in value:
        if name.lower() in _FORBIDDEN_HEADERS:
            raise ValueError(
                f"param 'headers' may not set {name!r}: the key comes from api_key_env"
            )
    return dict(value)


def _check_settings(params: Mapping[str, Any]) -> None:
    """The sampling settings a provider entry may override, in OpenAI's accepted ranges."""
    checks: dict[str, tuple[float, float]] = {"temperature": (0.0, 2.0), "top_p": (0.0, 1.0)}
    for name, (low, high) in checks.items():
        value = params.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not low <= value <= high:
            raise ValueError(f"param {name!r} must be a number from {low:g} to {high:g}")
    max_tokens = params.get("max_tokens")
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise ValueError("param 'max_tokens' must be an integer >= 1")
    stop = params.get("stop")
    if stop is not None and not isinstance(stop, str) and not (
        isinstance(stop, list) and all(isinstance(s, str) for s in stop)
    ):
        raise ValueError("param 'stop' must be a string or a list of strings")
    system = params.get("system")
    if system is not None and not isinstance(system, str):
        raise ValueError("param 'system' must be a string")
