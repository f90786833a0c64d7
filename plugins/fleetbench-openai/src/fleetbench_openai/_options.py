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
from urllib.parse import urlsplit

from fleetbench.plugin import ProviderConfig
from fleetbench.providerkit import check_sampling_params, extra_headers, int_param

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
_FORBIDDEN_HEADERS = ("authorization", "api-key", "content-type", "content-length")


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
        check_sampling_params(params)  # OpenAI's ranges: temperature 0…2, top_p 0…1
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
        headers.update(extra_headers(params.get("headers"), forbidden=_FORBIDDEN_HEADERS))
        return cls(field, include_usage, api_version.strip(), headers,
                   int_param(params, "max_connections"))


def _is_openai(base_url: str | None) -> bool:
    return base_url is None or urlsplit(base_url).hostname == "api.openai.com"

